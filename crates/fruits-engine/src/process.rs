//! What a process holds for every plan it runs: its worker name and the I/O runtime.

use std::sync::OnceLock;

use datafusion::error::{DataFusionError, Result};

/// The name this process reports in each task report (`local` unless set).
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
pub fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
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
