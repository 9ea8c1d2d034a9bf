//! The scheduler's account of its jobs: one log line per job with its duration, and Ballista's
//! Prometheus metrics at the scheduler's `/api/metrics`.
//!
//! [`JobLog`] is the [`SchedulerMetricsCollector`] the scheduler reports job events to: it
//! writes a `fruits::job` line for each submitted, completed, failed and cancelled job, then
//! hands the event on to Ballista's [`PrometheusMetricsCollector`], whose metrics
//! (`job_exec_time_seconds`, `job_submitted_total`, `job_completed_total`, `job_failed_total`,
//! `job_cancelled_total`, `planning_time_ms`, `pending_task_queue_size`, and the process's
//! own) the scheduler serves as Prometheus text.

use std::sync::Arc;

use ballista_core::error::Result;
use ballista_core::JobId;
use ballista_scheduler::metrics::prometheus::PrometheusMetricsCollector;
use ballista_scheduler::metrics::SchedulerMetricsCollector;

/// The `tracing` target of the scheduler's job lines.
pub const TARGET: &str = "fruits::job";

/// Logs each job's events with its duration, and counts them for Prometheus.
pub struct JobLog {
    prometheus: Arc<dyn SchedulerMetricsCollector>,
}

impl JobLog {
    /// A job log over Ballista's process-wide Prometheus collector.
    pub fn new() -> Result<JobLog> {
        Ok(JobLog {
            prometheus: PrometheusMetricsCollector::current()?,
        })
    }
}

/// Seconds between two millisecond timestamps.
fn seconds(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / 1000.0
}

impl SchedulerMetricsCollector for JobLog {
    fn record_submitted(&self, job_id: &JobId, queued_at: u64, submitted_at: u64) {
        tracing::info!(
            target: TARGET,
            "job {job_id} submitted ({:.2} s planning)",
            seconds(queued_at, submitted_at)
        );
        self.prometheus
            .record_submitted(job_id, queued_at, submitted_at);
    }

    fn record_completed(&self, job_id: &JobId, queued_at: u64, completed_at: u64) {
        tracing::info!(
            target: TARGET,
            "job {job_id} completed in {:.2} s",
            seconds(queued_at, completed_at)
        );
        self.prometheus
            .record_completed(job_id, queued_at, completed_at);
    }

    fn record_failed(&self, job_id: &JobId, queued_at: u64, failed_at: u64) {
        tracing::info!(
            target: TARGET,
            "job {job_id} failed after {:.2} s",
            seconds(queued_at, failed_at)
        );
        self.prometheus.record_failed(job_id, queued_at, failed_at);
    }

    fn record_cancelled(&self, job_id: &JobId) {
        tracing::info!(target: TARGET, "job {job_id} cancelled");
        self.prometheus.record_cancelled(job_id);
    }

    fn set_pending_tasks_queue_size(&self, value: u64) {
        self.prometheus.set_pending_tasks_queue_size(value);
    }

    fn gather_metrics(&self) -> Result<Option<(Vec<u8>, String)>> {
        self.prometheus.gather_metrics()
    }
}
