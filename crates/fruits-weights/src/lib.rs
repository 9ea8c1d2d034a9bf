//! Where MobileNetV2 weights come from, and how they are read: every command, the engine and
//! every cluster executor call [`resolve`].
//!
//! * Lookup ([`locate`]): the weights given (`--weights`), else `$FRUITS_WEIGHTS`, else the
//!   Keras file in the per-user cache ([`cache_dir`]) that `fruits weights fetch` fills.
//! * Transport ([`mod@remote`]): `s3://` weights are copied once into the cache, so that
//!   every process of a cluster reads the same bytes.
//! * Formats ([`read`]): a folder of TF-slim `.npy` tensors, or Keras' HDF5 weights file read
//!   without the HDF5 C library; both give the network's [`Tensors`].
//! * [`fetch()`]: downloads the official Keras file into the cache, checked before it is kept.
//!
//! The network itself ([`fruits_model`]) knows no file format.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fruits_weights::WeightsError> {
//! let s3 = fruits_store::S3Settings::default();
//! let weights = fruits_weights::resolve(Some("s3://models/mobilenet_v2.h5"), &s3).await?;
//! let net = fruits_model::MobileNetV2::from_tensors(&weights.tensors)?;
//! println!("{} tensors from {}", weights.tensors.len(), weights.uri);
//! # let _ = net;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod fetch;
mod keras_h5;
pub mod remote;

use std::path::{Path, PathBuf};

use fruits_model::{ModelError, Tensors};
use fruits_store::S3Settings;

pub use fetch::{fetch, KERAS_URL};

/// Environment variable naming the weights when none are given.
pub const WEIGHTS_ENV: &str = "FRUITS_WEIGHTS";
/// File name of the official Keras weights (no top), as [`fetch()`] stores it.
pub const KERAS_FILE: &str = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5";

/// What can go wrong finding, fetching or reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Nothing at the given path.
    #[error("weights not found at {path}")]
    NotFound {
        /// The path.
        path: String,
    },
    /// No weights given, no `$FRUITS_WEIGHTS`, nothing cached.
    #[error(
        "no model weights: pass --weights PATH, set FRUITS_WEIGHTS, or run `fruits weights fetch` (cache: {cache})"
    )]
    NoWeights {
        /// The cache file looked for.
        cache: String,
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
    /// The object store failed.
    #[error("weights: {0}")]
    Store(#[from] fruits_store::StoreError),
    /// The tensors do not make a MobileNetV2.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Weights found and read.
#[derive(Debug)]
pub struct Resolved {
    /// What was used: the path or URI given, from `$FRUITS_WEIGHTS`, or of the cache.
    pub uri: String,
    /// The local file or folder read (a cached copy for `s3://`).
    pub local: PathBuf,
    /// The tensors.
    pub tensors: Tensors,
}

/// The per-user cache folder: `$XDG_CACHE_HOME/fruits`, else `~/.cache/fruits`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("fruits"))
}

/// Which weights a run uses: `given`, else `$FRUITS_WEIGHTS`, else the cached Keras file (a
/// path or an `s3://` URI; nothing is read).
pub fn locate(given: Option<&str>) -> Result<String, WeightsError> {
    if let Some(w) = given {
        return Ok(w.to_string());
    }
    if let Some(w) = std::env::var_os(WEIGHTS_ENV).filter(|v| !v.is_empty()) {
        return w
            .into_string()
            .map_err(|_| WeightsError::Format(format!("{WEIGHTS_ENV} is not valid UTF-8")));
    }
    let cached = cache_dir().map(|d| d.join(KERAS_FILE));
    match cached {
        Some(p) if p.is_file() => Ok(p.display().to_string()),
        _ => Err(WeightsError::NoWeights {
            cache: cached
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no home folder)".into()),
        }),
    }
}

/// Locates ([`locate`]), fetches (`s3://`: into the cache, see [`mod@remote`]) and reads
/// ([`read`]) the weights.
pub async fn resolve(given: Option<&str>, s3: &S3Settings) -> Result<Resolved, WeightsError> {
    let uri = locate(given)?;
    let local = remote::local_copy(&uri, s3).await?;
    let tensors = read(&local)?;
    Ok(Resolved {
        uri,
        local,
        tensors,
    })
}

/// Reads weights from a local path: a folder of `.npy` tensors or a Keras `.h5` file.
pub fn read(path: &Path) -> Result<Tensors, WeightsError> {
    if path.is_dir() {
        read_npy_dir(path)
    } else if path.is_file() {
        keras_h5::read(path)
    } else {
        Err(WeightsError::NotFound {
            path: path.display().to_string(),
        })
    }
}

/// Reads every `*.npy` of a folder; the file stem is the tensor name.
fn read_npy_dir(dir: &Path) -> Result<Tensors, WeightsError> {
    let io = |e: std::io::Error| WeightsError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut t = Tensors::new(dir.display().to_string());
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("npy") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let a = fruits_npy::Array::read(&path).map_err(|e| WeightsError::Format(e.to_string()))?;
        let values = a
            .to_f32()
            .map_err(|e| WeightsError::Format(format!("{}: {e}", path.display())))?;
        t.insert(name, a.shape.clone(), values);
    }
    Ok(t)
}
