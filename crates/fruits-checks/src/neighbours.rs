//! Exact nearest neighbours by cosine similarity, as blocked matrix products.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows scaled to unit length (a zero row stays zero: similar to nothing).
#[derive(Debug, Clone)]
pub struct Unit {
    values: Vec<f32>,
    dim: usize,
}

impl Unit {
    /// `features` row after row, `dim` values each.
    pub fn new(features: &[f32], dim: usize) -> Unit {
        let mut values = features.to_vec();
        for row in values.chunks_exact_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Unit { values, dim }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn rows(&self, from: usize, to: usize) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(
            &self.values[from * self.dim..to * self.dim],
            to - from,
            self.dim,
        )
    }
}

/// Each query row's `k` most similar base rows, most similar first.
#[derive(Debug, Clone)]
pub struct Neighbours {
    k: usize,
    index: Vec<u32>,
    cosine: Vec<f32>,
}

impl Neighbours {
    /// Row `i`'s neighbours (base rows) and their cosine similarities, most similar first.
    pub fn of(&self, i: usize) -> (&[u32], &[f32]) {
        let r = i * self.k..(i + 1) * self.k;
        (&self.index[r.clone()], &self.cosine[r])
    }
}

/// Query rows per block (one thread's share of work at a time).
const QUERY_BLOCK: usize = 256;
/// Base rows per product: a block's similarities fit in cache-friendly 4 MB.
const BASE_BLOCK: usize = 4096;

/// The `k` most similar `base` rows of every `queries` row, exactly (all pairs, as matrix
/// products on the threads of rayon's pool). With `skip_self`, `queries` is `base` and a row
/// is not its own neighbour. Ties go to the lower row.
pub fn nearest(queries: &Unit, base: &Unit, k: usize, skip_self: bool) -> Neighbours {
    assert_eq!(queries.dim, base.dim, "rows of one width");
    let (nq, nb) = (queries.len(), base.len());
    let k = k.min(nb - usize::from(skip_self && nb > 0)).max(1);
    let mut index = vec![u32::MAX; nq * k];
    let mut cosine = vec![f32::NEG_INFINITY; nq * k];
    index
        .par_chunks_mut(QUERY_BLOCK * k)
        .zip(cosine.par_chunks_mut(QUERY_BLOCK * k))
        .enumerate()
        .for_each(|(block, (index, cosine))| {
            let q0 = block * QUERY_BLOCK;
            let q1 = (q0 + QUERY_BLOCK).min(nq);
            let mut sims = vec![0f32; (q1 - q0) * BASE_BLOCK];
            for b0 in (0..nb).step_by(BASE_BLOCK) {
                let b1 = (b0 + BASE_BLOCK).min(nb);
                let w = b1 - b0;
                let out = MatMut::from_row_major_slice_mut(&mut sims[..(q1 - q0) * w], q1 - q0, w);
                faer::linalg::matmul::matmul(
                    out,
                    Accum::Replace,
                    queries.rows(q0, q1),
                    base.rows(b0, b1).transpose(),
                    1.0,
                    Par::Seq,
                );
                for (r, row) in sims[..(q1 - q0) * w].chunks_exact(w).enumerate() {
                    let me = q0 + r;
                    let (idx, cos) = (
                        &mut index[r * k..(r + 1) * k],
                        &mut cosine[r * k..(r + 1) * k],
                    );
                    for (c, &s) in row.iter().enumerate() {
                        let j = b0 + c;
                        if (skip_self && j == me) || s <= cos[k - 1] {
                            continue;
                        }
                        let mut at = k - 1;
                        while at > 0 && cos[at - 1] < s {
                            cos[at] = cos[at - 1];
                            idx[at] = idx[at - 1];
                            at -= 1;
                        }
                        cos[at] = s;
                        idx[at] = j as u32;
                    }
                }
            }
        });
    Neighbours { k, index, cosine }
}
