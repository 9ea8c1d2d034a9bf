//! Checks of the data itself, on the 1280 MobileNetV2 features of each photo: exact and near
//! duplicates, likely mislabels, and leakage between two sets.
//!
//! Everything rests on exact nearest neighbours by cosine similarity ([`nearest`]): the rows
//! are scaled to unit length and compared block by block as matrix products, keeping each
//! row's `k` best. The thresholds are constants, calibrated on Fruits-360 (see
//! [`NEAR_DUPLICATE_COSINE`]), so a check gives the same answer on every run.
//!
//! ```
//! use fruits_checks::{check, Rows};
//!
//! // Four photos in 2-D: two nearly the same, one labelled against its neighbours.
//! let features = [1.0, 0.0, 1.0, 0.001, 0.0, 1.0, 0.01, 1.0];
//! let labels = ["a", "a", "b", "b"];
//! let rows = Rows::new(&features, 2, &labels).unwrap();
//! let found = check(&rows, &fruits_checks::Settings::default());
//! assert_eq!(found.near_duplicate_rows, 4);
//! ```

#![deny(missing_docs)]

mod neighbours;

pub use neighbours::{nearest, Neighbours, Unit};
use serde::Serialize;
use std::collections::HashMap;

/// Two photos whose features have at least this cosine similarity are near-duplicates.
///
/// Calibrated on `../shared/fruits-360/Test` (13,877 photos, 81 classes): adjacent frames of a
/// turntable run have a median cosine of 0.976 (5th percentile 0.949), frames 20 apart 0.910;
/// the most similar pair of photos of two *different* fruits reaches 0.938. At 0.95 no two
/// different fruits are near-duplicates, and most neighbouring frames are. (Cherry 1 and
/// Cherry 2 share 45 scenes at 0.999: the check reports those, as it should.)
pub const NEAR_DUPLICATE_COSINE: f32 = 0.95;

/// Neighbours asked about a photo's label.
pub const MISLABEL_NEIGHBOURS: usize = 5;

/// How many of them must agree on another label for the photo to be a suspected mislabel.
pub const MISLABEL_AGREEING: usize = 4;

/// The most rows the checks compare exactly (all pairs); beyond, an evenly spaced sample.
pub const MAX_EXACT_ROWS: usize = 100_000;

/// Settings of the checks (the defaults are the documented constants).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// See [`NEAR_DUPLICATE_COSINE`].
    pub near_duplicate_cosine: f32,
    /// See [`MISLABEL_NEIGHBOURS`].
    pub mislabel_neighbours: usize,
    /// See [`MISLABEL_AGREEING`].
    pub mislabel_agreeing: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            near_duplicate_cosine: NEAR_DUPLICATE_COSINE,
            mislabel_neighbours: MISLABEL_NEIGHBOURS,
            mislabel_agreeing: MISLABEL_AGREEING,
        }
    }
}

/// Why rows cannot be checked.
#[derive(Debug, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

/// Photos to check: features row after row, and each row's label.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a, L> {
    features: &'a [f32],
    dim: usize,
    labels: &'a [L],
}

impl<'a, L: AsRef<str>> Rows<'a, L> {
    /// `features` holds `labels.len()` rows of `dim` values.
    pub fn new(features: &'a [f32], dim: usize, labels: &'a [L]) -> Result<Self, ShapeError> {
        if dim == 0 || features.len() != labels.len() * dim {
            return Err(ShapeError(format!(
                "{} feature values for {} rows of {dim}",
                features.len(),
                labels.len()
            )));
        }
        Ok(Rows {
            features,
            dim,
            labels,
        })
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
}

/// A pair of rows and their cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pair {
    /// A row.
    pub a: usize,
    /// The other row (of the other set, for leakage).
    pub b: usize,
    /// Their cosine similarity.
    pub cosine: f32,
}

/// A photo whose nearest neighbours mostly carry another label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mislabel {
    /// The row.
    pub row: usize,
    /// The label its neighbours suggest.
    pub suggested: String,
    /// How many of the neighbours carry it.
    pub agreeing: usize,
    /// Their mean cosine similarity to the row.
    pub cosine: f32,
}

/// What the checks of one set found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Found {
    /// Groups of rows with bit-identical features (the caller confirms same bytes).
    pub identical_features: Vec<Vec<usize>>,
    /// Rows with at least one near-duplicate.
    pub near_duplicate_rows: usize,
    /// Near-duplicate groups: connected rows (each linked to a near-duplicate among its
    /// nearest neighbours), largest first.
    pub near_duplicate_groups: Vec<Vec<usize>>,
    /// Near-duplicate pairs whose labels differ, most similar first.
    pub cross_label_pairs: Vec<Pair>,
    /// The most similar near-duplicate pairs of one label (each row once), most similar
    /// first, at most 50.
    pub closest_pairs: Vec<Pair>,
    /// Suspected mislabels, most confident first.
    pub mislabels: Vec<Mislabel>,
}

/// Neighbours kept per row to find near-duplicate groups.
const GROUP_NEIGHBOURS: usize = 10;

/// Runs the checks of one set of rows.
pub fn check<L: AsRef<str> + Sync>(rows: &Rows<'_, L>, settings: &Settings) -> Found {
    let n = rows.len();
    let mut found = Found {
        identical_features: identical(rows),
        ..Found::default()
    };
    if n < 2 {
        return found;
    }
    let unit = Unit::new(rows.features, rows.dim);
    let k = GROUP_NEIGHBOURS
        .max(settings.mislabel_neighbours)
        .min(n - 1);
    let nn = nearest(&unit, &unit, k, true);
    let t = settings.near_duplicate_cosine;
    let mut groups = UnionFind::new(n);
    let mut seen = std::collections::HashSet::new();
    let mut closest = Vec::new();
    for i in 0..n {
        let (idx, sim) = nn.of(i);
        if sim.first().is_some_and(|&s| s >= t) {
            found.near_duplicate_rows += 1;
        }
        for (&j, &s) in idx.iter().zip(sim) {
            if s < t {
                break;
            }
            let j = j as usize;
            groups.union(i, j);
            if seen.insert((i.min(j), i.max(j))) {
                let p = Pair {
                    a: i.min(j),
                    b: i.max(j),
                    cosine: s,
                };
                if rows.labels[i].as_ref() != rows.labels[j].as_ref() {
                    found.cross_label_pairs.push(p);
                } else {
                    closest.push(p);
                }
            }
        }
        if let Some(m) = mislabel(
            rows,
            i,
            &idx[..settings.mislabel_neighbours.min(k)],
            sim,
            settings,
        ) {
            found.mislabels.push(m);
        }
    }
    found.near_duplicate_groups = groups.groups();
    by_cosine(&mut found.cross_label_pairs);
    by_cosine(&mut closest);
    let mut used = std::collections::HashSet::new();
    found.closest_pairs = closest
        .into_iter()
        .filter(|p| used.insert(p.a) & used.insert(p.b))
        .take(50)
        .collect();
    found.mislabels.sort_by(|a, b| {
        (b.agreeing, b.cosine)
            .partial_cmp(&(a.agreeing, a.cosine))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.row.cmp(&b.row))
    });
    found
}

fn by_cosine(pairs: &mut [Pair]) {
    pairs.sort_by(|x, y| {
        y.cosine
            .total_cmp(&x.cosine)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
}

fn mislabel<L: AsRef<str>>(
    rows: &Rows<'_, L>,
    i: usize,
    idx: &[u32],
    sim: &[f32],
    settings: &Settings,
) -> Option<Mislabel> {
    let mut votes: Vec<(&str, usize, f32)> = Vec::new();
    for (&j, &s) in idx.iter().zip(sim) {
        let l = rows.labels[j as usize].as_ref();
        match votes.iter_mut().find(|v| v.0 == l) {
            Some(v) => {
                v.1 += 1;
                v.2 += s;
            }
            None => votes.push((l, 1, s)),
        }
    }
    let (label, agreeing, total) = votes.into_iter().max_by_key(|v| v.1)?;
    (agreeing >= settings.mislabel_agreeing && label != rows.labels[i].as_ref()).then(|| Mislabel {
        row: i,
        suggested: label.to_string(),
        agreeing,
        cosine: total / agreeing as f32,
    })
}

/// Groups of rows with bit-identical features, in row order.
fn identical<L: AsRef<str>>(rows: &Rows<'_, L>) -> Vec<Vec<usize>> {
    let mut by: HashMap<Vec<u32>, Vec<usize>> = HashMap::new();
    for i in 0..rows.labels.len() {
        let key = rows.row(i).iter().map(|v| v.to_bits()).collect();
        by.entry(key).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = by.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

/// Rows of `queries` with a near-duplicate in `base`: each with its most similar base row
/// (`a` = query row, `b` = base row), most similar first.
pub fn leakage(queries: &[f32], base: &[f32], dim: usize, settings: &Settings) -> Vec<Pair> {
    if queries.is_empty() || base.is_empty() {
        return Vec::new();
    }
    let nn = nearest(&Unit::new(queries, dim), &Unit::new(base, dim), 1, false);
    let mut pairs: Vec<Pair> = (0..queries.len() / dim)
        .filter_map(|i| {
            let (idx, sim) = nn.of(i);
            (sim[0] >= settings.near_duplicate_cosine).then(|| Pair {
                a: i,
                b: idx[0] as usize,
                cosine: sim[0],
            })
        })
        .collect();
    by_cosine(&mut pairs);
    pairs
}

/// At most `max` of `n` rows, evenly spaced (all of them when `n <= max`).
pub fn sample(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    (0..max).map(|i| i * n / max).collect()
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }

    /// Groups of two or more, largest first, each in row order.
    fn groups(mut self) -> Vec<Vec<usize>> {
        let mut by: HashMap<usize, Vec<usize>> = HashMap::new();
        for i in 0..self.0.len() {
            let r = self.find(i);
            by.entry(r).or_default().push(i);
        }
        let mut groups: Vec<Vec<usize>> = by.into_values().filter(|g| g.len() > 1).collect();
        groups.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
        groups
    }
}

#[cfg(test)]
mod tests;
