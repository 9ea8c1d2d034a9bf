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
//!
//! ```no_run
//! # async fn demo() -> Result<(), fruits_store::StoreError> {
//! use fruits_store::{Location, S3Settings};
//! let s3 = S3Settings { region: Some("eu-west-1".into()), ..S3Settings::default() };
//! let photos = Location::parse_with("s3://fruits/Test", &s3)?;
//! let listing = photos.list_images().await?;
//! println!("{} images, {} set aside", listing.images.len(), listing.unlisted.len());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub use aws::{S3Credentials, S3Settings};
pub use object_store;

mod aws;
mod publish;
mod walk;

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
    /// Another run is writing the same output.
    #[error(
        "output {output} is being written by another run ({holder}); wait for it to finish{hint}"
    )]
    Busy {
        /// The output URI.
        output: String,
        /// Which run holds it.
        holder: String,
        /// What to do if that run is dead.
        hint: String,
    },
    /// A fault injected by a test ([`Staging::fail_at`]).
    #[error("injected fault before commit step {0}")]
    Injected(usize),
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

/// An object's version as [`ImageRef::version`] has it: the ETag, else the modification time.
fn s3_version(m: &object_store::ObjectMeta) -> Option<String> {
    Some(match &m.e_tag {
        Some(tag) => format!("etag:{tag}"),
        None => format!("modified:{}", m.last_modified.to_rfc3339()),
    })
}

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
    /// What changes when the object's bytes do: its ETag on S3, its modification time on a
    /// local disk (`None` where the store gives neither).
    pub version: Option<String>,
}

/// An entry below the input that looks like an image but cannot be listed (a file name that is
/// not UTF-8 or holds a control character, a broken link, a loop of links, an unreadable
/// folder): set aside with the reason, the listing goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// The entry as well as it can be named (`file:///...`, not-UTF-8 bytes replaced).
    pub uri: String,
    /// Why it was not listed.
    pub error: String,
}

/// What [`Location::list_images`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The images, sorted by path.
    pub images: Vec<ImageRef>,
    /// Entries that could not be listed, sorted.
    pub unlisted: Vec<Unlisted>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A local folder (absolute).
    Local(PathBuf),
    /// `s3://bucket`.
    S3 { bucket: String },
}

/// The object path whose stored text (`Path::as_ref`) is `raw`, as a listing gave it.
///
/// `Path::from(&str)` would percent-encode `é`, `%`, `#`, `~`, `[`, ... again and so name
/// another object; this keeps every byte, and only refuses text no listing produces.
pub fn stored_path(raw: &str) -> Result<Path, StoreError> {
    Path::parse(raw).map_err(|e| StoreError::InvalidUri {
        uri: raw.to_string(),
        message: e.to_string(),
    })
}

/// An object whose read has begun ([`Location::open`]).
pub struct Opened {
    result: object_store::GetResult,
    error: Box<dyn Fn(object_store::Error) -> StoreError + Send + Sync>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("location", &self.result.meta.location)
            .field("size", &self.size())
            .finish()
    }
}

impl Opened {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.result.meta.size
    }

    /// Its bytes.
    pub async fn bytes(self) -> Result<bytes::Bytes, StoreError> {
        self.result.bytes().await.map_err(self.error)
    }
}

/// An opened store and a prefix in it.
#[derive(Debug, Clone)]
pub struct Location {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) kind: Kind,
}

impl Location {
    /// Opens a local path, `file://` URI or `s3://bucket/prefix` (S3 settings from the
    /// environment and the shared AWS files).
    pub fn parse(uri: &str) -> Result<Location, StoreError> {
        Location::parse_with(uri, &S3Settings::default())
    }

    /// As [`Location::parse`], with S3 settings that override the environment.
    pub fn parse_with(uri: &str, s3: &S3Settings) -> Result<Location, StoreError> {
        Location::parse_with_credentials(uri, s3, None)
    }

    /// As [`Location::parse_with`], with static credentials that override every other source
    /// (for programs that hold them; they stay in this process).
    pub fn parse_with_credentials(
        uri: &str,
        s3: &S3Settings,
        credentials: Option<&S3Credentials>,
    ) -> Result<Location, StoreError> {
        let invalid = |message: String| StoreError::InvalidUri {
            uri: uri.to_string(),
            message,
        };
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name".into()));
            }
            let store = aws::builder(bucket, s3, credentials)
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

    pub(crate) fn local(dir: PathBuf) -> Result<Location, StoreError> {
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

    /// The object path a URI of this store names (the inverse of [`Location::uri_of`]), or
    /// `None` when it names another store.
    pub fn path_of_uri(&self, uri: &str) -> Option<Path> {
        let rest = match &self.kind {
            Kind::Local(_) => uri.strip_prefix("file:///")?,
            Kind::S3 { bucket } => uri
                .strip_prefix("s3://")?
                .strip_prefix(bucket.as_str())?
                .strip_prefix('/')?,
        };
        stored_path(rest).ok()
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

    /// The local folder, for locations on the local file system.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        match &self.kind {
            Kind::Local(p) => Some(p),
            Kind::S3 { .. } => None,
        }
    }

    /// Whether `self` and `other` name the same place, or one lies inside the other (local
    /// paths compared after resolving symbolic links; S3 locations by bucket and key parts).
    /// Different stores never overlap.
    pub fn overlaps(&self, other: &Location) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Local(a), Kind::Local(b)) => {
                let (a, b) = (resolve(a), resolve(b));
                a.starts_with(&b) || b.starts_with(&a)
            }
            (Kind::S3 { bucket: a }, Kind::S3 { bucket: b }) => {
                a == b
                    && (self.prefix.prefix_matches(&other.prefix)
                        || other.prefix.prefix_matches(&self.prefix))
            }
            _ => false,
        }
    }

    pub(crate) fn object_error(&self, path: &Path) -> impl Fn(object_store::Error) -> StoreError {
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
    /// files and folders are skipped, as Spark does. On a local disk an entry that cannot be
    /// listed is set aside in [`Listing::unlisted`]; on S3 a listing the store cannot read
    /// fails whole (naming the prefix), so nothing is dropped unseen.
    pub async fn list_images(&self) -> Result<Listing, StoreError> {
        let prefix_parts = self.prefix.parts().count();
        let wanted = |rel: &[&str]| -> bool {
            let Some(last) = rel.last() else { return false };
            let lower = last.to_lowercase();
            !rel.iter().any(|p| p.starts_with('.') || p.starts_with('_'))
                && IMAGE_EXTENSIONS.iter().any(|e| lower.ends_with(e))
        };
        let image = |location: Path, size: u64, version: Option<String>| -> Option<ImageRef> {
            let parts: Vec<String> = location.parts().map(|p| p.as_ref().to_string()).collect();
            let rel: Vec<&str> = parts[prefix_parts.min(parts.len())..]
                .iter()
                .map(String::as_str)
                .collect();
            if !wanted(&rel) {
                return None;
            }
            let label = parts
                .len()
                .checked_sub(2)
                .map(|i| parts[i].clone())
                .unwrap_or_default();
            Some(ImageRef {
                uri: self.uri_of(&location),
                label,
                path: location,
                size,
                version,
            })
        };
        if let Some(dir) = self.local_dir() {
            if !dir.is_dir() {
                return Err(StoreError::NotFound(self.uri()));
            }
            let (dir, prefix) = (dir.to_path_buf(), self.prefix.clone());
            let (found, mut unlisted) = tokio::task::spawn_blocking(move || {
                walk::walk(&dir, &prefix, &|rel: &[&str]| wanted(rel))
            })
            .await
            .map_err(|e| StoreError::Io {
                path: self.uri(),
                source: std::io::Error::other(e),
            })?;
            let mut images: Vec<ImageRef> = found
                .into_iter()
                .filter_map(|f| image(f.path, f.size, f.version))
                .collect();
            images.sort_by(|a, b| a.path.cmp(&b.path));
            unlisted.sort_by(|a, b| a.uri.cmp(&b.uri));
            return Ok(Listing { images, unlisted });
        }
        // One level with a delimiter, then each sub-folder (class) listed recursively, several
        // at a time: a large bucket lists in a fraction of one sequential listing's time.
        let top = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(self.object_error(&self.prefix))?;
        let mut out: Vec<ImageRef> = top
            .objects
            .into_iter()
            .filter_map(|m| {
                let version = s3_version(&m);
                image(m.location, m.size, version)
            })
            .collect();
        let folders: Vec<Vec<ImageRef>> = futures::stream::iter(top.common_prefixes)
            .map(|folder| {
                let error = self.object_error(&folder);
                self.store
                    .list(Some(&folder))
                    .map_err(error)
                    .try_filter_map(|m| {
                        let version = s3_version(&m);
                        futures::future::ready(Ok(image(m.location, m.size, version)))
                    })
                    .try_collect::<Vec<_>>()
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        out.extend(folders.into_iter().flatten());
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Listing {
            images: out,
            unlisted: Vec::new(),
        })
    }

    /// Every object below the prefix (at any depth), sorted.
    pub async fn list_paths(&self) -> Result<Vec<Path>, StoreError> {
        Ok(self
            .list_sized()
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// Every object below the prefix (at any depth) with its size in bytes, sorted.
    pub async fn list_sized(&self) -> Result<Vec<(Path, u64)>, StoreError> {
        let mut out: Vec<(Path, u64)> = self
            .store
            .list(Some(&self.prefix))
            .map_ok(|m| (m.location, m.size))
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
        self.open(path).await?.bytes().await
    }

    /// Starts reading an object: its size is known once this returns, its bytes are fetched
    /// by [`Opened::bytes`] (so a reader can budget memory before taking them).
    pub async fn open(&self, path: &Path) -> Result<Opened, StoreError> {
        let result = self
            .store
            .get(path)
            .await
            .map_err(self.object_error(path))?;
        Ok(Opened {
            error: Box::new(self.object_error(path)),
            result,
        })
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

    /// Makes `rel` below the prefix durable: on a local disk the file and its folder are
    /// fsynced (a finished write survives a crash of the machine, not only of the process);
    /// an object store's write is durable once it returns.
    pub fn sync_rel(&self, rel: &str) -> Result<(), StoreError> {
        let Some(dir) = self.local_dir() else {
            return Ok(());
        };
        let file = dir.join(rel);
        let folder = file.parent().unwrap_or(dir).to_path_buf();
        for path in [file, folder] {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|source| StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Deletes every object below the prefix whose relative name `keep` refuses. On a local
    /// disk this walks the folder itself, so it also removes the unfinished writes an
    /// interrupted process left (files `object_store` does not list).
    pub async fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<(), StoreError> {
        if let Some(dir) = self.local_dir() {
            return retain_files(dir, dir, &keep);
        }
        for path in self.list_paths().await? {
            if !keep(&self.relative(&path)) {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.object_error(&path)(e)),
                }
            }
        }
        Ok(())
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

/// `path` with its longest existing ancestor resolved (symbolic links, `..`), the rest as
/// written: two spellings of one folder, existing or not, compare equal.
fn resolve(path: &std::path::Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
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

pub use publish::{output_exists, Staging, SUCCESS};

/// [`Location::retain`] on a local folder: files below `dir` whose name relative to `root`
/// `keep` refuses are removed.
fn retain_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), StoreError> {
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| StoreError::Io {
            path: path.clone(),
            source,
        }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            retain_files(root, &path, keep)?;
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        if !keep(&rel) {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}
