//! What a scheduler knows of its executors, read from its REST API (`GET /api/executors`,
//! served on the scheduler's one port beside gRPC).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::ClusterError;

/// One executor the scheduler has registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorState {
    /// Its id: `host:flight-port/pid`.
    pub id: String,
    /// Where the scheduler and clients reach it.
    pub host: String,
    /// Its Flight port.
    pub port: u16,
    /// Tasks it runs at once.
    pub vcores: u32,
    /// Time since its last heartbeat; `None` before the first one.
    pub silent_for: Option<Duration>,
}

/// The REST API's executor, as far as fruits reads it.
#[derive(Deserialize)]
struct Listed {
    id: String,
    host: String,
    port: u16,
    /// Heartbeat time, in ms since the Unix epoch (whole seconds).
    last_seen: Option<u64>,
    specification: Specification,
}

#[derive(Deserialize)]
struct Specification {
    vcores: u32,
}

/// The executors the scheduler at `scheduler` has registered (lost ones are dropped from its
/// registry), sorted by id.
pub async fn executors(scheduler: SocketAddr) -> Result<Vec<ExecutorState>, ClusterError> {
    let url = format!("http://{scheduler}/api/executors");
    let unreachable = |message: String| ClusterError::Unreachable {
        url: format!("df://{scheduler}"),
        message,
    };
    let fetch = {
        let url = url.clone();
        move || -> Result<Vec<Listed>, String> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
            response
                .body_mut()
                .read_json::<Vec<Listed>>()
                .map_err(|e| format!("{url}: {e}"))
        }
    };
    let listed = tokio::task::spawn_blocking(fetch)
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .map_err(unreachable)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut states: Vec<ExecutorState> = listed
        .into_iter()
        .map(|e| ExecutorState {
            id: e.id,
            host: e.host,
            port: e.port,
            vcores: e.specification.vcores,
            silent_for: e
                .last_seen
                .map(|ms| now.saturating_sub(Duration::from_millis(ms))),
        })
        .collect();
    states.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(states)
}
