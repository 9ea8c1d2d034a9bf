//! MobileNetV2 1.0/224 (ImageNet) as a feature extractor: tensors in, 1280 features per
//! image out, matching Keras' `model.layers[-2]` output to ~1e-5.
//!
//! The network and its kernels only: it knows no file format (the `fruits-weights` crate
//! reads `.npy` folders and Keras `.h5` files into [`Tensors`]) and no image file (input is
//! already-scaled `f32` HWC pixels).
//!
//! * `layers`: the architecture table ([`tensor_shapes`]) and the layers built from it.
//! * `net`: [`MobileNetV2`], the forward pass, cut before the classifier at the global average
//!   pool, with per-thread workspaces kept for the model's life.
//! * `kernels`: 1x1 and 3x3 depthwise convolution kernels, one file per instruction set,
//!   chosen at run time: the fastest the CPU runs, or the one `FRUITS_ISA` names (`avx512`,
//!   `avx2`, `portable`) for measurement and tests.
//!
//! ```
//! use fruits_model::{tensor_shapes, MobileNetV2, Tensors, FEATURES, INPUT_LEN};
//! // Any tensors of the right names and shapes (here: zeros, unit variances).
//! let mut t = Tensors::new("example");
//! for (name, shape) in tensor_shapes() {
//!     let fill = if name.ends_with("variance") { 1.0 } else { 0.0 };
//!     let n = shape.iter().product();
//!     t.insert(name, shape, vec![fill; n]);
//! }
//! let net = MobileNetV2::from_tensors(&t)?;
//! let pixels = vec![0.0f32; 2 * INPUT_LEN];
//! let mut features = vec![1.0f32; 2 * FEATURES];
//! net.forward(&pixels, &mut features, 2);
//! assert!(features.iter().all(|&f| f == 0.0));
//! # Ok::<(), fruits_model::ModelError>(())
//! ```

#![deny(missing_docs)]

mod kernels;
mod layers;
mod net;
mod tensors;

pub use layers::{tensor_shapes, FEATURES, INPUT_LEN, INPUT_SIDE};
pub use net::MobileNetV2;
pub use tensors::Tensors;

/// Why tensors do not make a MobileNetV2.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor the network needs is absent.
    #[error("weights {source_path}: missing tensor {name}")]
    MissingTensor {
        /// Where the tensors came from.
        source_path: String,
        /// TF-slim tensor name.
        name: String,
    },
    /// A tensor has the wrong shape.
    #[error("weights {source_path}: tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Where the tensors came from.
        source_path: String,
        /// TF-slim tensor name.
        name: String,
        /// Shape the network needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// `FRUITS_ISA` names no kernel set this CPU runs.
    #[error(
        "{}={requested}: not a kernel set this CPU runs (it runs {})",
        kernels::ISA_VAR,
        runs.join(", ")
    )]
    Isa {
        /// The value of `FRUITS_ISA`.
        requested: String,
        /// The sets this CPU runs, fastest first.
        runs: Vec<&'static str>,
    },
}
