//! The data path of `fruits extract` and `fruits project`, top to bottom.
//!
//! 1. List the input once → `(path, label)` rows split into partitions.
//! 2. Featurize plan (map-only, [`featurize_plan`]): `ImageReadExec` → `featurize(content)`
//!    → per partition a staged Parquet part, its PCA partial sums added to the process's
//!    accumulator ([`crate::reduction`]); bad images
//!    are set aside with their error.
//! 3. Merge the processes' partial sums here (each partition exactly once), fit the scaler + PCA (or take a saved one), save it to
//!    `_pca/`.
//! 4. Project plan (map-only): the staged parts → `pca_project(features)` → final parts.
//! 5. Check that every partition ran exactly once and row counts agree, write `_errors.json`,
//!    publish with `_SUCCESS` last.
//!
//! The plans run on an [`Engine`]: in this process or on a cluster; nothing else differs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use datafusion::physical_plan::ExecutionPlan;
use fruits_model::{MobileNetV2, FEATURES};
use fruits_pca::{Components, PcaModel};
use fruits_store::{Location, S3Settings, Staging};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::featurize::{featurize_plan, FeaturizeSpec};
use crate::plan::{part_list, with_udf_column, FeatureReadExec, Limits, WriteExec};
use crate::reduction::{reduce, Reduction};
use crate::report::{report, write_page, Subject};
use crate::result::read_pca;
use crate::resume;
use crate::store::Store;
use crate::table::{self, Format};
use crate::udf::PcaProject;
use crate::update;
use crate::vocab::names::{
    parse_report_file, part_name, ERRORS_FILE, FEATURES_DIR, OWNER_FILE, PCA_DIR, REPORTS_DIR,
    SUMS_DIR,
};
use crate::vocab::schema::{col, STAGED_KEEP};
pub use crate::vocab::summary::{PartFile, StageSeconds, Summary};
use crate::vocab::{Progress, Skipped, TaskReport, WriteKind};
use crate::weights::ModelSource;

/// Where the PCA comes from.
#[derive(Debug, Clone)]
pub enum PcaSpec {
    /// Fit on this run's features.
    Fit(Components),
    /// Apply a saved model (`fruits project`), read from `from` (a URI).
    Apply {
        /// The model.
        model: Arc<PcaModel>,
        /// Where it was read (the run refuses to write over it).
        from: String,
    },
}

impl PcaSpec {
    /// Applies the PCA saved at `uri` (the `_pca` folder of a result; see
    /// [`PcaModel::to_files`]).
    pub async fn load(uri: &str, s3: &S3Settings) -> Result<PcaSpec, EngineError> {
        let model = read_pca(&Location::parse_with(uri, s3)?).await?;
        Ok(PcaSpec::Apply {
            model: Arc::new(model),
            from: uri.to_string(),
        })
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// Input URI (folder, `file://`, `s3://`).
    pub input: String,
    /// Output URI.
    pub output: String,
    /// The weights each process running the plan loads (once).
    pub weights: ModelSource,
    /// The network already loaded from `weights` in this process, if it was.
    pub model: Option<Arc<MobileNetV2>>,
    /// Fit or apply.
    pub pca: PcaSpec,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Update the result at the output: unchanged photos keep their stored features, new
    /// and changed ones are featurised, removed ones dropped ([`crate::update`]).
    pub update: bool,
    /// Images per model batch.
    pub batch_size: usize,
    /// What one image may cost (file bytes, pixels).
    pub limits: Limits,
    /// S3 settings that override the environment.
    pub s3: S3Settings,
    /// Write `_report.html` (with the data checks) into the result.
    pub report: bool,
    /// A Parquet folder, or the next version of a Delta table.
    pub format: Format,
}

/// A run id unique enough for staging names: time and process.
fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", t.as_millis(), std::process::id())
}

/// Runs the whole job. On failure any old output is untouched, and the staged output is
/// removed, but for the photos featurised so far: they stay for the same command to resume
/// ([`EngineError::Interrupted`]).
pub async fn extract(
    cfg: &ExtractConfig,
    engine: &dyn Engine,
    progress: Arc<Progress>,
) -> Result<Summary, EngineError> {
    extract_until(cfg, engine, progress, std::future::pending()).await
}

/// [`extract`], stopped when `stop` completes (with what stopped it, e.g. `stopped by
/// SIGINT`): while listing or featurising, the run ends as a failed one that keeps its
/// finished tasks for the same command to resume ([`EngineError::Stopped`]); once the result
/// is staged, it is finished and published first.
pub async fn extract_until(
    cfg: &ExtractConfig,
    engine: &dyn Engine,
    progress: Arc<Progress>,
    stop: impl std::future::Future<Output = String>,
) -> Result<Summary, EngineError> {
    let mut stop = std::pin::pin!(stop);
    let started = Instant::now();
    let mut seconds = StageSeconds::default();
    let input = Location::parse_with(&cfg.input, &cfg.s3)?;
    let output = Location::parse_with(&cfg.output, &cfg.s3)?;

    // Refuse, before any work, an output that would write over what the run reads, or an
    // existing output (begin() checks again before staging).
    refuse_overlaps(cfg, &input, &output)?;
    if let PcaSpec::Fit(choice) = &cfg.pca {
        choice.check(FEATURES)?;
    }
    if !cfg.overwrite && !cfg.update && fruits_store::output_exists(&output).await? {
        return Err(fruits_store::StoreError::OutputExists(output.uri()).into());
    }

    // 1. List.
    let t = Instant::now();
    let listing = tokio::select! {
        listing = input.list_images() => listing?,
        why = &mut stop => return Err(EngineError::Stopped(why)),
    };
    let images = listing.images;
    // Entries that look like images but could not be listed count as skipped images.
    let unlisted: Vec<Skipped> = listing
        .unlisted
        .into_iter()
        .map(|u| Skipped {
            path: u.uri,
            error: u.error,
        })
        .collect();
    for u in &unlisted {
        tracing::warn!(path = u.path, error = u.error, "not listed");
    }
    let listed = (images.len() + unlisted.len()) as u64;
    if let (true, Some(first)) = (images.is_empty(), unlisted.first()) {
        return Err(EngineError::TooFewImages {
            ok: 0,
            total: listed,
            first_error: format!("{}: {}", first.path, first.error),
        });
    }
    if images.is_empty() {
        return Err(EngineError::NoImages(input.uri()));
    }
    check_format(cfg.format, &output).await?;
    // An update keeps the stored features of the photos that did not change.
    let base = match cfg.update {
        true => {
            let hash = match &cfg.model {
                Some(model) => model.weights_hash().to_string(),
                None => cfg.weights.load().await?.weights_hash().to_string(),
            };
            update::read_base(&output, &hash)
                .await?
                .map(|base| (base, hash))
        }
        false => None,
    };
    let split = base.as_ref().map(|(base, _)| update::split(&images, base));
    let todo = split.as_ref().map_or(&images[..], |s| &s.todo[..]);
    progress.total.store(todo.len() as u64, Ordering::Relaxed);
    seconds.list = t.elapsed().as_secs_f64();

    // The same command on the same input finds the staging an interrupted run left.
    let partitions = match todo.is_empty() {
        true => Vec::new(),
        false => split_even(todo, engine.partitions(todo.len())),
    };
    let key = resume::run_key(
        &resume::KeyParts {
            input: &input.uri(),
            output: &output.uri(),
            weights: format!(
                "{:?} {:?}",
                cfg.weights.weights,
                cfg.model.as_ref().map(|m| m.weights_hash())
            ),
            settings: format!("{} {:?}", update::PREPROCESSING, cfg.limits),
        },
        &partitions,
    );
    let run = run_id();
    let staging = Staging::begin_keyed(&output, cfg.overwrite || cfg.update, &run, &key).await?;
    let resumed = match claim(&staging, &partitions, &run).await {
        Ok(resumed) => resumed,
        Err(e) => return Err(fail(staging, &partitions, e).await),
    };
    let reuse = match (&base, &split) {
        (Some((base, hash)), Some(split)) => Some(Reuse {
            base,
            reused: &split.reused,
            weights: hash,
        }),
        _ => None,
    };
    let stages = run_stages(
        cfg,
        engine,
        &input,
        Work {
            partitions: &partitions,
            resumed,
            run: &run,
        },
        reuse,
        &staging,
        &progress,
        &mut seconds,
    );
    let result = tokio::select! {
        staged = stages => staged,
        why = &mut stop => Err(EngineError::Stopped(why)),
    };
    match result {
        Ok(Staged {
            rows,
            classes,
            skipped,
            pca,
            files,
            parts,
            workers,
            weights,
            reduction,
            featurized,
            resumed,
        }) => {
            let skipped: Vec<Skipped> = unlisted.into_iter().chain(skipped).collect();
            let t = Instant::now();
            let mut summary = Summary {
                input: input.uri(),
                output: output.uri(),
                images: listed,
                rows,
                skipped: skipped.len() as u64,
                classes,
                k: pca.k(),
                variance_kept: pca.variance_kept(),
                files,
                seconds,
                engine: engine.describe(),
                workers,
                weights,
                reduction,
                preprocessing: update::PREPROCESSING,
                version: None,
                featurized,
                resumed,
                update: split.as_ref().map(|s| s.counts.clone()),
                skipped_sample: skipped.iter().take(5).cloned().collect(),
            };
            let errors = serde_json::to_vec_pretty(&skipped).unwrap_or_default();
            if let Err(e) = staging.location().put_rel(ERRORS_FILE, errors).await {
                return Err(fail(staging, &partitions, e.into()).await);
            }
            // The photos the rows came from, for the next update.
            let without: HashSet<&str> = skipped.iter().map(|s| s.path.as_str()).collect();
            if let Err(e) = update::write_inputs(staging.location(), &images, &without).await {
                return Err(fail(staging, &partitions, e).await);
            }
            summary.seconds.total = started.elapsed().as_secs_f64();
            if cfg.report {
                let t = Instant::now();
                if let Err(e) =
                    write_report(&staging, &parts, &summary, &skipped, &pca, &cfg.s3).await
                {
                    return Err(fail(staging, &partitions, e).await);
                }
                summary.seconds.report = t.elapsed().as_secs_f64();
                summary.seconds.total = started.elapsed().as_secs_f64();
            }
            let marker = serde_json::to_value(&summary).unwrap_or_default();
            match cfg.format {
                Format::Parquet => staging.commit(marker).await?,
                Format::Delta => summary.version = Some(table::publish(staging, marker).await?),
            }
            summary.seconds.commit = t.elapsed().as_secs_f64() - summary.seconds.report;
            summary.seconds.total = started.elapsed().as_secs_f64();
            Ok(summary)
        }
        Err(e) => Err(fail(staging, &partitions, e).await),
    }
}

/// Ends the staging of a run that failed with `e`. Where the cause was outside the run
/// ([`EngineError::keeps_staged_work`]), the partitions it finished stay for the same command
/// to resume, as after a kill ([`resume`]); otherwise, or with none finished, it is deleted.
/// Best effort: `e` is the error to report either way.
async fn fail(
    staging: Staging,
    partitions: &[&[fruits_store::ImageRef]],
    e: EngineError,
) -> EngineError {
    let finished = match e.keeps_staged_work() {
        true => resume::finished(staging.location(), partitions).await,
        false => Ok(Vec::new()),
    };
    match finished.map(|done| done.iter().map(|r| r.images).sum::<u64>()) {
        Ok(0) => {
            let _ = staging.abort().await;
            e
        }
        Ok(images) => {
            staging.keep().await;
            EngineError::Interrupted {
                images,
                source: Box::new(e),
            }
        }
        // What could not be checked is not deleted either.
        Err(_) => {
            staging.keep().await;
            e
        }
    }
}

/// Writes the run's `_report.html` into its staging: part of the result it describes.
async fn write_report(
    staging: &Staging,
    parts: &[String],
    summary: &Summary,
    skipped: &[Skipped],
    pca: &PcaModel,
    s3: &S3Settings,
) -> Result<(), EngineError> {
    let subject = Subject::staged(staging.location(), parts, summary, skipped, pca).await?;
    let (report, thumbs) = report(&subject, None, s3).await?;
    write_page(staging.location(), &report, &thumbs).await
}

/// Takes the staging over for run `run`: the reports of the partitions an interrupted run of
/// the same command finished there ([`resume::resumable`]), and the owner mark that stops
/// that run's tasks if they still run somewhere.
async fn claim(
    staging: &Staging,
    partitions: &[&[fruits_store::ImageRef]],
    run: &str,
) -> Result<Vec<TaskReport>, EngineError> {
    // The mark first: from here on, the earlier run's tasks stop at their start, and only
    // those already running can still finish (and are done again here).
    staging
        .location()
        .put_rel(OWNER_FILE, run.as_bytes().to_vec())
        .await?;
    match staging.resumed() {
        true => resume::resumable(staging.location(), partitions).await,
        false => Ok(Vec::new()),
    }
}

/// Fails if the output holds the other format: a Parquet run would delete a table's history,
/// a Delta run would mix its log into a Parquet folder.
async fn check_format(format: Format, output: &Location) -> Result<(), EngineError> {
    let is_table = fruits_delta::is_table(output).await?;
    let what = match format {
        Format::Parquet if is_table => {
            "is a Delta table: pass --format delta to write its next version"
        }
        Format::Delta if !is_table && fruits_store::output_exists(output).await? => {
            "exists and is not a Delta table: write the table to a new output"
        }
        _ => return Ok(()),
    };
    Err(EngineError::Format {
        output: output.uri(),
        what: what.to_string(),
    })
}

/// Fails if `output` equals, contains or lies inside the input, the weights or the saved PCA:
/// publishing (with `--overwrite`, replacing the old result) would delete what the run reads.
fn refuse_overlaps(
    cfg: &ExtractConfig,
    input: &Location,
    output: &Location,
) -> Result<(), EngineError> {
    let weights = fruits_weights::locate(cfg.weights.weights.as_deref()).ok();
    let pca = match &cfg.pca {
        PcaSpec::Apply { from, .. } => Some(from.clone()),
        PcaSpec::Fit(_) => None,
    };
    let mut read = vec![("input", input.clone())];
    for (what, uri) in [("weights", weights), ("saved PCA", pca)] {
        if let Some(uri) = uri {
            read.push((what, Location::parse_with(&uri, &cfg.s3)?));
        }
    }
    match read.into_iter().find(|(_, at)| at.overlaps(output)) {
        Some((what, at)) => Err(EngineError::Overlap {
            output: output.uri(),
            what,
            other: at.uri(),
        }),
        None => Ok(()),
    }
}

/// What an update copies from the previous result into this run's staged features.
struct Reuse<'a> {
    base: &'a update::Base,
    reused: &'a HashSet<&'a str>,
    weights: &'a str,
}

/// What a run featurises: `partitions` (numbered by position), but for the `resumed` ones
/// an interrupted run finished; `run` names this run's tasks.
struct Work<'a> {
    partitions: &'a [&'a [fruits_store::ImageRef]],
    resumed: Vec<TaskReport>,
    run: &'a str,
}

/// Stages 2 to 5, up to a result staged and checked, ready to publish. `work` says what to
/// featurise; `reuse` adds the unchanged rows of an update's base.
#[allow(clippy::too_many_arguments)]
async fn run_stages(
    cfg: &ExtractConfig,
    engine: &dyn Engine,
    input: &Location,
    work: Work<'_>,
    reuse: Option<Reuse<'_>>,
    staging: &Staging,
    progress: &Arc<Progress>,
    seconds: &mut StageSeconds,
) -> Result<Staged, EngineError> {
    let staged = Store::new(staging.location().clone(), &cfg.s3);

    // 2. Featurise: image source → featurize UDF → staged parts; partial sums per process.
    let t = Instant::now();
    let n = work.partitions.len();
    let images: usize = work.partitions.iter().map(|p| p.len()).sum();
    let done: BTreeSet<usize> = work.resumed.iter().map(|r| r.partition).collect();
    let resumed: u64 = work.resumed.iter().map(|r| r.images).sum();
    progress.done.store(resumed, Ordering::Relaxed);
    progress.resumed.store(resumed, Ordering::Relaxed);
    let to_run: Vec<(usize, &[fruits_store::ImageRef])> = work
        .partitions
        .iter()
        .enumerate()
        .filter(|(p, _)| !done.contains(p))
        .map(|(p, images)| (p, *images))
        .collect();
    let mut staged_reports = match to_run.is_empty() {
        true => Vec::new(),
        false => {
            let sizes = work.partitions.iter().map(|p| p.len() as u64).collect();
            featurize_stage(
                cfg, engine, input, &to_run, sizes, &staged, progress, work.run,
            )
            .await?
        }
    };
    let featurized = staged_reports.iter().map(|r| r.images).sum();
    staged_reports.extend(work.resumed);
    staged_reports.sort_by_key(|r| r.partition);
    // Counted here too, for engines that cannot report progress as they go.
    progress.done.store(images as u64, Ordering::Relaxed);
    // An update's unchanged rows join as partitions n.., summed here.
    let reused_sums = match &reuse {
        Some(r) => {
            let (reports, sums) =
                update::stage_reused(r.base, r.reused, &staged.location, n, r.weights).await?;
            staged_reports.extend(reports);
            Some(sums)
        }
        None => None,
    };
    let mut skipped = Vec::new();
    let mut labels = BTreeSet::new();
    let mut workers = BTreeMap::new();
    let mut weights = BTreeSet::new();
    for r in &staged_reports {
        skipped.extend(r.skipped.iter().cloned());
        labels.extend(r.labels.iter().cloned());
        if r.worker != update::REUSED_WORKER && !done.contains(&r.partition) {
            *workers.entry(r.worker.clone()).or_insert(0) += r.images;
        }
        weights.extend(r.weights.iter().cloned());
    }
    if weights.len() > 1 {
        let all: Vec<_> = weights.into_iter().collect();
        return Err(EngineError::MixedWeights(all.join(", ")));
    }
    let weights = weights.into_iter().next();
    progress
        .skipped
        .store(skipped.len() as u64, Ordering::Relaxed);
    let (mut sums, reduction) = reduce(&staged.location, n, &done).await?;
    if let Some(reused) = reused_sums {
        sums.merge(&reused)?;
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
            total: images as u64,
            first_error: skipped
                .first()
                .map(|s| format!("{}: {}", s.path, s.error))
                .unwrap_or_default(),
        });
    }
    let pca = match &cfg.pca {
        PcaSpec::Fit(choice) => Arc::new(fruits_pca::fit(&sums, *choice)?),
        PcaSpec::Apply { model, .. } => {
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
        staged
            .location
            .put_rel(&format!("{PCA_DIR}/{name}"), bytes)
            .await?;
    }
    seconds.fit = t.elapsed().as_secs_f64();

    // 4. Project the staged features and write the final parts.
    let t = Instant::now();
    // Partitions whose images were all skipped have nothing to project.
    let kept: Vec<usize> = staged_reports
        .iter()
        .filter(|r| r.rows > 0)
        .map(|r| r.partition)
        .collect();
    let parts: Vec<(usize, String)> = kept
        .iter()
        .map(|&p| (p, part_name(FEATURES_DIR, p)))
        .collect();
    let scan = Arc::new(FeatureReadExec::new(part_list(&parts)?, &staged));
    let projected = with_udf_column(
        scan,
        &STAGED_KEEP,
        PcaProject::udf(pca.clone()),
        col::FEATURES,
        col::FEATURES_PCA,
    )?;
    let plan = WriteExec::new(projected, &staged, WriteKind::Output, None).for_run(work.run);
    let written = run_checked(
        engine,
        Arc::new(plan),
        WriteKind::Output,
        &kept,
        &staged.location,
    )
    .await?;
    // Reports first: a partition counts as staged only with its report.
    staged.location.sub(REPORTS_DIR).delete_all().await?;
    staged.location.sub(FEATURES_DIR).delete_all().await?;
    staged.location.sub(SUMS_DIR).delete_all().await?;
    seconds.project = t.elapsed().as_secs_f64();

    // 5. Nothing lost, nothing duplicated: partition by partition.
    for w in &written {
        let s = &staged_reports[w.partition];
        if s.rows != w.rows {
            return Err(EngineError::RowCount {
                staged: s.rows,
                written: w.rows,
            });
        }
    }
    let parts = written.iter().map(|w| part_name("", w.partition)).collect();
    let files = written
        .iter()
        .map(|w| PartFile {
            name: staging.final_name(&part_name("", w.partition)),
            rows: w.rows,
        })
        .collect::<Vec<_>>();
    Ok(Staged {
        rows: files.iter().map(|f| f.rows).sum(),
        classes: labels.len(),
        skipped,
        pca,
        files,
        parts,
        workers,
        weights,
        reduction,
        featurized,
        resumed,
    })
}

/// Stage 2's plan: featurises `partitions` (numbered) into staged parts; one report per
/// partition. `sizes` are the images of every partition of the run, by number.
#[allow(clippy::too_many_arguments)]
async fn featurize_stage(
    cfg: &ExtractConfig,
    engine: &dyn Engine,
    input: &Location,
    partitions: &[(usize, &[fruits_store::ImageRef])],
    sizes: Vec<u64>,
    staged: &Store,
    progress: &Arc<Progress>,
    run: &str,
) -> Result<Vec<TaskReport>, EngineError> {
    let featurized = featurize_plan(
        &Store::new(input.clone(), &cfg.s3),
        partitions,
        &FeaturizeSpec {
            weights: cfg.weights.clone(),
            model: cfg.model.clone(),
            batch_size: cfg.batch_size,
            limits: cfg.limits,
        },
    )?;
    let plan = WriteExec::new(
        featurized,
        staged,
        WriteKind::Features,
        Some(progress.clone()),
    )
    .for_run(run);
    let expected: Vec<usize> = partitions.iter().map(|(p, _)| *p).collect();
    let watcher = (!engine.reports_progress()).then(|| {
        tokio::spawn(watch_tasks(
            staged.location.clone(),
            sizes,
            progress.clone(),
        ))
    });
    let staged_reports = run_checked(
        engine,
        Arc::new(plan),
        WriteKind::Features,
        &expected,
        &staged.location,
    )
    .await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    staged_reports
}

/// What the map stages produced, ready to publish.
struct Staged {
    rows: u64,
    classes: usize,
    skipped: Vec<Skipped>,
    pca: Arc<PcaModel>,
    files: Vec<PartFile>,
    /// The parts' names as staged.
    parts: Vec<String>,
    workers: BTreeMap<String, u64>,
    weights: Option<String>,
    reduction: Reduction,
    /// Photos this run featurised, and photos it took from an interrupted run.
    featurized: u64,
    resumed: u64,
}

/// `images` in at most `n` contiguous partitions of nearly equal size.
fn split_even(images: &[fruits_store::ImageRef], n: usize) -> Vec<&[fruits_store::ImageRef]> {
    let per = images.len().div_ceil(n.max(1)).max(1);
    images.chunks(per).collect()
}

/// Runs a write plan whose partitions are numbered `expected` and returns one report per
/// partition, in that order. A partition reported twice (a task that an engine re-ran) must
/// agree with itself; a partition never reported, or not expected, fails the run.
///
/// A job the engine says failed may still have finished every task (an executor lost after
/// its tasks were done takes their answers with it): then the reports the tasks stored are
/// used. Otherwise a retryable failure submits the job again, up to the engine's attempts.
async fn run_checked(
    engine: &dyn Engine,
    plan: Arc<dyn ExecutionPlan>,
    kind: WriteKind,
    expected: &[usize],
    staged: &Location,
) -> Result<Vec<TaskReport>, EngineError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match engine.run(plan.clone()).await {
            Ok(batches) => return collate(TaskReport::from_batches(&batches)?, expected),
            Err(e) => e,
        };
        if let Some(reports) = stored_reports(staged, kind, expected).await {
            tracing::warn!(error = %e, "the job failed after all its tasks had finished; using their stored reports");
            return collate(reports, expected);
        }
        if attempt >= engine.attempts() || !e.retryable() {
            return Err(e);
        }
        tracing::warn!(attempt, error = %e, "the job failed; submitting it again");
    }
}

/// Follows a featurize job run elsewhere: every 2 s, counts as done the images of the
/// partitions whose task has stored its report.
async fn watch_tasks(staged: Location, sizes: Vec<u64>, progress: Arc<Progress>) {
    let reports = staged.sub(REPORTS_DIR);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let Ok(paths) = reports.list_paths().await else {
            continue;
        };
        let done: u64 = paths
            .iter()
            .filter_map(|path| {
                let p = parse_report_file(WriteKind::Features, path.filename()?)?;
                sizes.get(p)
            })
            .sum();
        progress.done.store(done, Ordering::Relaxed);
    }
}

/// Every expected partition's stored report, or `None` if any is missing.
async fn stored_reports(
    staged: &Location,
    kind: WriteKind,
    expected: &[usize],
) -> Option<Vec<TaskReport>> {
    resume::read_reports(staged, kind, expected)
        .await
        .into_iter()
        .collect()
}

/// One report per expected partition, in order; see [`run_checked`].
fn collate(found: Vec<TaskReport>, expected: &[usize]) -> Result<Vec<TaskReport>, EngineError> {
    let mut reports: BTreeMap<usize, Option<TaskReport>> =
        expected.iter().map(|&p| (p, None)).collect();
    for r in found {
        let p = r.partition;
        let slot = reports
            .get_mut(&p)
            .ok_or_else(|| EngineError::Task(format!("a task reported unknown partition {p}")))?;
        match slot {
            Some(seen) if seen.rows != r.rows => {
                return Err(EngineError::Task(format!(
                    "partition {p} reported twice with different row counts ({} and {})",
                    seen.rows, r.rows
                )))
            }
            Some(_) => {}
            None => *slot = Some(r),
        }
    }
    reports
        .into_iter()
        .map(|(p, r)| r.ok_or_else(|| EngineError::Task(format!("partition {p} never reported"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(partition: usize, rows: u64) -> TaskReport {
        TaskReport {
            partition,
            rows,
            images: rows,
            skipped: Vec::new(),
            labels: Vec::new(),
            worker: "w".into(),
            weights: None,
        }
    }

    #[test]
    fn every_partition_once_in_order_and_reruns_must_agree() {
        let got = collate(vec![report(3, 5), report(1, 2), report(3, 5)], &[1, 3]).unwrap();
        assert_eq!(got, vec![report(1, 2), report(3, 5)]);
        let missing = collate(vec![report(1, 2)], &[1, 3]).unwrap_err();
        assert!(
            missing.to_string().contains("partition 3 never reported"),
            "{missing}"
        );
        let unknown = collate(vec![report(1, 2), report(2, 1)], &[1]).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown partition 2"),
            "{unknown}"
        );
        let differ = collate(vec![report(1, 2), report(1, 3)], &[1]).unwrap_err();
        assert!(
            differ.to_string().contains("different row counts"),
            "{differ}"
        );
    }

    #[test]
    fn partitions_are_contiguous_and_nearly_equal() {
        let images: Vec<_> = (0..10)
            .map(|i| fruits_store::ImageRef {
                uri: format!("file:///x/{i}.jpg"),
                label: "x".into(),
                path: format!("x/{i}.jpg").into(),
                size: 1,
                version: None,
            })
            .collect();
        let parts = split_even(&images, 3);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(parts[1][0].path.as_ref(), "x/4.jpg");
        assert_eq!(split_even(&images, 20).len(), 10);
    }
}
