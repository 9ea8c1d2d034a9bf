//! [`WriteExec`]: writes each partition below the staging location and returns one
//! [`TaskReport`] row.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use fruits_model::FEATURES;
use fruits_pca::PartialSums;
use fruits_store::Location;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{external, only_child, properties, unary_node};
use crate::error::EngineError;
use crate::process::worker_name;
use crate::reduction::Running;
use crate::sink::PartWriter;
use crate::store::{Store, StoreRef};
use crate::vocab::names::{part_name, report_name, FEATURES_DIR, OWNER_FILE};
use crate::vocab::schema::{
    features_schema, output_schema, partition_of, report_schema, FeatureRows, FeaturizedRows,
    OutputRows,
};
use crate::vocab::{Progress, Skipped, TaskReport, WriteKind};

/// What a [`WriteExec`] is, apart from its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteSpec {
    /// Where it writes.
    pub staging: StoreRef,
    /// What it writes.
    pub kind: WriteKind,
    /// The run it works for: a featurize task finding that another run has taken the staging
    /// over ([`OWNER_FILE`]) stops, as a job left behind by a killed client must.
    #[serde(default)]
    pub run: Option<String>,
}

/// Writes each input partition to the staging location and returns one [`TaskReport`] row.
/// Its object names depend only on the partition, so a re-run task overwrites, never adds.
///
/// * [`WriteKind::Features`]: featurised rows ([`FeaturizedRows`]) → staged features without
///   the skipped images, and the partition's PCA partial sums.
/// * [`WriteKind::Output`]: projected rows ([`OutputRows`]) → a final part.
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WriteSpec,
    location: Location,
    progress: Option<Arc<Progress>>,
    props: Arc<PlanProperties>,
}

impl WriteExec {
    /// Writes `input` below `staging`; `progress` (in-process only) counts images as they go.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        staging: &Store,
        kind: WriteKind,
        progress: Option<Arc<Progress>>,
    ) -> Self {
        let spec = WriteSpec {
            staging: staging.reference.clone(),
            kind,
            run: None,
        };
        WriteExec::with_location(input, spec, staging.location.clone(), progress)
    }

    /// The node `spec` describes, its store opened in this process.
    pub fn from_spec(
        input: Arc<dyn ExecutionPlan>,
        spec: WriteSpec,
        progress: Option<Arc<Progress>>,
    ) -> Result<Self> {
        let location = spec.staging.open()?;
        Ok(WriteExec::with_location(input, spec, location, progress))
    }

    fn with_location(
        input: Arc<dyn ExecutionPlan>,
        spec: WriteSpec,
        location: Location,
        progress: Option<Arc<Progress>>,
    ) -> Self {
        let props = properties(
            report_schema(),
            input.properties().output_partitioning().partition_count(),
        );
        WriteExec {
            input,
            spec,
            location,
            progress,
            props,
        }
    }

    /// The node working for run `run` (see [`WriteSpec::run`]).
    pub fn for_run(mut self, run: &str) -> Self {
        self.spec.run = Some(run.to_string());
        self
    }

    /// What it is.
    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WriteExec: {:?} to {}",
            self.spec.kind, self.spec.staging.uri
        )
    }
}

impl ExecutionPlan for WriteExec {
    unary_node!("WriteExec");

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(WriteExec::with_location(
            only_child(children)?,
            self.spec.clone(),
            self.location.clone(),
            self.progress.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let kind = self.spec.kind;
        let run = self.spec.run.clone();
        tracing::debug!(partition, ?kind, "write");
        let task = ctx
            .task_id()
            .unwrap_or_else(|| format!("partition {partition}"));
        let input = self.input.execute(partition, ctx)?;
        let staged = self.location.clone();
        let progress = self.progress.clone();
        let started = std::time::Instant::now();
        let report = futures::stream::once(async move {
            let done = match superseded(&staged, run.as_deref()).await {
                Some(e) => Err(e),
                None => write_partition(kind, input, &staged, progress.as_deref()).await,
            };
            let seconds = started.elapsed().as_secs_f64();
            match &done {
                Ok(r) => tracing::info!(
                    target: TASK_LOG,
                    "{task}: {kind:?} of partition {}: {} images, {} skipped, {} rows in {seconds:.2} s",
                    r.partition,
                    r.images,
                    r.skipped.len(),
                    r.rows
                ),
                Err(e) => {
                    tracing::info!(target: TASK_LOG, "{task}: failed after {seconds:.2} s: {e}")
                }
            }
            done?.to_batch()
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            report_schema(),
            report,
        )))
    }
}

/// The `tracing` target of the one line each task writes when it ends (shown by executors).
pub const TASK_LOG: &str = "fruits::task";

/// The error to stop with if the staging now belongs to a run other than `run`.
async fn superseded(staged: &Location, run: Option<&str>) -> Option<DataFusionError> {
    let run = run?;
    let owner = staged.get_rel(OWNER_FILE).await.ok()?;
    (owner != run.as_bytes()).then(|| {
        DataFusionError::Execution(format!(
            "run {run} was superseded by run {} of the same command",
            String::from_utf8_lossy(&owner)
        ))
    })
}

/// Writes the rows of one partition, makes them durable, then writes its report (made
/// durable too): a partition with a report is whole, whatever stops the process.
async fn write_partition(
    kind: WriteKind,
    input: SendableRecordBatchStream,
    staged: &Location,
    progress: Option<&Progress>,
) -> Result<TaskReport> {
    let (p, input) = first_partition(input).await?;
    let fail = |e: EngineError| DataFusionError::Execution(format!("partition {p}: {e}"));
    let (report, sums) = match kind {
        WriteKind::Features => {
            let running = Running::start(staged);
            let (report, sums) = write_features(p, input, staged, progress)
                .await
                .map_err(fail)?;
            (report, Some((running, sums)))
        }
        WriteKind::Output => (write_output(p, input, staged).await.map_err(fail)?, None),
    };
    let part = match kind {
        WriteKind::Features => part_name(FEATURES_DIR, p),
        WriteKind::Output => part_name("", p),
    };
    staged.sync_rel(&part).map_err(external)?;
    let report_at = report_name(kind, p);
    staged
        .put_rel(&report_at, report.to_json())
        .await
        .map_err(external)?;
    staged.sync_rel(&report_at).map_err(external)?;
    // Part and report are durable: the partition's sums join the process's.
    if let Some((running, sums)) = sums {
        running.done(p, &sums).map_err(fail)?;
    }
    Ok(report)
}

/// The partition number the rows of `input` carry (every partition of a fruits plan has
/// rows), and `input` with nothing consumed.
async fn first_partition(
    mut input: SendableRecordBatchStream,
) -> Result<(usize, SendableRecordBatchStream)> {
    let (p, first) = loop {
        let Some(batch) = input.next().await else {
            return Err(DataFusionError::Internal(
                "a fruits task received no rows".into(),
            ));
        };
        let batch = batch?;
        if let Some(p) = partition_of(&batch)? {
            break (p as usize, batch);
        }
    };
    let schema = input.schema();
    let rest = futures::stream::iter([Ok(first)]).chain(input);
    Ok((p, Box::pin(RecordBatchStreamAdapter::new(schema, rest))))
}

/// Featurised rows to a staged part; returns the partition's report and PCA partial sums.
async fn write_features(
    p: usize,
    mut stream: SendableRecordBatchStream,
    staged: &Location,
    progress: Option<&Progress>,
) -> std::result::Result<(TaskReport, PartialSums), EngineError> {
    let mut writer = PartWriter::create(staged, &part_name(FEATURES_DIR, p), features_schema())?;
    let mut sums = PartialSums::new(FEATURES);
    let mut skipped = Vec::new();
    let mut labels = std::collections::BTreeSet::new();
    let mut weights: Option<String> = None;
    let mut images = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let f = FeaturizedRows::try_from(&batch)?;
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let failure = f.failure(i);
            keep.push(failure.is_none());
            if let Some(why) = failure {
                tracing::warn!(path = f.path.value(i), error = why, "skipped image");
                skipped.push(Skipped {
                    path: f.path.value(i).to_string(),
                    error: why.to_string(),
                });
            } else {
                labels.insert(f.label.value(i).to_string());
                let used = f.weights.is_valid(i).then(|| f.weights.value(i));
                match (&weights, used) {
                    (None, Some(w)) => weights = Some(w.to_string()),
                    (Some(seen), Some(w)) if seen != w => {
                        return Err(EngineError::Task(format!(
                            "one task featurised with two sets of weights ({seen} and {w})"
                        )))
                    }
                    _ => {}
                }
            }
        }
        let mask = BooleanArray::from(keep);
        let good = |a: &dyn Array| -> Result<ArrayRef> { Ok(arrow::compute::filter(a, &mask)?) };
        let (path, label, features) = (good(f.path)?, good(f.label)?, good(f.features)?);
        let kept = RecordBatch::try_new(features_schema(), vec![path, label, features])?;
        let rows = FeatureRows::try_from(&kept)?;
        sums.add_rows(rows.values()?);
        writer.write(&kept).await?;
        images += batch.num_rows() as u64;
        if let Some(progress) = progress {
            progress
                .done
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            progress.skipped.fetch_add(
                (batch.num_rows() - kept.num_rows()) as u64,
                Ordering::Relaxed,
            );
        }
    }
    let rows = writer.close().await?;
    let report = TaskReport {
        partition: p,
        rows,
        images,
        skipped,
        labels: labels.into_iter().collect(),
        worker: worker_name(),
        weights,
    };
    Ok((report, sums))
}

/// Projected rows to a final part.
async fn write_output(
    p: usize,
    mut stream: SendableRecordBatchStream,
    staged: &Location,
) -> std::result::Result<TaskReport, EngineError> {
    let mut writer = PartWriter::create(staged, &part_name("", p), output_schema())?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        writer
            .write(&OutputRows::try_from(&batch)?.batch()?)
            .await?;
    }
    let rows = writer.close().await?;
    Ok(TaskReport {
        partition: p,
        rows,
        images: rows,
        skipped: Vec::new(),
        labels: Vec::new(),
        worker: worker_name(),
        weights: None,
    })
}
