//! What a run did ([`Summary`]): printed for people, and the JSON of a result's `_SUCCESS`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Skipped;

/// What a run did, for people and for `_SUCCESS` (read back by `fruits report`).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Where the plans ran.
    pub engine: String,
    /// Images each worker featurised (worker name → images).
    pub workers: BTreeMap<String, u64>,
    /// The hash of the MobileNetV2 weights every row was featurised with
    /// ([`fruits_model::MobileNetV2::weights_hash`]); a classifier trained on the rows records it.
    #[serde(default)]
    pub weights: Option<String>,
    /// What the PCA reduction moved.
    #[serde(default)]
    pub reduction: Reduction,
    /// The preprocessing version its features come from (`update::PREPROCESSING`).
    #[serde(default)]
    pub preprocessing: u32,
    /// Photos run through the model by this invocation (skipped ones included).
    #[serde(default)]
    pub featurized: u64,
    /// Photos whose staged features this invocation took from an interrupted run of the same
    /// command ([`crate::resume`]).
    #[serde(default)]
    pub resumed: u64,
    /// With `--format delta`: the table version this run committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// With `--mode update`: how the photos compared with the previous result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateCounts>,
    /// The first skipped images (all of them are in `_errors.json`).
    #[serde(skip)]
    pub skipped_sample: Vec<Skipped>,
}

/// One Parquet part of a result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartFile {
    /// File name inside the output.
    pub name: String,
    /// Rows it holds.
    pub rows: u64,
}

/// Wall time of each stage, in seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageSeconds {
    /// Listing the input.
    pub list: f64,
    /// Reading, decoding, resizing and running the model.
    pub featurize: f64,
    /// Merging partial sums and fitting the PCA.
    pub fit: f64,
    /// Projecting and writing the final parts.
    pub project: f64,
    /// Drawing the report and running the data checks.
    #[serde(default)]
    pub report: f64,
    /// Checking and publishing.
    pub commit: f64,
    /// All of it.
    pub total: f64,
}

impl StageSeconds {
    /// Each stage's name and seconds, in order (the total last).
    pub fn stages(&self) -> Vec<(String, f64)> {
        [
            ("list", self.list),
            ("featurize", self.featurize),
            ("fit", self.fit),
            ("project", self.project),
            ("report", self.report),
            ("commit", self.commit),
            ("total", self.total),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect()
    }
}

impl Summary {
    /// Images per second over the whole run.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.total.max(1e-9)
    }
}

/// What the PCA reduction moved through the store (see `crate::reduction`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reduction {
    /// Partial-sums snapshots read.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Partitions summed again from their staged features (lost or overlapping snapshots).
    pub recomputed: u64,
}

/// How this run's photos compare with the previous result's.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCounts {
    /// Unchanged photos whose stored features were kept.
    pub reused: u64,
    /// Photos the previous result did not have (including those it had skipped).
    pub new: u64,
    /// Photos whose size or version changed, or whose stored features are stale (other
    /// weights or preprocessing): featurised again.
    pub changed: u64,
    /// Photos of the previous result gone from the input: dropped.
    pub removed: u64,
    /// Why no stored features could be reused, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}
