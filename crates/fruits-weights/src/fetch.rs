//! Downloading the official Keras MobileNetV2 weights into the per-user cache.
//!
//! The file is streamed to a temporary name beside its destination, checked to load as a
//! complete MobileNetV2, and only then renamed into place: an interrupted or wrong download
//! never becomes the cached weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use fruits_model::MobileNetV2;

use crate::WeightsError;

/// Where Keras itself downloads the no-top MobileNetV2 1.0/224 weights from.
pub const KERAS_URL: &str = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5";

/// Downloads `url` to `dest` (default: the cache's Keras file), verifies it loads, and returns
/// the final path. An existing valid file is kept unless `force`.
pub fn fetch(url: &str, dest: Option<&Path>, force: bool) -> Result<PathBuf, WeightsError> {
    let dest = match dest {
        Some(d) => d.to_path_buf(),
        None => crate::cache_dir()
            .ok_or_else(|| WeightsError::Format("no home folder for the weights cache".into()))?
            .join(crate::KERAS_FILE),
    };
    if !force && dest.is_file() && verify(&dest).is_ok() {
        return Ok(dest);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| WeightsError::Io { path, source }
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = dest.with_extension(format!("part-{}", std::process::id()));
    let result = download(url, &tmp).and_then(|()| verify(&tmp));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

fn download(url: &str, to: &Path) -> Result<(), WeightsError> {
    let fail = |message: String| WeightsError::Download {
        url: url.to_string(),
        message,
    };
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut reader = response.into_body().into_reader();
    let mut file = std::fs::File::create(to).map_err(|source| WeightsError::Io {
        path: to.display().to_string(),
        source,
    })?;
    std::io::copy(&mut reader, &mut file).map_err(|e| fail(e.to_string()))?;
    file.flush().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Checks that a weights file reads as a complete MobileNetV2.
pub fn verify(path: &Path) -> Result<(), WeightsError> {
    MobileNetV2::from_tensors(&crate::read(path)?)?;
    Ok(())
}
