//! 3x3 depthwise convolution + bias + ReLU6 (TensorFlow 'SAME' padding), a band of output rows
//! at a time.
//!
//! The input rows an output row needs are copied once each, in order and with the pending
//! ReLU6 applied, into a [`Ring`] of three rows that stays in cache: each ring row is laid out
//! [`SLICE`] channels at a time, with a zero column on each side. Each slice of an output row
//! is then computed with its 9 taps held in registers and no bounds checks. AVX-512 where the
//! CPU has it (several output pixels per step, each loaded vector serving up to three taps),
//! else portable code compiled for AVX2 + FMA where present.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use std::ops::Range;

use super::{pad_before, Isa, Kind};
use crate::layers::Folded;

/// Channels per ring slice (one AVX-512 vector); channel counts must be multiples of it.
pub(crate) const SLICE: usize = 16;

/// Three pre-activated input rows and a row of zeros; which input row each slot holds.
#[derive(Default)]
pub(crate) struct Ring {
    buf: Vec<f32>,
    held: [usize; 3],
    row_len: usize,
}

impl Ring {
    /// Readies the ring for a new image of `w` columns and `c` channels.
    pub(crate) fn start(&mut self, w: usize, c: usize) {
        self.row_len = (w + 2) * c;
        if self.buf.len() < 4 * self.row_len {
            self.buf.resize(4 * self.row_len, 0.0);
        }
        self.buf[3 * self.row_len..4 * self.row_len].fill(0.0);
        self.held = [usize::MAX; 3];
    }
}

/// Where the input rows of a depthwise convolution come from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Input rows from `first` on (rows the ring already holds may precede it), with `pre`
    /// the bias of a ReLU6 still to apply to each value (the padding stays zero).
    Rows {
        src: &'a [f32],
        first: usize,
        pre: Option<&'a [f32]>,
    },
    /// Computed row by row from the block input `x` (`k` channels per pixel) by the 1x1
    /// expand convolution `e` and its ReLU6, straight into the ring.
    Expand {
        x: &'a [f32],
        k: usize,
        e: &'a Folded,
    },
}

/// Output rows `rows` (into `out`, which holds just those rows) of an image of
/// `(h, w, c)` read from `src`, with the kernels of `isa`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows(
    isa: Isa,
    src: Source,
    (h, w, c): (usize, usize, usize),
    stride: usize,
    f: &Folded,
    rows: Range<usize>,
    out: &mut [f32],
    ring: &mut Ring,
) {
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let (pt, pl) = (pad_before(h, stride), pad_before(w, stride));
    assert!(c % SLICE == 0 && ring.row_len == (w + 2) * c && rows.end <= ho);
    assert!(out.len() >= rows.len() * wo * c && f.w.len() == 9 * c && f.b.len() == c);
    match src {
        Source::Rows { pre, .. } => assert!(pre.is_none_or(|p| p.len() == c)),
        Source::Expand { x, k, e } => {
            assert!(x.len() >= h * w * k && e.w.len() == k * c && e.b.len() == c)
        }
    }
    // Ring rows hold input columns -1..=w: 'SAME' padding of 3 taps never reads further.
    assert!(pl <= 1 && (wo - 1) * stride + 2 <= w + pl);
    let row_len = ring.row_len;
    for oy in rows.clone() {
        let mut at = [3 * row_len; 3];
        for (ky, at) in at.iter_mut().enumerate() {
            let iy = (oy * stride + ky).wrapping_sub(pt);
            if iy >= h {
                continue;
            }
            let slot = iy % 3;
            *at = slot * row_len;
            if ring.held[slot] != iy {
                let dst = &mut ring.buf[*at..*at + row_len];
                match src {
                    Source::Rows { src, first, pre } => {
                        // Panics if the row is neither held nor given.
                        let row = &src[(iy - first) * w * c..][..w * c];
                        isa.fill(row, w, c, pre, dst);
                    }
                    Source::Expand { x, k, e } => {
                        isa.expand(&x[iy * w * k..][..w * k], w, k, e, dst)
                    }
                }
                ring.held[slot] = iy;
            }
        }
        let ring_rows = at.map(|at| &ring.buf[at..at + row_len]);
        let dst = &mut out[(oy - rows.start) * wo * c..][..wo * c];
        isa.row(&ring_rows, w, c, stride, pl, f, dst);
    }
}

impl Isa {
    /// Copies input row `src` (`w` pixels of `c` channels) into ring row `dst`.
    fn fill(self, src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
        match self {
            // SAFETY (both): an `Isa` of this kind exists only where the CPU has its features
            // (`Isa::detect`); `rows` checked every length the kernel relies on.
            #[cfg(target_arch = "x86_64")]
            Isa(Kind::Avx512) => unsafe { avx512::fill(src, w, c, pre, dst) },
            #[cfg(target_arch = "x86_64")]
            Isa(Kind::Avx2) => unsafe { avx2::fill(src, w, c, pre, dst) },
            Isa(Kind::Portable) => portable::fill(src, w, c, pre, dst),
        }
    }

    /// ReLU6 of the 1x1 convolution `e` of input row `x` (`w` pixels of `k` channels)
    /// into ring row `dst`.
    fn expand(self, x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
        match self {
            // SAFETY (both): an `Isa` of this kind exists only where the CPU has its features
            // (`Isa::detect`); `rows` checked every length the kernel relies on.
            #[cfg(target_arch = "x86_64")]
            Isa(Kind::Avx512) => unsafe { avx512::expand(x, w, k, e, dst) },
            #[cfg(target_arch = "x86_64")]
            Isa(Kind::Avx2) => unsafe { avx2::expand(x, w, k, e, dst) },
            Isa(Kind::Portable) => portable::expand(x, w, k, e, dst),
        }
    }

    /// One output row from its three ring rows.
    #[allow(clippy::too_many_arguments)]
    fn row(
        self,
        rows: &[&[f32]; 3],
        w: usize,
        c: usize,
        stride: usize,
        pl: usize,
        f: &Folded,
        dst: &mut [f32],
    ) {
        match self {
            // SAFETY (both): an `Isa` of this kind exists only where the CPU has its features
            // (`Isa::detect`); `rows` checked every length the kernel relies on.
            #[cfg(target_arch = "x86_64")]
            Isa(Kind::Avx512) => unsafe { avx512::row(rows, w, c, stride, pl, f, dst) },
            #[cfg(target_arch = "x86_64")]
            Isa(Kind::Avx2) => unsafe { avx2::row(rows, w, c, stride, pl, f, dst) },
            Isa(Kind::Portable) => portable::row(rows, w, c, stride, pl, f, dst),
        }
    }
}
