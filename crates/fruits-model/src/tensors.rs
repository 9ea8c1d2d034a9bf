//! The network's weights in memory: named float tensors ([`Tensors`]), whatever file they
//! came from (reading files is the `fruits-weights` crate's job).

use std::collections::HashMap;

use crate::ModelError;

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
}
