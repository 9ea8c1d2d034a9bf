//! A published result read back: its `_SUCCESS` manifest and its rows, for the commands that
//! consume features (`fruits train`).

use arrow::array::RecordBatch;
use fruits_pca::PcaModel;
use fruits_store::{Location, SUCCESS};
use futures::TryStreamExt;

use crate::error::EngineError;
use crate::vocab::schema::{list_values, OutputRows};

/// The rows of a result, column by column.
#[derive(Debug, Default, Clone)]
pub struct ResultRows {
    /// Each row's image URI.
    pub path: Vec<String>,
    /// Each row's label.
    pub label: Vec<String>,
    /// The features, row after row (`FEATURES` values each).
    pub features: Vec<f32>,
    /// The PCA features, row after row (`k` values each).
    pub features_pca: Vec<f32>,
    /// PCA components per row.
    pub k: usize,
}

impl ResultRows {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.path.len()
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> bool {
        self.path.is_empty()
    }

    /// Appends `other`'s rows (of the same `k`).
    pub fn extend(&mut self, other: ResultRows) -> Result<(), EngineError> {
        if !self.is_empty() && self.k != other.k {
            return Err(EngineError::Task(format!(
                "results with {} and {} PCA components cannot be read together",
                self.k, other.k
            )));
        }
        self.k = other.k;
        self.path.extend(other.path);
        self.label.extend(other.label);
        self.features.extend(other.features);
        self.features_pca.extend(other.features_pca);
        Ok(())
    }
}

/// A published result: where it is, its manifest (`_SUCCESS`) and its rows.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its URI.
    pub uri: String,
    /// The `_SUCCESS` JSON (the run's summary).
    pub manifest: serde_json::Value,
    /// The hash of the weights its features came from, as the manifest records it.
    pub weights: Option<String>,
    /// Its rows.
    pub rows: ResultRows,
}

/// Reads the result at `at`: the parts its manifest lists, nothing else.
pub async fn read_published(at: &Location) -> Result<Published, EngineError> {
    let found = open_result(at).await?;
    let files = manifest_parts(&found.manifest);
    let k = found.manifest["k"].as_u64().unwrap_or(0) as usize;
    let rows = read_parts(at, &files, k).await?;
    Ok(Published {
        uri: at.uri(),
        weights: found.manifest["weights"].as_str().map(str::to_string),
        manifest: found.manifest,
        rows,
    })
}

/// Where the pieces of a published result are. Its manifest's part names are relative to
/// the result's location itself, a folder's or a table's.
#[derive(Debug, Clone)]
pub struct ResultAt {
    /// Where its `_SUCCESS` manifest, `_pca/`, `_errors.json`, `_inputs/` and `_report.html`
    /// are: the result's own folder, or for a Delta table the folder of its latest version
    /// ([`crate::table`]).
    pub meta: Location,
    /// The manifest (the run's summary; see [`read_manifest`]).
    pub manifest: serde_json::Value,
}

/// The published result at `at`: a Parquet folder, or the latest version of a Delta table
/// written by fruits (whose data files must be exactly those its manifest lists).
pub async fn open_result(at: &Location) -> Result<ResultAt, EngineError> {
    if !fruits_delta::is_table(at).await? {
        return Ok(ResultAt {
            meta: at.clone(),
            manifest: read_manifest(at).await?,
        });
    }
    let latest = fruits_delta::latest(at).await?;
    let uri = at.uri();
    let Some(folder) = latest.metadata[crate::table::META_KEY].as_str() else {
        return Err(EngineError::Task(format!(
            "version {} of the Delta table {uri} was not written by fruits",
            latest.version
        )));
    };
    let meta = at.sub(folder);
    let manifest = read_manifest(&meta).await?;
    let mut listed = manifest_parts(&manifest);
    let mut found: Vec<String> = latest.files.into_iter().map(|f| f.path).collect();
    listed.sort();
    found.sort();
    if listed != found {
        return Err(EngineError::Task(format!(
            "version {} of the Delta table {uri} holds other files than fruits wrote (another writer changed it)",
            latest.version
        )));
    }
    Ok(ResultAt { meta, manifest })
}

/// The PCA saved at `at` (a result's `_pca` folder; see [`PcaModel::to_files`]).
pub async fn read_pca(at: &Location) -> Result<PcaModel, EngineError> {
    let mut files = std::collections::HashMap::new();
    for name in fruits_pca::FILES {
        files.insert(name, at.get_rel(name).await?.to_vec());
    }
    Ok(PcaModel::from_files(|n| {
        files.get(n).cloned().ok_or("absent")
    })?)
}

/// The `_SUCCESS` manifest of the result at `at` (an error if it is not a complete result).
pub async fn read_manifest(at: &Location) -> Result<serde_json::Value, EngineError> {
    let uri = at.uri();
    let marker = at
        .get_rel(SUCCESS)
        .await
        .map_err(|e| EngineError::Task(format!("{uri} is not a complete fruits result ({e})")))?;
    let manifest: serde_json::Value = serde_json::from_slice(&marker)
        .map_err(|e| EngineError::Task(format!("{uri}/{SUCCESS}: {e}")))?;
    Ok(manifest)
}

/// Reads the parts `names` (of `k` PCA features) at `at`, in that order.
pub async fn read_parts(
    at: &Location,
    names: &[String],
    k: usize,
) -> Result<ResultRows, EngineError> {
    let mut rows = ResultRows {
        k,
        ..ResultRows::default()
    };
    visit_parts(at, names, |r, _| {
        for i in 0..arrow::array::Array::len(r.path) {
            rows.path.push(r.path.value(i).to_string());
            rows.label.push(r.label.value(i).to_string());
        }
        rows.features.extend_from_slice(list_values(r.features)?);
        rows.features_pca
            .extend_from_slice(list_values(r.features_pca)?);
        Ok(())
    })
    .await?;
    Ok(rows)
}

/// Calls `visit` with every batch of the result parts `names` at `at`, in order, and the
/// number of rows before it: for readers that keep less than every row (bounded memory).
pub async fn visit_parts(
    at: &Location,
    names: &[String],
    mut visit: impl FnMut(&OutputRows<'_>, usize) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    visit_batches(at, names, |batch, before| {
        visit(&OutputRows::try_from(batch)?, before)
    })
    .await
}

/// Calls `visit` with every batch of the Parquet files `names` at `at`, in order, and the
/// number of rows before it.
pub async fn visit_batches(
    at: &Location,
    names: &[String],
    mut visit: impl FnMut(&RecordBatch, usize) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let mut before = 0;
    for name in names {
        let path = at.child(name);
        let uri = at.uri_of(&path);
        let fail = |e: &dyn std::fmt::Display| EngineError::Task(format!("reading {uri}: {e}"));
        // As in the staged-feature scan: the reference object_store reader.
        #[allow(deprecated)]
        let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
            at.store().clone(),
            path.clone(),
        );
        let mut stream = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .and_then(|b| b.build())
            .map_err(|e| fail(&e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| fail(&e))? {
            visit(&batch, before)?;
            before += batch.num_rows();
        }
    }
    Ok(())
}

/// The part names a `_SUCCESS` manifest lists.
pub(crate) fn manifest_parts(manifest: &serde_json::Value) -> Vec<String> {
    manifest["files"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
