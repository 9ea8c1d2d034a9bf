//! fruits-pca
