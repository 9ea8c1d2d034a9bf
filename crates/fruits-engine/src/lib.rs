//! fruits-engine
