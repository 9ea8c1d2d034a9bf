//! A fruits result as a [Delta Lake](https://delta.io) table, through the `deltalake` crate.
//!
//! The table's data files are the result's Parquet parts, written beside `_delta_log/` by the
//! caller. [`commit`] makes them the table's next version in one Delta commit: it adds them
//! and removes every file of the version before, so a reader of the latest version sees the
//! new result and nothing else, while the files of earlier versions stay (time travel) until
//! a vacuum. The commit file is written only if absent (`If-None-Match: *` on S3, a
//! create-new on a local disk): of two writers, one wins and the other fails, never both.
//!
//! What fruits records about a version (its run, where its PCA and other sidecar files are,
//! its summary) goes into the commit's own information, under [`METADATA_KEY`], and comes
//! back with [`latest`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), fruits_delta::DeltaError> {
//! let table = fruits_store::Location::parse("features.delta")?;
//! let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
//!     "path",
//!     arrow::datatypes::DataType::Utf8,
//!     false,
//! )]);
//! let files = [fruits_delta::DataFile { path: "part-00000-r1.parquet".into(), size: 1234, rows: 10 }];
//! let version = fruits_delta::commit(&table, &schema, &files, serde_json::json!({"run": "r1"})).await?;
//! let latest = fruits_delta::latest(&table).await?;
//! assert_eq!(latest.version, version);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::Schema;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, StructType};
use deltalake_core::logstore::{default_logstore, LogStoreRef, StorageConfig};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::DeltaTable;
use fruits_store::Location;
use futures::{StreamExt, TryStreamExt};

/// The key of fruits' record in a commit's information.
pub const METADATA_KEY: &str = "fruits";

/// The folder of a table's transaction log.
pub const LOG_DIR: &str = "_delta_log";

/// What went wrong with a table.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The location could not be used.
    #[error(transparent)]
    Store(#[from] fruits_store::StoreError),
    /// The Delta library failed (the log, a commit, a conflict).
    #[error("Delta table {uri}: {message}")]
    Table {
        /// The table.
        uri: String,
        /// What failed.
        message: String,
    },
}

/// One data file of a version, named relative to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Its name below the table's location.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its rows.
    pub rows: u64,
}

/// A version of a table, as fruits reads it back.
#[derive(Debug, Clone)]
pub struct Version {
    /// Its number (0 for the table's first).
    pub version: u64,
    /// Its data files.
    pub files: Vec<DataFile>,
    /// What fruits recorded with the commit that made it ([`METADATA_KEY`]), `Null` if the
    /// commit was not fruits'.
    pub metadata: serde_json::Value,
}

/// Whether `at` holds a Delta table (a transaction log).
pub async fn is_table(at: &Location) -> Result<bool, DeltaError> {
    Ok(!at.sub(LOG_DIR).list_paths().await?.is_empty())
}

/// Makes `files` (already written below `at`) the next version of the table at `at`,
/// replacing every file of the version before, or creates the table with them as version 0.
/// `metadata` is recorded in the commit. Returns the new version's number.
pub async fn commit(
    at: &Location,
    schema: &Schema,
    files: &[DataFile],
    metadata: serde_json::Value,
) -> Result<u64, DeltaError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let adds: Vec<Action> = files
        .iter()
        .map(|f| {
            Action::Add(Add {
                path: f.path.clone(),
                size: f.size as i64,
                modification_time: now,
                data_change: true,
                stats: Some(serde_json::json!({ "numRecords": f.rows }).to_string()),
                ..Default::default()
            })
        })
        .collect();
    let info: HashMap<String, serde_json::Value> = [(METADATA_KEY.to_string(), metadata)].into();
    if !is_table(at).await? {
        let columns: StructType = schema.try_into_kernel().map_err(|e| failure(at, e))?;
        let table = CreateBuilder::new()
            .with_log_store(log_store(at)?)
            .with_columns(columns.fields().cloned())
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_actions(adds)
            .with_commit_properties(CommitProperties::default().with_metadata(info))
            .await
            .map_err(|e| failure(at, e))?;
        return table
            .version()
            .ok_or_else(|| failure(at, "the new table has no version"));
    }
    let mut table = open(at).await?;
    table.load().await.map_err(|e| failure(at, e))?;
    let log = table.log_store();
    let snapshot = table.snapshot().map_err(|e| failure(at, e))?;
    let mut actions = adds;
    let removes: Vec<Action> = snapshot
        .snapshot()
        .file_views(log.as_ref(), None)
        .map_ok(|f| Action::Remove(f.remove_action(true)))
        .try_collect()
        .await
        .map_err(|e| failure(at, e))?;
    actions.extend(removes);
    let done = CommitBuilder::from(CommitProperties::default().with_metadata(info))
        .with_actions(actions)
        .build(
            Some(snapshot),
            log.clone(),
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate: None,
            },
        )
        .await
        .map_err(|e| failure(at, e))?;
    Ok(done.version())
}

/// The latest version of the table at `at`.
pub async fn latest(at: &Location) -> Result<Version, DeltaError> {
    let mut table = open(at).await?;
    table.load().await.map_err(|e| failure(at, e))?;
    let version = table.version().unwrap_or(0);
    let log = table.log_store();
    let snapshot = table.snapshot().map_err(|e| failure(at, e))?;
    let files: Vec<DataFile> = snapshot
        .snapshot()
        .file_views(log.as_ref(), None)
        .map_ok(|f| DataFile {
            path: f.path().to_string(),
            size: f.size().max(0) as u64,
            rows: f.num_records().unwrap_or(0) as u64,
        })
        .try_collect()
        .await
        .map_err(|e| failure(at, e))?;
    let mut history = table.history(Some(1));
    let metadata = match history.next().await {
        Some(info) => info
            .map_err(|e| failure(at, e))?
            .info
            .get(METADATA_KEY)
            .cloned()
            .unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    drop(history);
    Ok(Version {
        version,
        files,
        metadata,
    })
}

/// The table at `at`, reached through `at`'s own store (its S3 settings and credentials).
async fn open(at: &Location) -> Result<DeltaTable, DeltaError> {
    Ok(DeltaTable::new(log_store(at)?))
}

/// The log of the table at `at`: Delta's default log store over `at`'s store, whatever its
/// kind (no cloud-specific Delta crate: fruits has the store already). Its commits are
/// put-if-absent, which S3 does with a conditional write.
fn log_store(at: &Location) -> Result<LogStoreRef, DeltaError> {
    let url = url(at)?;
    let options = StorageConfig::default();
    let root = at.store().clone();
    let prefixed = options
        .decorate_store(root.clone(), &url)
        .map_err(|e| failure(at, e))?;
    Ok(default_logstore(Arc::from(prefixed), root, &url, &options))
}

fn url(at: &Location) -> Result<url::Url, DeltaError> {
    url::Url::parse(&at.uri()).map_err(|e| failure(at, e))
}

fn failure(at: &Location, e: impl std::fmt::Display) -> DeltaError {
    DeltaError::Table {
        uri: at.uri(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn schema() -> Schema {
        Schema::new(vec![Field::new("path", DataType::Utf8, false)])
    }

    fn file(name: &str, rows: u64) -> DataFile {
        DataFile {
            path: name.into(),
            size: 10,
            rows,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_replace_files_and_of_two_writers_of_one_version_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let at = Location::parse(dir.path().join("t").to_str().unwrap()).unwrap();
        assert!(!is_table(&at).await.unwrap());
        let v0 = commit(
            &at,
            &schema(),
            &[file("a.parquet", 3)],
            serde_json::json!({"run": "r0"}),
        )
        .await
        .unwrap();
        assert_eq!(v0, 0);
        assert!(is_table(&at).await.unwrap());
        let latest0 = latest(&at).await.unwrap();
        assert_eq!(latest0.files, [file("a.parquet", 3)]);
        assert_eq!(latest0.metadata["run"], "r0");

        // Version 1 is written once: a second writer of the same commit file is refused.
        let log = log_store(&at).unwrap();
        let entry = |body: &str| {
            deltalake_core::logstore::CommitOrBytes::LogBytes(body.to_string().into_bytes().into())
        };
        let id = uuid::Uuid::new_v4();
        log.write_commit_entry(1, entry("{}\n"), id).await.unwrap();
        let again = log.write_commit_entry(1, entry("{}\n"), id).await;
        assert!(
            matches!(
                again,
                Err(deltalake_core::kernel::transaction::TransactionError::VersionAlreadyExists(1))
            ),
            "{again:?}"
        );
        std::fs::remove_file(dir.path().join("t/_delta_log/00000000000000000001.json")).unwrap();

        // Two writers of version 1 at once: both replace a.parquet; one commit wins.
        let (s, b, c) = (schema(), [file("b.parquet", 4)], [file("c.parquet", 5)]);
        let (x, y) = tokio::join!(
            commit(&at, &s, &b, serde_json::json!({"run": "rb"})),
            commit(&at, &s, &c, serde_json::json!({"run": "rc"})),
        );
        let won: Vec<u64> = [&x, &y]
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let now = latest(&at).await.unwrap();
        assert_eq!(
            now.files.len(),
            1,
            "never both writers' files: {:?}",
            now.files
        );
        match (x, y) {
            (Ok(1), Err(_)) => assert_eq!(now.metadata["run"], "rb"),
            (Err(_), Ok(1)) => assert_eq!(now.metadata["run"], "rc"),
            // One after the other: the later one replaced the earlier's files.
            (Ok(a), Ok(b)) => assert_eq!((a.min(b), a.max(b)), (1, 2), "{won:?}"),
            other => panic!("{other:?}"),
        }
    }
}
