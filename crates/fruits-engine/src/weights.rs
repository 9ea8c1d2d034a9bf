//! Weights kept in an object store (`s3://...`), copied to the local cache so that every worker
//! of a cluster can load the same file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use fruits_model::MobileNetV2;

use fruits_store::{Location, S3Options};
use futures::{StreamExt, TryStreamExt};

use crate::EngineError;

/// A local path for `uri`: itself unless it is `s3://`, in which case the object (a Keras
/// `.h5` file) or every `.npy` below the prefix is downloaded into
/// `<cache>/remote/<bucket>/<key>` (written under a temporary name, then renamed).
pub async fn local_weights(uri: &str, s3: &S3Options) -> Result<PathBuf, EngineError> {
    if !uri.starts_with("s3://") {
        return Ok(PathBuf::from(uri));
    }
    let loc = Location::parse_with(uri, s3)?;
    let cache = fruits_model::weights::cache_dir()
        .ok_or_else(|| EngineError::Weights("no home folder for the weights cache".into()))?;
    let target = remote_cache_path(&cache, &loc);
    let io = |p: &std::path::Path, e: std::io::Error| {
        EngineError::Weights(format!("{}: {e}", p.display()))
    };
    let save = |path: &PathBuf, bytes: &[u8]| -> Result<(), EngineError> {
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
        return Err(EngineError::Weights(format!(
            "no .h5 file or .npy tensors at {uri}"
        )));
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
fn remote_cache_path(cache: &std::path::Path, loc: &Location) -> PathBuf {
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

/// Which weights a plan's `featurize` uses: what the user gave (`None`: each process finds its
/// own, see [`fruits_model::weights::locate`]) and how to reach S3 for `s3://` weights.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelSource {
    /// A folder of `.npy` tensors or a Keras `.h5` file, local or `s3://`.
    pub weights: Option<String>,
    /// S3 settings for `s3://` weights.
    pub s3: crate::plan::S3Settings,
}

impl ModelSource {
    /// The weights `weights` names (see the field), reached with the settings of `s3`.
    pub fn new(weights: Option<String>, s3: &S3Options) -> ModelSource {
        ModelSource {
            weights,
            s3: crate::plan::S3Settings::of(s3),
        }
    }

    /// Loads the network (downloading `s3://` weights to the cache first).
    pub async fn load(&self) -> Result<MobileNetV2, EngineError> {
        let local = match &self.weights {
            Some(w) => Some(local_weights(w, &self.s3.options()).await?),
            None => None,
        };
        Ok(fruits_model::load(local.as_deref())?)
    }

    /// The network for this source, loaded once per process and shared by every task that
    /// asks for it (callable from any thread, inside or outside an async runtime).
    pub fn shared(&self) -> Result<Arc<MobileNetV2>, EngineError> {
        static MODELS: OnceLock<Mutex<HashMap<ModelSource, Arc<MobileNetV2>>>> = OnceLock::new();
        // Held while loading: concurrent tasks wait for the one load instead of repeating it.
        let mut models = MODELS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(model) = models.get(self) {
            return Ok(model.clone());
        }
        // A thread of its own with its own runtime: this may be called from async code.
        let model = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| EngineError::Weights(format!("starting a runtime: {e}")))?;
                rt.block_on(self.load())
            })
            .join()
            .unwrap_or_else(|_| Err(EngineError::Weights("loading panicked".into())))
        })?;
        let model = Arc::new(model);
        models.insert(self.clone(), model.clone());
        Ok(model)
    }
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
