//! fruits on an Apache DataFusion Ballista cluster.
//!
//! * [`codec`]: how fruits' plan nodes and functions travel (the stock Ballista binaries
//!   cannot decode them; ours register [`codec::FruitsCodec`] everywhere), signed with the
//!   cluster's shared token ([`auth`]).
//! * Executors run fruits plans only: a task whose plan is not a signed fruits write is
//!   refused before it runs ([`guard`]).
//! * [`run_scheduler`] and [`run_executor`]: Ballista's scheduler and executor with that codec,
//!   round-robin task distribution and a bounded wait for lost executors.
//! * [`Cluster`]: a [`fruits_engine::Engine`] that submits fruits' (map-only)
//!   physical plans to a scheduler, bounded by a timeout and retried once.
//! * [`jobs`]: the scheduler's line per job and its Prometheus metrics; [`status`]: the
//!   executors a scheduler knows (its REST API, on the same port).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fruits_engine::Engine;
//! let token = fruits_cluster::auth::ClusterToken::load(None)?; // $FRUITS_CLUSTER_TOKEN
//! let cluster = fruits_cluster::Cluster::connect("df://127.0.0.1:50050", token).await?;
//! println!("{}", cluster.describe());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaCodec;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_executor::health::ExecutorHealth;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::start_grpc_service_with_listener;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use fruits_engine::{Engine, EngineError};
use futures::future::BoxFuture;
use futures::TryStreamExt;

pub mod auth;
pub mod codec;
pub mod guard;
pub mod jobs;
pub mod status;

/// The cluster's defaults: the command line shows and uses these, and so does the library.
pub mod defaults {
    /// Where a scheduler listens.
    pub const SCHEDULER_BIND: &str = "127.0.0.1:50050";
    /// Seconds without a heartbeat before the scheduler declares an executor lost.
    pub const EXECUTOR_TIMEOUT_S: u64 = 60;
    /// Seconds between an executor's heartbeats.
    pub const HEARTBEAT_S: u64 = 10;
    /// Seconds one job may take before it is abandoned and retried once.
    pub const JOB_TIMEOUT_S: u64 = 6 * 3600;
    /// Seconds an executor told to stop (SIGTERM, Ctrl-C) gives Ballista's own shutdown
    /// (finish running tasks, tell the scheduler) before it exits anyway.
    pub const STOP_GRACE_S: u64 = 10;
    /// Seconds a client waits for a scheduler without executors to get one before it gives up.
    pub const EXECUTOR_WAIT_S: u64 = 30;
}

use auth::ClusterToken;

/// The log a cluster process writes when `RUST_LOG` does not say otherwise (a `tracing`
/// filter): errors, and one line per task (executors) or job (scheduler) with its duration.
pub fn default_log_filter() -> String {
    format!(
        "error,{}=info,{}=info",
        fruits_engine::plan::TASK_LOG,
        jobs::TARGET
    )
}

/// The largest message between client and scheduler: a featurize plan carries the path of
/// every image (about 70 bytes each), so Ballista's 16 MiB default would stop near 200,000.
const MAX_MESSAGE_BYTES: u32 = 1 << 30;

pub use codec::FruitsCodec;

/// Why a cluster process could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An address that does not parse or resolve.
    #[error("invalid address {addr}: {message}")]
    Address {
        /// What was given.
        addr: String,
        /// Why it is wrong.
        message: String,
    },
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The scheduler cannot be reached.
    #[error("cannot reach the scheduler at {url}: {message}")]
    Unreachable {
        /// `df://host:port`.
        url: String,
        /// The cause.
        message: String,
    },
    /// Ballista failed.
    #[error("ballista: {0}")]
    Ballista(#[from] ballista_core::error::BallistaError),
}

fn resolve(addr: &str) -> Result<SocketAddr, ClusterError> {
    let bad = |message: String| ClusterError::Address {
        addr: addr.to_string(),
        message,
    };
    addr.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to nothing".into()))
}

/// Connects to `addr` (and hangs up), trying again for up to `patience`; the last error.
async fn reach(addr: SocketAddr, patience: Duration) -> Result<(), String> {
    let until = std::time::Instant::now() + patience;
    loop {
        let error = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 10 s".to_string(),
        };
        if std::time::Instant::now() >= until {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Settings of `fruits scheduler`.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// `HOST:PORT` to listen on (port 0: any free port).
    pub bind: String,
    /// An executor silent this long is lost: its tasks run again elsewhere.
    pub executor_timeout: Duration,
    /// The cluster's shared secret.
    pub token: ClusterToken,
}

/// Runs a scheduler until the process ends; `ready` gets the address it listens on.
pub async fn run_scheduler(
    opts: SchedulerOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ClusterError> {
    let addr = resolve(&opts.bind)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ClusterError::Bind {
            addr: opts.bind.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ClusterError::Bind {
        addr: opts.bind.clone(),
        source,
    })?;
    let timeout = opts.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: local.ip().to_string(),
        bind_port: local.port(),
        external_host: local.ip().to_string(),
        scheduling_policy: TaskSchedulingPolicy::PushStaged,
        task_distribution: TaskDistributionPolicy::RoundRobin,
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: (timeout / 3).clamp(1, 15),
        no_executors_grace_period_seconds: timeout,
        override_physical_codec: Some(Arc::new(FruitsCodec::new(opts.token.clone()))),
        grpc_server_max_decoding_message_size: MAX_MESSAGE_BYTES,
        grpc_server_max_encoding_message_size: MAX_MESSAGE_BYTES,
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    // Ballista's `create_scheduler`, with fruits' codec and job log.
    let codec = BallistaCodec::new(
        Arc::new(ballista_core::serde::BallistaLogicalExtensionCodec::default()),
        Arc::new(FruitsCodec::new(opts.token.clone())),
    );
    let mut scheduler = SchedulerServer::<LogicalPlanNode, PhysicalPlanNode>::new(
        config.scheduler_endpoint(),
        cluster,
        codec,
        Arc::new(config),
        Arc::new(jobs::JobLog::new()?),
    );
    scheduler.init().await?;
    ready(local);
    start_grpc_service_with_listener(listener, scheduler).await?;
    Ok(())
}

/// Settings of `fruits executor`.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's `HOST:PORT`.
    pub scheduler: String,
    /// `HOST:PORT` of the executor's Flight service (its gRPC service takes the next port);
    /// `None`: free ports on 127.0.0.1.
    pub bind: Option<String>,
    /// Host other processes reach this executor at [default: the bind host, or the machine's
    /// host name when binding all addresses].
    pub external_host: Option<String>,
    /// Tasks run at once (each runs the model on one core).
    pub concurrency: usize,
    /// Where Ballista keeps task results.
    pub work_dir: Option<String>,
    /// Heartbeat period (the scheduler's executor timeout must be several of these).
    pub heartbeat: Duration,
    /// The cluster's shared secret.
    pub token: ClusterToken,
}

/// Two distinct free TCP ports on `host` (the OS picks them; both are held until both are
/// picked, then released for the executor to bind).
fn free_ports(host: &str) -> Result<(u16, u16), ClusterError> {
    let addr = format!("{host}:0");
    let held = (|| {
        let (a, b) = (
            std::net::TcpListener::bind(&addr)?,
            std::net::TcpListener::bind(&addr)?,
        );
        Ok((a.local_addr()?.port(), b.local_addr()?.port()))
    })();
    held.map_err(|source| ClusterError::Bind { addr, source })
}

/// This machine's host name (Linux).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The id an executor with these options registers under: `host:flight-port`, plus the
/// process id so that a restarted executor is a new one.
fn executor_id(host: &str, port: u16) -> String {
    format!("{host}:{port}/{}", std::process::id())
}

/// Runs an executor until the process ends or is told to stop; `ready` gets its id once the
/// scheduler has acknowledged it (its first heartbeat).
pub async fn run_executor(
    opts: ExecutorOptions,
    ready: impl FnOnce(&str) + Send + 'static,
) -> Result<(), ClusterError> {
    let scheduler = resolve(&opts.scheduler)?;
    // A scheduler that is starting too is waited for; a wrong address fails in 30 s.
    reach(scheduler, Duration::from_secs(30))
        .await
        .map_err(|message| ClusterError::Unreachable {
            url: format!("df://{}", opts.scheduler),
            message,
        })?;
    let (host, port, grpc_port) = match &opts.bind {
        Some(bind) => {
            let addr = resolve(bind)?;
            let grpc = addr
                .port()
                .checked_add(1)
                .ok_or_else(|| ClusterError::Address {
                    addr: bind.clone(),
                    message: "no port after it for the gRPC service".into(),
                })?;
            (addr.ip().to_string(), addr.port(), grpc)
        }
        None => {
            let (flight, grpc) = free_ports("127.0.0.1")?;
            ("127.0.0.1".to_string(), flight, grpc)
        }
    };
    // Others must be told a reachable name, not the wildcard address.
    let external = opts.external_host.clone().unwrap_or_else(|| {
        let unspecified = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if unspecified {
            hostname().unwrap_or_else(|| host.clone())
        } else {
            host.clone()
        }
    });
    let id = executor_id(&external, port);
    fruits_engine::process::set_worker_name(id.clone());
    let health = ExecutorHealth::new();
    let config = ExecutorProcessConfig {
        health: health.clone(),
        executor_id: id.clone(),
        bind_host: host.clone(),
        external_host: Some(external),
        port,
        grpc_port,
        scheduler_host: scheduler.ip().to_string(),
        scheduler_port: scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrency.max(1),
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: opts.work_dir.clone(),
        executor_heartbeat_interval_seconds: opts.heartbeat.as_secs().max(1),
        override_physical_codec: Some(Arc::new(FruitsCodec::new(opts.token.clone()))),
        override_execution_engine: Some(Arc::new(guard::FruitsOnly::default())),
        ..ExecutorProcessConfig::default()
    };
    let named = id.clone();
    tokio::spawn(async move {
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ready(&named);
    });
    // Ballista's executor stops on SIGTERM or Ctrl-C only once the scheduler has heard of it,
    // so it would wait on an unreachable scheduler for as long as its connections hang:
    // past the grace period, the executor exits anyway.
    tokio::select! {
        ended = start_executor_process(Arc::new(config)) => ended?,
        () = stop_requested(Duration::from_secs(defaults::STOP_GRACE_S)) => {
            eprintln!(
                "fruits executor {id}: stopped {} s after the stop signal, its shutdown unfinished (scheduler unreachable?)",
                defaults::STOP_GRACE_S
            );
        }
    }
    Ok(())
}

/// Completes `grace` after the process is told to stop (SIGTERM or Ctrl-C).
async fn stop_requested(grace: Duration) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tokio::time::sleep(grace).await;
}

/// An [`Engine`] that runs plans on a Ballista cluster through its scheduler.
///
/// Every plan fruits sends is map-only, so a job is idempotent: a job that fails or exceeds
/// its timeout may be submitted once more ([`Engine::attempts`]).
#[derive(Debug, Clone)]
pub struct Cluster {
    url: String,
    token: ClusterToken,
    scheduler: SocketAddr,
    images_per_task: usize,
    job_timeout: Duration,
    attempts: usize,
}

impl Cluster {
    /// Checks that the scheduler at `df://HOST:PORT` (or `HOST:PORT`) answers; plans are
    /// signed with `token`.
    pub async fn connect(url: &str, token: ClusterToken) -> Result<Cluster, ClusterError> {
        let hostport = url.strip_prefix("df://").unwrap_or(url);
        let unreachable = |message: String| ClusterError::Unreachable {
            url: format!("df://{hostport}"),
            message,
        };
        let scheduler = resolve(hostport).map_err(|e| unreachable(e.to_string()))?;
        reach(scheduler, Duration::ZERO)
            .await
            .map_err(unreachable)?;
        Ok(Cluster {
            url: format!("df://{hostport}"),
            token,
            scheduler,
            images_per_task: fruits_engine::IMAGES_PER_TASK,
            job_timeout: Duration::from_secs(defaults::JOB_TIMEOUT_S),
            attempts: 2,
        })
    }

    /// Images per task (smaller: better balance and less to redo when an executor is lost).
    pub fn with_images_per_task(mut self, n: usize) -> Cluster {
        self.images_per_task = n.max(1);
        self
    }

    /// The longest one job may take before it is abandoned (and retried once).
    pub fn with_job_timeout(mut self, timeout: Duration) -> Cluster {
        self.job_timeout = timeout;
        self
    }

    /// What the scheduler knows of its executors ([`status::executors`]).
    pub async fn executors(&self) -> Result<Vec<status::ExecutorState>, ClusterError> {
        status::executors(self.scheduler).await
    }

    /// Completes, with the error to report, once the scheduler has had no executor for
    /// [`defaults::EXECUTOR_WAIT_S`] in a row: Ballista keeps a job for an empty cluster queued
    /// for ever. A scheduler that does not answer the question is no evidence either way.
    async fn without_executors(&self) -> EngineError {
        let wait = Duration::from_secs(defaults::EXECUTOR_WAIT_S);
        let mut empty_since: Option<std::time::Instant> = None;
        loop {
            match self.executors().await {
                Ok(known) if known.is_empty() => {
                    let since = *empty_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= wait {
                        return EngineError::Cluster {
                            message: format!(
                                "the scheduler at {} has no executors (waited {} s): start `fruits executor --scheduler {}`",
                                self.url,
                                defaults::EXECUTOR_WAIT_S,
                                self.scheduler
                            ),
                            retryable: false,
                        };
                    }
                }
                _ => empty_since = None,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn run_once(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<RecordBatch>, EngineError> {
        let codec = FruitsCodec::new(self.token.clone());
        let session_id = format!("fruits-{}", std::process::id());
        let session = SessionConfig::new_with_ballista()
            .with_ballista_grpc_client_max_message_size(MAX_MESSAGE_BYTES as usize);
        let job = async {
            let stream = execute_physical_plan::<PhysicalPlanNode>(
                format!("http://{}", self.scheduler),
                &session.ballista_config(),
                plan,
                &codec,
                session_id,
                session,
            )
            .await?;
            Ok(stream.try_collect().await?)
        };
        tokio::select! {
            done = job => done,
            stuck = self.without_executors() => Err(stuck),
        }
    }
}

/// One line for a failed job, naming the likely cause where it is known.
fn explain(url: &str, e: &EngineError) -> (String, bool) {
    let text = e.to_string().replace('\n', " ");
    if text.contains("version mismatch") || text.contains("cluster's token") {
        return (text, false);
    }
    // A connection refused or lost mid-job: Ballista's text is a transport error's debug form.
    if text.contains("tcp connect error") {
        let peer = match url.strip_prefix("df://") {
            Some(addr) if text.contains(addr) => format!("the scheduler at {url}"),
            _ => "an executor".to_string(),
        };
        let why = text
            .split("message: \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("connection failed");
        return (format!("cannot reach {peer}: {why}"), true);
    }
    // Ballista fails a running job once every executor is lost for its grace period.
    if let Some(at) = text.find("all executors were lost") {
        return (
            format!(
                "the scheduler at {url}: {}",
                text[at..].trim_end_matches(['"', ')'])
            ),
            false,
        );
    }
    if text.contains("BallistaPhysicalPlanNode") || text.contains("is not provided for scalar") {
        return (
            format!(
                "the cluster at {url} does not know the fruits plan nodes and functions: \
                 run it with `fruits scheduler` and `fruits executor` ({text})"
            ),
            false,
        );
    }
    (text, true)
}

impl Engine for Cluster {
    fn partitions(&self, images: usize) -> usize {
        images.div_ceil(self.images_per_task).max(1)
    }

    fn run(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, Result<Vec<RecordBatch>, EngineError>> {
        Box::pin(async move {
            let (message, retryable) =
                match tokio::time::timeout(self.job_timeout, self.run_once(plan)).await {
                    Ok(Ok(batches)) => return Ok(batches),
                    Ok(Err(e @ EngineError::Cluster { .. })) => return Err(e),
                    Ok(Err(e)) => explain(&self.url, &e),
                    Err(_) => (format!("no result within {:?}", self.job_timeout), true),
                };
            Err(EngineError::Cluster { message, retryable })
        })
    }

    fn attempts(&self) -> usize {
        self.attempts
    }

    fn describe(&self) -> String {
        format!("cluster {}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(text: &str) -> EngineError {
        EngineError::Task(text.to_string())
    }

    #[test]
    fn a_refused_connection_names_who_could_not_be_reached() {
        let url = "df://10.0.0.10:50050";
        let refused = |addr: &str| {
            failed(&format!(
                r#"Execution error: tonic::transport::Error(Transport, ConnectError(ConnectError("tcp connect error", {addr}, Os {{ code: 111, kind: ConnectionRefused, message: "Connection refused" }})))"#
            ))
        };
        let (line, retry) = explain(url, &refused("10.0.0.10:50050"));
        assert_eq!(
            line,
            "cannot reach the scheduler at df://10.0.0.10:50050: Connection refused"
        );
        assert!(retry);
        let (line, _) = explain(url, &refused("10.0.0.11:50051"));
        assert_eq!(line, "cannot reach an executor: Connection refused");
    }

    #[test]
    fn every_executor_lost_is_final() {
        let (line, retry) = explain(
            "df://h:1",
            &failed(
                "Job 1 failed: all executors were lost and no executor re-registered within 5s",
            ),
        );
        assert_eq!(
            line,
            "the scheduler at df://h:1: all executors were lost and no executor re-registered within 5s"
        );
        assert!(!retry);
    }
}
