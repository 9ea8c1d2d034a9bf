//! From features to a fruit: a softmax classifier on `extract`'s features.
//!
//! * [`softmax`]: multinomial logistic regression (L2, scikit-learn's objective and `C`),
//!   fitted in f64 with L-BFGS; the matrix products run on `faer`.
//! * [`split`]: the validation split that keeps near-identical frames of a film together.
//! * [`train()`]: split → pick `C` on the validation rows → the best head and its metrics.
//! * [`model`]: the trained [`Classifier`] (input transform + head + class names) and its
//!   model folder's files.
//! * [`metrics`]: top-1, top-5, per class, confusions.
//!
//! Knows no store, image or network: rows of features in, probabilities and files out.
//!
//! ```
//! use fruits_classify::softmax::{FitOptions, Softmax};
//! // Two classes on a line.
//! let x = [-2.0, -1.0, 1.0, 2.0];
//! let y = [0, 0, 1, 1];
//! let mut head = Softmax::zeros(1, 2);
//! let report = head.fit(&x, &y, &FitOptions::default());
//! assert!(report.converged);
//! let p = head.probabilities(&[3.0]);
//! assert!(p[1] > 0.9);
//! ```

#![deny(missing_docs)]

pub mod metrics;
pub mod model;
pub mod softmax;
pub mod split;
pub mod train;

pub use model::{Classifier, Prediction, Space};
pub use train::{train, Rows, TrainOptions, Trained};

/// Why training or loading a classifier failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The rows cannot be trained on.
    #[error("training data: {0}")]
    Data(String),
    /// A model folder's file is missing or malformed.
    #[error("model folder: {0}")]
    Format(String),
}
