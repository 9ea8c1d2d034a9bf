//! The physical plans of a run and the nodes they are made of, one node per file.
//!
//! Both plans are map-only (no exchange), so any engine can run them partition by partition
//! and re-run a lost partition without harm: every task writes objects whose names depend only
//! on its partition number, and reports what it wrote as one row
//! ([`TaskReport`](crate::vocab::TaskReport)), also stored beside its output.
//!
//! * featurize: [`image_list`] → [`ImageReadExec`] → `featurize(content)` → [`WriteExec`]
//!   (staged features + PCA partial sums per partition).
//! * project: [`part_list`] → [`FeatureReadExec`] → `pca_project(features)` → [`WriteExec`]
//!   (the final Parquet parts).
//!
//! Each node is described by a serde spec ([`NodeSpec`]) holding everything it needs but its
//! input: a cluster codec sends the spec and rebuilds the node with
//! [`NodeSpec::into_plan`], without knowing its fields. Stores travel as
//! [`StoreRef`](crate::store::StoreRef)s (URI + non-secret S3 settings).

mod feature_read;
mod image_read;
mod work_list;
mod write;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use serde::{Deserialize, Serialize};

pub use feature_read::{FeatureReadExec, FeatureReadSpec};
pub use image_read::{ImageReadExec, ImageReadSpec, Limits};
pub use work_list::{image_list, part_list};
pub use write::{WriteExec, WriteSpec, TASK_LOG};

/// What a fruits plan node is, apart from its input: enough to rebuild it in another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "node")]
pub enum NodeSpec {
    /// An [`ImageReadExec`].
    ImageRead(ImageReadSpec),
    /// A [`FeatureReadExec`].
    FeatureRead(FeatureReadSpec),
    /// A [`WriteExec`].
    Write(WriteSpec),
}

impl NodeSpec {
    /// The spec of `plan`'s root, if it is a fruits node.
    pub fn of(plan: &dyn ExecutionPlan) -> Option<NodeSpec> {
        if let Some(n) = plan.downcast_ref::<ImageReadExec>() {
            return Some(NodeSpec::ImageRead(n.spec().clone()));
        }
        if let Some(n) = plan.downcast_ref::<FeatureReadExec>() {
            return Some(NodeSpec::FeatureRead(n.spec().clone()));
        }
        plan.downcast_ref::<WriteExec>()
            .map(|n| NodeSpec::Write(n.spec().clone()))
    }

    /// The node this spec describes, reading `input`; stores are opened with this process's
    /// credentials.
    pub fn into_plan(self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(match self {
            NodeSpec::ImageRead(s) => Arc::new(ImageReadExec::from_spec(input, s)?),
            NodeSpec::FeatureRead(s) => Arc::new(FeatureReadExec::from_spec(input, s)?),
            NodeSpec::Write(s) => Arc::new(WriteExec::from_spec(input, s, None)?),
        })
    }
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions.max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// Implements the parts of [`ExecutionPlan`] every unary fruits node shares.
macro_rules! unary_node {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }
        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            &self.props
        }
        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![&self.input]
        }
        fn apply_expressions(
            &self,
            _: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::error::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
        fn maintains_input_order(&self) -> Vec<bool> {
            vec![true]
        }
    };
}
use unary_node;

fn only_child(children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
    let [input] = <[_; 1]>::try_from(children)
        .map_err(|_| DataFusionError::Internal("a fruits node has one input".into()))?;
    Ok(input)
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `input` with the columns `keep` passed through and `udf(arg)` added as `alias`.
pub fn with_udf_column(
    input: Arc<dyn ExecutionPlan>,
    keep: &[&str],
    udf: ScalarUDF,
    arg: &str,
    alias: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for name in keep {
        exprs.push((col(name, &schema)?, name.to_string()));
    }
    let call = ScalarFunctionExpr::try_new(
        Arc::new(udf),
        vec![col(arg, &schema)?],
        &schema,
        Arc::new(ConfigOptions::default()),
    )?;
    exprs.push((Arc::new(call), alias.to_string()));
    Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
}
