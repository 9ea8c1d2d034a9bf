//! Why a run stopped: [`EngineError`], one line naming what and where.

impl EngineError {
    /// Whether running the failed job again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            EngineError::Cluster {
                retryable: true,
                ..
            }
        )
    }

    /// Whether a stop signal ended the run ([`EngineError::Stopped`], alone or with the
    /// photos it kept).
    pub fn stopped(&self) -> bool {
        match self {
            EngineError::Stopped(_) => true,
            EngineError::Interrupted { source, .. } => source.stopped(),
            _ => false,
        }
    }

    /// Whether a run that failed with this error keeps the work it staged for the same
    /// command to resume: yes where the cause was outside the run (storage, the cluster, a
    /// task's process, a stop signal), no where the data or the settings are at fault, which
    /// the same command would only meet again (or, for mixed weights, resume from).
    pub fn keeps_staged_work(&self) -> bool {
        match self {
            EngineError::Store(_)
            | EngineError::DataFusion(_)
            | EngineError::Delta(_)
            | EngineError::Arrow(_)
            | EngineError::Parquet { .. }
            | EngineError::Task(_)
            | EngineError::Cluster { .. }
            | EngineError::Stopped(_)
            | EngineError::Interrupted { .. } => true,
            EngineError::Pca(_)
            | EngineError::Format { .. }
            | EngineError::Overlap { .. }
            | EngineError::NoImages(_)
            | EngineError::TooFewImages { .. }
            | EngineError::PcaDimension { .. }
            | EngineError::RowCount { .. }
            | EngineError::Model(_)
            | EngineError::Weights(_)
            | EngineError::MixedWeights(_) => false,
        }
    }
}

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
    /// A Delta table (`--format delta`).
    #[error(transparent)]
    Delta(#[from] fruits_delta::DeltaError),
    /// Arrow compute.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The output holds another format than the run writes.
    #[error("output {output} {what}")]
    Format {
        /// The output.
        output: String,
        /// What it is and what to do.
        what: String,
    },
    /// Writing Parquet.
    #[error("writing {uri}: {source}")]
    Parquet {
        /// The file.
        uri: String,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// The output would write over something the run reads.
    #[error("output {output} overlaps the {what} {other}: a run never writes where it reads (choose an output outside it)")]
    Overlap {
        /// The output URI.
        output: String,
        /// `input`, `weights` or `saved PCA`.
        what: &'static str,
        /// Its URI.
        other: String,
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
    /// The weights do not make a MobileNetV2.
    #[error(transparent)]
    Model(#[from] fruits_model::ModelError),
    /// The weights could not be found, fetched or read.
    #[error(transparent)]
    Weights(#[from] fruits_weights::WeightsError),
    /// The workers featurised with different weights.
    #[error("the workers featurised with different weights ({0}): give every executor the same --weights")]
    MixedWeights(String),
    /// A task failed or misreported.
    #[error("task failed: {0}")]
    Task(String),
    /// The run was told to stop (a signal); says by what.
    #[error("{0}")]
    Stopped(String),
    /// A run failed after some of its photos were featurised: their staged work is kept for
    /// the same command to resume ([`crate::resume`]).
    #[error(
        "{source} ({images} photos featurised so far are kept: the same command resumes them)"
    )]
    Interrupted {
        /// Photos whose staged features are kept.
        images: u64,
        /// What stopped the run.
        source: Box<EngineError>,
    },
    /// The cluster could not run a plan.
    #[error("cluster: {message}")]
    Cluster {
        /// One line: what went wrong and, where known, why.
        message: String,
        /// Whether submitting the job again may help.
        retryable: bool,
    },
}
