//! The depthwise kernels in portable Rust (auto-vectorised for the target).

use super::SLICE;
use crate::kernels::relu6_biased;
use crate::layers::Folded;

#[inline(always)]
pub(super) fn expand(x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
    let (n, slice_len) = (e.cout, (w + 2) * SLICE);
    for (s, slice) in dst.chunks_exact_mut(slice_len).enumerate() {
        slice[..SLICE].fill(0.0);
        slice[(w + 1) * SLICE..].fill(0.0);
        let b = &e.b[s * SLICE..][..SLICE];
        for (px, d) in x
            .chunks_exact(k)
            .zip(slice[SLICE..].chunks_exact_mut(SLICE))
        {
            let mut acc = [0.0f32; SLICE];
            for (kk, a) in px.iter().enumerate() {
                let wt = &e.w[kk * n + s * SLICE..][..SLICE];
                for (acc, wt) in acc.iter_mut().zip(wt) {
                    *acc = a.mul_add(*wt, *acc);
                }
            }
            for ((d, acc), b) in d.iter_mut().zip(&acc).zip(b) {
                *d = relu6_biased(*acc, *b);
            }
        }
    }
}

#[inline(always)]
pub(super) fn fill(src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
    let slice_len = (w + 2) * SLICE;
    for (s, slice) in dst.chunks_exact_mut(slice_len).enumerate() {
        slice[..SLICE].fill(0.0);
        slice[(w + 1) * SLICE..].fill(0.0);
        for (ix, d) in slice[SLICE..(w + 1) * SLICE]
            .chunks_exact_mut(SLICE)
            .enumerate()
        {
            let x = &src[ix * c + s * SLICE..][..SLICE];
            match pre {
                Some(p) => {
                    let p = &p[s * SLICE..][..SLICE];
                    for ((d, x), p) in d.iter_mut().zip(x).zip(p) {
                        *d = relu6_biased(*x, *p);
                    }
                }
                None => d.copy_from_slice(x),
            }
        }
    }
}

#[inline(always)]
pub(super) fn row(
    rows: &[&[f32]; 3],
    w: usize,
    c: usize,
    stride: usize,
    pl: usize,
    f: &Folded,
    dst: &mut [f32],
) {
    let slice_len = (w + 2) * SLICE;
    for ch in (0..c).step_by(SLICE) {
        let off = ch / SLICE * slice_len;
        for (ox, d) in dst.chunks_exact_mut(c).enumerate() {
            let mut acc = [0.0f32; SLICE];
            acc.copy_from_slice(&f.b[ch..ch + SLICE]);
            for (ky, row) in rows.iter().enumerate() {
                for kx in 0..3 {
                    let x = &row[off + (ox * stride + kx + 1 - pl) * SLICE..][..SLICE];
                    let k = &f.w[(ky * 3 + kx) * c + ch..][..SLICE];
                    for ((a, x), k) in acc.iter_mut().zip(x).zip(k) {
                        *a = x.mul_add(*k, *a);
                    }
                }
            }
            for (d, a) in d[ch..ch + SLICE].iter_mut().zip(&acc) {
                *d = a.clamp(0.0, 6.0);
            }
        }
    }
}
