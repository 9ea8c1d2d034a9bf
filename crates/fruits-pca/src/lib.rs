//! Streaming standard scaler + PCA, as Spark ML's `StandardScaler(withMean, withStd)` followed by
//! `PCA(k)`, fitted in one pass over data that never has to fit in memory.
//!
//! 1. Each worker folds its rows into [`PartialSums`] (count, mean and centred scatter matrix, in
//!    `f64`, merged with Chan's parallel update so neither precision nor order matters).
//! 2. The partials are [`PartialSums::merge`]d and [`fit`]: every feature is standardised with its
//!    mean and sample standard deviation, the covariance of the standardised features (their
//!    correlation matrix) is eigen-decomposed (faer), and the top components are kept: a fixed
//!    `k`, or the fewest whose explained variance reaches a target.
//! 3. [`PcaModel::project`] maps new rows; [`PcaModel::to_files`] / [`PcaModel::from_files`] save
//!    and load the fitted model as numpy-readable files (see [`PcaModel::to_files`]).
//!
//! Knows nothing of images or engines.
//!
//! ```
//! use fruits_pca::{fit, Components, PartialSums};
//! let mut sums = PartialSums::new(2);
//! sums.add_rows(&[1.0, 2.0, 2.0, 4.1, 3.0, 5.9]);
//! let model = fit(&sums, Components::K(1)).unwrap();
//! let mut y = [0.0f32];
//! model.project(&[2.0, 4.0], &mut y);
//! assert!(model.explained_variance_ratio()[0] > 0.99);
//! ```

#![deny(missing_docs)]

use faer::{Accum, Mat, MatRef, Par, Side};
use serde::{Deserialize, Serialize};

/// Errors of fitting, merging or loading.
#[derive(Debug, thiserror::Error)]
pub enum PcaError {
    /// Fewer than two rows: no sample variance.
    #[error("PCA needs at least 2 rows, got {0}")]
    TooFewRows(u64),
    /// Partial sums or rows of different widths.
    #[error("dimension mismatch: {0} vs {1}")]
    Dimension(usize, usize),
    /// `k` out of range or variance target not in (0, 1].
    #[error("invalid component choice: {0}")]
    Choice(String),
    /// The eigen-decomposition did not converge.
    #[error("eigen-decomposition failed: {0}")]
    Eigen(String),
    /// A saved model is incomplete or malformed.
    #[error("saved PCA: {0}")]
    Format(String),
}

/// How many components to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Components {
    /// Exactly this many.
    K(usize),
    /// The fewest whose explained variance ratios sum to at least this share (0, 1].
    Variance(f64),
}

impl Components {
    /// Fails unless the choice is possible for rows of `dim` values (`1 <= k <= dim`,
    /// variance in (0, 1]): checked before any work.
    pub fn check(&self, dim: usize) -> Result<(), PcaError> {
        match *self {
            Components::K(k) if !(1..=dim).contains(&k) => {
                Err(PcaError::Choice(format!("k = {k} not in 1..={dim}")))
            }
            Components::Variance(f) if !(f > 0.0 && f <= 1.0) => Err(PcaError::Choice(format!(
                "variance target {f} not in (0, 1]"
            ))),
            _ => Ok(()),
        }
    }
}

/// Mergeable one-pass statistics of a set of rows: count, mean and centred scatter
/// `Σ (x - mean)(x - mean)ᵀ`, all in `f64`.
#[derive(Debug, Clone)]
pub struct PartialSums {
    dim: usize,
    count: u64,
    mean: Vec<f64>,
    scatter: Mat<f64>,
}

impl PartialSums {
    /// Empty statistics for rows of `dim` values.
    pub fn new(dim: usize) -> PartialSums {
        PartialSums {
            dim,
            count: 0,
            mean: vec![0.0; dim],
            scatter: Mat::zeros(dim, dim),
        }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows folded in so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Folds in `rows` (`n * dim` values, row-major): one GEMM per call, so pass batches.
    ///
    /// # Panics
    /// If `rows.len()` is not a multiple of `dim`.
    pub fn add_rows(&mut self, rows: &[f32]) {
        assert_eq!(rows.len() % self.dim, 0, "rows must be whole");
        let n = rows.len() / self.dim;
        if n == 0 {
            return;
        }
        let mut mean = vec![0.0f64; self.dim];
        for row in rows.chunks_exact(self.dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred: Vec<f64> = rows
            .chunks_exact(self.dim)
            .flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m))
            .collect();
        let z = MatRef::from_row_major_slice(&centred, n, self.dim);
        let mut scatter = Mat::<f64>::zeros(self.dim, self.dim);
        faer::linalg::matmul::matmul(
            &mut scatter,
            Accum::Replace,
            z.transpose(),
            z,
            1.0,
            Par::Seq,
        );
        self.merge_parts(n as u64, &mean, &scatter);
    }

    /// Merges another partial (from another batch, partition or worker) into this one.
    pub fn merge(&mut self, other: &PartialSums) -> Result<(), PcaError> {
        if other.dim != self.dim {
            return Err(PcaError::Dimension(self.dim, other.dim));
        }
        self.merge_parts(other.count, &other.mean, &other.scatter);
        Ok(())
    }

    /// Chan et al.'s pairwise update: `M = Ma + Mb + δδᵀ · na·nb / n`.
    fn merge_parts(&mut self, nb: u64, mean_b: &[f64], scatter_b: &Mat<f64>) {
        if nb == 0 {
            return;
        }
        let na = self.count;
        let n = na + nb;
        let delta: Vec<f64> = mean_b.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = na as f64 * nb as f64 / n as f64;
        for j in 0..self.dim {
            for i in 0..self.dim {
                self.scatter[(i, j)] += scatter_b[(i, j)] + w * delta[i] * delta[j];
            }
        }
        for (m, d) in self.mean.iter_mut().zip(&delta) {
            *m += d * nb as f64 / n as f64;
        }
        self.count = n;
    }

    /// Serialises for shipping between processes (little-endian: dim, count, mean, scatter).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * self.dim * (self.dim + 1));
        out.extend_from_slice(&(self.dim as u64).to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        for v in &self.mean {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for j in 0..self.dim {
            for i in 0..self.dim {
                out.extend_from_slice(&self.scatter[(i, j)].to_le_bytes());
            }
        }
        out
    }

    /// Inverse of [`PartialSums::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<PartialSums, PcaError> {
        let word = |i: usize| -> Result<[u8; 8], PcaError> {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| PcaError::Format("truncated partial sums".into()))
        };
        let dim = u64::from_le_bytes(word(0)?) as usize;
        if bytes.len() != 16 + 8 * dim * (dim + 1) {
            return Err(PcaError::Format("partial sums of the wrong length".into()));
        }
        let mut p = PartialSums::new(dim);
        p.count = u64::from_le_bytes(word(1)?);
        for (i, m) in p.mean.iter_mut().enumerate() {
            *m = f64::from_le_bytes(word(2 + i)?);
        }
        for j in 0..dim {
            for i in 0..dim {
                p.scatter[(i, j)] = f64::from_le_bytes(word(2 + dim + j * dim + i)?);
            }
        }
        Ok(p)
    }
}

/// Names of the files a saved model consists of (see [`PcaModel::to_files`]).
pub const FILES: [&str; 5] = [
    "pca.json",
    "mean.npy",
    "std.npy",
    "components.npy",
    "explained_variance_ratio.npy",
];

/// A fitted scaler + PCA. Its shapes are checked when it is built ([`PcaModel::new`]) or
/// loaded, so projecting never reads out of bounds.
#[derive(Debug, Clone)]
pub struct PcaModel {
    count: u64,
    mean: Vec<f64>,
    std: Vec<f64>,
    /// `k` principal axes of `dim` values, row-major (`[k, dim]`).
    components: Vec<f64>,
    explained_variance_ratio: Vec<f64>,
}

impl PcaModel {
    /// A model from its parts: `mean`, `std` and `explained_variance_ratio` of `dim >= 1`
    /// values, `components` `k` rows of `dim` values with `1 <= k <= dim`, every value finite.
    pub fn new(
        count: u64,
        mean: Vec<f64>,
        std: Vec<f64>,
        components: Vec<Vec<f64>>,
        explained_variance_ratio: Vec<f64>,
    ) -> Result<PcaModel, PcaError> {
        let dim = mean.len();
        let k = components.len();
        let bad = |what: String| Err(PcaError::Format(what));
        if dim == 0 {
            return bad("no features (dim 0)".into());
        }
        if std.len() != dim || explained_variance_ratio.len() != dim {
            return bad(format!(
                "mean has {dim} values, std {}, explained_variance_ratio {}",
                std.len(),
                explained_variance_ratio.len()
            ));
        }
        if !(1..=dim).contains(&k) {
            return bad(format!("k = {k} components, expected 1..={dim}"));
        }
        if let Some(c) = components.iter().position(|c| c.len() != dim) {
            return bad(format!(
                "component {c} has {} values, expected {dim}",
                components[c].len()
            ));
        }
        let flat: Vec<f64> = components.into_iter().flatten().collect();
        let all = mean
            .iter()
            .chain(&std)
            .chain(&flat)
            .chain(&explained_variance_ratio);
        if all.clone().any(|v| !v.is_finite()) || std.iter().any(|s| *s < 0.0) {
            return bad("values must be finite, std non-negative".into());
        }
        Ok(PcaModel {
            count,
            mean,
            std,
            components: flat,
            explained_variance_ratio,
        })
    }

    /// Input width.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Number of components kept.
    pub fn k(&self) -> usize {
        self.components.len() / self.dim()
    }

    /// Rows it was fitted on.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Per-feature mean (`dim` values).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Per-feature sample standard deviation (0 for constant features, which scale to 0).
    pub fn std(&self) -> &[f64] {
        &self.std
    }

    /// Component `i` (`dim` values), largest variance first.
    pub fn component(&self, i: usize) -> &[f64] {
        &self.components[i * self.dim()..(i + 1) * self.dim()]
    }

    /// Every eigenvalue's share of the total variance, largest first (`dim` values).
    pub fn explained_variance_ratio(&self) -> &[f64] {
        &self.explained_variance_ratio
    }

    /// Share of the variance the kept components explain.
    pub fn variance_kept(&self) -> f64 {
        self.explained_variance_ratio[..self.k()].iter().sum()
    }

    /// Standardises `row` and projects it onto the components, into `out` (`k` values).
    ///
    /// # Panics
    /// If `row` is not `dim` long or `out` not `k` long.
    pub fn project(&self, row: &[f32], out: &mut [f32]) {
        self.project_rows(row, out);
    }

    /// [`project`](Self::project) for many rows at once (`rows`: `n * dim` values, `out`:
    /// `n * k`), as one matrix product.
    ///
    /// # Panics
    /// If `rows` is not whole rows of `dim` values or `out` not `k` values for each.
    pub fn project_rows(&self, rows: &[f32], out: &mut [f32]) {
        let (dim, k) = (self.dim(), self.k());
        let n = rows.len() / dim.max(1);
        assert_eq!(rows.len(), n * dim, "rows of {dim} values");
        assert_eq!(out.len(), n * k, "{k} values out per row");
        if n == 0 || k == 0 {
            return;
        }
        let mut z = Vec::with_capacity(n * dim);
        for row in rows.chunks_exact(dim) {
            z.extend(
                row.iter()
                    .zip(self.mean.iter().zip(&self.std))
                    .map(|(&x, (m, s))| {
                        if *s > 0.0 {
                            (f64::from(x) - m) / s
                        } else {
                            0.0
                        }
                    }),
            );
        }
        let components = &self.components;
        let mut y = vec![0.0f64; n * k];
        debug_assert_eq!(components.len(), k * dim);
        // SAFETY: y is n x k (row stride k) and z is n x dim (row stride dim), as built above;
        // `PcaModel::new`, the only constructor, guarantees `components.len() == k * dim`
        // (and `mean`, `std` of `dim`), so the rhs read as the dim x k transpose of `[k, dim]`
        // row-major stays in bounds.
        unsafe {
            gemm::gemm(
                n,
                k,
                dim,
                y.as_mut_ptr(),
                1,
                k as isize,
                false,
                z.as_ptr(),
                1,
                dim as isize,
                components.as_ptr(),
                dim as isize,
                1,
                0.0f64,
                1.0f64,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (o, y) in out.iter_mut().zip(&y) {
            *o = *y as f32;
        }
    }

    /// The model as named files: `pca.json` (metadata, human-readable) and `mean.npy`,
    /// `std.npy` (`f64 [dim]`), `components.npy` (`f64 [k, dim]`),
    /// `explained_variance_ratio.npy` (`f64 [dim]`). In numpy:
    /// `((x - mean) / where(std > 0, std, inf)) @ components.T`.
    pub fn to_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (dim, k) = (self.dim(), self.k());
        let meta = Meta {
            format: "fruits-pca/1".into(),
            dim,
            k,
            count: self.count,
            variance_kept: self.variance_kept(),
            projection: "features_pca = ((x - mean) / std, 0 where std == 0) @ components.T".into(),
        };
        let flat = &self.components;
        // In the order of FILES.
        let contents = [
            serde_json::to_vec_pretty(&meta).expect("metadata serialises"),
            fruits_npy::to_bytes_f64(&[dim], &self.mean),
            fruits_npy::to_bytes_f64(&[dim], &self.std),
            fruits_npy::to_bytes_f64(&[k, dim], flat),
            fruits_npy::to_bytes_f64(&[dim], &self.explained_variance_ratio),
        ];
        FILES.into_iter().zip(contents).collect()
    }

    /// The model as one byte string, its [`FILES`] back to back, each after its length (a
    /// little-endian `u64`): how a plan carries it to another process.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, bytes) in self.to_files() {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Reads a model written by [`PcaModel::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<PcaModel, PcaError> {
        let mut files = std::collections::HashMap::new();
        let mut rest = bytes;
        for name in FILES {
            let truncated = || PcaError::Format(format!("a PCA cut short before {name}"));
            let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
            let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| truncated())?;
            if tail.len() < len {
                return Err(truncated());
            }
            let (file, tail) = tail.split_at(len);
            files.insert(name, file);
            rest = tail;
        }
        PcaModel::from_files(|name| files.get(name).map(|b| b.to_vec()).ok_or("absent"))
    }

    /// Loads a model saved by [`PcaModel::to_files`]; `read(name)` returns a file's bytes.
    pub fn from_files<E: std::fmt::Display>(
        mut read: impl FnMut(&str) -> Result<Vec<u8>, E>,
    ) -> Result<PcaModel, PcaError> {
        let mut get = |name: &str| read(name).map_err(|e| PcaError::Format(format!("{name}: {e}")));
        let meta: Meta = serde_json::from_slice(&get("pca.json")?)
            .map_err(|e| PcaError::Format(format!("pca.json: {e}")))?;
        let mut array = |name: &str, shape: &[usize]| -> Result<Vec<f64>, PcaError> {
            let a = fruits_npy::Array::parse(&get(name)?)
                .map_err(|e| PcaError::Format(format!("{name}: {e}")))?;
            if a.shape != shape {
                return Err(PcaError::Format(format!(
                    "{name}: shape {:?}, expected {shape:?}",
                    a.shape
                )));
            }
            a.to_f64()
                .map_err(|e| PcaError::Format(format!("{name}: {e}")))
        };
        let (dim, k) = (meta.dim, meta.k);
        if dim == 0 || !(1..=dim).contains(&k) {
            return Err(PcaError::Format(format!(
                "pca.json: k = {k}, dim = {dim} (need 1 <= k <= dim)"
            )));
        }
        let mean = array("mean.npy", &[dim])?;
        let std = array("std.npy", &[dim])?;
        let flat = array("components.npy", &[k, dim])?;
        let explained_variance_ratio = array("explained_variance_ratio.npy", &[dim])?;
        PcaModel::new(
            meta.count,
            mean,
            std,
            flat.chunks(dim).map(<[f64]>::to_vec).collect(),
            explained_variance_ratio,
        )
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    dim: usize,
    k: usize,
    count: u64,
    variance_kept: f64,
    projection: String,
}

/// Fits the scaler and PCA on merged statistics.
pub fn fit(sums: &PartialSums, choice: Components) -> Result<PcaModel, PcaError> {
    let dim = sums.dim;
    if sums.count < 2 {
        return Err(PcaError::TooFewRows(sums.count));
    }
    let denom = (sums.count - 1) as f64;
    let std: Vec<f64> = (0..dim)
        .map(|i| (sums.scatter[(i, i)] / denom).max(0.0).sqrt())
        .collect();
    // Covariance of the standardised features; constant features standardise to 0.
    let corr = Mat::<f64>::from_fn(dim, dim, |i, j| {
        if std[i] > 0.0 && std[j] > 0.0 {
            sums.scatter[(i, j)] / denom / (std[i] * std[j])
        } else {
            0.0
        }
    });
    let evd = corr
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| PcaError::Eigen(format!("{e:?}")))?;
    let values = evd.S().column_vector();
    let vectors = evd.U();
    // faer sorts ascending: walk from the end for largest first.
    let order: Vec<usize> = (0..dim).rev().collect();
    let total: f64 = (0..dim).map(|i| values[i]).sum();
    let explained_variance_ratio: Vec<f64> = order.iter().map(|&i| values[i] / total).collect();
    choice.check(dim)?;
    let k = match choice {
        Components::K(k) => k,
        Components::Variance(f) => {
            let mut acc = 0.0;
            let mut k = dim;
            for (i, r) in explained_variance_ratio.iter().enumerate() {
                acc += r;
                if acc >= f - 1e-12 {
                    k = i + 1;
                    break;
                }
            }
            k
        }
    };
    let components = order[..k]
        .iter()
        .map(|&c| {
            let mut v: Vec<f64> = (0..dim).map(|r| vectors[(r, c)]).collect();
            // Deterministic sign: the largest-magnitude entry is positive.
            let big = v
                .iter()
                .copied()
                .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
            if big < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            v
        })
        .collect();
    PcaModel::new(
        sums.count,
        sums.mean.clone(),
        std,
        components,
        explained_variance_ratio,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n * dim)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (s >> 40) as f32 / (1u64 << 24) as f32;
                // Correlated columns with different scales and offsets.
                let col = i % dim;
                r * (col + 1) as f32 + 100.0 * col as f32
            })
            .collect()
    }

    #[test]
    fn merge_in_any_split_equals_one_pass() {
        let dim = 5;
        let x = rows(300, dim, 1);
        let mut whole = PartialSums::new(dim);
        whole.add_rows(&x);
        let mut a = PartialSums::new(dim);
        a.add_rows(&x[..7 * dim]);
        let mut b = PartialSums::new(dim);
        b.add_rows(&x[7 * dim..200 * dim]);
        b.add_rows(&x[200 * dim..]);
        a.merge(&b).unwrap();
        let a = PartialSums::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(a.count(), 300);
        for i in 0..dim {
            assert!((a.mean[i] - whole.mean[i]).abs() < 1e-9);
            for j in 0..dim {
                assert!(
                    (a.scatter[(i, j)] - whole.scatter[(i, j)]).abs()
                        < 1e-6 * whole.scatter[(i, i)].abs().max(1.0)
                );
            }
        }
    }

    #[test]
    fn fit_recovers_the_dominant_direction() {
        // Two perfectly correlated features and one independent one.
        let mut x = Vec::new();
        for i in 0..100 {
            let t = (i as f32 * 0.37).sin();
            let u = (i as f32 * 1.91).cos();
            x.extend_from_slice(&[t, 2.0 * t + 5.0, u]);
        }
        let mut s = PartialSums::new(3);
        s.add_rows(&x);
        let m = fit(&s, Components::Variance(0.6)).unwrap();
        assert_eq!(m.k(), 1);
        let r = m.explained_variance_ratio();
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(r[0] > 0.6 && r[0] < 0.7, "{r:?}");
        let c = m.component(0);
        assert!((c[0] - c[1]).abs() < 1e-9 && c[2].abs() < 0.2, "{c:?}");
        let round = PcaModel::from_files(|n| {
            m.to_files()
                .into_iter()
                .find(|f| f.0 == n)
                .map(|f| f.1)
                .ok_or("absent")
        })
        .unwrap();
        let (mut a, mut b) = ([0.0f32], [0.0f32]);
        m.project(&x[..3], &mut a);
        round.project(&x[..3], &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn projecting_many_rows_equals_the_formula_row_by_row() {
        let dim = 6;
        let mut x = rows(40, dim, 3);
        for r in x.chunks_exact_mut(dim) {
            r[4] = 7.0; // a constant feature projects as 0
        }
        let mut s = PartialSums::new(dim);
        s.add_rows(&x);
        let m = fit(&s, Components::K(3)).unwrap();
        let mut got = vec![0.0f32; 40 * 3];
        m.project_rows(&x, &mut got);
        for (row, got) in x.chunks_exact(dim).zip(got.chunks_exact(3)) {
            for (j, got) in got.iter().enumerate() {
                let c = m.component(j);
                let want: f64 = (0..dim)
                    .filter(|&d| m.std()[d] > 0.0)
                    .map(|d| (f64::from(row[d]) - m.mean()[d]) / m.std()[d] * c[d])
                    .sum();
                assert!((f64::from(*got) - want).abs() < 1e-5 * want.abs().max(1.0));
            }
        }
        m.project_rows(&[], &mut []);
    }

    #[test]
    fn constant_features_and_bad_choices() {
        let mut s = PartialSums::new(2);
        s.add_rows(&[1.0, 3.0, 2.0, 3.0, 4.0, 3.0]);
        let m = fit(&s, Components::K(2)).unwrap();
        assert_eq!(m.std()[1], 0.0);
        let mut y = [0.0f32; 2];
        m.project(&[2.0, 3.0], &mut y);
        assert!(y.iter().all(|v| v.is_finite()));
        assert!(fit(&s, Components::K(3)).is_err());
        assert!(fit(&s, Components::Variance(1.5)).is_err());
        let mut one = PartialSums::new(2);
        one.add_rows(&[1.0, 2.0]);
        assert!(matches!(
            fit(&one, Components::K(1)),
            Err(PcaError::TooFewRows(1))
        ));
    }

    #[test]
    fn hand_built_or_tampered_models_are_refused_not_read_out_of_bounds() {
        let v = |n: usize| vec![0.5; n];
        assert!(PcaModel::new(1, v(3), v(3), vec![v(3)], v(3)).is_ok());
        for (mean, std, comps, evr) in [
            (v(0), v(0), vec![], v(0)),
            (v(3), v(2), vec![v(3)], v(3)),
            (v(3), v(3), vec![v(2)], v(3)),
            (v(3), v(3), vec![], v(3)),
            (v(3), v(3), vec![v(3); 4], v(3)),
            (v(3), v(3), vec![v(3)], v(1)),
            (vec![f64::NAN; 3], v(3), vec![v(3)], v(3)),
        ] {
            assert!(PcaModel::new(1, mean, std, comps, evr).is_err());
        }
        // pca.json saying k > dim, or files of other shapes: one error, no panic.
        let m = PcaModel::new(2, v(3), v(3), vec![v(3)], v(3)).unwrap();
        let files = m.to_files();
        let with = |name: &'static str, bytes: Vec<u8>| {
            let files = files.clone();
            PcaModel::from_files(move |n| {
                if n == name {
                    return Ok::<_, String>(bytes.clone());
                }
                Ok(files.iter().find(|f| f.0 == n).unwrap().1.clone())
            })
        };
        let meta = |k: usize, dim: usize| {
            format!(
                r#"{{"format":"fruits-pca/1","dim":{dim},"k":{k},"count":2,"variance_kept":0.5,"projection":""}}"#
            )
            .into_bytes()
        };
        assert!(with("pca.json", meta(1, 3)).is_ok());
        let err = with("pca.json", meta(5, 3)).unwrap_err().to_string();
        assert!(err.contains("k = 5"), "{err}");
        assert!(with("pca.json", meta(0, 0)).is_err());
        let short = fruits_npy::to_bytes_f64(&[2], &[1.0, 2.0]);
        assert!(with("std.npy", short)
            .unwrap_err()
            .to_string()
            .contains("shape"));
        assert!(Components::K(0).check(3).is_err());
        assert!(Components::K(4).check(3).is_err());
        assert!(Components::Variance(0.0).check(3).is_err());
        assert!(Components::K(3).check(3).is_ok());
    }

    #[test]
    fn one_byte_string_carries_the_model_and_a_cut_one_is_refused() {
        let v = |n: usize| (0..n).map(|i| 0.5 + i as f64).collect::<Vec<_>>();
        let m = PcaModel::new(7, v(3), v(3), vec![v(3), v(3)], v(3)).unwrap();
        let bytes = m.to_bytes();
        let back = PcaModel::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_files(), m.to_files());
        for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(PcaModel::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
