//! The portable depthwise kernels, compiled for AVX2 + FMA.

use super::portable;
use crate::layers::Folded;

/// The portable kernel compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA (hold an AVX2 [`Isa`](crate::kernels::Isa)).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fill(src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
    portable::fill(src, w, c, pre, dst);
}

/// The portable kernel compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA (hold an AVX2 [`Isa`](crate::kernels::Isa)).
#[target_feature(enable = "avx2,fma")]
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
    portable::row(rows, w, c, stride, pl, f, dst);
}

/// The portable kernel compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA (hold an AVX2 [`Isa`](crate::kernels::Isa)).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn expand(x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
    portable::expand(x, w, k, e, dst);
}
