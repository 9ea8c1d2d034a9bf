//! The fruits data path as DataFusion plans: image source → `featurize` UDF → PCA → Parquet,
//! committed atomically.
//!
//! Read it top to bottom in [`mod@extract`]: the whole job, stage by stage. Below it:
//!
//! * [`plan`]: the plan nodes (image scan, staged-feature scan, per-partition writer), one per
//!   file, each described by a serde spec ([`plan::NodeSpec`]) that lets it travel.
//! * [`featurize`]: the featurise stage as a plan of its own, for `extract` and `predict`;
//!   [`result`]: a published result read back (`train`).
//! * [`udf`]: `featurize(content)` (decode, Pillow resize, MobileNetV2) and
//!   `pca_project(features)`, and their spec ([`udf::FunctionSpec`]).
//! * [`vocab`]: what the nodes and the job share: schemas with typed row views, object names,
//!   task reports, progress.
//! * [`table`]: `--format delta`, a result as the next version of a Delta table.
//! * [`engine`]: where plans run ([`Engine`]); [`InProcess`] here, a cluster elsewhere.
//! * [`store`]: store locations as plans name them; [`process`]: per-process state (worker
//!   name, I/O runtime); [`sink`]: one Parquet part, streamed to the store; [`weights`]: which
//!   weights a plan uses, loaded once per process.
//!
//! Every plan is map-only (no shuffle); the only exchange is the PCA partial sums, one
//! snapshot per process ([`reduction`]), merged by the caller.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fruits_engine::EngineError> {
//! use std::sync::Arc;
//! use fruits_engine::{
//!     extract, ExtractConfig, Format, InProcess, Limits, ModelSource, PcaSpec, Progress,
//! };
//! let s3 = fruits_store::S3Settings::default();
//! let cfg = ExtractConfig {
//!     input: "fruits-360/Test".into(),
//!     output: "features".into(),
//!     weights: ModelSource::new(None, &s3),
//!     model: None,
//!     pca: PcaSpec::Fit(fruits_pca::Components::Variance(0.95)),
//!     overwrite: false,
//!     update: false,
//!     batch_size: 32,
//!     limits: Limits::DEFAULT,
//!     s3,
//!     report: true,
//!     format: Format::Parquet,
//! };
//! let summary = extract(&cfg, &InProcess::new(2), Arc::new(Progress::default())).await?;
//! println!("{} rows, k = {}", summary.rows, summary.k);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod engine;
pub mod error;
pub mod extract;
pub mod featurize;
pub mod plan;
pub mod process;
pub mod reduction;
pub mod report;
pub mod result;
pub mod resume;
pub mod sink;
pub mod store;
pub mod table;
pub mod udf;
pub mod update;
pub mod vocab;
pub mod weights;

pub use engine::{Engine, InProcess, IMAGES_PER_TASK};
pub use error::EngineError;
pub use extract::{extract, extract_until, ExtractConfig, PcaSpec, Summary};
pub use plan::Limits;
pub use table::Format;
pub use vocab::{Progress, Skipped};
pub use weights::ModelSource;
