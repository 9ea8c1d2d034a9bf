//! `--mode update`: what a run keeps from the result already at its output.
//!
//! A result records the photos its rows came from (`_inputs/inputs.parquet`: path, size, ETag or
//! modification time), and its `_SUCCESS` the weights hash and [`PREPROCESSING`] version. An
//! update lists the input as any run does, then:
//! * a photo whose path, size and version are unchanged keeps its stored features (no read,
//!   no decode, no model): its row is copied into the run's staged features
//!   ([`stage_reused`]);
//! * a new or changed photo is featurised; a photo gone from the input is dropped;
//! * the PCA is fitted again on every row (or the saved one applied) and every row projected.
//!
//! Stored features are reused only when the weights and the preprocessing match this run's;
//! otherwise every photo is featurised again, and the run says why.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, UInt64Array};
use fruits_model::FEATURES;
use fruits_pca::PartialSums;
use fruits_store::{ImageRef, Location};

use crate::error::EngineError;
use crate::result::{manifest_parts, open_result, visit_batches};
use crate::sink::PartWriter;
use crate::vocab::names::{part_name, FEATURES_DIR, INPUTS_FILE};
use crate::vocab::schema::{
    col, features_schema, inputs_schema, FeatureRows, InputRows, OutputRows,
};
pub use crate::vocab::summary::UpdateCounts;
use crate::vocab::TaskReport;

/// The version of the pixel pipeline (decode, resize, scale): features made by another
/// version are never reused. Raise it with any change to what `fruits_image` gives the model.
pub const PREPROCESSING: u32 = 1;

/// The worker name of the partitions an update copies from the previous result.
pub const REUSED_WORKER: &str = "reused";

/// The previous result an update starts from.
#[derive(Debug)]
pub struct Base {
    /// What its part names are relative to.
    at: Location,
    /// Its photos: URI → (size, version).
    inputs: HashMap<String, (u64, Option<String>)>,
    /// Its parts.
    parts: Vec<String>,
    /// Why none of its features can be reused, if so.
    pub stale: Option<String>,
}

/// The result at `output`, if there is one, as the base of an update by a run whose weights
/// hash is `weights`.
pub async fn read_base(output: &Location, weights: &str) -> Result<Option<Base>, EngineError> {
    if !fruits_store::output_exists(output).await? {
        return Ok(None);
    }
    let found = open_result(output).await?;
    let manifest = found.manifest;
    let parts = manifest_parts(&manifest);
    let theirs = manifest["weights"].as_str().unwrap_or("unknown");
    let preprocessing = manifest["preprocessing"].as_u64().unwrap_or(0);
    let stale = if theirs != weights {
        Some(format!(
            "its features come from other weights ({theirs}; this run: {weights})"
        ))
    } else if preprocessing != u64::from(PREPROCESSING) {
        Some(format!(
            "its features come from preprocessing version {preprocessing} (this run: {PREPROCESSING})"
        ))
    } else {
        None
    };
    let mut inputs = HashMap::new();
    // `_SUCCESS` names every object of the result.
    let recorded = manifest["commit"]["objects"]
        .as_array()
        .is_some_and(|objects| objects.iter().any(|o| o.as_str() == Some(INPUTS_FILE)));
    let stale = match (stale, recorded) {
        (None, false) => Some(format!(
            "it records no input versions ({INPUTS_FILE}: made by an older fruits)"
        )),
        (stale, _) => stale,
    };
    if recorded {
        visit_batches(&found.meta, &[INPUTS_FILE.to_string()], |batch, _| {
            let r = InputRows::try_from(batch)?;
            for i in 0..batch.num_rows() {
                let version = r
                    .version
                    .is_valid(i)
                    .then(|| r.version.value(i).to_string());
                inputs.insert(r.path.value(i).to_string(), (r.size.value(i), version));
            }
            Ok(())
        })
        .await?;
    }
    Ok(Some(Base {
        at: output.clone(),
        inputs,
        parts,
        stale,
    }))
}

/// An update's split of the listed photos.
#[derive(Debug)]
pub struct Split<'a> {
    /// New and changed photos, in listing order: to featurise.
    pub todo: Vec<ImageRef>,
    /// The URIs whose stored rows are kept.
    pub reused: HashSet<&'a str>,
    /// The counts.
    pub counts: UpdateCounts,
}

/// Compares the listed `images` with `base`.
pub fn split<'a>(images: &'a [ImageRef], base: &Base) -> Split<'a> {
    let mut counts = UpdateCounts::default();
    let mut todo = Vec::new();
    let mut reused = HashSet::new();
    for image in images {
        match base.inputs.get(&image.uri) {
            Some((size, version))
                if base.stale.is_none()
                    && *size == image.size
                    && version.is_some()
                    && *version == image.version =>
            {
                reused.insert(image.uri.as_str());
            }
            Some(_) => {
                counts.changed += 1;
                todo.push(image.clone());
            }
            None => {
                counts.new += 1;
                todo.push(image.clone());
            }
        }
    }
    let listed: HashSet<&str> = images.iter().map(|i| i.uri.as_str()).collect();
    counts.removed = base
        .inputs
        .keys()
        .filter(|uri| !listed.contains(uri.as_str()))
        .count() as u64;
    counts.reused = reused.len() as u64;
    counts.stale = base.stale.clone();
    Split {
        todo,
        reused,
        counts,
    }
}

/// Copies the rows of `reused` photos from the base's parts into staged feature partitions
/// numbered from `first` (one per base part that keeps a row); returns their reports and the
/// sums of their features.
pub async fn stage_reused(
    base: &Base,
    reused: &HashSet<&str>,
    staged: &Location,
    first: usize,
    weights: &str,
) -> Result<(Vec<TaskReport>, PartialSums), EngineError> {
    let mut reports = Vec::new();
    let mut sums = PartialSums::new(FEATURES);
    for part in &base.parts {
        // One base part at a time: memory stays at one part's kept rows.
        let mut kept: Vec<RecordBatch> = Vec::new();
        visit_batches(&base.at, std::slice::from_ref(part), |batch, _| {
            let rows = OutputRows::try_from(batch)?;
            let keep: arrow::array::BooleanArray = (0..batch.num_rows())
                .map(|i| Some(reused.contains(rows.path.value(i))))
                .collect();
            let columns = [col::PATH, col::LABEL, col::FEATURES].map(|name| {
                let column = batch.column_by_name(name).ok_or_else(|| {
                    EngineError::Task(format!("a result part without a {name} column"))
                })?;
                Ok::<_, EngineError>(arrow::compute::filter(column, &keep)?)
            });
            let [path, label, features] = columns;
            let batch = RecordBatch::try_new(features_schema(), vec![path?, label?, features?])?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
            Ok(())
        })
        .await?;
        if kept.is_empty() {
            continue;
        }
        let partition = first + reports.len();
        let mut writer = PartWriter::create(
            staged,
            &part_name(FEATURES_DIR, partition),
            features_schema(),
        )?;
        let mut labels = BTreeSet::new();
        for batch in &kept {
            let rows = FeatureRows::try_from(batch)?;
            sums.add_rows(rows.values()?);
            labels.extend((0..batch.num_rows()).map(|i| rows.label.value(i).to_string()));
            writer.write(batch).await?;
        }
        let rows = writer.close().await?;
        reports.push(TaskReport {
            partition,
            rows,
            images: rows,
            skipped: Vec::new(),
            labels: labels.into_iter().collect(),
            worker: REUSED_WORKER.to_string(),
            weights: Some(weights.to_string()),
        });
    }
    Ok((reports, sums))
}

/// Writes `_inputs/inputs.parquet` at `staged`: the listed `images` that have a row (not `skipped`).
pub async fn write_inputs(
    staged: &Location,
    images: &[ImageRef],
    skipped: &HashSet<&str>,
) -> Result<(), EngineError> {
    let kept: Vec<&ImageRef> = images
        .iter()
        .filter(|i| !skipped.contains(i.uri.as_str()))
        .collect();
    let mut writer = PartWriter::create(staged, INPUTS_FILE, inputs_schema())?;
    for chunk in kept.chunks(65_536) {
        let path: StringArray = chunk.iter().map(|i| Some(i.uri.as_str())).collect();
        let size: UInt64Array = chunk.iter().map(|i| Some(i.size)).collect();
        let version: StringArray = chunk.iter().map(|i| i.version.as_deref()).collect();
        let batch = RecordBatch::try_new(
            inputs_schema(),
            vec![Arc::new(path), Arc::new(size), Arc::new(version)],
        )?;
        writer.write(&batch).await?;
    }
    writer.close().await?;
    Ok(())
}
