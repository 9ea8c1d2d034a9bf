//! fruits-store
