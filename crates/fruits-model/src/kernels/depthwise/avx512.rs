//! The AVX-512 depthwise kernels ([`SLICE`](super::SLICE) = one vector).

use std::arch::x86_64::*;

use super::SLICE as L;
use crate::kernels::pointwise::avx512::{self as pointwise_avx512, Out};
use crate::layers::Folded;

/// Output pixels computed together.
const TILE: usize = 4;

/// See [`Isa::fill`](crate::kernels::Isa); lengths checked by the caller.
///
/// # Safety
/// The CPU must have AVX-512F (hold an AVX-512 [`Isa`](crate::kernels::Isa)), and every
/// length [`rows`](super::rows) asserts must hold.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn fill(src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
    let slice_len = (w + 2) * L;
    let (src, dst) = (src.as_ptr(), dst.as_mut_ptr());
    let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    for s in 0..c / L {
        _mm512_storeu_ps(dst.add(s * slice_len), zero);
        _mm512_storeu_ps(dst.add(s * slice_len + (w + 1) * L), zero);
    }
    for ix in 0..w {
        let src = src.add(ix * c);
        let dst = dst.add((ix + 1) * L);
        for s in 0..c / L {
            let mut v = _mm512_loadu_ps(src.add(s * L));
            if let Some(p) = pre {
                let p = _mm512_loadu_ps(p.as_ptr().add(s * L));
                v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, p), zero), six);
            }
            _mm512_storeu_ps(dst.add(s * slice_len), v);
        }
    }
}

/// See [`Isa::expand`](crate::kernels::Isa); lengths checked by the caller: the zero columns, then
/// the shared 1x1 kernel storing slice by slice into the ring row.
///
/// # Safety
/// The CPU must have AVX-512F (hold an AVX-512 [`Isa`](crate::kernels::Isa)), and every
/// length [`rows`](super::rows) asserts must hold.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn expand(x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
    let slice_len = (w + 2) * L;
    let dst = dst.as_mut_ptr();
    let zero = _mm512_setzero_ps();
    for s in 0..e.cout / L {
        _mm512_storeu_ps(dst.add(s * slice_len), zero);
        _mm512_storeu_ps(dst.add(s * slice_len + (w + 1) * L), zero);
    }
    let out = Out {
        dst: dst.add(L),
        pixel_stride: L,
        slice_stride: slice_len,
        residual: std::ptr::null(),
        relu6: true,
    };
    pointwise_avx512::run(x.as_ptr(), w, k, e, &out);
}

/// See [`Isa::row`](crate::kernels::Isa); lengths checked by the caller.
///
/// # Safety
/// The CPU must have AVX-512F (hold an AVX-512 [`Isa`](crate::kernels::Isa)), and every
/// length [`rows`](super::rows) asserts must hold.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn row(
    rows: &[&[f32]; 3],
    w: usize,
    c: usize,
    stride: usize,
    pl: usize,
    f: &Folded,
    dst: &mut [f32],
) {
    let wo = dst.len() / c;
    let slice_len = (w + 2) * L;
    let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    let dst = dst.as_mut_ptr();
    for ch in (0..c).step_by(L) {
        let mut k = [zero; 9];
        for (t, k) in k.iter_mut().enumerate() {
            *k = _mm512_loadu_ps(f.w.as_ptr().add(t * c + ch));
        }
        let bias = _mm512_loadu_ps(f.b.as_ptr().add(ch));
        let off = ch / L * slice_len;
        let rows = [
            rows[0].as_ptr().add(off),
            rows[1].as_ptr().add(off),
            rows[2].as_ptr().add(off),
        ];
        let dst = dst.add(ch);
        let mut ox = 0;
        if stride == 1 {
            while ox + TILE <= wo {
                tile::<1, { TILE + 2 }>(&rows, ox + 1 - pl, &k, bias, dst.add(ox * c), c);
                ox += TILE;
            }
        } else {
            while ox + TILE <= wo {
                let first = ox * 2 + 1 - pl;
                tile::<2, { 2 * TILE + 1 }>(&rows, first, &k, bias, dst.add(ox * c), c);
                ox += TILE;
            }
        }
        for ox in ox..wo {
            let mut acc = bias;
            for (ky, row) in rows.iter().enumerate() {
                for kx in 0..3 {
                    let x = _mm512_loadu_ps(row.add((ox * stride + kx + 1 - pl) * L));
                    acc = _mm512_fmadd_ps(x, k[ky * 3 + kx], acc);
                }
            }
            let v = _mm512_min_ps(_mm512_max_ps(acc, zero), six);
            _mm512_storeu_ps(dst.add(ox * c), v);
        }
    }
}

/// [`TILE`] output pixels at stride `S` from ring rows starting at padded column
/// `first` (`N` = the input columns they read), stored `c` floats apart.
///
/// # Safety
/// The CPU must have AVX-512F; each of `rows` must be valid for `N` vectors from column
/// `first`, and `dst` for `TILE` stores `c` floats apart.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const S: usize, const N: usize>(
    rows: &[*const f32; 3],
    first: usize,
    k: &[__m512; 9],
    bias: __m512,
    dst: *mut f32,
    c: usize,
) {
    let mut acc = [bias; TILE];
    for (ky, row) in rows.iter().enumerate() {
        let mut x = [bias; N];
        for (j, x) in x.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(row.add((first + j) * L));
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            for kx in 0..3 {
                *acc = _mm512_fmadd_ps(x[t * S + kx], k[ky * 3 + kx], *acc);
            }
        }
    }
    let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    for (t, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(
            dst.add(t * c),
            _mm512_min_ps(_mm512_max_ps(*acc, zero), six),
        );
    }
}
