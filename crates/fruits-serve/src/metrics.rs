//! What `GET /metrics` reports, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Request counts by route and status, the prediction latency histogram, batch sizes.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    batches: u64,
    batched_images: u64,
}

impl Metrics {
    /// Counts one answer; times it if it is a prediction.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests.entry((route.to_string(), status)).or_insert(0) += 1;
        if route == "/v1/predict" {
            let s = took.as_secs_f64();
            for (b, bound) in m.latency.iter_mut().zip(BUCKETS) {
                if s <= bound {
                    *b += 1;
                }
            }
            m.latency_count += 1;
            m.latency_sum += s;
        }
    }

    /// Counts one model batch of `images`.
    pub fn batch(&self, images: usize) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.batches += 1;
        m.batched_images += images as u64;
    }

    /// The text of `GET /metrics`, with `queue_depth` jobs waiting now.
    pub fn render(&self, queue_depth: usize) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP fruits_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE fruits_requests_total counter");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "fruits_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP fruits_predict_seconds Time to answer POST /v1/predict."
        );
        let _ = writeln!(out, "# TYPE fruits_predict_seconds histogram");
        for (n, bound) in m.latency.iter().zip(BUCKETS) {
            let _ = writeln!(out, "fruits_predict_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "fruits_predict_seconds_bucket{{le=\"+Inf\"}} {}",
            m.latency_count
        );
        let _ = writeln!(out, "fruits_predict_seconds_sum {}", m.latency_sum);
        let _ = writeln!(out, "fruits_predict_seconds_count {}", m.latency_count);
        let _ = writeln!(
            out,
            "# HELP fruits_queue_depth Images waiting for a model worker."
        );
        let _ = writeln!(out, "# TYPE fruits_queue_depth gauge");
        let _ = writeln!(out, "fruits_queue_depth {queue_depth}");
        let _ = writeln!(
            out,
            "# HELP fruits_batches_total Model batches run, and their images."
        );
        let _ = writeln!(out, "# TYPE fruits_batches_total counter");
        let _ = writeln!(out, "fruits_batches_total {}", m.batches);
        let _ = writeln!(out, "fruits_batched_images_total {}", m.batched_images);
        out
    }
}
