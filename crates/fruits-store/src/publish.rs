//! The publish protocol: a run's result appears whole or not at all, and no old result or input
//! is lost on the way, whatever step a crash interrupts.
//!
//! A run writes into a private staging location ([`Staging::location`]) and then
//! [`Staging::commit`]s. Data files (top-level names not starting with `_` or `.`) are published
//! under run-unique names (`part-00000.parquet` → `part-00000-<run>.parquet`,
//! [`Staging::final_name`]), so publishing never overwrites a file of the old result. `_SUCCESS`
//! is the commit point: a JSON object (the caller's summary) whose `commit` field names the run
//! and every object of the result.
//!
//! **Local disk**: the staging folder is a hidden sibling `.<name>.fruits-staging-<key>`. Every
//! file and folder in it is fsynced, then it is swapped with the old output in one
//! `renameat2(RENAME_EXCHANGE)` (the parent fsynced after), and the old result, now in the
//! sibling, is deleted. Where the file system cannot exchange, the object protocol below runs on
//! the local folder instead. A lock file `.<name>.fruits-lock` beside the output (`flock`,
//! released by the kernel when the process dies) keeps two runs from writing one output.
//!
//! **Object stores** (no rename): the staging prefix is `<output>/_temporary/<key>/`. Steps:
//! 1. write the journal `_temporary/<run>/_COMMIT` (the new `_SUCCESS` and the copy list);
//! 2. copy the data files to their run-unique keys (old files untouched; old `_SUCCESS` valid);
//! 3. delete the old `_SUCCESS`;
//! 4. copy the fixed-name files (`_pca/*`, `_errors.json`) over the old ones;
//! 5. write the new `_SUCCESS` (the commit point);
//! 6. delete the objects of the old result that the new one does not list;
//! 7. delete the journal, then the staging prefix.
//!
//! A reader that trusts `_SUCCESS` sees the old result (up to step 3) or the new one (from
//! step 5): whenever `_SUCCESS` exists, every object it lists exists and belongs to it. Between
//! 3 and 5 there is no `_SUCCESS`, and the new result is complete in the staging prefix with its
//! journal: the next [`Staging::begin`] on that output (or [`Staging::recover`]) finishes the
//! commit. A reader that ignores `_SUCCESS` and reads every `part-*` (pyarrow, DuckDB) sees, from
//! step 2 to step 6, the old and the new parts side by side.
//!
//! A lease object `_temporary/<run>.lease`, rewritten every [`LEASE_RENEW`], keeps two runs from
//! writing one output: a run refuses to start while another's lease is younger than
//! [`LEASE_TTL`] (by the store's clock), unless the lease names a process of this machine
//! that no longer runs (a run killed and started again at once need not wait). Leftover
//! staging of dead runs (no journal) is deleted by the next run, and never makes the output
//! look existing.
//!
//! **Resume**: a staging area is named by a key, the run id unless the caller gives one
//! ([`Staging::begin_keyed`]). A run whose key is that of an interrupted run keeps its
//! staging area and may reuse what is in it; every other area left over is deleted.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::{Location, StoreError};

/// Marker object written last into a complete result: the commit point.
pub const SUCCESS: &str = "_SUCCESS";

/// The journal of a commit in progress, inside the staging location.
const JOURNAL: &str = "_COMMIT";

/// Below an object-store output: staging areas and leases.
const TEMPORARY: &str = "_temporary";

/// What follows `.<name>.` in a local staging folder's name, before its key.
const STAGING: &str = "fruits-staging-";

/// How long a lease not renewed keeps other runs out.
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// How often a run renews its lease.
pub const LEASE_RENEW: Duration = Duration::from_secs(20);

/// A run's private output location, published by [`Staging::commit`] (see the module docs).
#[derive(Debug)]
pub struct Staging {
    output: Location,
    staged: Location,
    run: String,
    guard: Option<Guard>,
    fault: Option<Fault>,
    exchange: bool,
    stamp: bool,
    resumed: bool,
}

/// What keeps other runs out while this one lives.
#[derive(Debug)]
enum Guard {
    /// An open, `flock`ed lock file (released when closed or the process dies).
    Lock(#[allow(dead_code)] std::fs::File),
    /// A lease object, renewed by a task until dropped.
    Lease {
        path: Path,
        renew: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Lease { renew, .. } = self {
            renew.abort();
        }
    }
}

/// Fails the `at`-th mutating step of a commit (counting from 0), for tests.
#[derive(Debug, Clone)]
struct Fault {
    at: usize,
    seen: Arc<AtomicUsize>,
}

impl Staging {
    /// Starts run `run_id` writing to `output`: takes the output's lock or lease (fails if
    /// another run holds it), finishes any commit a dead run left half done, deletes stale
    /// staging, then fails if `output` exists and `overwrite` is false.
    pub async fn begin(
        output: &Location,
        overwrite: bool,
        run_id: &str,
    ) -> Result<Staging, StoreError> {
        Staging::begin_keyed(output, overwrite, run_id, run_id).await
    }

    /// [`Staging::begin`] with a staging area named by `key` instead of the run: an area of
    /// that key left by an interrupted run is kept and reused ([`Staging::resumed`]), any
    /// other left over is deleted. The caller derives `key` from everything that decides
    /// what the run stages, so that only the same work resumes.
    pub async fn begin_keyed(
        output: &Location,
        overwrite: bool,
        run_id: &str,
        key: &str,
    ) -> Result<Staging, StoreError> {
        let guard = acquire(output, run_id).await?;
        Staging::recover_held(output, Some(key)).await?;
        if output_exists(output).await? && !overwrite {
            return Err(StoreError::OutputExists(output.uri()));
        }
        let (staged, resumed) = match output.local_dir() {
            Some(dir) => {
                let staged = sibling(dir, &format!("{STAGING}{key}"));
                let resumed = staged.is_dir();
                std::fs::create_dir_all(&staged).map_err(io(&staged))?;
                (Location::local(staged)?, resumed)
            }
            None => {
                let staged = output.sub(&format!("{TEMPORARY}/{key}"));
                let resumed = !staged.list_paths().await?.is_empty();
                (staged, resumed)
            }
        };
        Ok(Staging {
            output: output.clone(),
            staged,
            run: run_id.to_string(),
            guard: Some(guard),
            fault: None,
            exchange: true,
            stamp: true,
            resumed,
        })
    }

    /// Whether the staging area was left by an interrupted run of the same key (see
    /// [`Staging::begin_keyed`]): what it holds may be reused.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The run's id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Where the run writes its result.
    pub fn location(&self) -> &Location {
        &self.staged
    }

    /// The final output location.
    pub fn output(&self) -> &Location {
        &self.output
    }

    /// The name a staged object `rel` has once published: data files (top level, not `_` or
    /// `.`) get the run id before their extension, so they never replace an old result's file.
    pub fn final_name(&self, rel: &str) -> String {
        if self.stamp {
            final_name(rel, &self.run)
        } else {
            rel.to_string()
        }
    }

    /// Publishes every object under the name it was staged with: for folders whose file names
    /// are their format (a model folder), where an overwrite replaces files in place (the
    /// journal still finishes or undoes a commit a crash interrupted).
    pub fn keep_names(&mut self) {
        self.stamp = false;
    }

    /// Test hook: the commit fails with [`StoreError::Injected`] at its `step`-th mutating step
    /// (0-based), as a crash there would leave it.
    pub fn fail_at(&mut self, step: usize) {
        self.fault = Some(Fault {
            at: step,
            seen: Arc::default(),
        });
    }

    /// Test hook: publish a local result as on an object store (as where the file system
    /// cannot exchange two folders).
    pub fn without_exchange(&mut self) {
        self.exchange = false;
    }

    /// Publishes the staged result with `_SUCCESS` holding `summary` plus a `commit` field
    /// (`run`, `objects`: every object of the result). See the module docs for the steps.
    pub async fn commit(mut self, summary: serde_json::Value) -> Result<(), StoreError> {
        let result = self.publish(summary).await;
        self.release().await;
        result
    }

    async fn publish(&mut self, summary: serde_json::Value) -> Result<(), StoreError> {
        let staged = self.staged.list_paths().await?;
        let mut objects: Copies = staged
            .iter()
            .map(|p| self.staged.relative(p))
            .filter(|rel| rel != SUCCESS && rel != JOURNAL)
            .map(|rel| {
                let to = self.final_name(&rel);
                (rel, to)
            })
            .collect();
        objects.sort();
        let mut marker = match summary {
            serde_json::Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("summary".into(), other);
                map
            }
        };
        let mut listed: Vec<String> = objects.iter().map(|(_, to)| to.clone()).collect();
        listed.push(SUCCESS.to_string());
        marker.insert(
            "commit".into(),
            serde_json::json!({ "run": self.run, "objects": listed }),
        );
        let marker = serde_json::to_vec_pretty(&marker).unwrap_or_default();
        let local = match (
            self.exchange,
            self.staged.local_dir(),
            self.output.local_dir(),
        ) {
            (true, Some(staged), Some(out)) => {
                let (staged, out) = (staged.to_path_buf(), out.to_path_buf());
                Some(self.publish_local(&staged, &out, &objects, &marker))
            }
            _ => None,
        };
        match local {
            Some(Ok(true)) => Ok(()),
            Some(Err(e)) => Err(e),
            // No exchange on this file system: the data files already carry their final names.
            Some(Ok(false)) | None => {
                if local.is_some() {
                    for (from, to) in objects.iter_mut() {
                        *from = to.clone();
                    }
                }
                let journal = serde_json::json!({
                    "run": self.run,
                    "copies": objects,
                    "success": String::from_utf8_lossy(&marker),
                });
                self.step()?;
                self.staged
                    .put_rel(JOURNAL, serde_json::to_vec(&journal).unwrap_or_default())
                    .await?;
                roll_forward(&self.output, &self.staged, &objects, &marker, &mut || {
                    self.step()
                })
                .await
            }
        }
    }

    /// Deletes the staged result (a failed run) and lets other runs in.
    pub async fn abort(mut self) -> Result<(), StoreError> {
        let result = self.staged.delete_all().await;
        self.release().await;
        result
    }

    /// Leaves the staged work of a failed run where it is, for a run of the same key to
    /// resume ([`Staging::begin_keyed`]; a run of another key deletes it), and lets other
    /// runs in.
    pub async fn keep(mut self) {
        self.release().await;
    }

    /// Finishes every commit a dead run left half done on `output`, and deletes stale staging
    /// (taking the output's lock or lease first).
    pub async fn recover(output: &Location) -> Result<(), StoreError> {
        let run = format!("recover-{}", std::process::id());
        let guard = acquire(output, &run).await?;
        let result = Staging::recover_held(output, None).await;
        release(output, guard).await;
        result
    }

    /// [`Staging::recover`], the lock or lease already held: every staging area with a
    /// journal is rolled forward, the one named `keep` is left for its run to resume, and
    /// every other is deleted.
    async fn recover_held(output: &Location, keep: Option<&str>) -> Result<(), StoreError> {
        for (key, staged) in stagings(output).await? {
            match staged.get_rel(JOURNAL).await {
                Ok(bytes) => {
                    let journal = staged.uri_of(&staged.child(JOURNAL));
                    let (objects, marker) =
                        read_journal(&bytes).ok_or_else(|| StoreError::Object {
                            uri: journal,
                            message: "unreadable commit journal".into(),
                        })?;
                    tracing::warn!(staging = staged.uri(), "finishing an interrupted commit");
                    roll_forward(output, &staged, &objects, &marker, &mut || Ok(())).await?;
                }
                // Kept, unless it holds a published result: the old output an exchange
                // moved there just before a crash.
                Err(StoreError::NotFound(_)) if keep == Some(key.as_str()) => {
                    if staged.get_rel(SUCCESS).await.is_ok() {
                        staged.delete_all().await?;
                    }
                }
                Err(StoreError::NotFound(_)) => staged.delete_all().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Counts a mutating step; fails it where a test asked.
    fn step(&self) -> Result<(), StoreError> {
        if let Some(f) = &self.fault {
            let n = f.seen.fetch_add(1, Ordering::SeqCst);
            if n == f.at {
                return Err(StoreError::Injected(n));
            }
        }
        Ok(())
    }

    /// The local protocol (module docs); `Ok(false)` where the file system cannot exchange
    /// two folders (nothing published yet).
    fn publish_local(
        &self,
        staged: &FsPath,
        out: &FsPath,
        objects: &[(String, String)],
        marker: &[u8],
    ) -> Result<bool, StoreError> {
        for (from, to) in objects {
            if from != to {
                self.step()?;
                let (a, b) = (staged.join(from), staged.join(to));
                std::fs::rename(&a, &b).map_err(io(&a))?;
            }
        }
        self.step()?;
        let success = staged.join(SUCCESS);
        std::fs::write(&success, marker).map_err(io(&success))?;
        self.step()?;
        sync_tree(staged)?;
        let parent = out.parent().unwrap_or(FsPath::new("/"));
        self.step()?;
        if !out.exists() {
            std::fs::rename(staged, out).map_err(io(out))?;
            sync_dir(parent)?;
            return Ok(true);
        }
        if let Err(e) = exchange(staged, out) {
            let unsupported = [libc::EINVAL, libc::ENOSYS, libc::EOPNOTSUPP];
            if e.raw_os_error().is_some_and(|c| unsupported.contains(&c)) {
                return Ok(false);
            }
            return Err(io(out)(e));
        }
        sync_dir(parent)?;
        // `staged` now holds the old result; a crash here leaves it as stale staging, which
        // the next run deletes.
        self.step()?;
        remove(staged)?;
        Ok(true)
    }

    async fn release(&mut self) {
        if let Some(guard) = self.guard.take() {
            release(&self.output, guard).await;
        }
    }
}

/// What a commit copies: `(staged name, published name)` pairs, relative to the staging and
/// the output locations.
type Copies = Vec<(String, String)>;

/// `rel` as published by run `run` (see [`Staging::final_name`]).
fn final_name(rel: &str, run: &str) -> String {
    if rel.contains('/') || rel.starts_with('_') || rel.starts_with('.') {
        return rel.to_string();
    }
    match rel.split_once('.') {
        Some((stem, ext)) => format!("{stem}-{run}.{ext}"),
        None => format!("{rel}-{run}"),
    }
}

/// The copy list and the `_SUCCESS` bytes of a journal.
fn read_journal(bytes: &[u8]) -> Option<(Copies, Vec<u8>)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let copies = v
        .get("copies")?
        .as_array()?
        .iter()
        .map(|pair| {
            let pair = pair.as_array()?;
            Some((
                pair.first()?.as_str()?.to_string(),
                pair.get(1)?.as_str()?.to_string(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let success = v.get("success")?.as_str()?.as_bytes().to_vec();
    Some((copies, success))
}

/// Steps 2 to 7 of the object protocol (module docs), each idempotent: `step` is called before
/// each mutating one.
async fn roll_forward(
    output: &Location,
    staged: &Location,
    objects: &[(String, String)],
    marker: &[u8],
    step: &mut dyn FnMut() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let store = output.store.clone();
    let copy = |from: &str, to: &str| {
        let (from, to) = (staged.child(from), output.child(to));
        let store = store.clone();
        let error = output.object_error(&to);
        async move { store.copy(&from, &to).await.map_err(error) }
    };
    let data = |to: &str| !to.starts_with('_') && !to.contains('/');
    // 2. Data files to run-unique keys.
    for (from, to) in objects.iter().filter(|(_, to)| data(to)) {
        step()?;
        copy(from, to).await?;
    }
    // 3. No `_SUCCESS` from here until the new one: the fixed names are about to change.
    step()?;
    let success = output.child(SUCCESS);
    delete(output, &success).await?;
    // 4. Fixed-name files.
    for (from, to) in objects.iter().filter(|(_, to)| !data(to)) {
        step()?;
        copy(from, to).await?;
    }
    // 5. The commit point (on a local disk, after everything it names is durable).
    if let Some(dir) = output.local_dir() {
        sync_tree(dir)?;
    }
    step()?;
    output
        .store
        .put(&success, PutPayload::from(marker.to_vec()))
        .await
        .map_err(output.object_error(&success))?;
    // 6. The old result's other objects.
    let keep: std::collections::HashSet<&str> = objects.iter().map(|(_, to)| to.as_str()).collect();
    let temporary = output.child(TEMPORARY);
    let old: Vec<Path> = output
        .list_paths()
        .await?
        .into_iter()
        .filter(|p| !p.prefix_matches(&temporary) && *p != success)
        .filter(|p| !keep.contains(output.relative(p).as_str()))
        .collect();
    for p in old {
        step()?;
        delete(output, &p).await?;
    }
    // 7. The journal first (the result is complete without it), then the staging.
    step()?;
    delete(staged, &staged.child(JOURNAL)).await?;
    step()?;
    match staged.local_dir() {
        Some(dir) => remove(dir),
        None => staged.delete_all().await,
    }
}

/// Deletes one object; one already gone is fine.
async fn delete(at: &Location, path: &Path) -> Result<(), StoreError> {
    match at.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(at.object_error(path)(e)),
    }
}

/// Whether a result (complete or not) is at `output`: on an object store, any object outside
/// `_temporary/` (where only staging and leases live, which never make an output exist).
pub async fn output_exists(output: &Location) -> Result<bool, StoreError> {
    if let Some(dir) = output.local_dir() {
        return Ok(dir.exists());
    }
    let temporary = output.child(TEMPORARY);
    let mut listing = output.store.list(Some(&output.prefix));
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(output.object_error(&output.prefix))?
    {
        if !meta.location.prefix_matches(&temporary) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Staging areas on `output`, by key (all of dead runs but the caller's: it holds the lock
/// or lease).
async fn stagings(output: &Location) -> Result<Vec<(String, Location)>, StoreError> {
    let mut out = Vec::new();
    if let Some(dir) = output.local_dir() {
        let (parent, prefix) = sibling_parts(dir, STAGING);
        let Ok(entries) = std::fs::read_dir(&parent) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_prefix(&prefix) {
                out.push((key.to_string(), Location::local(e.path())?));
            }
        }
        out.sort_by_key(|(key, _)| key.clone());
        return Ok(out);
    }
    for folder in list_temporary(output).await?.common_prefixes {
        let key = folder.filename().unwrap_or_default().to_string();
        out.push((
            key,
            Location {
                store: output.store.clone(),
                prefix: folder,
                kind: output.kind.clone(),
            },
        ));
    }
    out.sort_by_key(|(key, _)| key.clone());
    Ok(out)
}

/// One level of `<output>/_temporary/`: staging folders and lease objects.
async fn list_temporary(output: &Location) -> Result<object_store::ListResult, StoreError> {
    let temporary = output.child(TEMPORARY);
    output
        .store
        .list_with_delimiter(Some(&temporary))
        .await
        .map_err(output.object_error(&temporary))
}

/// Takes `output` for run `run`: the lock file (local) or a lease (object store).
async fn acquire(output: &Location, run: &str) -> Result<Guard, StoreError> {
    if let Some(dir) = output.local_dir() {
        let lock = sibling(dir, "fruits-lock");
        if let Some(parent) = lock.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io(&lock))?;
        flock(&file).map_err(|_| StoreError::Busy {
            output: output.uri(),
            holder: format!("lock {}", lock.display()),
            hint: String::new(),
        })?;
        return Ok(Guard::Lock(file));
    }
    let path = output.child(&format!("{TEMPORARY}/{run}.lease"));
    let me = Holder::me();
    let body = me.lease(run);
    put(output, &path, body.clone()).await?;
    let mine = output
        .store
        .head(&path)
        .await
        .map_err(output.object_error(&path))?
        .last_modified;
    let leases = list_temporary(output).await?;
    let ttl = as_time_delta(LEASE_TTL);
    for other in leases.objects.iter().filter(|m| {
        m.location != path
            && m.location.as_ref().ends_with(".lease")
            && mine.signed_duration_since(m.last_modified) < ttl
    }) {
        // A lease of a process of this machine that is gone holds nothing.
        let held = output.store.get(&other.location).await;
        let body = match held {
            Ok(got) => got.bytes().await.ok(),
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(_) => None,
        };
        if body.is_some_and(|b| me.outlived(&b)) {
            tracing::warn!(lease = %other.location, "ignoring the lease of a dead process");
            delete(output, &other.location).await?;
            continue;
        }
        delete(output, &path).await?;
        let age = mine
            .signed_duration_since(other.last_modified)
            .num_seconds()
            .max(0);
        return Err(StoreError::Busy {
            output: output.uri(),
            holder: format!(
                "lease {}, renewed {age} s ago",
                output.uri_of(&other.location)
            ),
            hint: format!(
                "; a lease not renewed for {} s is ignored",
                LEASE_TTL.as_secs()
            ),
        });
    }
    let renew = {
        let (output, path) = (output.clone(), path.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                let _ = put(&output, &path, body.clone()).await;
            }
        })
    };
    Ok(Guard::Lease { path, renew })
}

/// Who holds a lease: a process on a machine (its host name and boot, so that a process id
/// is only ever compared on the machine and boot it belongs to).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Holder {
    host: String,
    boot: String,
    pid: u32,
}

impl Holder {
    fn me() -> Holder {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Holder {
            host: read("/proc/sys/kernel/hostname"),
            boot: read("/proc/sys/kernel/random/boot_id"),
            pid: std::process::id(),
        }
    }

    /// The lease object's body for run `run`.
    fn lease(&self, run: &str) -> String {
        serde_json::json!({ "run": run, "host": self.host, "boot": self.boot, "pid": self.pid })
            .to_string()
    }

    /// Whether the lease `body` was written by a process of this machine and boot that no
    /// longer runs. Unknown machines, or a body without them, are never judged dead.
    fn outlived(&self, body: &[u8]) -> bool {
        let Ok(other) = serde_json::from_slice::<Holder>(body) else {
            return false;
        };
        !self.boot.is_empty()
            && other.host == self.host
            && other.boot == self.boot
            && other.pid != self.pid
            && !FsPath::new(&format!("/proc/{}", other.pid)).exists()
    }
}

/// The lease's lifetime as the store's timestamps count it.
fn as_time_delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Lets other runs in.
async fn release(output: &Location, guard: Guard) {
    if let Guard::Lease { path, renew } = &guard {
        renew.abort();
        let _ = delete(output, path).await;
    }
    drop(guard);
}

async fn put(at: &Location, path: &Path, body: String) -> Result<(), StoreError> {
    at.store
        .put(path, PutPayload::from(body.into_bytes()))
        .await
        .map_err(at.object_error(path))?;
    Ok(())
}

/// `.<name>.<what>` beside `dir`.
fn sibling(dir: &FsPath, what: &str) -> PathBuf {
    let (parent, prefix) = sibling_parts(dir, what);
    parent.join(prefix)
}

/// The parent of `dir`, and `.<name>.<what>`.
fn sibling_parts(dir: &FsPath, what: &str) -> (PathBuf, String) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = dir.parent().unwrap_or(FsPath::new("/")).to_path_buf();
    (parent, format!(".{name}.{what}"))
}

fn io(path: &FsPath) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        path: path.clone(),
        source,
    }
}

/// Deletes a folder (or file) and all below it; one already gone is fine.
fn remove(path: &FsPath) -> Result<(), StoreError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Fsyncs every file and folder below `dir`, and `dir` itself.
fn sync_tree(dir: &FsPath) -> Result<(), StoreError> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = e.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &FsPath) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

/// An exclusive, non-blocking `flock`.
fn flock(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is open for the duration of the call, so its descriptor is valid.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Atomically swaps two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &FsPath, b: &FsPath) -> std::io::Result<()> {
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
fn exchange(_: &FsPath, _: &FsPath) -> std::io::Result<()> {
    Err(std::io::Error::other("no atomic exchange"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_data_files_are_renamed() {
        assert_eq!(
            final_name("part-00001.parquet", "r1"),
            "part-00001-r1.parquet"
        );
        assert_eq!(final_name("_pca/mean.npy", "r1"), "_pca/mean.npy");
        assert_eq!(final_name("_errors.json", "r1"), "_errors.json");
        assert_eq!(final_name("data", "r1"), "data-r1");
    }
}
