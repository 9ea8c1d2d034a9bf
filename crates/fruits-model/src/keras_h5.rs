//! Keras HDF5 weights files (placeholder, replaced below).
use std::path::Path;
use crate::{ModelError, Tensors};
pub(crate) fn read(path: &Path) -> Result<Tensors, ModelError> {
    Err(ModelError::Format(format!("{}: Keras .h5 weights are not readable yet", path.display())))
}
