//! Where the photos and the results live: URIs → `object_store`, image listing, atomic output.
//!
//! * [`Location`]: a local path, `file://` or `s3://bucket/prefix` URI, opened as an
//!   [`ObjectStore`] plus a prefix. S3 takes its settings from the standard AWS environment
//!   (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
//! * [`Location::list_images`]: every `.jpg`/`.jpeg`/`.png` below the prefix, recursively,
//!   labelled with its parent folder's name.
//! * [`Staging`]: the publish protocol. A run writes its whole result into a private staging
//!   location and [`Staging::commit`]s it; see [`Staging`] for what a reader can observe.
//!
//! Knows nothing of models or engines.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub use aws::S3Options;
pub use object_store;

mod aws;

/// Errors of the storage layer; each names the URI it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URI cannot be understood.
    #[error("invalid location {uri}: {message}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// Why.
        message: String,
    },
    /// Nothing exists at an input location.
    #[error("input not found: {0}")]
    NotFound(String),
    /// The output exists and overwriting was not asked for.
    #[error("output {0} already exists: pass --overwrite to replace it")]
    OutputExists(String),
    /// An object store operation failed (after `object_store`'s retries of transient errors).
    #[error("{uri}: {message}")]
    Object {
        /// The object or prefix.
        uri: String,
        /// What the store said, shortened to its error code where it gave one.
        message: String,
    },
    /// A local file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Sub-folders listed at the same time.
const LIST_CONCURRENCY: usize = 8;

/// File name endings (lower case) that are images.
pub const IMAGE_EXTENSIONS: [&str; 3] = [".jpg", ".jpeg", ".png"];

/// One image found by [`Location::list_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Full URI, as written to the output's `path` column.
    pub uri: String,
    /// The parent folder's name.
    pub label: String,
    /// Object path inside the location's store.
    pub path: Path,
    /// Size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A local folder (absolute).
    Local(PathBuf),
    /// `s3://bucket`.
    S3 { bucket: String },
}

/// An opened store and a prefix in it.
#[derive(Debug, Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    kind: Kind,
}

impl Location {
    /// Opens a local path, `file://` URI or `s3://bucket/prefix` (S3 settings from the
    /// environment and the shared AWS files).
    pub fn parse(uri: &str) -> Result<Location, StoreError> {
        Location::parse_with(uri, &S3Options::default())
    }

    /// As [`Location::parse`], with S3 settings that override the environment.
    pub fn parse_with(uri: &str, s3: &S3Options) -> Result<Location, StoreError> {
        let invalid = |message: String| StoreError::InvalidUri {
            uri: uri.to_string(),
            message,
        };
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name".into()));
            }
            let store = aws::builder(bucket, s3)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            let prefix =
                Path::parse(key.trim_end_matches('/')).map_err(|e| invalid(e.to_string()))?;
            return Ok(Location {
                store: Arc::new(store),
                prefix,
                kind: Kind::S3 {
                    bucket: bucket.into(),
                },
            });
        }
        let local = match uri.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if uri.contains("://") => {
                return Err(invalid(
                    "unsupported scheme (use a path, file:// or s3://)".into(),
                ))
            }
            None => PathBuf::from(uri),
        };
        if local.as_os_str().is_empty() {
            return Err(invalid("empty path".into()));
        }
        let abs = std::path::absolute(&local).map_err(|e| invalid(e.to_string()))?;
        Location::local(abs)
    }

    fn local(dir: PathBuf) -> Result<Location, StoreError> {
        // The store is rooted at "/" so that a location can name folders that do not exist yet.
        let store = LocalFileSystem::new();
        let dir = dir.canonicalize().unwrap_or(dir);
        let prefix = Path::from_absolute_path(&dir).map_err(|e| StoreError::InvalidUri {
            uri: dir.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Location {
            store: Arc::new(store),
            prefix,
            kind: Kind::Local(dir),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix inside the store.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The location's own URI (`file:///abs/dir` or `s3://bucket/prefix`).
    pub fn uri(&self) -> String {
        self.uri_of(&self.prefix)
    }

    /// The URI of an object path of this store.
    pub fn uri_of(&self, path: &Path) -> String {
        match &self.kind {
            Kind::Local(_) => format!("file:///{}", path.as_ref()),
            Kind::S3 { bucket } => format!("s3://{bucket}/{}", path.as_ref()),
        }
    }

    /// The object path of `rel` (slash-separated) below the prefix.
    pub fn child(&self, rel: &str) -> Path {
        rel.split('/')
            .filter(|s| !s.is_empty())
            .fold(self.prefix.clone(), |p, s| p.join(s))
    }

    /// The location of `rel` (slash-separated) below this one, in the same store.
    pub fn sub(&self, rel: &str) -> Location {
        let kind = match &self.kind {
            Kind::Local(dir) => Kind::Local(
                rel.split('/')
                    .filter(|s| !s.is_empty())
                    .fold(dir.clone(), |d, s| d.join(s)),
            ),
            k => k.clone(),
        };
        Location {
            store: self.store.clone(),
            prefix: self.child(rel),
            kind,
        }
    }

    /// The URL DataFusion registers this location's store under (`file://`, `s3://bucket`).
    pub fn store_url(&self) -> Result<url::Url, StoreError> {
        let text = match &self.kind {
            Kind::Local(_) => "file://".to_string(),
            Kind::S3 { bucket } => format!("s3://{bucket}"),
        };
        url::Url::parse(&text).map_err(|e| StoreError::InvalidUri {
            uri: text,
            message: e.to_string(),
        })
    }

    /// The local folder, for locations on the local file system.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match &self.kind {
            Kind::Local(p) => Some(p),
            Kind::S3 { .. } => None,
        }
    }

    fn object_error(&self, path: &Path) -> impl Fn(object_store::Error) -> StoreError {
        let uri = self.uri_of(path);
        move |source| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound(uri.clone()),
            source => StoreError::Object {
                uri: uri.clone(),
                message: describe(&source),
            },
        }
    }

    /// Every image below the prefix, sorted by path. Hidden (`.x`) and underscore (`_x`)
    /// files and folders are skipped, as Spark does.
    pub async fn list_images(&self) -> Result<Vec<ImageRef>, StoreError> {
        if let Some(dir) = self.local_dir() {
            if !dir.is_dir() {
                return Err(StoreError::NotFound(self.uri()));
            }
        }
        let prefix_parts = self.prefix.parts().count();
        let image = |meta: object_store::ObjectMeta| -> Option<ImageRef> {
            let parts: Vec<String> = meta
                .location
                .parts()
                .map(|p| p.as_ref().to_string())
                .collect();
            let rel = &parts[prefix_parts.min(parts.len())..];
            let lower = rel.last()?.to_lowercase();
            if rel.iter().any(|p| p.starts_with('.') || p.starts_with('_'))
                || !IMAGE_EXTENSIONS.iter().any(|e| lower.ends_with(e))
            {
                return None;
            }
            let label = parts
                .len()
                .checked_sub(2)
                .map(|i| parts[i].clone())
                .unwrap_or_default();
            Some(ImageRef {
                uri: self.uri_of(&meta.location),
                label,
                path: meta.location,
                size: meta.size,
            })
        };
        // One level with a delimiter, then each sub-folder (class) listed recursively, several
        // at a time: a large bucket lists in a fraction of one sequential listing's time.
        let top = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(self.object_error(&self.prefix))?;
        let mut out: Vec<ImageRef> = top.objects.into_iter().filter_map(image).collect();
        let folders: Vec<Vec<ImageRef>> = futures::stream::iter(top.common_prefixes)
            .map(|folder| {
                let error = self.object_error(&folder);
                self.store
                    .list(Some(&folder))
                    .map_err(error)
                    .try_filter_map(|meta| futures::future::ready(Ok(image(meta))))
                    .try_collect::<Vec<_>>()
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        out.extend(folders.into_iter().flatten());
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every object below the prefix (at any depth), sorted.
    pub async fn list_paths(&self) -> Result<Vec<Path>, StoreError> {
        let mut out: Vec<Path> = self
            .store
            .list(Some(&self.prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(self.object_error(&self.prefix))?;
        out.sort();
        Ok(out)
    }

    /// `path` relative to the prefix, slash-separated (the inverse of [`Location::child`]).
    pub fn relative(&self, path: &Path) -> String {
        path.parts()
            .skip(self.prefix.parts().count())
            .map(|s| s.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &Path) -> Result<bytes::Bytes, StoreError> {
        let r = self
            .store
            .get(path)
            .await
            .map_err(self.object_error(path))?;
        r.bytes().await.map_err(self.object_error(path))
    }

    /// Reads `rel` below the prefix.
    pub async fn get_rel(&self, rel: &str) -> Result<bytes::Bytes, StoreError> {
        self.get(&self.child(rel)).await
    }

    /// Writes `rel` below the prefix.
    pub async fn put_rel(&self, rel: &str, bytes: impl Into<PutPayload>) -> Result<(), StoreError> {
        let path = self.child(rel);
        self.store
            .put(&path, bytes.into())
            .await
            .map_err(self.object_error(&path))?;
        Ok(())
    }

    /// Whether any object exists below the prefix.
    pub async fn exists(&self) -> Result<bool, StoreError> {
        if let Some(dir) = self.local_dir() {
            return Ok(dir.exists());
        }
        let mut s = self.store.list(Some(&self.prefix));
        match s.try_next().await {
            Ok(v) => Ok(v.is_some()),
            Err(e) => Err(self.object_error(&self.prefix)(e)),
        }
    }

    /// Deletes every object below the prefix.
    pub async fn delete_all(&self) -> Result<(), StoreError> {
        if let Some(dir) = self.local_dir() {
            return match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
                    path: dir.display().to_string(),
                    source: e,
                }),
                _ => Ok(()),
            };
        }
        let paths = self
            .store
            .list(Some(&self.prefix))
            .map_ok(|m| m.location)
            .boxed();
        self.store
            .delete_stream(paths)
            .try_collect::<Vec<_>>()
            .await
            .map_err(self.object_error(&self.prefix))?;
        Ok(())
    }
}

/// A store error in a few words: S3's `<Code>` and HTTP status where the server sent them
/// (`NoSuchBucket (404 Not Found)`), else the error's own text.
fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let between = |a: &str, b: &str| {
        let start = text.find(a)? + a.len();
        let end = text[start..].find(b)? + start;
        Some(text[start..end].trim().to_string())
    };
    match (between("<Code>", "</Code>"), between("status code: ", ":")) {
        (Some(code), Some(status)) => format!("{code} ({status})"),
        (Some(code), None) => code,
        _ => text,
    }
}

/// Marker object written last into a complete result.
pub const SUCCESS: &str = "_SUCCESS";

/// A run's private output location, published by [`Staging::commit`].
///
/// Protocol on a local file system: the run writes into a hidden sibling folder
/// (`.<name>.fruits-staging-<run>`), whose `_SUCCESS` it writes last; `commit` then swaps it
/// with the existing output in one atomic `renameat2(RENAME_EXCHANGE)` (or, where the kernel
/// lacks it, renames the old result aside and the new one in) and deletes the old result.
/// A reader of `<output>` sees the old complete result or the new complete one, never a mix;
/// an interrupted run leaves the old result untouched and only a hidden staging folder behind.
#[derive(Debug)]
pub struct Staging {
    output: Location,
    staged: Location,
}

impl Staging {
    /// Starts a run writing to `output`: fails if `output` exists and `overwrite` is false.
    pub async fn begin(
        output: &Location,
        overwrite: bool,
        run_id: &str,
    ) -> Result<Staging, StoreError> {
        if output.exists().await? && !overwrite {
            return Err(StoreError::OutputExists(output.uri()));
        }
        let staged = match output.local_dir() {
            Some(dir) => {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parent = dir.parent().unwrap_or(std::path::Path::new("/"));
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Io {
                    path: parent.display().to_string(),
                    source: e,
                })?;
                Location::local(parent.join(format!(".{name}.fruits-staging-{run_id}")))?
            }
            None => Location {
                store: output.store.clone(),
                prefix: output.child(&format!("_temporary/{run_id}")),
                kind: output.kind.clone(),
            },
        };
        if let Some(dir) = staged.local_dir() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        Ok(Staging {
            output: output.clone(),
            staged,
        })
    }

    /// Where the run writes its result.
    pub fn location(&self) -> &Location {
        &self.staged
    }

    /// The final output location.
    pub fn output(&self) -> &Location {
        &self.output
    }

    /// Writes `_SUCCESS` into the staged result and publishes it (see [`Staging`]).
    pub async fn commit(self, success: impl Into<PutPayload>) -> Result<(), StoreError> {
        self.staged.put_rel(SUCCESS, success).await?;
        match (self.staged.local_dir(), self.output.local_dir()) {
            (Some(staged), Some(out)) => publish_local(staged, out),
            _ => self.publish_objects().await,
        }
    }

    /// Object stores have no rename: copy each staged object to its final key, `_SUCCESS`
    /// last, then delete objects of older runs and the staging prefix.
    async fn publish_objects(&self) -> Result<(), StoreError> {
        let staged = self.staged.list_paths().await?;
        let new: std::collections::HashSet<String> =
            staged.iter().map(|p| self.staged.relative(p)).collect();
        // Remove the old marker first: from here until the new one lands, no reader takes the
        // folder for complete.
        let marker = self.output.child(SUCCESS);
        match self.output.store.delete(&marker).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.output.object_error(&marker)(e)),
        }
        for p in &staged {
            let rel = self.staged.relative(p);
            if rel == SUCCESS {
                continue;
            }
            let to = self.output.child(&rel);
            self.output
                .store
                .copy(p, &to)
                .await
                .map_err(self.output.object_error(&to))?;
        }
        let temporary = self.output.child("_temporary");
        let old: Vec<Path> = self
            .output
            .list_paths()
            .await?
            .into_iter()
            .filter(|p| !p.prefix_matches(&temporary) && !new.contains(&self.output.relative(p)))
            .collect();
        for p in old {
            self.output
                .store
                .delete(&p)
                .await
                .map_err(self.output.object_error(&p))?;
        }
        self.output
            .store
            .copy(&self.staged.child(SUCCESS), &marker)
            .await
            .map_err(self.output.object_error(&marker))?;
        self.staged.delete_all().await
    }

    /// Deletes the staged result (a failed run).
    pub async fn abort(self) -> Result<(), StoreError> {
        self.staged.delete_all().await
    }
}

fn publish_local(staged: &std::path::Path, out: &std::path::Path) -> Result<(), StoreError> {
    let io = |p: &std::path::Path| {
        let path = p.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    if !out.exists() {
        return std::fs::rename(staged, out).map_err(io(out));
    }
    if exchange(staged, out).is_err() {
        // No atomic exchange here: move the old result aside, then the new one in.
        let aside = staged.with_extension("old");
        std::fs::rename(out, &aside).map_err(io(out))?;
        std::fs::rename(staged, out).map_err(io(out))?;
        return std::fs::remove_dir_all(&aside).map_err(io(&aside));
    }
    // `staged` now holds the old result.
    if staged.is_dir() {
        std::fs::remove_dir_all(staged).map_err(io(staged))
    } else {
        std::fs::remove_file(staged).map_err(io(staged))
    }
}

/// Atomically swaps two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both strings are valid NUL-terminated paths for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &std::path::Path, _: &std::path::Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no atomic exchange"))
}
