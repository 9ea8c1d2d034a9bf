//! `fruits`: turn folders of fruit photos into ML-ready features (MobileNetV2 + PCA → Parquet).
//!
//! A thin command line over the library crates: `extract`, `project`, `train`, `predict`,
//! `serve`, `bench`, `weights`, and the cluster processes `scheduler` and `executor`.

mod bench;
mod bench_serve;
mod predict;
mod report;
mod serve;
mod signals;
mod train;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fruits_engine::{Engine, ExtractConfig, PcaSpec, Progress, Summary};
use fruits_pca::Components;

#[derive(Parser)]
#[command(
    name = "fruits",
    version,
    about = "Fruit photos → MobileNetV2 features + PCA, as Parquet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Featurise every image under INPUT, fit a PCA, write Parquet to OUTPUT.
    Extract(ExtractArgs),
    /// Featurise new photos and project them with a saved PCA (`<output>/_pca`).
    Project(ProjectArgs),
    /// Train a classifier on extract outputs; writes a model folder.
    Train(train::TrainArgs),
    /// Name the fruit in photos with a trained classifier.
    Predict(predict::PredictArgs),
    /// Write `_report.html` for a result (and check its data); `--json` prints the figures.
    Report(report::ReportArgs),
    /// Serve a trained classifier over HTTP, with a page a phone can use.
    Serve(serve::ServeArgs),
    /// Measure images/s per stage and peak memory on a folder of images.
    Bench(bench::BenchArgs),
    /// Measure `serve`: latency on an idle server, throughput and latency under load.
    BenchServe(bench_serve::BenchServeArgs),
    /// Run a Ballista scheduler that knows the fruits plans (for `extract --cluster`).
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor that knows the fruits plans; it reads images and weights
    /// directly from the store.
    Executor(ExecutorArgs),
    /// List the executors a `fruits scheduler` knows, with their last heartbeat.
    Status(StatusArgs),
    /// Manage the model weights.
    Weights {
        #[command(subcommand)]
        command: WeightsCommand,
    },
}

#[derive(Subcommand)]
enum WeightsCommand {
    /// Download the official Keras MobileNetV2 weights into the per-user cache.
    Fetch {
        /// Where to download from.
        #[arg(long, default_value = fruits_weights::KERAS_URL)]
        url: String,
        /// Download again even if a valid file is cached.
        #[arg(long)]
        force: bool,
    },
    /// Print which weights a run would use, and check that they load.
    Path {
        /// Weights as a run takes them: a folder of .npy or a Keras .h5, local or s3://.
        #[arg(long)]
        weights: Option<String>,
        #[command(flatten)]
        s3: S3Args,
    },
}

/// Options shared by `extract` and `project`.
#[derive(Args, Clone)]
struct RunArgs {
    /// Folder, file:// or s3:// URI of the photos (searched recursively; label = parent folder).
    #[arg(long)]
    input: String,
    /// Folder, file:// or s3:// URI of the Parquet result.
    #[arg(long)]
    output: String,
    /// Weights: a folder of TF-slim .npy tensors or a Keras .h5 file, local or s3://
    /// [default: $FRUITS_WEIGHTS, else the cache filled by `fruits weights fetch`].
    #[arg(long)]
    weights: Option<String>,
    #[command(flatten)]
    s3: S3Args,
    /// Replace an existing output (the old one stays readable until the new one is complete).
    #[arg(long, conflicts_with = "mode")]
    overwrite: bool,
    /// What to do with an existing output: `new` refuses it, `overwrite` replaces it, `update`
    /// keeps the stored features of unchanged photos (same path, size and ETag or mtime) and
    /// featurises only new and changed ones.
    #[arg(long, value_enum, default_value_t = Mode::New)]
    mode: Mode,
    /// The result's format: a folder of Parquet parts, or a Delta Lake table whose every run
    /// is a new version (earlier versions stay readable).
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    format: Format,
    /// Images per model batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    /// Largest image file read, in MiB; larger files are skipped into _errors.json.
    #[arg(long, default_value_t = fruits_engine::Limits::DEFAULT.max_file_bytes >> 20)]
    max_file_mb: u64,
    /// Largest image decoded, in pixels (width x height); larger ones are skipped.
    #[arg(long, default_value_t = fruits_engine::Limits::DEFAULT.max_pixels)]
    max_pixels: u64,
    /// Worker threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Run on a cluster (`df://HOST:PORT` of a `fruits scheduler`) instead of in-process.
    /// The executors load the weights and reach the store with their own settings.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// Images per task: the unit a run resumes from, and a cluster schedules.
    #[arg(long, default_value_t = fruits_engine::IMAGES_PER_TASK as u64, value_parser = clap::value_parser!(u64).range(1..))]
    images_per_task: u64,
    /// On a cluster: seconds one job may take before it is abandoned and retried once.
    #[arg(long, default_value_t = fruits_cluster::defaults::JOB_TIMEOUT_S)]
    job_timeout: u64,
    /// Do not write `_report.html` (the run report with the data checks) into the result.
    #[arg(long)]
    no_report: bool,
    #[command(flatten)]
    token: TokenArgs,
}

/// `--mode`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Refuse an existing output.
    New,
    /// Replace it.
    Overwrite,
    /// Update it.
    Update,
}

/// `--format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A Parquet folder with `_SUCCESS` last.
    Parquet,
    /// A Delta Lake table.
    Delta,
}

/// Where a cluster process finds the cluster's shared secret.
#[derive(Args, Clone)]
struct TokenArgs {
    /// A file holding the cluster's shared token [default: $FRUITS_CLUSTER_TOKEN]; the same on
    /// the client, the scheduler and every executor.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    fn load(&self) -> Result<fruits_cluster::auth::ClusterToken> {
        Ok(fruits_cluster::auth::ClusterToken::load(
            self.token_file.as_deref(),
        )?)
    }
}

#[derive(Args)]
struct SchedulerArgs {
    /// HOST:PORT to listen on. The cluster has no authentication: bind a private network's
    /// address only (see the README's trust model).
    #[arg(long, default_value = fruits_cluster::defaults::SCHEDULER_BIND)]
    bind: String,
    /// Seconds without a heartbeat before an executor is lost and its tasks run elsewhere
    /// (keep it several times the executors' --heartbeat).
    #[arg(long, default_value_t = fruits_cluster::defaults::EXECUTOR_TIMEOUT_S)]
    executor_timeout: u64,
    #[command(flatten)]
    token: TokenArgs,
}

#[derive(Args)]
struct ExecutorArgs {
    /// The scheduler's HOST:PORT.
    #[arg(long)]
    scheduler: String,
    /// HOST:PORT of the executor's Flight service; its gRPC service uses PORT+1
    /// [default: free ports on 127.0.0.1].
    #[arg(long)]
    bind: Option<String>,
    /// Host name other machines reach this executor at [default: the bind address, or this
    /// machine's host name when binding all addresses].
    #[arg(long)]
    external_host: Option<String>,
    /// Tasks run at once (one core each) [default: the number of cores].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Where task results are kept [default: a temporary folder].
    #[arg(long)]
    work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = fruits_cluster::defaults::HEARTBEAT_S)]
    heartbeat: u64,
    #[command(flatten)]
    token: TokenArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// The scheduler: `df://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    cluster: String,
    /// Print the executors as JSON lines.
    #[arg(long)]
    json: bool,
}

/// S3 settings; each overrides its AWS_* environment variable.
#[derive(Args, Clone, Default)]
pub(crate) struct S3Args {
    /// S3-compatible endpoint [env: AWS_ENDPOINT_URL].
    #[arg(long)]
    endpoint_url: Option<String>,
    /// AWS region [env: AWS_REGION].
    #[arg(long)]
    region: Option<String>,
    /// Profile of ~/.aws/config and ~/.aws/credentials [env: AWS_PROFILE].
    #[arg(long)]
    profile: Option<String>,
    /// Allow a plain http:// endpoint [env: AWS_ALLOW_HTTP].
    #[arg(long)]
    allow_http: bool,
}

impl S3Args {
    /// The run's S3 settings: built here once, carried by its plans.
    pub(crate) fn settings(&self) -> fruits_store::S3Settings {
        fruits_store::S3Settings {
            endpoint: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            allow_http: self.allow_http,
        }
    }
}

#[derive(Args)]
struct ExtractArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Keep exactly K principal components.
    #[arg(long, conflicts_with = "pca_variance")]
    pca_k: Option<usize>,
    /// Keep the fewest components holding this share of the variance.
    #[arg(long, default_value_t = 0.95)]
    pca_variance: f64,
}

#[derive(Args)]
struct ProjectArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The saved PCA: `<output of extract>/_pca` (folder, file:// or s3://).
    #[arg(long)]
    pca: String,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => {
            eprintln!("fruits: error: an argument is not valid UTF-8: name inputs and outputs with UTF-8 paths or URIs");
            std::process::exit(1);
        }
        Err(e) => e.exit(),
    };
    // Cluster processes log a line per task or job, a server its errors. The other commands
    // report their errors themselves, in one line (`RUST_LOG` shows the libraries' logs).
    let log = match cli.command {
        Command::Scheduler(_) | Command::Executor(_) => fruits_cluster::default_log_filter(),
        Command::Serve(_) => "error".to_string(),
        _ => "off".to_string(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| log.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(cli) {
        eprintln!("fruits: error: {}", one_line(&e));
        // A run a signal stopped exits as the signal would have ended it.
        let stopped = e
            .downcast_ref::<fruits_engine::EngineError>()
            .is_some_and(fruits_engine::EngineError::stopped);
        let code = match (stopped, signals::received()) {
            (true, Some(stop)) => stop.exit_code(),
            _ => 1,
        };
        std::process::exit(code);
    }
}

/// The error and its causes on one line, skipping causes its own message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Extract(a) => {
            let pca = match a.pca_k {
                Some(k) => Components::K(k),
                None => Components::Variance(a.pca_variance),
            };
            run_job(&a.run, PcaSpec::Fit(pca))
        }
        Command::Project(a) => {
            let rt = runtime(1)?;
            let pca = rt
                .block_on(PcaSpec::load(&a.pca, &a.run.s3.settings()))
                .with_context(|| format!("reading the saved PCA at {}", a.pca))?;
            run_job(&a.run, pca)
        }
        Command::Train(a) => train::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Report(a) => report::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchServe(a) => bench_serve::run(a),
        Command::Scheduler(a) => {
            let rt = runtime(1)?;
            let opts = fruits_cluster::SchedulerOptions {
                bind: a.bind,
                executor_timeout: Duration::from_secs(a.executor_timeout),
                token: a.token.load()?,
            };
            rt.block_on(fruits_cluster::run_scheduler(opts, |addr| {
                println!(
                    "fruits scheduler {} listening on {addr}",
                    fruits_cluster::codec::VERSION
                );
            }))?;
            Ok(())
        }
        Command::Executor(a) => {
            let concurrency = default_threads(a.concurrency);
            // Tasks run on Ballista's own pool of `concurrency` threads; this runtime serves
            // the network.
            let rt = runtime(1)?;
            let opts = fruits_cluster::ExecutorOptions {
                scheduler: a.scheduler,
                bind: a.bind,
                external_host: a.external_host,
                concurrency,
                work_dir: a.work_dir,
                heartbeat: Duration::from_secs(a.heartbeat.max(1)),
                token: a.token.load()?,
            };
            let scheduler = opts.scheduler.clone();
            let ended = rt.block_on(fruits_cluster::run_executor(opts, move |id| {
                println!(
                    "fruits executor {id} registered with {scheduler}, concurrency {concurrency}"
                );
            }));
            // Tasks still blocked on an unreachable scheduler are not waited for.
            rt.shutdown_timeout(Duration::from_secs(1));
            Ok(ended?)
        }
        Command::Status(a) => status(&a),
        Command::Weights {
            command: WeightsCommand::Fetch { url, force },
        } => {
            let path = fruits_weights::fetch(&url, None, force)?;
            println!("weights ready: {}", path.display());
            Ok(())
        }
        Command::Weights {
            command: WeightsCommand::Path { weights, s3 },
        } => {
            let rt = runtime(1)?;
            let found = rt.block_on(fruits_weights::resolve(weights.as_deref(), &s3.settings()))?;
            fruits_model::MobileNetV2::from_tensors(&found.tensors)?;
            println!("{}", found.uri);
            if Path::new(&found.uri) != found.local {
                println!("  cached at {}", found.local.display());
            }
            Ok(())
        }
    }
}

/// `fruits status`: the scheduler's executors, one line each.
fn status(a: &StatusArgs) -> Result<()> {
    let rt = runtime(1)?;
    let executors = rt.block_on(async {
        let hostport = a.cluster.strip_prefix("df://").unwrap_or(&a.cluster);
        let addr = tokio::net::lookup_host(hostport)
            .await
            .ok()
            .and_then(|mut found| found.next())
            .with_context(|| format!("invalid scheduler address {}", a.cluster))?;
        anyhow::Ok(fruits_cluster::status::executors(addr).await?)
    })?;
    if a.json {
        for e in &executors {
            let line = serde_json::json!({
                "id": e.id,
                "host": e.host,
                "port": e.port,
                "vcores": e.vcores,
                "silent_s": e.silent_for.map(|d| d.as_secs_f64()),
            });
            println!("{line}");
        }
        return Ok(());
    }
    let n = executors.len();
    println!(
        "{}: {n} executor{}",
        a.cluster,
        if n == 1 { "" } else { "s" }
    );
    for e in &executors {
        let heard = match e.silent_for {
            Some(d) => format!("last heartbeat {:.0} s ago", d.as_secs_f64()),
            None => "no heartbeat yet".to_string(),
        };
        println!(
            "  {}  at {}:{}  {} task slots  {heard}",
            e.id, e.host, e.port, e.vcores
        );
    }
    Ok(())
}

/// A tokio runtime for `threads` compute partitions, plus one worker that keeps reads and
/// writes moving while every partition runs the model.
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1) + 1)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Cores to use when `--threads` is not given.
pub(crate) fn default_threads(threads: Option<usize>) -> usize {
    threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

/// Loads the weights a run asked for (with the path in any error).
/// `s3://` weights are first copied to the local cache.
pub(crate) fn load_model(
    rt: &tokio::runtime::Runtime,
    source: &fruits_engine::ModelSource,
) -> Result<Arc<fruits_model::MobileNetV2>> {
    Ok(Arc::new(rt.block_on(source.load())?))
}

fn run_job(a: &RunArgs, pca: PcaSpec) -> Result<()> {
    let threads = default_threads(a.threads);
    let rt = runtime(threads)?;
    let s3 = a.s3.settings();
    let weights = fruits_engine::ModelSource::new(a.weights.clone(), &s3);
    let (engine, model): (Box<dyn Engine>, _) = match &a.cluster {
        // The executors load the weights; this process never needs them.
        Some(url) => {
            let cluster = rt
                .block_on(fruits_cluster::Cluster::connect(url, a.token.load()?))?
                .with_images_per_task(a.images_per_task as usize)
                .with_job_timeout(Duration::from_secs(a.job_timeout.max(1)));
            (Box::new(cluster), None)
        }
        None => (
            Box::new(
                fruits_engine::InProcess::new(threads)
                    .with_images_per_task(a.images_per_task as usize),
            ),
            Some(load_model(&rt, &weights)?),
        ),
    };
    let cfg = ExtractConfig {
        input: a.input.clone(),
        output: a.output.clone(),
        weights,
        model,
        pca,
        overwrite: a.overwrite || a.mode == Mode::Overwrite,
        update: a.mode == Mode::Update,
        batch_size: a.batch_size as usize,
        limits: fruits_engine::Limits {
            max_file_bytes: a.max_file_mb.saturating_mul(1 << 20),
            max_pixels: a.max_pixels,
        },
        s3,
        report: !a.no_report,
        format: match a.format {
            Format::Parquet => fruits_engine::Format::Parquet,
            Format::Delta => fruits_engine::Format::Delta,
        },
    };
    let progress = Arc::new(Progress::default());
    let run = rt.block_on(with_progress_bar(
        progress.clone(),
        fruits_engine::extract_until(&cfg, engine.as_ref(), progress, signals::stop_gently()),
    ));
    let summary = match run {
        Ok(summary) => summary,
        Err(e) => {
            // The run has ended its staging: tasks still inside a model batch are not waited
            // for (a stopped run exits at once, not after the batch).
            rt.shutdown_background();
            return Err(e.into());
        }
    };
    print_summary(&summary);
    Ok(())
}

/// Runs `job` while a progress bar (images/s, ETA) follows `progress` on a terminal.
pub(crate) async fn with_progress_bar<T>(
    progress: Arc<Progress>,
    job: impl std::future::Future<Output = T>,
) -> T {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} images  {rate}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} images/s", s.per_sec());
            },
        )
        .progress_chars("=> "),
    );
    let ticker = {
        let bar = bar.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut told = false;
            loop {
                let resumed = progress.resumed.load(Ordering::Relaxed);
                if resumed > 0 && !told {
                    told = true;
                    bar.suspend(|| {
                        eprintln!(
                            "resuming: {resumed} images already featurised by an interrupted run of this command"
                        )
                    });
                }
                bar.set_length(progress.total.load(Ordering::Relaxed));
                bar.set_position(progress.done.load(Ordering::Relaxed));
                let skipped = progress.skipped.load(Ordering::Relaxed);
                if skipped > 0 {
                    bar.set_message(format!("{skipped} skipped"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let out = job.await;
    ticker.abort();
    bar.finish_and_clear();
    out
}

fn print_summary(s: &Summary) {
    if s.skipped > 0 {
        eprintln!(
            "{} image(s) skipped, listed in {}/_errors.json; first:",
            s.skipped, s.output
        );
        for sk in &s.skipped_sample {
            eprintln!("  {}: {}", sk.path, sk.error);
        }
    }
    println!("wrote {} rows to {}", s.rows, s.output);
    if let Some(v) = s.version {
        println!("committed version {v} of the Delta table");
    }
    if s.resumed > 0 {
        println!(
            "resumed {} images from an interrupted run, featurised {}",
            s.resumed, s.featurized
        );
    }
    if let Some(u) = &s.update {
        if let Some(why) = &u.stale {
            println!("stored features not reused: {why}");
        }
        println!(
            "update: {} reused, {} new, {} changed, {} removed",
            u.reused, u.new, u.changed, u.removed
        );
    }
    println!(
        "images {}  classes {}  skipped {}  k {}  variance kept {:.4}",
        s.images, s.classes, s.skipped, s.k, s.variance_kept
    );
    println!(
        "wall {:.1} s  ({:.1} images/s; list {:.1} s, featurize {:.1} s, fit {:.1} s, project+write {:.1} s, report {:.1} s, commit {:.1} s)",
        s.seconds.total,
        s.images_per_second(),
        s.seconds.list,
        s.seconds.featurize,
        s.seconds.fit,
        s.seconds.project,
        s.seconds.report,
        s.seconds.commit
    );
    if s.workers.len() > 1 || s.workers.keys().any(|w| w != "local") {
        println!("ran on {}:", s.engine);
        for (worker, images) in &s.workers {
            println!("  {worker}: {images} images");
        }
    }
}
