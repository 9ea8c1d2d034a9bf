//! What a task did ([`TaskReport`]) and what a run set aside ([`Skipped`]).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use datafusion::error::{DataFusionError, Result};
use serde::{Deserialize, Serialize};

use super::schema::{report_schema, ReportRows};

/// An image that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Its URI.
    pub path: String,
    /// One line: what went wrong.
    pub error: String,
}

/// What one write task did: returned as one row of [`report_schema`], and stored beside its
/// output as JSON.
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
    /// The process that ran it ([`crate::process::worker_name`]).
    pub worker: String,
    /// The hash of the MobileNetV2 weights that featurised its images (none if it featurised
    /// none).
    #[serde(default)]
    pub weights: Option<String>,
}

impl TaskReport {
    /// The report as one row of [`report_schema`].
    pub fn to_batch(&self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            report_schema(),
            vec![
                Arc::new(UInt32Array::from(vec![self.partition as u32])) as ArrayRef,
                Arc::new(UInt64Array::from(vec![self.rows])),
                Arc::new(UInt64Array::from(vec![self.images])),
                Arc::new(StringArray::from(vec![to_json(&self.skipped)])),
                Arc::new(StringArray::from(vec![to_json(&self.labels)])),
                Arc::new(StringArray::from(vec![self.worker.clone()])),
                Arc::new(StringArray::from(vec![self.weights.clone()])),
            ],
        )?)
    }

    /// The report as stored beside a task's output.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self).into_bytes()
    }

    /// The reports in `batches` (rows of [`report_schema`]).
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Vec<TaskReport>> {
        let bad = |what: &str| DataFusionError::Internal(format!("task report: bad {what}"));
        let mut out = Vec::new();
        for b in batches {
            let r = ReportRows::try_from(b)?;
            for i in 0..b.num_rows() {
                out.push(TaskReport {
                    partition: r.partition.value(i) as usize,
                    rows: r.rows.value(i),
                    images: r.images.value(i),
                    skipped: serde_json::from_str(r.skipped.value(i))
                        .map_err(|_| bad("skipped list"))?,
                    labels: serde_json::from_str(r.labels.value(i))
                        .map_err(|_| bad("label list"))?,
                    worker: r.worker.value(i).to_string(),
                    weights: r
                        .weights
                        .is_valid(i)
                        .then(|| r.weights.value(i).to_string()),
                });
            }
        }
        Ok(out)
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_a_batch_round_trip() {
        let report = TaskReport {
            partition: 3,
            rows: 2,
            images: 3,
            skipped: vec![Skipped {
                path: "s3://b/x.jpg".into(),
                error: "truncated".into(),
            }],
            labels: vec!["Kiwi".into()],
            worker: "executor-1".into(),
            weights: Some("sha256:00".into()),
        };
        let batch = report.to_batch().unwrap();
        assert_eq!(TaskReport::from_batches(&[batch]).unwrap(), vec![report]);
    }
}
