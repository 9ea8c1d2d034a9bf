//! MobileNetV2 1.0/224 (ImageNet) as a feature extractor: weights in, 1280 features per image out.
//!
//! * [`weights`]: find the weights (explicit path, `$FRUITS_WEIGHTS`, per-user cache) and read
//!   them (a folder of TF-slim `.npy` tensors, or Keras' `.h5` weights file).
//! * [`fetch`]: download the official Keras weights file into the cache.
//! * [`MobileNetV2`]: the forward pass, cut before the classifier at the global average pool,
//!   matching Keras' `model.layers[-2]` output to ~1e-5.
//!
//! Knows nothing of image files or query engines: input is already-scaled `f32` HWC pixels.
//!
//! ```no_run
//! use fruits_model::{MobileNetV2, Tensors, FEATURES, INPUT_LEN};
//! let t = Tensors::read(std::path::Path::new("models/mobilenet_v2_1.0_224"))?;
//! let net = MobileNetV2::from_tensors(&t)?;
//! let pixels = vec![0.0f32; 2 * INPUT_LEN];
//! let mut features = vec![0.0f32; 2 * FEATURES];
//! net.forward(&pixels, &mut features, 2);
//! # Ok::<(), fruits_model::ModelError>(())
//! ```

pub mod fetch;
mod keras_h5;
mod net;
pub mod weights;

pub use net::{MobileNetV2, FEATURES, INPUT_LEN, INPUT_SIDE};
pub use weights::Tensors;

use std::path::Path;

/// What can go wrong finding, reading or fetching weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Nothing at the given path.
    #[error("weights not found at {path}")]
    NotFound {
        /// The path.
        path: String,
    },
    /// No path given, no `$FRUITS_WEIGHTS`, nothing cached.
    #[error(
        "no model weights: pass --weights PATH, set FRUITS_WEIGHTS, or run `fruits weights fetch` (cache: {cache})"
    )]
    NoWeights {
        /// The cache file looked for.
        cache: String,
    },
    /// A tensor the network needs is absent.
    #[error("weights {source_path}: missing tensor {name}")]
    MissingTensor {
        /// The weights path.
        source_path: String,
        /// TF-slim tensor name.
        name: String,
    },
    /// A tensor has the wrong shape.
    #[error("weights {source_path}: tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The weights path.
        source_path: String,
        /// TF-slim tensor name.
        name: String,
        /// Shape the network needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A file is not in the expected format.
    #[error("weights: {0}")]
    Format(String),
    /// Reading or writing failed.
    #[error("weights {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Downloading failed.
    #[error("download {url}: {message}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Locates (see [`weights::locate`]), reads and builds the network in one call.
pub fn load(explicit: Option<&Path>) -> Result<MobileNetV2, ModelError> {
    let path = weights::locate(explicit)?;
    MobileNetV2::from_tensors(&Tensors::read(&path)?)
}
