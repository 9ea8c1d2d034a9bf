//! A result's report: its figures gathered from the result (rows, `_SUCCESS`, `_errors.json`,
//! `_pca`), the data checks run on its features ([`fruits_checks`]), thumbnails read from its
//! input, and the page drawn by [`fruits_report`]. `extract` writes it into the staged result
//! before the commit, so a result and its `_report.html` are published together.

use std::collections::BTreeMap;
use std::time::Instant;

use fruits_checks::{Rows, Settings, MAX_EXACT_ROWS};
use fruits_pca::PcaModel;
use fruits_report::{
    ClassCount, Leak, Leakage, Projection, Reason, Report, Run, Similar, Suspect, Thumbnails,
};
use fruits_store::{Location, S3Settings};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::EngineError;
use crate::result::{open_result, read_pca, visit_parts};
use crate::vocab::names::{ERRORS_FILE, PCA_DIR, REPORT_FILE};
use crate::vocab::schema::list_values;
use crate::vocab::summary::Summary;
use crate::vocab::Skipped;

/// Points drawn on the principal-components chart at most (an even sample beyond).
const MAX_POINTS: usize = 5_000;

/// Thumbnails' longer side, in pixels.
const THUMBNAIL_SIDE: usize = 64;

/// A result to report on, as read from its store (published) or from a run's staging.
#[derive(Debug)]
pub struct Subject {
    /// The result's URI.
    pub uri: String,
    /// Its run's summary.
    pub summary: Summary,
    /// What the run set aside.
    pub skipped: Vec<Skipped>,
    /// Its PCA.
    pub pca: PcaModel,
    /// Its rows.
    pub rows: Sampled,
    /// Where its report page belongs (beside its `_pca/`; see
    /// [`ResultAt::meta`](crate::result::ResultAt::meta)).
    pub home: Location,
}

/// A result's rows as a report reads them, in bounded memory: every row's path, label and
/// first two principal components, and the features of an even sample of at most
/// [`MAX_EXACT_ROWS`] rows (all of them up to that).
#[derive(Debug, Default)]
pub struct Sampled {
    paths: Vec<String>,
    labels: Vec<String>,
    pcs: Vec<(f32, f32)>,
    /// The sampled rows, ascending.
    index: Vec<usize>,
    /// Their features, row after row.
    features: Vec<f32>,
}

impl Sampled {
    /// Reads the parts `names` at `at`, which hold `rows` rows.
    async fn read(at: &Location, names: &[String], rows: usize) -> Result<Sampled, EngineError> {
        let mut out = Sampled {
            index: fruits_checks::sample(rows, MAX_EXACT_ROWS),
            ..Sampled::default()
        };
        let d = fruits_model::FEATURES;
        let mut next = 0;
        visit_parts(at, names, |r, before| {
            let features = list_values(r.features)?;
            let offsets = r.features_pca.value_offsets();
            let pca = list_values(r.features_pca)?;
            let base = offsets[0] as usize;
            for i in 0..arrow::array::Array::len(r.path) {
                out.paths.push(r.path.value(i).to_string());
                out.labels.push(r.label.value(i).to_string());
                let (from, to) = (offsets[i] as usize - base, offsets[i + 1] as usize - base);
                let pc = |j: usize| if from + j < to { pca[from + j] } else { 0.0 };
                out.pcs.push((pc(0), pc(1)));
                if out.index.get(next) == Some(&(before + i)) {
                    out.features
                        .extend_from_slice(&features[i * d..(i + 1) * d]);
                    next += 1;
                }
            }
            Ok(())
        })
        .await?;
        out.index.truncate(next);
        Ok(out)
    }

    /// Rows in the result.
    fn len(&self) -> usize {
        self.paths.len()
    }

    /// Rows sampled.
    fn sampled(&self) -> usize {
        self.index.len()
    }

    /// The path of sampled row `i`.
    fn path(&self, i: usize) -> &str {
        &self.paths[self.index[i]]
    }

    /// The label of sampled row `i`.
    fn label(&self, i: usize) -> &str {
        &self.labels[self.index[i]]
    }
}

impl Subject {
    /// Reads the published result at `uri`.
    pub async fn read(uri: &str, s3: &S3Settings) -> Result<Subject, EngineError> {
        let at = Location::parse_with(uri, s3)?;
        let found = open_result(&at).await?;
        let meta = found.meta.uri();
        let summary: Summary = serde_json::from_value(found.manifest)
            .map_err(|e| EngineError::Task(format!("{meta}/_SUCCESS: {e}")))?;
        let parts: Vec<String> = summary.files.iter().map(|f| f.name.clone()).collect();
        let rows = Sampled::read(&at, &parts, summary.rows as usize).await?;
        let skipped = match found.meta.get_rel(ERRORS_FILE).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::Task(format!("{meta}/{ERRORS_FILE}: {e}")))?,
            Err(_) => Vec::new(),
        };
        let pca = read_pca(&found.meta.sub(PCA_DIR)).await?;
        Ok(Subject {
            home: found.meta.clone(),
            uri: at.uri(),
            summary,
            skipped,
            pca,
            rows,
        })
    }

    /// A run's result in its staging location, before the commit: `parts` as staged.
    pub async fn staged(
        at: &Location,
        parts: &[String],
        summary: &Summary,
        skipped: &[Skipped],
        pca: &PcaModel,
    ) -> Result<Subject, EngineError> {
        Ok(Subject {
            home: at.clone(),
            uri: summary.output.clone(),
            summary: summary.clone(),
            skipped: skipped.to_vec(),
            pca: pca.clone(),
            rows: Sampled::read(at, parts, summary.rows as usize).await?,
        })
    }
}

/// The report on `subject`, with leakage of `compare`'s photos into it when given, and the
/// thumbnails its page shows (read from the results' inputs; an unreadable photo has none).
pub async fn report(
    subject: &Subject,
    compare: Option<&Subject>,
    s3: &S3Settings,
) -> Result<(Report, Thumbnails), EngineError> {
    let s = &subject.summary;
    let mut report = Report {
        result: subject.uri.clone(),
        run: Run {
            input: s.input.clone(),
            output: s.output.clone(),
            engine: s.engine.clone(),
            workers: s.workers.clone(),
            images: s.images,
            rows: s.rows,
            skipped: s.skipped,
            classes: s.classes,
            k: s.k,
            variance_kept: s.variance_kept,
            // A run draws its report before its own report and commit stages end.
            stages: s
                .seconds
                .stages()
                .into_iter()
                .filter(|(stage, secs)| {
                    *secs > 0.0 || !matches!(stage.as_str(), "report" | "commit")
                })
                .collect(),
            images_per_second: s.images_per_second(),
            weights: s.weights.clone(),
        },
        skipped: reasons(&subject.skipped),
        explained_variance_ratio: subject.pca.explained_variance_ratio().to_vec(),
        ..Report::default()
    };
    let rows = &subject.rows;
    let mut counts: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for (label, path) in rows.labels.iter().zip(&rows.paths) {
        let e = counts.entry(label).or_insert((0, path));
        e.0 += 1;
        e.1 = e.1.min(path.as_str());
    }
    report.classes = counts
        .iter()
        .map(|(label, (photos, example))| ClassCount {
            label: label.to_string(),
            photos: *photos,
            example: Some(example.to_string()),
        })
        .collect();
    report
        .classes
        .sort_by(|a, b| b.photos.cmp(&a.photos).then(a.label.cmp(&b.label)));
    let class_of: BTreeMap<&str, usize> = report
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.label.as_str(), i))
        .collect();
    report.projection = Projection {
        points: fruits_checks::sample(rows.len(), MAX_POINTS)
            .into_iter()
            .map(|i| {
                (
                    rows.pcs[i].0,
                    rows.pcs[i].1,
                    class_of[rows.labels[i].as_str()],
                )
            })
            .collect(),
        of: rows.len(),
    };
    let inputs = input_locations(subject, compare, s3);
    report.checks = checks(subject, compare, &inputs).await;
    let thumbs = thumbnails(&report.thumbnails_wanted(), &inputs).await;
    Ok((report, thumbs))
}

/// Writes the report's page as `_report.html` into `at`.
pub async fn write_page(
    at: &Location,
    report: &Report,
    thumbs: &Thumbnails,
) -> Result<(), EngineError> {
    let page = fruits_report::html(report, thumbs).map_err(|e| EngineError::Task(e.to_string()))?;
    at.put_rel(REPORT_FILE, page.into_bytes()).await?;
    Ok(())
}

/// The skipped photos grouped by their error with numbers left out, most frequent first.
fn reasons(skipped: &[Skipped]) -> Vec<Reason> {
    let mut by: BTreeMap<String, Reason> = BTreeMap::new();
    for s in skipped {
        let mut reason = String::new();
        for c in s.error.chars() {
            if !c.is_ascii_digit() {
                reason.push(c);
            } else if !reason.ends_with('#') {
                reason.push('#');
            }
        }
        by.entry(reason.clone())
            .or_insert(Reason {
                reason,
                photos: 0,
                example: s.path.clone(),
            })
            .photos += 1;
    }
    let mut out: Vec<Reason> = by.into_values().collect();
    out.sort_by(|a, b| b.photos.cmp(&a.photos).then(a.reason.cmp(&b.reason)));
    out
}

async fn checks(
    subject: &Subject,
    compare: Option<&Subject>,
    inputs: &[Location],
) -> fruits_report::Checks {
    let t = Instant::now();
    let settings = Settings::default();
    let here = &subject.rows;
    let d = fruits_model::FEATURES;
    let n = here.sampled();
    let labels: Vec<&str> = (0..n).map(|i| here.label(i)).collect();
    let found = match Rows::new(&here.features, d, &labels) {
        Ok(rows) => compute(|| fruits_checks::check(&rows, &settings)),
        Err(_) => Default::default(),
    };
    let mut method = format!(
        "Exact nearest neighbours by cosine similarity of the {d} features: all pairs of {n} photos as matrix products."
    );
    if n < subject.rows.len() {
        method = format!(
            "Exact nearest neighbours by cosine similarity of the {d} features, on an even sample of {n} of the {} photos (the most compared exactly; photos outside the sample are not checked).",
            subject.rows.len()
        );
    }
    let similar = |p: &fruits_checks::Pair| Similar {
        a: here.path(p.a).to_string(),
        label_a: here.label(p.a).to_string(),
        b: here.path(p.b).to_string(),
        label_b: here.label(p.b).to_string(),
        cosine: p.cosine,
    };
    let mut exact = Vec::new();
    for group in &found.identical_features {
        let paths: Vec<&str> = group.iter().map(|&i| here.path(i)).collect();
        exact.extend(same_bytes(&paths, inputs).await);
    }
    let near = fruits_report::NearDuplicates {
        photos: found.near_duplicate_rows,
        share: found.near_duplicate_rows as f64 / n.max(1) as f64,
        groups: found
            .near_duplicate_groups
            .iter()
            .map(|g| g.iter().map(|&i| here.path(i).to_string()).collect())
            .collect(),
        cross_label: found.cross_label_pairs.iter().map(similar).collect(),
        closest: found.closest_pairs.iter().map(similar).collect(),
    };
    let mislabels = found
        .mislabels
        .iter()
        .map(|m| Suspect {
            path: here.path(m.row).to_string(),
            label: here.label(m.row).to_string(),
            suggested: m.suggested.clone(),
            agreeing: m.agreeing,
            cosine: m.cosine,
        })
        .collect();
    let leakage = compare.map(|other| {
        let there = &other.rows;
        let pairs =
            compute(|| fruits_checks::leakage(&there.features, &here.features, d, &settings));
        let photos = there.sampled();
        Leakage {
            compare: other.uri.clone(),
            photos,
            leaking: pairs.len(),
            share: pairs.len() as f64 / photos.max(1) as f64,
            pairs: pairs
                .iter()
                .map(|p| Leak {
                    test: there.path(p.a).to_string(),
                    train: here.path(p.b).to_string(),
                    cosine: p.cosine,
                })
                .collect(),
        }
    });
    fruits_report::Checks {
        settings,
        photos: subject.rows.len(),
        checked: n,
        method,
        seconds: t.elapsed().as_secs_f64(),
        exact_duplicates: exact,
        near_duplicates: near,
        mislabels,
        leakage,
    }
}

/// Runs the checks' arithmetic (seconds to minutes of CPU) off the async worker threads
/// where the runtime has others to hand its tasks to.
fn compute<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Splits photos with identical features into groups of identical bytes, read from the
/// inputs. Photos that cannot be read (their input is gone) stay grouped by their features.
async fn same_bytes(paths: &[&str], inputs: &[Location]) -> Vec<Vec<String>> {
    let mut by: BTreeMap<Option<Vec<u8>>, Vec<String>> = BTreeMap::new();
    for p in paths {
        let hash = photo(p, inputs).await.map(|b| Sha256::digest(&b).to_vec());
        by.entry(hash).or_default().push(p.to_string());
    }
    by.into_values().filter(|g| g.len() > 1).collect()
}

fn input_locations(subject: &Subject, compare: Option<&Subject>, s3: &S3Settings) -> Vec<Location> {
    std::iter::once(subject)
        .chain(compare)
        .filter_map(|s| Location::parse_with(&s.summary.input, s3).ok())
        .collect()
}

/// A photo's bytes, from whichever input it belongs to.
async fn photo(uri: &str, inputs: &[Location]) -> Option<bytes::Bytes> {
    let (at, path) = inputs
        .iter()
        .find_map(|at| at.path_of_uri(uri).map(|p| (at, p)))?;
    at.get(&path).await.ok()
}

async fn thumbnails(wanted: &[String], inputs: &[Location]) -> Thumbnails {
    futures::stream::iter(wanted)
        .map(|uri| async move {
            let bytes = photo(uri, inputs).await?;
            let jpeg = fruits_image::thumbnail(&bytes, THUMBNAIL_SIDE).ok()?;
            Some((uri.clone(), jpeg))
        })
        .buffer_unordered(16)
        .filter_map(|t| async move { t })
        .collect()
        .await
}
