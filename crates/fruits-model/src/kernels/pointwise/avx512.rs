//! The AVX-512 1x1 convolution kernel behind [`project`](super::project) and the depthwise
//! AVX-512 expand:
//! register blocks of 7 pixels x 48 channels, masked where the channels are not a multiple of
//! 16, with the epilogue (bias, then residual or ReLU6) in the store.
use std::arch::x86_64::*;

use crate::layers::Folded;

/// Channels per vector.
const L: usize = 16;
/// Pixels per register block: 7 divides every MobileNetV2 width, and 7 pixels x 3 slices
/// fill the registers.
const PIXELS: usize = 7;

/// Where and how results are stored.
pub(crate) struct Out {
    /// Pixel 0, channel 0.
    pub(crate) dst: *mut f32,
    /// Floats from one pixel to the next.
    pub(crate) pixel_stride: usize,
    /// Floats from one 16-channel slice to the next.
    pub(crate) slice_stride: usize,
    /// Values added in the store, laid out as `dst` (null: none).
    pub(crate) residual: *const f32,
    /// Whether ReLU6 is applied in the store.
    pub(crate) relu6: bool,
}

/// `out = epilogue(x[m, k] · f.w + f.b)`.
///
/// # Safety
/// The CPU must have AVX-512F (hold an AVX-512 [`Isa`](crate::kernels::Isa)); `x` must hold
/// `m * k` values, and `out` must be valid for every store and residual load of `m` pixels x
/// `f.cout` channels at its strides.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn run(x: *const f32, m: usize, k: usize, f: &Folded, out: &Out) {
    let slices = f.cout.div_ceil(L);
    let mut s = 0;
    while s < slices {
        let g = Group { x, m, k, f, out, s };
        s += match slices - s {
            1 => g.run::<1>(),
            2 | 4 => g.run::<2>(),
            _ => g.run::<3>(),
        };
    }
}

/// Slices `s..s + S` of the output for all `m` pixels.
struct Group<'a> {
    x: *const f32,
    m: usize,
    k: usize,
    f: &'a Folded,
    out: &'a Out,
    s: usize,
}

impl Group<'_> {
    /// Runs `S` slices; returns `S`.
    ///
    /// # Safety
    /// As for [`run`]: AVX-512F, and `x` and `out` valid for this group's pixels and slices.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const S: usize>(&self) -> usize {
        let mut masks = [0u16; S];
        for (j, mask) in masks.iter_mut().enumerate() {
            let rest = self.f.cout - (self.s + j) * L;
            *mask = if rest >= L {
                u16::MAX
            } else {
                (1u16 << rest) - 1
            };
        }
        if masks.iter().all(|&m| m == u16::MAX) {
            self.blocks::<S, true>(&masks);
        } else {
            self.blocks::<S, false>(&masks);
        }
        S
    }

    /// All pixels, [`PIXELS`] at a time; `FULL`: every lane of every slice is a channel
    /// (plain loads and stores in the inner loop).
    ///
    /// # Safety
    /// As for [`run`]: AVX-512F, and `x` and `out` valid for this group's pixels and slices.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn blocks<const S: usize, const FULL: bool>(&self, masks: &[u16; S]) {
        let mut p = 0;
        while p + PIXELS <= self.m {
            self.block::<PIXELS, S, FULL>(p, masks);
            p += PIXELS;
        }
        while p < self.m {
            self.block::<1, S, FULL>(p, masks);
            p += 1;
        }
    }

    /// Pixels `p0..p0 + P` x `S` slices.
    ///
    /// # Safety
    /// As for [`run`]: AVX-512F, and `x` and `out` valid for this group's pixels and slices.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const P: usize, const S: usize, const FULL: bool>(
        &self,
        p0: usize,
        masks: &[u16; S],
    ) {
        let (k, n, c0) = (self.k, self.f.cout, self.s * L);
        let (w, b, out) = (self.f.w.as_ptr(), self.f.b.as_ptr(), self.out);
        let x = self.x.add(p0 * k);
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        let mut acc = [[zero; S]; P];
        for kk in 0..k {
            let mut wv = [zero; S];
            for (j, wv) in wv.iter_mut().enumerate() {
                let at = w.add(kk * n + c0 + j * L);
                *wv = if FULL {
                    _mm512_loadu_ps(at)
                } else {
                    _mm512_maskz_loadu_ps(masks[j], at)
                };
            }
            for (p, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*x.add(p * k + kk));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm512_fmadd_ps(a, *wv, *acc);
                }
            }
        }
        for (j, &mask) in masks.iter().enumerate() {
            let bias = _mm512_maskz_loadu_ps(mask, b.add(c0 + j * L));
            for (p, acc) in acc.iter().enumerate() {
                let at = (p0 + p) * out.pixel_stride + (self.s + j) * out.slice_stride;
                let mut v = _mm512_add_ps(acc[j], bias);
                if !out.residual.is_null() {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, out.residual.add(at)));
                }
                if out.relu6 {
                    v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
                }
                _mm512_mask_storeu_ps(out.dst.add(at), mask, v);
            }
        }
    }
}
