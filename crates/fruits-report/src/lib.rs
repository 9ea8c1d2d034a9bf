//! A run's report: its figures ([`Report`], also the JSON of `fruits report --json`) and one
//! self-contained HTML page of them ([`html`]): inline SVG charts drawn with `plotters`,
//! thumbnails as `data:` URIs, no script, no external font, nothing fetched.
//!
//! The crate knows no storage: the engine gathers the figures and the thumbnails' bytes.
//!
//! ```
//! use fruits_report::{html, ClassCount, Report};
//!
//! let mut report = Report::default();
//! report.classes.push(ClassCount { label: "Kiwi".into(), photos: 3, example: None });
//! let page = html(&report, &Default::default()).unwrap();
//! assert!(page.contains("<svg") && page.contains("Kiwi") && !page.contains("<script"));
//! ```

#![deny(missing_docs)]

mod charts;
mod page;

use std::collections::BTreeMap;

use serde::Serialize;

pub use page::html;

/// Thumbnails to show, by photo URI: JPEG bytes.
pub type Thumbnails = BTreeMap<String, Vec<u8>>;

/// Flagged cases shown (with thumbnails) per check; the JSON names every one.
pub const SHOWN_PER_CHECK: usize = 12;

/// Why a report could not be drawn.
#[derive(Debug)]
pub struct ReportError(pub String);

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "drawing the report: {}", self.0)
    }
}

impl std::error::Error for ReportError {}

/// Everything a report shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The result reported on (URI).
    pub result: String,
    /// The run that wrote it.
    pub run: Run,
    /// Skipped photos, grouped by reason, most frequent first.
    pub skipped: Vec<Reason>,
    /// Photos per class, most first.
    pub classes: Vec<ClassCount>,
    /// The PCA's explained variance ratio of every component (the first `run.k` are kept).
    pub explained_variance_ratio: Vec<f64>,
    /// The photos on the first two principal components (not in the JSON).
    #[serde(skip)]
    pub projection: Projection,
    /// The data checks.
    pub checks: Checks,
}

/// The run that wrote a result, as its `_SUCCESS` records it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// Input URI.
    pub input: String,
    /// Output URI.
    pub output: String,
    /// Where the plans ran.
    pub engine: String,
    /// Photos each worker featurised.
    pub workers: BTreeMap<String, u64>,
    /// Photos listed.
    pub images: u64,
    /// Rows written.
    pub rows: u64,
    /// Photos skipped.
    pub skipped: u64,
    /// Distinct labels.
    pub classes: usize,
    /// PCA components kept.
    pub k: usize,
    /// Share of variance they keep.
    pub variance_kept: f64,
    /// Wall time of each stage, in order.
    pub stages: Vec<(String, f64)>,
    /// Photos per second, end to end.
    pub images_per_second: f64,
    /// The hash of the weights the features came from.
    pub weights: Option<String>,
}

/// A reason photos were skipped, and how many.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    /// The error, with the photo's own details (offsets, sizes) left out.
    pub reason: String,
    /// Photos.
    pub photos: u64,
    /// One of them.
    pub example: String,
}

/// One class's photo count.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCount {
    /// The label.
    pub label: String,
    /// Photos.
    pub photos: u64,
    /// One photo of it (URI), for its thumbnail.
    pub example: Option<String>,
}

/// Points on the first two principal components.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// `(pc1, pc2, class)` with `class` an index into [`Report::classes`].
    pub points: Vec<(f32, f32, usize)>,
    /// Photos in the result (the points are an even sample when fewer).
    pub of: usize,
}

/// The data checks' settings and findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    /// Thresholds.
    pub settings: fruits_checks::Settings,
    /// Photos in the result.
    pub photos: usize,
    /// Photos compared (all of them up to [`fruits_checks::MAX_EXACT_ROWS`]).
    pub checked: usize,
    /// How the photos were compared, in one sentence.
    pub method: String,
    /// Seconds the checks took.
    pub seconds: f64,
    /// Groups of photos with the same bytes.
    pub exact_duplicates: Vec<Vec<String>>,
    /// Near-duplicates.
    pub near_duplicates: NearDuplicates,
    /// Suspected mislabels, most confident first.
    pub mislabels: Vec<Suspect>,
    /// Photos of another result with a near-duplicate here (`--compare`).
    pub leakage: Option<Leakage>,
}

/// Near-duplicates of one result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NearDuplicates {
    /// Photos with at least one near-duplicate.
    pub photos: usize,
    /// Their share of the photos checked.
    pub share: f64,
    /// Groups of connected near-duplicates, largest first.
    pub groups: Vec<Vec<String>>,
    /// Near-duplicate pairs with different labels, most similar first.
    pub cross_label: Vec<Similar>,
    /// The most similar pairs of one label (each photo once), most similar first.
    pub closest: Vec<Similar>,
}

/// Two similar photos.
#[derive(Debug, Clone, Serialize)]
pub struct Similar {
    /// One photo (URI).
    pub a: String,
    /// Its label.
    pub label_a: String,
    /// The other (URI).
    pub b: String,
    /// Its label.
    pub label_b: String,
    /// Cosine similarity of their features.
    pub cosine: f32,
}

/// A photo whose nearest neighbours mostly carry another label.
#[derive(Debug, Clone, Serialize)]
pub struct Suspect {
    /// The photo (URI).
    pub path: String,
    /// Its label.
    pub label: String,
    /// The label its neighbours suggest.
    pub suggested: String,
    /// Neighbours (of [`fruits_checks::Settings::mislabel_neighbours`]) that carry it.
    pub agreeing: usize,
    /// Their mean cosine similarity to the photo.
    pub cosine: f32,
}

/// Photos of a second result (say a test set) with a near-duplicate in this one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leakage {
    /// The second result (URI).
    pub compare: String,
    /// Its photos compared.
    pub photos: usize,
    /// How many have a near-duplicate here.
    pub leaking: usize,
    /// Their share.
    pub share: f64,
    /// Each leaking photo and its closest photo here, most similar first.
    pub pairs: Vec<Leak>,
}

/// A photo of the second result and its near-duplicate here.
#[derive(Debug, Clone, Serialize)]
pub struct Leak {
    /// The photo of the second result (URI).
    pub test: String,
    /// Its near-duplicate here (URI).
    pub train: String,
    /// Their cosine similarity.
    pub cosine: f32,
}

impl Report {
    /// The near-duplicate pairs with different labels the page shows: the first
    /// [`SHOWN_PER_CHECK`] whose photos were not shown in an earlier pair.
    pub fn shown_cross_label(&self) -> Vec<&Similar> {
        let mut seen = std::collections::HashSet::new();
        self.checks
            .near_duplicates
            .cross_label
            .iter()
            .filter(|s| seen.insert(&s.a) & seen.insert(&s.b))
            .take(SHOWN_PER_CHECK)
            .collect()
    }

    /// The photos the page shows a thumbnail of: one per class, then the first
    /// [`SHOWN_PER_CHECK`] cases of each check.
    pub fn thumbnails_wanted(&self) -> Vec<String> {
        let c = &self.checks;
        let mut want: Vec<String> = self
            .classes
            .iter()
            .filter_map(|c| c.example.clone())
            .collect();
        let n = SHOWN_PER_CHECK;
        want.extend(
            c.exact_duplicates
                .iter()
                .take(n)
                .flat_map(|g| g.iter().take(4).cloned()),
        );
        let nd = &c.near_duplicates;
        for s in self
            .shown_cross_label()
            .into_iter()
            .chain(nd.closest.iter().take(n))
        {
            want.extend([s.a.clone(), s.b.clone()]);
        }
        want.extend(c.mislabels.iter().take(n).map(|s| s.path.clone()));
        if let Some(l) = &c.leakage {
            for p in l.pairs.iter().take(n) {
                want.extend([p.test.clone(), p.train.clone()]);
            }
        }
        want.sort();
        want.dedup();
        want
    }
}
