//! Where a plan runs: the [`Engine`] seam. [`InProcess`] runs it here with DataFusion; the
//! `fruits-cluster` crate provides one that runs it on a Ballista cluster. The plans are the
//! same either way.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::future::BoxFuture;

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

/// DataFusion in this process: one partition per thread, all of them at once.
pub struct InProcess {
    threads: usize,
    ctx: SessionContext,
}

impl InProcess {
    /// An engine running `threads` partitions in parallel (one core each).
    pub fn new(threads: usize) -> InProcess {
        let threads = threads.max(1);
        let config = SessionConfig::new().with_target_partitions(threads);
        InProcess {
            threads,
            ctx: SessionContext::new_with_config(config),
        }
    }
}

impl Engine for InProcess {
    fn partitions(&self, images: usize) -> usize {
        self.threads.min(images.max(1))
    }

    fn run(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, Result<Vec<RecordBatch>, EngineError>> {
        Box::pin(
            async move { Ok(datafusion::physical_plan::collect(plan, self.ctx.task_ctx()).await?) },
        )
    }

    fn describe(&self) -> String {
        format!("in-process, {} threads", self.threads)
    }

    fn reports_progress(&self) -> bool {
        true
    }
}
