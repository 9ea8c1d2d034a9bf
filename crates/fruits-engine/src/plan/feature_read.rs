//! [`FeatureReadExec`]: reads back the staged feature parts a work list names.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use fruits_store::Location;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{only_child, properties, unary_node};
use crate::store::{Store, StoreRef};
use crate::vocab::schema::{staged_schema, FeatureRows, PartListRows};

/// What a [`FeatureReadExec`] is, apart from its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeatureReadSpec {
    /// The staging location the parts are below.
    pub staging: StoreRef,
}

/// Reads back the staged feature parts its input lists ([`part_list`](super::part_list)) as
/// rows of [`staged_schema`].
#[derive(Debug)]
pub struct FeatureReadExec {
    input: Arc<dyn ExecutionPlan>,
    spec: FeatureReadSpec,
    location: Location,
    props: Arc<PlanProperties>,
}

impl FeatureReadExec {
    /// Reads below `staging` the parts `input` names.
    pub fn new(input: Arc<dyn ExecutionPlan>, staging: &Store) -> Self {
        let spec = FeatureReadSpec {
            staging: staging.reference.clone(),
        };
        FeatureReadExec::with_location(input, spec, staging.location.clone())
    }

    /// The node `spec` describes, its store opened in this process.
    pub fn from_spec(input: Arc<dyn ExecutionPlan>, spec: FeatureReadSpec) -> Result<Self> {
        let location = spec.staging.open()?;
        Ok(FeatureReadExec::with_location(input, spec, location))
    }

    fn with_location(
        input: Arc<dyn ExecutionPlan>,
        spec: FeatureReadSpec,
        location: Location,
    ) -> Self {
        let props = properties(
            staged_schema(),
            input.properties().output_partitioning().partition_count(),
        );
        FeatureReadExec {
            input,
            spec,
            location,
            props,
        }
    }

    /// What it is.
    pub fn spec(&self) -> &FeatureReadSpec {
        &self.spec
    }
}

impl DisplayAs for FeatureReadExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FeatureReadExec: from {}", self.spec.staging.uri)
    }
}

impl ExecutionPlan for FeatureReadExec {
    unary_node!("FeatureReadExec");

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(FeatureReadExec::with_location(
            only_child(children)?,
            self.spec.clone(),
            self.location.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let location = self.location.clone();
        let parts = self
            .input
            .execute(partition, ctx)?
            .and_then(|batch| async move {
                let rows = PartListRows::try_from(&batch)?;
                let parts: Vec<_> = (0..batch.num_rows())
                    .map(|i| {
                        Ok::<_, DataFusionError>((
                            rows.partition.value(i),
                            rows.part.value(i).to_string(),
                        ))
                    })
                    .collect();
                Ok(futures::stream::iter(parts))
            })
            .try_flatten();
        let stream = parts
            .map_ok(move |(p, rel)| read_part(location.clone(), p, rel))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            staged_schema(),
            stream,
        )))
    }
}

/// The rows of one staged part, with the partition number in front.
fn read_part(
    location: Location,
    p: u32,
    rel: String,
) -> impl futures::Stream<Item = Result<RecordBatch>> {
    // Streams the part (its row groups are small); deprecated in parquet 59 in favour of
    // hand-written readers, still the reference object_store reader.
    #[allow(deprecated)]
    let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
        location.store().clone(),
        location.child(&rel),
    );
    let uri = location.uri_of(&location.child(&rel));
    futures::stream::once(async move {
        parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .and_then(|b| b.build())
            .map(|s| s.map_err(|e| DataFusionError::External(Box::new(e))))
            .map_err(|e| DataFusionError::Execution(format!("reading {uri}: {e}")))
    })
    .try_flatten()
    .map(move |batch| FeatureRows::try_from(&batch?)?.batch(Some(p)))
}
