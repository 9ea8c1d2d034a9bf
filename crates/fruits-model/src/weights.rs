//! Finding and reading MobileNetV2 weights.
//!
//! Two layouts are read: a folder of TF-slim `.npy` tensors (`Conv_weights.npy`,
//! `expanded_conv_1_expand_BatchNorm_gamma.npy`, ...) and Keras' HDF5 weights file
//! (`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`), whose layer names are
//! mapped to the TF-slim ones. [`locate`] picks the weights the way every command does:
//! an explicit path, else `$FRUITS_WEIGHTS`, else the per-user cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ModelError;

/// Environment variable naming the weights when no path is given.
pub const WEIGHTS_ENV: &str = "FRUITS_WEIGHTS";
/// File name of the official Keras weights (no top), as `fruits weights fetch` stores it.
pub const KERAS_FILE: &str = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5";

/// Named float tensors, keyed by their TF-slim names, with where they came from.
#[derive(Debug, Default, Clone)]
pub struct Tensors {
    source: String,
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Tensors {
    /// An empty set, described as `source` in errors.
    pub fn new(source: impl Into<String>) -> Tensors {
        Tensors {
            source: source.into(),
            map: HashMap::new(),
        }
    }

    /// Adds (or replaces) one tensor.
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        self.map.insert(name.into(), (shape, values));
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A copy of tensor `name`, checked to have `shape`.
    pub fn take(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (found, values) = self
            .map
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                source_path: self.source.clone(),
                name: name.to_string(),
            })?;
        if found != shape {
            return Err(ModelError::Shape {
                source_path: self.source.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: found.clone(),
            });
        }
        Ok(values.clone())
    }

    /// Reads every `*.npy` of a folder; the file stem is the tensor name.
    pub fn read_npy_dir(dir: &Path) -> Result<Tensors, ModelError> {
        let io = |e: std::io::Error| ModelError::Io {
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
            let a =
                fruits_npy::Array::read(&path).map_err(|e| ModelError::Format(e.to_string()))?;
            let values = a
                .to_f32()
                .map_err(|e| ModelError::Format(format!("{}: {e}", path.display())))?;
            t.insert(name, a.shape.clone(), values);
        }
        Ok(t)
    }

    /// Reads weights from a path: a folder of `.npy` tensors or a Keras `.h5` file.
    pub fn read(path: &Path) -> Result<Tensors, ModelError> {
        if path.is_dir() {
            Tensors::read_npy_dir(path)
        } else if path.is_file() {
            crate::keras_h5::read(path)
        } else {
            Err(ModelError::NotFound {
                path: path.display().to_string(),
            })
        }
    }
}

/// The per-user cache folder for weights: `$XDG_CACHE_HOME/fruits`, else `~/.cache/fruits`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("fruits"))
}

/// Where the weights are: `explicit`, else `$FRUITS_WEIGHTS`, else the cached Keras file.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(WEIGHTS_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let cached = cache_dir().map(|d| d.join(KERAS_FILE));
    match cached {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(ModelError::NoWeights {
            cache: cached
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no home folder)".into()),
        }),
    }
}
