//! Weights kept in an object store (`s3://...`), copied to the local cache so that every
//! process of a cluster reads the same file.

use std::path::{Path, PathBuf};

use fruits_store::{Location, S3Settings};
use futures::{StreamExt, TryStreamExt};

use crate::WeightsError;

/// A local path for `uri`: itself unless it is `s3://`, in which case the object (a Keras
/// `.h5` file) or every `.npy` below the prefix is downloaded into
/// `<cache>/remote/<bucket>/<key>` (written under a temporary name, then renamed).
pub async fn local_copy(uri: &str, s3: &S3Settings) -> Result<PathBuf, WeightsError> {
    if !uri.starts_with("s3://") {
        return Ok(PathBuf::from(uri));
    }
    let loc = Location::parse_with(uri, s3)?;
    let cache = crate::cache_dir()
        .ok_or_else(|| WeightsError::Format("no home folder for the weights cache".into()))?;
    let target = remote_cache_path(&cache, &loc);
    let io = |p: &Path, source: std::io::Error| WeightsError::Io {
        path: p.display().to_string(),
        source,
    };
    let save = |path: &PathBuf, bytes: &[u8]| -> Result<(), WeightsError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let tmp = path.with_extension(format!("part-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    };
    if uri.ends_with(".h5") {
        let bytes = loc.get(loc.prefix()).await?;
        save(&target, &bytes)?;
        return Ok(target);
    }
    let objects: Vec<_> = loc
        .list_paths()
        .await?
        .into_iter()
        .filter(|p| p.as_ref().ends_with(".npy"))
        .collect();
    if objects.is_empty() {
        return Err(WeightsError::NotFound {
            path: format!("{uri} (no .h5 file or .npy tensors)"),
        });
    }
    // Many small tensors: fetch them concurrently.
    let fetched: Vec<_> = futures::stream::iter(objects)
        .map(|path| {
            let loc = loc.clone();
            async move { loc.get(&path).await.map(|b| (path, b)) }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for (path, bytes) in fetched {
        let Some(name) = path.filename() else {
            continue;
        };
        save(&target.join(name), &bytes)?;
    }
    Ok(target)
}

/// Where `<cache>/remote/<bucket>/<key>` keeps a copy of `loc`: built from the bucket and the
/// key's parts (which object paths never let be `.` or `..`), so no URI can name a path
/// outside the cache.
fn remote_cache_path(cache: &Path, loc: &Location) -> PathBuf {
    let uri = loc.uri();
    let bucket = uri
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap_or_default()
        .replace(['.', '\\'], "_");
    loc.prefix()
        .parts()
        .fold(cache.join("remote").join(bucket), |p, part| {
            p.join(part.as_ref())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_stay_inside_the_cache() {
        let cache = std::path::Path::new("/cache");
        let mut checked = 0;
        for uri in [
            "s3://../x.h5",
            "s3://../../etc/x.h5",
            "s3://b/../../../etc/passwd",
            "s3://b/%2E%2E/%2E%2E/x.h5",
            "s3://b/models/./m.h5",
        ] {
            let Ok(loc) = Location::parse(uri) else {
                continue;
            };
            let p = remote_cache_path(cache, &loc);
            assert!(
                p.starts_with("/cache/remote/")
                    && !p.components().any(|c| c == std::path::Component::ParentDir),
                "{uri} -> {}",
                p.display()
            );
            checked += 1;
        }
        assert!(checked >= 2);
        let loc = Location::parse("s3://bucket/models/m.h5").unwrap();
        assert_eq!(
            remote_cache_path(cache, &loc),
            std::path::Path::new("/cache/remote/bucket/models/m.h5")
        );
    }
}
