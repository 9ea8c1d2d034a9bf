//! The data path of `fruits extract` and `fruits project`, top to bottom.
//!
//! 1. List the input once → `(path, label)` rows split into partitions.
//! 2. Map stage (DataFusion plan `featurize(content)` over the image source): per partition,
//!    stream `(path, label, features)` into a staged Parquet part and fold the features into
//!    the partition's PCA partial sums; bad images are set aside with their error. No shuffle.
//! 3. Merge the partial sums, fit the scaler + PCA (or take a saved one), save it to `_pca/`.
//! 4. Map stage (plan `pca_project(features)` over the staged parts): write the final parts.
//! 5. Check row counts, write `_errors.json`, publish with `_SUCCESS` last.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{col, ParquetReadOptions, SessionConfig, SessionContext};
use fruits_model::{MobileNetV2, FEATURES};
use fruits_pca::{Components, PartialSums, PcaModel};
use fruits_store::{Location, Staging};
use futures::StreamExt;
use serde::Serialize;

use crate::sink::PartWriter;
use crate::source::image_table;
use crate::udf::{float_list, Featurize, PcaProject};
use crate::EngineError;

/// Where the PCA comes from.
#[derive(Debug, Clone)]
pub enum PcaSpec {
    /// Fit on this run's features.
    Fit(Components),
    /// Apply a saved model (`fruits project`).
    Apply(Arc<PcaModel>),
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// Input URI (folder, `file://`, `s3://`).
    pub input: String,
    /// Output URI.
    pub output: String,
    /// The network, loaded once and shared by every partition.
    pub model: Arc<MobileNetV2>,
    /// Fit or apply.
    pub pca: PcaSpec,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Images per model batch.
    pub batch_size: usize,
    /// Partitions run in parallel (one core each).
    pub threads: usize,
    /// S3 settings that override the environment.
    pub s3: fruits_store::S3Options,
}

/// Live counters a progress display can poll.
#[derive(Debug, Default)]
pub struct Progress {
    /// Images listed (known after listing).
    pub total: AtomicU64,
    /// Images featurised or skipped so far.
    pub done: AtomicU64,
    /// Images skipped so far.
    pub skipped: AtomicU64,
}

/// An image that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its URI.
    pub path: String,
    /// One line: what went wrong.
    pub error: String,
}

/// What a run did, for people and for `_SUCCESS`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Input URI.
    pub input: String,
    /// Output URI.
    pub output: String,
    /// Images listed.
    pub images: u64,
    /// Rows written.
    pub rows: u64,
    /// Images skipped (see `_errors.json`).
    pub skipped: u64,
    /// Distinct labels among the rows written.
    pub classes: usize,
    /// PCA components.
    pub k: usize,
    /// Share of variance they keep.
    pub variance_kept: f64,
    /// The Parquet parts of the result and their row counts (the manifest in `_SUCCESS`).
    pub files: Vec<PartFile>,
    /// Seconds: listing, featurising, fitting, projecting + writing, publishing, total.
    pub seconds: StageSeconds,
    /// The first skipped images (all of them are in `_errors.json`).
    #[serde(skip)]
    pub skipped_sample: Vec<Skipped>,
}

/// One Parquet part of a result.
#[derive(Debug, Clone, Serialize)]
pub struct PartFile {
    /// File name inside the output.
    pub name: String,
    /// Rows it holds.
    pub rows: u64,
}

/// Wall time of each stage, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSeconds {
    /// Listing the input.
    pub list: f64,
    /// Reading, decoding, resizing and running the model.
    pub featurize: f64,
    /// Merging partial sums and fitting the PCA.
    pub fit: f64,
    /// Projecting and writing the final parts.
    pub project: f64,
    /// Checking and publishing.
    pub commit: f64,
    /// All of it.
    pub total: f64,
}

impl Summary {
    /// Images per second over the whole run.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.total.max(1e-9)
    }
}

/// Staged features, below the staging location; removed before publishing.
const FEATURES_DIR: &str = "_features";

fn features_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("features", float_list(), false),
    ]))
}

fn output_schema() -> SchemaRef {
    let mut fields: Vec<Field> = features_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("features_pca", float_list(), false));
    Arc::new(Schema::new(fields))
}

/// A run id unique enough for staging names: time and process.
fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", t.as_millis(), std::process::id())
}

fn session(threads: usize, batch_size: usize) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(threads.max(1))
        .with_batch_size(batch_size.max(1));
    // Read strings back as the Utf8 we wrote, not as views.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    SessionContext::new_with_config(config)
}

/// Runs the whole job; on failure the staged output is removed and any old output is untouched.
pub async fn extract(cfg: &ExtractConfig, progress: Arc<Progress>) -> Result<Summary, EngineError> {
    let started = Instant::now();
    let mut seconds = StageSeconds::default();
    let input = Location::parse_with(&cfg.input, &cfg.s3)?;
    let output = Location::parse_with(&cfg.output, &cfg.s3)?;

    // Refuse an existing output before any work (begin() checks again before staging).
    if !cfg.overwrite && output.exists().await? {
        return Err(fruits_store::StoreError::OutputExists(output.uri()).into());
    }

    // 1. List.
    let t = Instant::now();
    let images = input.list_images().await?;
    if images.is_empty() {
        return Err(EngineError::NoImages(input.uri()));
    }
    progress.total.store(images.len() as u64, Ordering::Relaxed);
    seconds.list = t.elapsed().as_secs_f64();

    let staging = Staging::begin(&output, cfg.overwrite, &run_id()).await?;
    let result = run_stages(cfg, &input, &images, &staging, &progress, &mut seconds).await;
    match result {
        Ok(Staged {
            rows,
            classes,
            skipped,
            pca,
            files,
        }) => {
            let t = Instant::now();
            let mut summary = Summary {
                input: input.uri(),
                output: output.uri(),
                images: images.len() as u64,
                rows,
                skipped: skipped.len() as u64,
                classes,
                k: pca.k(),
                variance_kept: pca.variance_kept(),
                files,
                seconds,
                skipped_sample: skipped.iter().take(5).cloned().collect(),
            };
            let errors = serde_json::to_vec_pretty(&skipped).unwrap_or_default();
            if let Err(e) = staging.location().put_rel("_errors.json", errors).await {
                let _ = staging.abort().await;
                return Err(e.into());
            }
            summary.seconds.total = started.elapsed().as_secs_f64();
            let marker = serde_json::to_vec_pretty(&summary).unwrap_or_default();
            staging.commit(marker).await?;
            summary.seconds.commit = t.elapsed().as_secs_f64();
            summary.seconds.total = started.elapsed().as_secs_f64();
            Ok(summary)
        }
        Err(e) => {
            // Best effort: the error that stopped the run is the one to report.
            let _ = staging.abort().await;
            Err(e)
        }
    }
}

/// Stages 2 to 5, up to a result staged and checked, ready to publish.
async fn run_stages(
    cfg: &ExtractConfig,
    input: &Location,
    images: &[fruits_store::ImageRef],
    staging: &Staging,
    progress: &Arc<Progress>,
    seconds: &mut StageSeconds,
) -> Result<Staged, EngineError> {
    let ctx = session(cfg.threads, cfg.batch_size);
    let staged = staging.location();

    // 2. Featurise: image source → featurize UDF → staged parts + partial sums.
    let t = Instant::now();
    ctx.register_table(
        "images",
        Arc::new(image_table(input, images, cfg.threads, cfg.batch_size)?),
    )?;
    let featurize = Featurize::udf(cfg.model.clone());
    let df = ctx.table("images").await?.select(vec![
        col("path"),
        col("label"),
        col("read_error"),
        featurize.call(vec![col("content")]).alias("f"),
    ])?;
    let streams = df.execute_stream_partitioned().await?;
    let parts = for_each_partition(streams, |p, stream| {
        let staged = staged.clone();
        let progress = progress.clone();
        async move { featurize_partition(p, stream, &staged, &progress).await }
    })
    .await?;
    let mut sums = PartialSums::new(FEATURES);
    let mut skipped = Vec::new();
    let mut staged_rows = 0;
    let mut labels = std::collections::BTreeSet::new();
    for part in parts {
        sums.merge(&part.sums)?;
        skipped.extend(part.skipped);
        staged_rows += part.rows;
        labels.extend(part.labels);
    }
    seconds.featurize = t.elapsed().as_secs_f64();

    // 3. Fit (or take) the PCA and save it beside the data.
    let t = Instant::now();
    let needed = if matches!(cfg.pca, PcaSpec::Fit(_)) {
        2
    } else {
        1
    };
    if sums.count() < needed {
        return Err(EngineError::TooFewImages {
            ok: sums.count(),
            total: images.len() as u64,
            first_error: skipped
                .first()
                .map(|s| format!("{}: {}", s.path, s.error))
                .unwrap_or_default(),
        });
    }
    let pca = match &cfg.pca {
        PcaSpec::Fit(choice) => Arc::new(fruits_pca::fit(&sums, *choice)?),
        PcaSpec::Apply(model) => {
            if model.dim() != FEATURES {
                return Err(EngineError::PcaDimension {
                    expected: model.dim(),
                    found: FEATURES,
                });
            }
            model.clone()
        }
    };
    for (name, bytes) in pca.to_files() {
        staged.put_rel(&format!("_pca/{name}"), bytes).await?;
    }
    seconds.fit = t.elapsed().as_secs_f64();

    // 4. Project the staged features and write the final parts.
    let t = Instant::now();
    let features_dir = staged.sub(FEATURES_DIR);
    let files = {
        let url = staged.store_url()?;
        ctx.register_object_store(&url, staged.store().clone());
        let project = PcaProject::udf(pca.clone());
        let df = ctx
            .read_parquet(
                format!("{}/", features_dir.uri()),
                ParquetReadOptions::default(),
            )
            .await?
            .select(vec![
                col("path"),
                col("label"),
                col("features"),
                project.call(vec![col("features")]).alias("features_pca"),
            ])?;
        let streams = df.execute_stream_partitioned().await?;
        for_each_partition(streams, |p, stream| {
            let staged = staged.clone();
            async move { write_partition(p, stream, &staged).await }
        })
        .await?
    };
    features_dir.delete_all().await?;
    seconds.project = t.elapsed().as_secs_f64();

    // 5. Nothing lost, nothing duplicated.
    let written: u64 = files.iter().map(|f| f.rows).sum();
    if written != staged_rows {
        return Err(EngineError::RowCount {
            staged: staged_rows,
            written,
        });
    }
    Ok(Staged {
        rows: written,
        classes: labels.len(),
        skipped,
        pca,
        files,
    })
}

/// What the map stages produced, ready to publish.
struct Staged {
    rows: u64,
    classes: usize,
    skipped: Vec<Skipped>,
    pca: Arc<PcaModel>,
    files: Vec<PartFile>,
}

/// Runs `f` on every partition stream as its own task (in parallel) and collects the results
/// in partition order.
async fn for_each_partition<T, F, Fut>(
    streams: Vec<SendableRecordBatchStream>,
    f: F,
) -> Result<Vec<T>, EngineError>
where
    F: Fn(usize, SendableRecordBatchStream) -> Fut,
    Fut: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(p, stream)| tokio::spawn(f(p, stream)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(|e| EngineError::Task(e.to_string()))??);
    }
    Ok(out)
}

struct PartitionResult {
    rows: u64,
    sums: PartialSums,
    skipped: Vec<Skipped>,
    labels: std::collections::BTreeSet<String>,
}

/// Map stage 1 for one partition: featurised rows to a staged part, partial sums, skips.
async fn featurize_partition(
    p: usize,
    mut stream: SendableRecordBatchStream,
    staged: &Location,
    progress: &Progress,
) -> Result<PartitionResult, EngineError> {
    let mut writer = PartWriter::create(
        staged,
        &format!("{FEATURES_DIR}/part-{p:05}.parquet"),
        features_schema(),
    )?;
    let mut out = PartitionResult {
        rows: 0,
        sums: PartialSums::new(FEATURES),
        skipped: Vec::new(),
        labels: Default::default(),
    };
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let path = batch.column(0).as_string::<i32>();
        let label = batch.column(1).as_string::<i32>();
        let read_error = batch.column(2).as_string::<i32>();
        let f = batch.column(3).as_struct();
        let features = f.column(0).as_list::<i32>();
        let error = f.column(1).as_string::<i32>();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let ok = features.is_valid(i);
            keep.push(ok);
            if ok {
                out.labels.insert(label.value(i).to_string());
            } else {
                let why = if read_error.is_valid(i) {
                    read_error.value(i)
                } else if error.is_valid(i) {
                    error.value(i)
                } else {
                    "no content"
                };
                tracing::warn!(path = path.value(i), error = why, "skipped image");
                out.skipped.push(Skipped {
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
                good(batch.column(0))?,
                good(batch.column(1))?,
                features_kept.clone(),
            ],
        )?;
        let lists = features_kept.as_list::<i32>();
        let offsets = lists.value_offsets();
        let (from, to) = (offsets[0] as usize, offsets[lists.len()] as usize);
        let values = lists
            .values()
            .as_primitive::<arrow::datatypes::Float32Type>();
        out.sums.add_rows(&values.values()[from..to]);
        writer.write(&rows).await?;
        progress
            .done
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        progress.skipped.fetch_add(
            (batch.num_rows() - rows.num_rows()) as u64,
            Ordering::Relaxed,
        );
    }
    out.rows = writer.close().await?;
    Ok(out)
}

/// Map stage 2 for one partition: projected rows to a final part.
async fn write_partition(
    p: usize,
    mut stream: SendableRecordBatchStream,
    staged: &Location,
) -> Result<PartFile, EngineError> {
    let name = format!("part-{p:05}.parquet");
    let mut writer = PartWriter::create(staged, &name, output_schema())?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // Same columns, declared non-null as they are.
        let batch = RecordBatch::try_new(output_schema(), batch.columns().to_vec())?;
        writer.write(&batch).await?;
    }
    Ok(PartFile {
        rows: writer.close().await?,
        name,
    })
}
