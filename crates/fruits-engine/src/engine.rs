//! Where a plan runs: the [`Engine`] seam. [`InProcess`] runs it here with DataFusion; the
//! `fruits-cluster` crate provides one that runs it on a Ballista cluster. The plans are the
//! same either way.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::future::BoxFuture;
use futures::StreamExt;

use crate::error::EngineError;

/// Runs map-only physical plans to completion and returns their (small) output.
pub trait Engine: Send + Sync {
    /// How many partitions (tasks) to split `images` images into.
    fn partitions(&self, images: usize) -> usize;

    /// Runs every partition of `plan` and collects what they return.
    fn run(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, Result<Vec<RecordBatch>, EngineError>>;

    /// One line for people: where the plan runs.
    fn describe(&self) -> String;

    /// How many times a job may be submitted before the run fails (jobs are idempotent).
    fn attempts(&self) -> usize {
        1
    }

    /// Whether the plans' nodes update a run's [`Progress`](crate::Progress) themselves (they
    /// do in this process; elsewhere the run follows the tasks' stored reports instead).
    fn reports_progress(&self) -> bool {
        false
    }
}

/// Images per task (partition) when none is given: small enough that a run stopped part-way
/// has finished most of its tasks ([`crate::resume`]), large enough that a task's start
/// costs nothing next to its work.
pub const IMAGES_PER_TASK: usize = 512;

/// DataFusion in this process: partitions of about [`IMAGES_PER_TASK`] images, `threads` of
/// them running at once, each on one core.
pub struct InProcess {
    threads: usize,
    images_per_task: usize,
    ctx: SessionContext,
}

impl InProcess {
    /// An engine running `threads` partitions in parallel (one core each).
    pub fn new(threads: usize) -> InProcess {
        let threads = threads.max(1);
        let config = SessionConfig::new().with_target_partitions(threads);
        InProcess {
            threads,
            images_per_task: IMAGES_PER_TASK,
            ctx: SessionContext::new_with_config(config),
        }
    }

    /// Images per partition (at least one partition per thread).
    pub fn with_images_per_task(mut self, n: usize) -> InProcess {
        self.images_per_task = n.max(1);
        self
    }
}

impl Engine for InProcess {
    fn partitions(&self, images: usize) -> usize {
        // A whole number of rounds, so that no thread idles in the last one.
        let tasks = images.div_ceil(self.images_per_task);
        let rounds = tasks.div_ceil(self.threads).max(1);
        (rounds * self.threads).min(images.max(1))
    }

    fn run(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, Result<Vec<RecordBatch>, EngineError>> {
        Box::pin(async move {
            let n = plan.properties().output_partitioning().partition_count();
            let ctx = self.ctx.task_ctx();
            // Each partition a task of its own, at most `threads` at once, so that partitions
            // finish one after another rather than all at the end. The first failure ends
            // the run; dropping the stream aborts the tasks still running.
            let mut tasks = futures::stream::iter(0..n)
                .map(|p| {
                    let (plan, ctx) = (plan.clone(), ctx.clone());
                    SpawnedTask::spawn(async move {
                        let stream = plan.execute(p, ctx)?;
                        datafusion::physical_plan::common::collect(stream).await
                    })
                })
                .buffer_unordered(self.threads);
            let mut batches = Vec::new();
            while let Some(task) = tasks.next().await {
                let task = task.map_err(|e| EngineError::Task(format!("a task panicked: {e}")))?;
                batches.extend(task?);
            }
            Ok(batches)
        })
    }

    fn describe(&self) -> String {
        format!("in-process, {} threads", self.threads)
    }

    fn reports_progress(&self) -> bool {
        true
    }
}
