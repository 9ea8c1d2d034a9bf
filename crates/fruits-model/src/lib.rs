//! fruits-model
