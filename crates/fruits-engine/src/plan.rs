//! The physical plans of a run and the nodes they are made of.
//!
//! Both plans are map-only (no exchange), so any engine can run them partition by partition
//! and re-run a lost partition without harm: every task writes objects whose names depend only
//! on its partition number, and reports what it wrote as one row ([`TaskReport`]), also stored
//! beside its output.
//!
//! * featurize: [`image_list`] → [`ImageReadExec`] → `featurize(content)` → [`WriteExec`]
//!   (staged features + PCA partial sums per partition).
//! * project: [`part_list`] → [`FeatureReadExec`] → `pca_project(features)` → [`WriteExec`]
//!   (the final Parquet parts).
//!
//! The work lists are in-memory tables whose rows carry their partition number: a cluster
//! scheduler hands each task only its own partitions of such a table (it cannot split an
//! unknown leaf, and would run all of them in every task), and the number in the rows names
//! the task's output wherever it runs.
//!
//! Every node names its store by a [`StoreRef`] (URI + non-secret S3 settings), so that a plan
//! can be sent to another process that opens the store with its own credentials.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch, StringArray, StringBuilder, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use fruits_model::FEATURES;
use fruits_pca::PartialSums;
use fruits_store::{ImageRef, Location, S3Options};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::extract::{Progress, Skipped};
use crate::sink::PartWriter;
use crate::udf::float_list;

/// Objects read concurrently per partition (keeps an S3 pipe full).
const READ_AHEAD: usize = 16;

/// Bytes of image files read ahead per partition and not yet in a batch (bounds memory
/// whatever the files' sizes; a file larger than this is read alone).
const READ_BUDGET: u64 = 32 << 20;

/// A batch of image bytes is closed before it would grow past this (or `batch_size` rows).
const BATCH_BYTES: u64 = 32 << 20;

/// What one image may cost, checked before its bytes are read (file size, from the store's
/// answer) and before it is decoded (pixels, from its header). With the read budget and
/// batch cap above they bound a run's memory on any input (README, "Bad input").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Largest image file read, in bytes.
    pub max_file_bytes: u64,
    /// Largest image decoded, in pixels (width x height).
    pub max_pixels: u64,
}

impl Limits {
    /// The defaults: 32 MiB files, 40 million pixels (a 7,300 x 5,480 photo).
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: 32 << 20,
        max_pixels: 40_000_000,
    };

    /// Why `bytes` (of a file of `size` bytes) may not be decoded, if it may not.
    fn refuse(&self, size: u64, bytes: Option<&[u8]>) -> Option<String> {
        if size > self.max_file_bytes {
            return Some(format!(
                "file of {size} bytes exceeds the {} MiB limit (--max-file-mb)",
                self.max_file_bytes >> 20
            ));
        }
        let (w, h) = fruits_image::dimensions(bytes?).ok()?;
        ((w as u64).saturating_mul(h as u64) > self.max_pixels).then(|| {
            format!(
                "image of {w}x{h} pixels exceeds the {}-pixel limit (--max-pixels)",
                self.max_pixels
            )
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Staged features, below the staging location; removed before publishing.
pub const FEATURES_DIR: &str = "_features";
/// Staged PCA partial sums, one file per partition; removed before publishing.
pub const SUMS_DIR: &str = "_sums";
/// Task reports, one file per task; removed before publishing.
pub const REPORTS_DIR: &str = "_reports";

/// The non-secret S3 settings a plan carries to other processes (credentials never travel:
/// each process takes its own from its environment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct S3Settings {
    /// S3-compatible endpoint.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Profile of the shared AWS files.
    pub profile: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
}

impl S3Settings {
    /// The settings of `options`, without its credentials.
    pub fn of(options: &S3Options) -> S3Settings {
        S3Settings {
            endpoint: options.endpoint.clone(),
            region: options.region.clone(),
            profile: options.profile.clone(),
            allow_http: options.allow_http,
        }
    }

    /// As store options (credentials from the environment).
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            allow_http: self.allow_http,
            credentials: None,
        }
    }
}

/// A store location as a plan names it: its URI and S3 settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreRef {
    /// `file:///...` or `s3://bucket/prefix`.
    pub uri: String,
    /// How to reach S3.
    pub s3: S3Settings,
}

impl StoreRef {
    /// Opens the location with this process's credentials.
    pub fn open(&self) -> Result<Location> {
        Location::parse_with(&self.uri, &self.s3.options()).map_err(external)
    }
}

/// An already opened location and how to name it to another process.
#[derive(Debug, Clone)]
pub struct Store {
    /// How a plan names it.
    pub reference: StoreRef,
    /// The open store.
    pub location: Location,
}

impl Store {
    /// `location`, opened with `options` (kept for this process; only its settings travel).
    pub fn new(location: Location, options: &S3Options) -> Store {
        Store {
            reference: StoreRef {
                uri: location.uri(),
                s3: S3Settings::of(options),
            },
            location,
        }
    }

    /// Opens `reference` (in a process that received a plan).
    pub fn open(reference: StoreRef) -> Result<Store> {
        let location = reference.open()?;
        Ok(Store {
            reference,
            location,
        })
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The name this process reports in [`TaskReport::worker`] (`local` unless set).
pub fn worker_name() -> String {
    WORKER.get().cloned().unwrap_or_else(|| "local".to_string())
}

/// Sets [`worker_name`] once, at process start (executors name themselves).
pub fn set_worker_name(name: impl Into<String>) {
    let _ = WORKER.set(name.into());
}

static WORKER: OnceLock<String> = OnceLock::new();

/// A small runtime of its own for reads: the threads that run partitions are busy with the
/// model, and reads must keep flowing meanwhile (S3 latency would stall them otherwise).
fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static IO: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fruits-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| DataFusionError::Execution(format!("starting the I/O runtime: {e}")))
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions.max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// Schema of the staged features: `path`, `label`, `features`.
pub fn features_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("features", float_list(), false),
    ]))
}

/// Schema of the result: the staged features plus `features_pca`.
pub fn output_schema() -> SchemaRef {
    let mut fields: Vec<Field> = features_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("features_pca", float_list(), false));
    Arc::new(Schema::new(fields))
}

/// The schema of a work list: which partition each row belongs to, and what to read.
fn work_schema(names: [&str; 2]) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt32, false),
        Field::new(names[0], DataType::Utf8, false),
        Field::new(names[1], DataType::Utf8, false),
    ]))
}

/// A work list as an in-memory table: one partition per `(partition number, rows)`, each row
/// carrying its partition number. Cluster schedulers know how to hand each task only its own
/// partitions of such a table; the number in the rows names the task's output wherever it
/// runs.
fn work_list<'a>(
    names: [&str; 2],
    partitions: impl Iterator<Item = (usize, Vec<(&'a str, &'a str)>)>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = work_schema(names);
    let batches = partitions
        .map(|(p, rows)| {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt32Array::from(vec![p as u32; rows.len()])) as ArrayRef,
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                ],
            )?;
            Ok(vec![batch])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(&batches, schema, None)?)
}

/// The images to featurise: `(partition, path, label)` rows, partition `p` holding
/// `partitions[p]` (object paths of the store they are read from).
pub fn image_list(partitions: &[&[ImageRef]]) -> Result<Arc<dyn ExecutionPlan>> {
    let rows = partitions.iter().enumerate().map(|(p, images)| {
        let rows = images.iter().map(|i| (i.path.as_ref(), i.label.as_str()));
        (p, rows.collect())
    });
    work_list(["path", "label"], rows)
}

/// The staged parts to project: `(partition, part, "")` rows, one partition per
/// `(partition number, part name)`.
pub fn part_list(parts: &[(usize, String)]) -> Result<Arc<dyn ExecutionPlan>> {
    let rows = parts
        .iter()
        .map(|(p, name)| (*p, vec![(name.as_str(), "")]));
    work_list(["part", "unused"], rows)
}

/// Reads the images its input lists (`partition`, `path`, `label`) as bytes, `batch_size`
/// rows per batch: `partition`, `path` (the image's URI), `label`, `content` (null where the
/// read failed) and `read_error` (why).
#[derive(Debug)]
pub struct ImageReadExec {
    input: Arc<dyn ExecutionPlan>,
    store: Store,
    batch_size: usize,
    limits: Limits,
    props: Arc<PlanProperties>,
}

impl ImageReadExec {
    /// Reads from `store` what `input` ([`image_list`]) names; images over `limits` are set
    /// aside with the reason, unread or undecoded.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        store: Store,
        batch_size: usize,
        limits: Limits,
    ) -> Self {
        let props = properties(
            image_schema(),
            input.properties().output_partitioning().partition_count(),
        );
        ImageReadExec {
            input,
            store,
            batch_size: batch_size.max(1),
            limits,
            props,
        }
    }

    /// What one image may cost.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Where the images are.
    pub fn store(&self) -> &StoreRef {
        &self.store.reference
    }

    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// Schema of [`ImageReadExec`]'s output.
pub fn image_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt32, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("content", DataType::Binary, true),
        Field::new("read_error", DataType::Utf8, true),
    ]))
}

impl DisplayAs for ImageReadExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ImageReadExec: from {}", self.store.reference.uri)
    }
}

/// Implements the parts of [`ExecutionPlan`] every unary fruits node shares.
macro_rules! unary_node {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }
        fn properties(&self) -> &Arc<PlanProperties> {
            &self.props
        }
        fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
            vec![&self.input]
        }
        fn apply_expressions(
            &self,
            _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
        ) -> Result<TreeNodeRecursion> {
            Ok(TreeNodeRecursion::Continue)
        }
        fn maintains_input_order(&self) -> Vec<bool> {
            vec![true]
        }
    };
}

fn only_child(children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
    let [input] = <[_; 1]>::try_from(children)
        .map_err(|_| DataFusionError::Internal("a fruits node has one input".into()))?;
    Ok(input)
}

impl ExecutionPlan for ImageReadExec {
    unary_node!("ImageReadExec");

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ImageReadExec::new(
            only_child(children)?,
            self.store.clone(),
            self.batch_size,
            self.limits,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        tracing::debug!(partition, "image read");
        let location = self.store.location.clone();
        let schema = image_schema();
        let batch_size = self.batch_size;
        // One (partition, path, label) per image, in order.
        let rows = self
            .input
            .execute(partition, ctx)?
            .map_ok(|batch| {
                let p = batch
                    .column(0)
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .clone();
                let path = batch.column(1).as_string::<i32>().clone();
                let label = batch.column(2).as_string::<i32>().clone();
                futures::stream::iter((0..batch.num_rows()).map(move |i| {
                    Ok::<_, DataFusionError>((
                        p.value(i),
                        path.value(i).to_string(),
                        label.value(i).to_string(),
                    ))
                }))
            })
            .try_flatten();
        let limits = self.limits;
        // Open up to READ_AHEAD objects at once (their sizes known, bytes not yet read), take
        // each one's bytes from the read budget in list order (so the oldest read can always
        // proceed), then read the bodies concurrently.
        let budget = Arc::new(tokio::sync::Semaphore::new((READ_BUDGET >> 10) as usize));
        let reads = rows
            .map(move |row| {
                let location = location.clone();
                async move {
                    let (p, path, label) = row?;
                    // The listed path, verbatim: re-encoding it would name another object.
                    let opened = match fruits_store::stored_path(&path) {
                        Ok(path) => (location.uri_of(&path), location.open(&path).await),
                        Err(e) => (path, Err(e)),
                    };
                    Ok::<_, DataFusionError>((p, opened.0, label, opened.1))
                }
            })
            .buffered(READ_AHEAD)
            .and_then(move |(p, uri, label, opened)| {
                let budget = budget.clone();
                async move {
                    // A file refused for its size is never read: it needs no budget.
                    let opened = match opened {
                        Err(e) => Err(format!("read failed: {e}")),
                        Ok(o) => match limits.refuse(o.size(), None) {
                            Some(why) => Err(why),
                            None => Ok(o),
                        },
                    };
                    let size = opened.as_ref().map_or(0, |o| o.size());
                    let kib = (size.min(READ_BUDGET) >> 10).max(1) as u32;
                    let permit = budget.acquire_many_owned(kib).await.map_err(|e| {
                        DataFusionError::Internal(format!("read budget closed: {e}"))
                    })?;
                    Ok((p, uri, label, opened, permit))
                }
            })
            .map_ok(move |(p, uri, label, opened, permit)| async move {
                let bytes = match opened {
                    Err(why) => Err(why),
                    Ok(o) => match o.bytes().await {
                        Err(e) => Err(format!("read failed: {e}")),
                        Ok(b) => match limits.refuse(b.len() as u64, Some(&b)) {
                            Some(why) => Err(why),
                            None => Ok(b),
                        },
                    },
                };
                Ok::<_, DataFusionError>(Read {
                    partition: p,
                    uri,
                    label,
                    bytes,
                    permit: Some(permit),
                })
            })
            .try_buffered(READ_AHEAD);
        let batch_schema = schema.clone();
        let batches = batches_of(reads, batch_size, BATCH_BYTES).map(move |rows| {
            let rows = rows?;
            let mut part = Vec::with_capacity(rows.len());
            let mut path = StringBuilder::new();
            let mut label = StringBuilder::new();
            let mut content = BinaryBuilder::new();
            let mut error = StringBuilder::new();
            for row in rows {
                part.push(row.partition);
                path.append_value(&row.uri);
                label.append_value(&row.label);
                match &row.bytes {
                    Ok(b) => {
                        content.append_value(b);
                        error.append_null();
                    }
                    Err(e) => {
                        content.append_null();
                        error.append_value(e);
                    }
                }
                // `row`'s bytes are released here (the builder holds a copy).
            }
            Ok(RecordBatch::try_new(
                batch_schema.clone(),
                vec![
                    Arc::new(UInt32Array::from(part)),
                    Arc::new(path.finish()),
                    Arc::new(label.finish()),
                    Arc::new(content.finish()),
                    Arc::new(error.finish()),
                ],
            )?)
        });
        // Produce on the I/O runtime, one batch ahead; stops when the consumer goes away.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let producer = io_runtime()?.spawn(async move {
            let mut batches = std::pin::pin!(batches);
            while let Some(batch) = batches.next().await {
                if tx.send(batch).await.is_err() {
                    break;
                }
            }
        });
        let guard = AbortOnDrop(producer);
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|b| (b, (rx, guard)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One image read (or refused), holding its share of the read budget until it is batched.
struct Read {
    partition: u32,
    uri: String,
    label: String,
    bytes: std::result::Result<bytes::Bytes, String>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// `reads` in order, grouped into batches of at most `rows` reads and, where a batch has
/// more than one, at most `max_bytes` bytes; an error ends the stream. A read gives its share
/// of the read budget back as it is taken into a batch (from then on the batch cap bounds
/// it), so the oldest read waiting for budget is never blocked by a batch waiting for it.
fn batches_of(
    reads: impl futures::Stream<Item = Result<Read>> + Send + 'static,
    rows: usize,
    max_bytes: u64,
) -> impl futures::Stream<Item = Result<Vec<Read>>> + Send + 'static {
    let reads = Box::pin(reads);
    futures::stream::unfold(
        (reads, None::<Read>, false),
        move |(mut reads, mut next, done)| async move {
            if done && next.is_none() {
                return None;
            }
            let mut batch: Vec<Read> = Vec::new();
            let mut bytes = 0u64;
            let size = |r: &Read| r.bytes.as_ref().map(|b| b.len() as u64).unwrap_or(0);
            let mut finished = done;
            loop {
                let read = match next.take() {
                    Some(r) => r,
                    None if finished => break,
                    None => match reads.next().await {
                        Some(Ok(mut r)) => {
                            r.permit = None;
                            r
                        }
                        Some(Err(e)) => return Some((Err(e), (reads, None, true))),
                        None => {
                            finished = true;
                            break;
                        }
                    },
                };
                if !batch.is_empty() && bytes + size(&read) > max_bytes {
                    next = Some(read);
                    break;
                }
                bytes += size(&read);
                batch.push(read);
                if batch.len() >= rows {
                    break;
                }
            }
            if batch.is_empty() {
                return None;
            }
            Some((Ok(batch), (reads, next, finished)))
        },
    )
}

/// Aborts a spawned task when the stream that consumes it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads back the staged feature parts its input lists ([`part_list`]): `partition`,
/// `path`, `label`, `features`.
#[derive(Debug)]
pub struct FeatureReadExec {
    input: Arc<dyn ExecutionPlan>,
    staging: Store,
    props: Arc<PlanProperties>,
}

/// Schema of [`FeatureReadExec`]'s output.
pub fn staged_schema() -> SchemaRef {
    let mut fields = vec![Field::new("partition", DataType::UInt32, false)];
    fields.extend(
        features_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone()),
    );
    Arc::new(Schema::new(fields))
}

impl FeatureReadExec {
    /// Reads below `staging` the parts `input` names.
    pub fn new(input: Arc<dyn ExecutionPlan>, staging: Store) -> Self {
        let props = properties(
            staged_schema(),
            input.properties().output_partitioning().partition_count(),
        );
        FeatureReadExec {
            input,
            staging,
            props,
        }
    }

    /// The staging location.
    pub fn staging(&self) -> &StoreRef {
        &self.staging.reference
    }
}

impl DisplayAs for FeatureReadExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FeatureReadExec: from {}", self.staging.reference.uri)
    }
}

impl ExecutionPlan for FeatureReadExec {
    unary_node!("FeatureReadExec");

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(FeatureReadExec::new(
            only_child(children)?,
            self.staging.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let location = self.staging.location.clone();
        let parts = self
            .input
            .execute(partition, ctx)?
            .map_ok(|batch| {
                let p = batch
                    .column(0)
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .clone();
                let part = batch.column(1).as_string::<i32>().clone();
                futures::stream::iter((0..batch.num_rows()).map(move |i| {
                    Ok::<_, DataFusionError>((p.value(i), part.value(i).to_string()))
                }))
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
    .map(move |batch| {
        let batch = batch?;
        let mut columns = vec![Arc::new(UInt32Array::from(vec![p; batch.num_rows()])) as ArrayRef];
        columns.extend(batch.columns().iter().cloned());
        Ok(RecordBatch::try_new(staged_schema(), columns)?)
    })
}

/// Schema of the one row each write task returns (see [`TaskReport`]).
pub fn report_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("images", DataType::UInt64, false),
        Field::new("skipped", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("worker", DataType::Utf8, false),
    ]))
}

/// What one write task did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Its partition.
    pub partition: usize,
    /// Rows it wrote.
    pub rows: u64,
    /// Images it was given.
    pub images: u64,
    /// Images it set aside, and why.
    pub skipped: Vec<Skipped>,
    /// Distinct labels among its rows.
    pub labels: Vec<String>,
    /// The process that ran it ([`worker_name`]).
    pub worker: String,
}

impl TaskReport {
    fn to_batch(&self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            report_schema(),
            vec![
                Arc::new(UInt32Array::from(vec![self.partition as u32])) as ArrayRef,
                Arc::new(UInt64Array::from(vec![self.rows])),
                Arc::new(UInt64Array::from(vec![self.images])),
                Arc::new(StringArray::from(vec![to_json(&self.skipped)])),
                Arc::new(StringArray::from(vec![to_json(&self.labels)])),
                Arc::new(StringArray::from(vec![self.worker.clone()])),
            ],
        )?)
    }

    /// The reports in `batches` (rows of [`report_schema`]).
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Vec<TaskReport>> {
        let bad = |what: &str| DataFusionError::Internal(format!("task report: bad {what}"));
        let mut out = Vec::new();
        for b in batches {
            if b.num_columns() != 6 {
                return Err(bad("shape"));
            }
            let partition = b
                .column(0)
                .as_primitive_opt::<arrow::datatypes::UInt32Type>();
            let rows = b
                .column(1)
                .as_primitive_opt::<arrow::datatypes::UInt64Type>();
            let images = b
                .column(2)
                .as_primitive_opt::<arrow::datatypes::UInt64Type>();
            let (Some(partition), Some(rows), Some(images)) = (partition, rows, images) else {
                return Err(bad("counts"));
            };
            let text = |i: usize| {
                b.column(i)
                    .as_string_opt::<i32>()
                    .ok_or_else(|| bad("text"))
            };
            let (skipped, labels, worker) = (text(3)?, text(4)?, text(5)?);
            for i in 0..b.num_rows() {
                out.push(TaskReport {
                    partition: partition.value(i) as usize,
                    rows: rows.value(i),
                    images: images.value(i),
                    skipped: serde_json::from_str(skipped.value(i))
                        .map_err(|_| bad("skipped list"))?,
                    labels: serde_json::from_str(labels.value(i)).map_err(|_| bad("label list"))?,
                    worker: worker.value(i).to_string(),
                });
            }
        }
        Ok(out)
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// Which write a [`WriteExec`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Featurised rows (`path`, `label`, `read_error`, `f`) → staged features without the
    /// skipped images, and the partition's PCA partial sums.
    Features,
    /// Projected rows (`path`, `label`, `features`, `features_pca`) → a final part.
    Output,
}

/// Writes each input partition to the staging location and returns one [`TaskReport`] row.
/// Its object names depend only on the partition, so a re-run task overwrites, never adds.
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    staging: Store,
    kind: WriteKind,
    progress: Option<Arc<Progress>>,
    props: Arc<PlanProperties>,
}

impl WriteExec {
    /// Writes `input` below `staging`; `progress` (in-process only) counts images as they go.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        staging: Store,
        kind: WriteKind,
        progress: Option<Arc<Progress>>,
    ) -> Self {
        let props = properties(
            report_schema(),
            input.properties().output_partitioning().partition_count(),
        );
        WriteExec {
            input,
            staging,
            kind,
            progress,
            props,
        }
    }

    /// The staging location.
    pub fn staging(&self) -> &StoreRef {
        &self.staging.reference
    }

    /// What it writes.
    pub fn kind(&self) -> WriteKind {
        self.kind
    }

    /// Its input.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

/// Name of partition `p`'s part below `dir` ("" for the output's top level).
pub fn part_name(dir: &str, p: usize) -> String {
    if dir.is_empty() {
        format!("part-{p:05}.parquet")
    } else {
        format!("{dir}/part-{p:05}.parquet")
    }
}

/// Name of the report partition `p`'s task of `kind` stores last, once its output is complete
/// (the run's evidence if the engine loses the task's answer).
pub fn report_name(kind: WriteKind, p: usize) -> String {
    let kind = match kind {
        WriteKind::Features => "features",
        WriteKind::Output => "output",
    };
    format!("{REPORTS_DIR}/{kind}-{p:05}.json")
}

/// Name of partition `p`'s PCA partial sums.
pub fn sums_name(p: usize) -> String {
    format!("{SUMS_DIR}/part-{p:05}.sums")
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WriteExec: {:?} to {}",
            self.kind, self.staging.reference.uri
        )
    }
}

impl ExecutionPlan for WriteExec {
    unary_node!("WriteExec");

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(WriteExec::new(
            only_child(children)?,
            self.staging.clone(),
            self.kind,
            self.progress.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        tracing::debug!(partition, kind = ?self.kind, "write");
        let input = self.input.execute(partition, ctx)?;
        let staged = self.staging.location.clone();
        let progress = self.progress.clone();
        let kind = self.kind;
        let report = futures::stream::once(async move {
            let (p, input) = first_partition(input).await?;
            let report = match kind {
                WriteKind::Features => write_features(p, input, &staged, progress.as_deref()).await,
                WriteKind::Output => write_output(p, input, &staged).await,
            }
            .map_err(|e| DataFusionError::Execution(format!("partition {p}: {e}")))?;
            staged
                .put_rel(&report_name(kind, p), to_json(&report).into_bytes())
                .await
                .map_err(external)?;
            report.to_batch()
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            report_schema(),
            report,
        )))
    }
}

/// The partition number the rows of `input` carry in their first column (every partition of
/// a fruits plan has rows), and `input` with nothing consumed.
async fn first_partition(
    mut input: SendableRecordBatchStream,
) -> Result<(usize, SendableRecordBatchStream)> {
    let mut seen = Vec::new();
    let p = loop {
        let Some(batch) = input.next().await else {
            return Err(DataFusionError::Internal(
                "a fruits task received no rows".into(),
            ));
        };
        let batch = batch?;
        if batch.num_rows() > 0 {
            let column = batch
                .column(0)
                .as_primitive_opt::<arrow::datatypes::UInt32Type>();
            let p = column
                .ok_or_else(|| DataFusionError::Internal("rows without a partition".into()))?
                .value(0);
            seen.push(Ok(batch));
            break p as usize;
        }
    };
    let schema = input.schema();
    let rest = futures::stream::iter(seen).chain(input);
    Ok((p, Box::pin(RecordBatchStreamAdapter::new(schema, rest))))
}

/// Featurised rows to a staged part, the partition's PCA partial sums beside it.
async fn write_features(
    p: usize,
    mut stream: SendableRecordBatchStream,
    staged: &Location,
    progress: Option<&Progress>,
) -> std::result::Result<TaskReport, crate::EngineError> {
    let mut writer = PartWriter::create(staged, &part_name(FEATURES_DIR, p), features_schema())?;
    let mut sums = PartialSums::new(FEATURES);
    let mut skipped = Vec::new();
    let mut labels = std::collections::BTreeSet::new();
    let mut images = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let path = batch.column(1).as_string::<i32>();
        let label = batch.column(2).as_string::<i32>();
        let read_error = batch.column(3).as_string::<i32>();
        let f = batch.column(4).as_struct();
        let features = f.column(0).as_list::<i32>();
        let error = f.column(1).as_string::<i32>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let ok = features.is_valid(i);
            keep.push(ok);
            if ok {
                labels.insert(label.value(i).to_string());
            } else {
                let why = if read_error.is_valid(i) {
                    read_error.value(i)
                } else if error.is_valid(i) {
                    error.value(i)
                } else {
                    "no content"
                };
                tracing::warn!(path = path.value(i), error = why, "skipped image");
                skipped.push(Skipped {
                    path: path.value(i).to_string(),
                    error: why.to_string(),
                });
            }
        }
        let mask = arrow::array::BooleanArray::from(keep);
        let good = |a: &ArrayRef| arrow::compute::filter(a.as_ref(), &mask);
        let features_kept = good(f.column(0))?;
        let rows = RecordBatch::try_new(
            features_schema(),
            vec![
                good(batch.column(1))?,
                good(batch.column(2))?,
                features_kept.clone(),
            ],
        )?;
        let lists = features_kept.as_list::<i32>();
        let offsets = lists.value_offsets();
        let (from, to) = (offsets[0] as usize, offsets[lists.len()] as usize);
        let values = lists
            .values()
            .as_primitive::<arrow::datatypes::Float32Type>();
        sums.add_rows(&values.values()[from..to]);
        writer.write(&rows).await?;
        images += batch.num_rows() as u64;
        if let Some(progress) = progress {
            progress
                .done
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            progress.skipped.fetch_add(
                (batch.num_rows() - rows.num_rows()) as u64,
                Ordering::Relaxed,
            );
        }
    }
    let rows = writer.close().await?;
    staged.put_rel(&sums_name(p), sums.to_bytes()).await?;
    Ok(TaskReport {
        partition: p,
        rows,
        images,
        skipped,
        labels: labels.into_iter().collect(),
        worker: worker_name(),
    })
}

/// Projected rows to a final part.
async fn write_output(
    p: usize,
    mut stream: SendableRecordBatchStream,
    staged: &Location,
) -> std::result::Result<TaskReport, crate::EngineError> {
    let mut writer = PartWriter::create(staged, &part_name("", p), output_schema())?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // The columns after `partition`, declared non-null as they are.
        let batch = RecordBatch::try_new(output_schema(), batch.columns()[1..].to_vec())?;
        writer.write(&batch).await?;
    }
    let rows = writer.close().await?;
    Ok(TaskReport {
        partition: p,
        rows,
        images: rows,
        skipped: Vec::new(),
        labels: Vec::new(),
        worker: worker_name(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(i: u32, len: usize) -> Result<Read> {
        Ok(Read {
            partition: 0,
            uri: i.to_string(),
            label: String::new(),
            bytes: Ok(bytes::Bytes::from(vec![0u8; len])),
            permit: None,
        })
    }

    #[tokio::test]
    async fn batches_close_at_rows_or_bytes_and_keep_order() {
        let reads = futures::stream::iter(vec![
            read(0, 10),
            read(1, 10),
            read(2, 100),
            read(3, 1),
            read(4, 1),
            read(5, 1),
            read(6, 1),
        ]);
        let batches: Vec<Vec<String>> = batches_of(reads, 3, 50)
            .map(|b| b.unwrap().into_iter().map(|r| r.uri).collect())
            .collect()
            .await;
        assert_eq!(
            batches,
            [vec!["0", "1"], vec!["2"], vec!["3", "4", "5"], vec!["6"]]
        );
    }

    #[test]
    fn limits_refuse_big_files_unread_and_big_images_undecoded() {
        let limits = Limits {
            max_file_bytes: 1 << 20,
            max_pixels: 100,
        };
        assert!(limits
            .refuse(2 << 20, None)
            .unwrap()
            .contains("1 MiB limit"));
        assert_eq!(limits.refuse(10, None), None);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&11u32.to_be_bytes());
        png.extend_from_slice(&10u32.to_be_bytes());
        let why = limits.refuse(30, Some(&png)).unwrap();
        assert!(
            why.contains("11x10 pixels exceeds the 100-pixel limit"),
            "{why}"
        );
        png[19] = 9;
        assert_eq!(limits.refuse(30, Some(&png)), None);
    }
}
