//! Listing a local folder entry by entry, so that one odd entry is set aside, never fatal.
//!
//! `object_store`'s local listing ends the whole listing at the first file name it cannot
//! represent (not UTF-8, a control character) or symbolic-link loop, and passes over broken
//! links in silence. This walk follows links as that listing does, and reports each such entry
//! as an [`Unlisted`] with the reason instead.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path as FsPath, PathBuf};

use object_store::path::Path;

use crate::Unlisted;

/// One file found: its object path, size and modification time.
pub(crate) struct Found {
    pub(crate) path: Path,
    pub(crate) size: u64,
    pub(crate) version: Option<String>,
}

/// Every file below `root` (whose object path is `prefix`) that `keep` accepts by its
/// relative parts, and every entry that could not be listed. Entries whose relative parts
/// `keep` refuses (hidden files, non-images) are never reported.
pub(crate) fn walk(
    root: &FsPath,
    prefix: &Path,
    keep: &dyn Fn(&[&str]) -> bool,
) -> (Vec<Found>, Vec<Unlisted>) {
    let mut found = Vec::new();
    let mut unlisted = Vec::new();
    let mut ancestors = HashSet::new();
    if let Ok(meta) = std::fs::metadata(root) {
        ancestors.insert((meta.dev(), meta.ino()));
    }
    let mut walker = Walker {
        prefix,
        keep,
        found: &mut found,
        unlisted: &mut unlisted,
    };
    walker.dir(root, &mut Vec::new(), &mut ancestors);
    (found, unlisted)
}

struct Walker<'a> {
    prefix: &'a Path,
    keep: &'a dyn Fn(&[&str]) -> bool,
    found: &'a mut Vec<Found>,
    unlisted: &'a mut Vec<Unlisted>,
}

impl Walker<'_> {
    fn skip(&mut self, path: &FsPath, error: impl Into<String>) {
        self.unlisted.push(Unlisted {
            uri: format!("file://{}", path.to_string_lossy()),
            error: error.into(),
        });
    }

    /// Lists `dir` (relative parts `rel`); `ancestors` holds the folders above it, to tell a
    /// loop of links from a folder reached twice.
    fn dir(&mut self, dir: &FsPath, rel: &mut Vec<String>, ancestors: &mut HashSet<(u64, u64)>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return self.skip(dir, format!("cannot list folder: {e}")),
        };
        let mut entries: Vec<PathBuf> = entries
            .filter_map(|e| match e {
                Ok(e) => Some(e.path()),
                Err(e) => {
                    self.skip(dir, format!("cannot list folder: {e}"));
                    None
                }
            })
            .collect();
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name() else {
                continue;
            };
            let lossy = name.to_string_lossy().into_owned();
            let meta = std::fs::metadata(&path);
            let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
            let hidden = lossy.starts_with('.') || lossy.starts_with('_');
            let Some(name) = name.to_str() else {
                if is_dir && !hidden {
                    self.skip(
                        &path,
                        "folder name is not valid UTF-8: nothing below it was read",
                    );
                } else if !is_dir && self.wanted(rel, &lossy) {
                    self.skip(&path, "file name is not valid UTF-8");
                }
                continue;
            };
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    if self.wanted(rel, name) {
                        let broken = std::fs::symlink_metadata(&path)
                            .is_ok_and(|m| m.file_type().is_symlink());
                        let why = if broken {
                            format!("broken symbolic link: {e}")
                        } else {
                            format!("cannot read: {e}")
                        };
                        self.skip(&path, why);
                    }
                    continue;
                }
            };
            if meta.is_dir() {
                if hidden {
                    continue;
                }
                let id = (meta.dev(), meta.ino());
                if !ancestors.insert(id) {
                    self.skip(&path, "symbolic link loop: this folder contains itself");
                    continue;
                }
                rel.push(name.to_string());
                self.dir(&path, rel, ancestors);
                rel.pop();
                ancestors.remove(&id);
                continue;
            }
            if !self.wanted(rel, name) {
                continue;
            }
            let text = rel.iter().map(String::as_str).chain([name]).fold(
                self.prefix.as_ref().to_string(),
                |mut t, part| {
                    if !t.is_empty() {
                        t.push('/');
                    }
                    t.push_str(part);
                    t
                },
            );
            match Path::parse(&text) {
                Ok(p) => self.found.push(Found {
                    path: p,
                    size: meta.len(),
                    version: meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| format!("mtime:{}", d.as_nanos())),
                }),
                Err(_) => self.skip(
                    &path,
                    "file name contains a control character (newline, tab, ...)",
                ),
            }
        }
    }

    fn wanted(&self, rel: &[String], name: &str) -> bool {
        let parts: Vec<&str> = rel.iter().map(String::as_str).chain([name]).collect();
        (self.keep)(&parts)
    }
}
