//! `--format delta`: a run's result published as the next version of a Delta Lake table
//! ([`fruits_delta`]) instead of a Parquet folder.
//!
//! The run stages exactly what a folder result holds. Publishing then copies
//! * the data parts to the table's top level, under run-unique names (as a folder publish
//!   names them), so no file of an earlier version is ever replaced;
//! * everything else (`_pca/`, `_errors.json`, `_inputs/`, `_report.html`) and the run's
//!   manifest (`_SUCCESS`, as in a folder) into the version's own folder `_fruits/<run>/`;
//!
//! and commits: one Delta commit adds the new parts and removes the previous version's, and
//! records the version's folder, its PCA and the run's summary ([`META_KEY`], ...). The commit
//! is the commit point: a crash before it leaves files no version lists, which readers never
//! see. Earlier versions, with their folders, stay readable until a vacuum.

use fruits_store::Staging;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::vocab::schema::output_schema;
use crate::vocab::summary::PartFile;

/// Where a run publishes its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A folder of Parquet parts with `_SUCCESS` last, as the notebook wrote (the default).
    #[default]
    Parquet,
    /// A Delta Lake table: each run a new version.
    Delta,
}

/// The folder below a table that holds one folder per version.
pub const VERSIONS_DIR: &str = "_fruits";

/// The key, in fruits' record of a commit, of the version's folder (relative to the table).
pub const META_KEY: &str = "folder";

/// Publishes the result staged in `staging` as the next version of the Delta table at its
/// output (creating it), with `manifest` (the run's summary, whose `files` name the parts as
/// published, with their rows); the staging is then removed. Returns the new version.
pub async fn publish(
    staging: Staging,
    mut manifest: serde_json::Value,
) -> Result<u64, EngineError> {
    let result = copy_and_commit(&staging, &mut manifest).await;
    // Published or not, the staging has served (on failure the copies are removed too).
    staging.abort().await?;
    result
}

async fn copy_and_commit(
    staging: &Staging,
    manifest: &mut serde_json::Value,
) -> Result<u64, EngineError> {
    let (staged, table) = (staging.location(), staging.output());
    let folder = format!("{VERSIONS_DIR}/{}", staging.run());
    let parts: Vec<PartFile> = serde_json::from_value(manifest["files"].clone())
        .map_err(|e| EngineError::Task(format!("the run's manifest lists no parts: {e}")))?;
    let mut copied = Vec::new();
    let mut sidecars = Vec::new();
    // The data parts' sizes, by published name (a copy keeps them), for the Delta log.
    let mut sizes = std::collections::HashMap::new();
    let result: Result<u64, EngineError> = async {
        for (path, size) in staged.list_sized().await? {
            let rel = staged.relative(&path);
            // Data parts get their run-unique name at the top; the rest goes to the folder.
            let name = staging.final_name(&rel);
            let to = if name != rel {
                sizes.insert(name.clone(), size);
                name
            } else {
                sidecars.push(rel.clone());
                format!("{folder}/{rel}")
            };
            let target = table.child(&to);
            table
                .store()
                .copy(&path, &target)
                .await
                .map_err(|e| EngineError::Task(format!("{}: {e}", table.uri_of(&target))))?;
            copied.push(target);
        }
        // The version's manifest: as a folder's `_SUCCESS`.
        sidecars.push(fruits_store::SUCCESS.to_string());
        manifest["commit"] = serde_json::json!({ "run": staging.run(), "objects": sidecars });
        let success = format!("{folder}/{}", fruits_store::SUCCESS);
        table
            .put_rel(
                &success,
                serde_json::to_vec_pretty(manifest).unwrap_or_default(),
            )
            .await?;
        copied.push(table.child(&success));
        let delta_files = parts
            .iter()
            .map(|part| {
                let size = sizes.get(&part.name).copied().ok_or_else(|| {
                    EngineError::Task(format!(
                        "{}/{}: listed by the run's manifest, never staged",
                        table.uri(),
                        part.name
                    ))
                })?;
                Ok(fruits_delta::DataFile {
                    path: part.name.clone(),
                    size,
                    rows: part.rows,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let record = serde_json::json!({
            "run": staging.run(),
            META_KEY: folder,
            "pca": format!("{folder}/{}", crate::vocab::names::PCA_DIR),
            "k": manifest["k"],
            "variance_kept": manifest["variance_kept"],
            "weights": manifest["weights"],
            "preprocessing": manifest["preprocessing"],
            "rows": manifest["rows"],
            "images": manifest["images"],
            "skipped": manifest["skipped"],
            "update": manifest["update"],
        });
        Ok(fruits_delta::commit(table, &output_schema(), &delta_files, record).await?)
    }
    .await;
    if result.is_err() {
        for path in copied {
            let _ = table.store().delete(&path).await;
        }
    }
    result
}
