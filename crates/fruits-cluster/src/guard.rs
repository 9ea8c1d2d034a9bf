//! Executors run fruits plans only.
//!
//! A fruits task is a shuffle writer over a fruits write ([`NodeSpec::Write`]) whose inputs are fruits nodes,
//! projections and in-memory work lists. Every fruits node an executor decodes was signed with
//! the cluster token (the codec refuses others), so a task of any other shape (a plan that
//! reads or writes files through DataFusion's own nodes, sent by someone without the token) is
//! refused here, before it runs, with the executor's credentials.

use std::sync::Arc;

use ballista_core::execution_plans::ShuffleWriterExec;
use ballista_core::JobId;
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use fruits_engine::plan::NodeSpec;

/// Ballista's execution engine, for fruits plans only.
#[derive(Default)]
pub struct FruitsOnly {
    inner: DefaultExecutionEngine,
}

impl ExecutionEngine for FruitsOnly {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        check(&plan)?;
        self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )
    }
}

/// Fails unless `plan` is a shuffle writer over a fruits write of fruits nodes.
pub fn check(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let refuse = |what: &str| {
        Err(DataFusionError::Plan(format!(
            "this fruits executor runs fruits plans only; refused a task with {what}"
        )))
    };
    let Some(writer) = plan.downcast_ref::<ShuffleWriterExec>() else {
        return refuse(&format!("{} at its root", plan.name()));
    };
    let [stage] = writer.children()[..] else {
        return refuse("a shuffle writer of several inputs");
    };
    if !matches!(NodeSpec::of(stage.as_ref()), Some(NodeSpec::Write(_))) {
        return refuse(&format!("{} where a fruits write belongs", stage.name()));
    }
    let mut todo = vec![stage.clone()];
    while let Some(node) = todo.pop() {
        let allowed = NodeSpec::of(node.as_ref()).is_some()
            || node.downcast_ref::<ProjectionExec>().is_some()
            || node.downcast_ref::<DataSourceExec>().is_some_and(|d| {
                d.data_source()
                    .downcast_ref::<MemorySourceConfig>()
                    .is_some()
            });
        if !allowed {
            return refuse(&format!("a {} node", node.name()));
        }
        todo.extend(node.children().into_iter().cloned());
    }
    Ok(())
}
