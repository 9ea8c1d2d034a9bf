//! The fruits data path as a DataFusion plan: image source → `featurize` UDF → PCA →
//! Parquet sink, committed atomically.
//!
//! * [`source`]: the listed images as a partitioned table of `(path, label, content)`.
//! * [`udf`]: `featurize(content)` (decode, Pillow resize, MobileNetV2) and
//!   `pca_project(features)`.
//! * [`sink`]: one Parquet part per partition, streamed to the store.
//! * [`extract`]: the whole job, stage by stage ([`extract::extract`]).
//!
//! Every stage is map-only (no shuffle); the only exchange is the PCA partial sums, merged on
//! the client.

pub mod extract;
pub mod sink;
pub mod source;
pub mod udf;
pub mod weights;

pub use extract::{extract, ExtractConfig, PcaSpec, Progress, Summary};

/// Why a run stopped. Each message is one line naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Storage (listing, reading, writing, publishing).
    #[error(transparent)]
    Store(#[from] fruits_store::StoreError),
    /// Fitting or loading the PCA.
    #[error("PCA: {0}")]
    Pca(#[from] fruits_pca::PcaError),
    /// The query engine.
    #[error("query engine: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow compute.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing Parquet.
    #[error("writing {uri}: {source}")]
    Parquet {
        /// The file.
        uri: String,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// The input holds no images.
    #[error("no images (.jpg, .jpeg, .png) under {0}")]
    NoImages(String),
    /// Too few images could be used.
    #[error("only {ok} of {total} images could be used; first error: {first_error}")]
    TooFewImages {
        /// Usable images.
        ok: u64,
        /// Listed images.
        total: u64,
        /// The first image's error.
        first_error: String,
    },
    /// A saved PCA does not fit the model's features.
    #[error("the saved PCA was fitted on {expected} features, the model gives {found}")]
    PcaDimension {
        /// The PCA's width.
        expected: usize,
        /// The model's.
        found: usize,
    },
    /// The final row count differs from the staged one.
    #[error("row count check failed: {staged} rows featurised, {written} written")]
    RowCount {
        /// Rows staged.
        staged: u64,
        /// Rows written.
        written: u64,
    },
    /// Weights could not be fetched from the store.
    #[error("weights: {0}")]
    Weights(String),
    /// A worker task died.
    #[error("worker task failed: {0}")]
    Task(String),
}
