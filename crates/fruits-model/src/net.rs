//! The MobileNetV2 1.0/224 forward pass up to its global average pool.
//!
//! NHWC `f32`, batch norm folded into each convolution, TensorFlow's asymmetric 'SAME' padding
//! for stride 2. Where the time goes and what keeps it short:
//!
//! * 1x1 convolutions (~90 % of the FLOPs) run near the core's FMA peak. On AVX-512, a
//!   block's expand convolution writes straight into the depthwise ring and its projection
//!   adds bias and residual in its store (register blocks of 7 pixels x 48 channels, see
//!   [`pointwise_avx512`]); elsewhere, and for the stem and head, they are `gemm` crate GEMMs
//!   whose ReLU6 is applied by the consumer as it reads (depthwise or pool).
//! * 3x3 depthwise convolutions read three pre-activated input rows from a small ring with
//!   the taps held in registers (AVX-512, or portable code; see [`depthwise`]).
//! * Blocks run fused in bands of rows (expand, depthwise, project), so the large expanded
//!   activations stay in L2 instead of streaming through L3.
//! * Each thread keeps its buffers between calls (no page faults or zero-filling).

use crate::weights::Tensors;
use crate::ModelError;
use depthwise::{Isa, Source};

/// Values per image the network produces (its last convolution's channels).
pub const FEATURES: usize = 1280;
/// Input side the network takes.
pub const INPUT_SIDE: usize = 224;
/// Values of one input image (224 x 224 x 3, HWC, scaled to `[-1, 1]`).
pub const INPUT_LEN: usize = INPUT_SIDE * INPUT_SIDE * 3;

const BN_EPSILON: f32 = 1e-3;
/// First block run on several images at once (stage 4: 14x14 and smaller activations).
const BATCHED_FROM: usize = 7;
/// Images run together through the late blocks.
const LATE_BATCH: usize = 8;
/// (expansion, output channels, repeats, first stride) of each stage.
const STAGES: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// A convolution with its batch norm folded in: `w` is `[taps * cin, cout]` row-major
/// (for depthwise: `[9, c]`), `b` is `[cout]`.
#[derive(Debug, Clone)]
struct Folded {
    w: Vec<f32>,
    b: Vec<f32>,
    cout: usize,
}

impl Folded {
    /// Loads `<prefix>_weights` (or `<prefix>_depthwise_weights`) and its batch norm.
    fn load(
        t: &Tensors,
        prefix: &str,
        kernel: &str,
        shape: [usize; 4],
    ) -> Result<Folded, ModelError> {
        let mut w = t.take(&format!("{prefix}_{kernel}"), &shape)?;
        let cout = if kernel.starts_with("depthwise") {
            shape[2]
        } else {
            shape[3]
        };
        let bn = |f: &str| t.take(&format!("{prefix}_BatchNorm_{f}"), &[cout]);
        let (gamma, beta, mean, var) = (
            bn("gamma")?,
            bn("beta")?,
            bn("moving_mean")?,
            bn("moving_variance")?,
        );
        let mut b = vec![0.0; cout];
        let mut scale = vec![0.0; cout];
        for c in 0..cout {
            scale[c] = gamma[c] / (var[c] + BN_EPSILON).sqrt();
            b[c] = beta[c] - mean[c] * scale[c];
        }
        // The output channel is the fastest axis of both kernel layouts.
        for row in w.chunks_exact_mut(cout) {
            for (v, s) in row.iter_mut().zip(&scale) {
                *v *= s;
            }
        }
        Ok(Folded { w, b, cout })
    }
}

#[derive(Debug, Clone)]
struct Block {
    expand: Option<Folded>,
    depthwise: Folded,
    project: Folded,
    stride: usize,
    residual: bool,
}

/// MobileNetV2 1.0/224 cut at the global average pool: 224x224x3 in, 1280 features out.
///
/// Immutable once loaded: share one instance (in an `Arc`) between threads.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stem: Folded,
    blocks: Vec<Block>,
    head: Folded,
}

impl MobileNetV2 {
    /// Builds the network from TF-slim named tensors (see [`Tensors`]), checking every shape.
    pub fn from_tensors(t: &Tensors) -> Result<MobileNetV2, ModelError> {
        let stem = Folded::load(t, "Conv", "weights", [3, 3, 3, 32])?;
        let mut blocks = Vec::new();
        let mut cin = 32;
        for (expansion, cout, repeats, first_stride) in STAGES {
            for r in 0..repeats {
                let i = blocks.len();
                let p = if i == 0 {
                    "expanded_conv".to_string()
                } else {
                    format!("expanded_conv_{i}")
                };
                let mid = cin * expansion;
                let expand = if expansion == 1 {
                    None
                } else {
                    Some(Folded::load(
                        t,
                        &format!("{p}_expand"),
                        "weights",
                        [1, 1, cin, mid],
                    )?)
                };
                let depthwise = Folded::load(
                    t,
                    &format!("{p}_depthwise"),
                    "depthwise_weights",
                    [3, 3, mid, 1],
                )?;
                let project =
                    Folded::load(t, &format!("{p}_project"), "weights", [1, 1, mid, cout])?;
                let stride = if r == 0 { first_stride } else { 1 };
                blocks.push(Block {
                    expand,
                    depthwise,
                    project,
                    stride,
                    residual: stride == 1 && cin == cout,
                });
                cin = cout;
            }
        }
        let head = Folded::load(t, "Conv_1", "weights", [1, 1, 320, FEATURES])?;
        Ok(MobileNetV2 { stem, blocks, head })
    }

    /// Features of `n` images: `inputs` holds `n * INPUT_LEN` values, `out` receives
    /// `n * FEATURES`. Splits the images over `threads` OS threads (1 = the calling thread).
    ///
    /// # Panics
    /// If the slices do not hold exactly `n` images / feature rows.
    pub fn forward(&self, inputs: &[f32], out: &mut [f32], threads: usize) {
        let n = inputs.len() / INPUT_LEN;
        assert_eq!(inputs.len(), n * INPUT_LEN, "inputs must hold whole images");
        assert_eq!(out.len(), n * FEATURES, "one feature row per image");
        let threads = threads.clamp(1, n.max(1));
        if threads == 1 {
            WORKSPACE.with_borrow_mut(|ws| {
                for (x, y) in inputs
                    .chunks(LATE_BATCH * INPUT_LEN)
                    .zip(out.chunks_mut(LATE_BATCH * FEATURES))
                {
                    self.forward_chunk(x, y, ws);
                }
            });
            return;
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            for (xs, ys) in inputs
                .chunks(per * INPUT_LEN)
                .zip(out.chunks_mut(per * FEATURES))
            {
                s.spawn(move || self.forward(xs, ys, 1));
            }
        });
    }

    /// Up to [`LATE_BATCH`] images: each alone through the large early layers, then together
    /// from block [`BATCHED_FROM`] on, where one GEMM over all of them is far more efficient
    /// than several 14x14 or 7x7 ones.
    fn forward_chunk(&self, inputs: &[f32], out: &mut [f32], ws: &mut Workspace) {
        let n = inputs.len() / INPUT_LEN;
        let mut late = std::mem::take(&mut ws.late);
        let mut shape = (0, 0, 0);
        for (i, x) in inputs.chunks_exact(INPUT_LEN).enumerate() {
            // Stem: 3x3 stride-2 convolution as im2col + GEMM; its bias and ReLU6 are applied
            // where block 0's depthwise convolution reads it.
            let (h, w) = (INPUT_SIDE.div_ceil(2), INPUT_SIDE.div_ceil(2));
            im2col_3x3_s2(x, INPUT_SIDE, INPUT_SIDE, grow(&mut ws.col, h * w * 27));
            pointwise(
                &ws.col,
                h * w,
                27,
                &self.stem.w,
                32,
                grow(&mut ws.a, h * w * 32),
            );
            let pending = Some(&self.stem.b[..]);
            shape = self.run_blocks(&self.blocks[..BATCHED_FROM], 1, (h, w, 32), pending, ws);
            let len = shape.0 * shape.1 * shape.2;
            grow(&mut late, n * len)[i * len..][..len].copy_from_slice(&ws.a[..len]);
        }
        ws.late = std::mem::replace(&mut ws.a, late);
        let (h, w, c) = self.run_blocks(&self.blocks[BATCHED_FROM..], n, shape, None, ws);
        let head = grow(&mut ws.b, n * h * w * FEATURES);
        pointwise(&ws.a, n * h * w, c, &self.head.w, FEATURES, head);
        // Global average pool of ReLU6(head + bias), image by image.
        let inv = 1.0 / (h * w) as f32;
        for (pixels, o) in head
            .chunks_exact(h * w * FEATURES)
            .zip(out.chunks_exact_mut(FEATURES))
        {
            o.fill(0.0);
            for row in pixels.chunks_exact(FEATURES) {
                for ((o, v), b) in o.iter_mut().zip(row).zip(&self.head.b) {
                    *o += (v + b).clamp(0.0, 6.0);
                }
            }
            o.iter_mut().for_each(|o| *o *= inv);
        }
    }

    /// Runs `blocks` on `n` images of `(h, w, c)` held in `ws.a`; the result is left in `ws.a`.
    /// `pending`: the bias whose ReLU6 the input still needs (a raw GEMM output), if any.
    ///
    /// Where the expanded activations of all `n` images would not stay in L2, a block runs
    /// fused, one image and one band of output rows at a time: expand only the input rows the
    /// band adds, depthwise, project. Otherwise each step runs on all `n` images at once.
    fn run_blocks<'m>(
        &'m self,
        blocks: &'m [Block],
        n: usize,
        shape: (usize, usize, usize),
        mut pending: Option<&'m [f32]>,
        ws: &mut Workspace,
    ) -> (usize, usize, usize) {
        let (mut h, mut w, mut c) = shape;
        let isa = ws.isa;
        for b in blocks {
            let mid_c = b.expand.as_ref().map_or(c, |e| e.cout);
            let (s, cout) = (b.stride, b.project.cout);
            let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
            let pt = pad_before(h, s);
            // Output rows per band (whole images when the expanded tensor is small).
            let band = if n * h * w * mid_c <= BAND_VALUES {
                ho
            } else {
                (BAND_VALUES / (w * mid_c * s)).clamp(1, ho)
            };
            let whole = band == ho;
            // Expand straight into the depthwise ring where that is the faster kernel.
            let fused = b.expand.is_some() && isa.expands_in_ring();
            let out = grow(&mut ws.d, n * ho * wo * cout);
            // Whole images: expand all `n` at once.
            if let (true, Some(e), false) = (whole, &b.expand, fused) {
                let mid = grow(&mut ws.b, n * h * w * mid_c);
                pointwise(&ws.a[..n * h * w * c], n * h * w, c, &e.w, mid_c, mid);
            }
            let dw_all = grow(&mut ws.c, if whole { n * ho } else { band } * wo * mid_c);
            for img in 0..n {
                let x = &ws.a[img * h * w * c..][..h * w * c];
                ws.ring.start(w, mid_c);
                let mut next = 0; // the next input row to expand
                for oy0 in (0..ho).step_by(band) {
                    let oy1 = (oy0 + band).min(ho);
                    let hi = ((oy1 - 1) * s + 3).saturating_sub(pt).min(h);
                    let src = match (&b.expand, whole) {
                        (Some(e), _) if fused => Source::Expand { x, k: c, e },
                        (Some(e), true) => Source::Rows {
                            src: &ws.b[img * h * w * mid_c..][..h * w * mid_c],
                            first: 0,
                            pre: Some(&e.b),
                        },
                        (Some(e), false) => {
                            let rows = hi - next;
                            let mid = grow(&mut ws.b, rows * w * mid_c);
                            let x = &x[next * w * c..hi * w * c];
                            pointwise(x, rows * w, c, &e.w, mid_c, mid);
                            Source::Rows {
                                src: mid,
                                first: next,
                                pre: Some(&e.b),
                            }
                        }
                        (None, _) => Source::Rows {
                            src: x,
                            first: 0,
                            pre: pending,
                        },
                    };
                    next = hi;
                    let dw = if whole {
                        &mut dw_all[img * ho * wo * mid_c..][..ho * wo * mid_c]
                    } else {
                        &mut dw_all[..(oy1 - oy0) * wo * mid_c]
                    };
                    let rows = oy0..oy1;
                    let (f, ring) = (&b.depthwise, &mut ws.ring);
                    depthwise::rows(isa, src, (h, w, mid_c), s, f, rows, dw, ring);
                    if !whole {
                        let y =
                            &mut out[(img * ho + oy0) * wo * cout..(img * ho + oy1) * wo * cout];
                        let residual = b.residual.then(|| &x[oy0 * wo * c..oy1 * wo * c]);
                        project(isa, dw, (oy1 - oy0) * wo, mid_c, &b.project, residual, y);
                    }
                }
            }
            if whole {
                let residual = b.residual.then(|| &ws.a[..out.len()]);
                project(isa, dw_all, n * ho * wo, mid_c, &b.project, residual, out);
            }
            pending = None;
            std::mem::swap(&mut ws.a, &mut ws.d);
            (h, w, c) = (ho, wo, cout);
        }
        (h, w, c)
    }
}

/// Expanded activations (values) a fused band aims at: 384 KB, well inside a core's L2.
const BAND_VALUES: usize = 96 * 1024;

thread_local! {
    /// Each thread's activation buffers, kept between calls (no page faults on the hot path).
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::default();
}

/// `v[..len]`, growing `v` (zero-filled) only when it is too short: buffers are reused at
/// their largest size instead of being cleared for every layer.
fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Reused activation buffers of one thread.
#[derive(Default)]
struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    col: Vec<f32>,
    late: Vec<f32>,
    ring: depthwise::Ring,
    /// The kernels this thread runs.
    isa: Isa,
}

impl Default for Isa {
    fn default() -> Isa {
        Isa::detect()
    }
}

/// TensorFlow 'SAME' padding before the first row/column for a 3-tap kernel.
fn pad_before(size: usize, stride: usize) -> usize {
    let out = size.div_ceil(stride);
    ((out - 1) * stride + 3).saturating_sub(size) / 2
}

/// im2col of a 3x3 stride-2 'SAME' convolution over 3-channel pixels: row `oy * wo + ox` of
/// `col` holds the 27 taps (zero outside the image).
fn im2col_3x3_s2(input: &[f32], h: usize, w: usize, col: &mut [f32]) {
    const C: usize = 3;
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let (pt, pl) = (pad_before(h, 2), pad_before(w, 2));
    assert!(input.len() >= h * w * C && col.len() >= ho * wo * 9 * C);
    for (p, dst) in col.chunks_exact_mut(9 * C).take(ho * wo).enumerate() {
        let (oy, ox) = (p / wo, p % wo);
        for ky in 0..3 {
            let iy = (oy * 2 + ky).wrapping_sub(pt);
            for kx in 0..3 {
                let ix = (ox * 2 + kx).wrapping_sub(pl);
                let d = &mut dst[(ky * 3 + kx) * C..][..C];
                if iy < h && ix < w {
                    let s = &input[(iy * w + ix) * C..][..C];
                    d[0] = s[0];
                    d[1] = s[1];
                    d[2] = s[2];
                } else {
                    d.fill(0.0);
                }
            }
        }
    }
}

/// `out[m, n] = input[m, k] · w[k, n]` (the raw product: bias and activation come later).
fn pointwise(input: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    assert!(input.len() >= m * k && w.len() == k * n && out.len() >= m * n);
    // SAFETY: the assert above bounds every index gemm touches: dst is m x n with row stride n,
    // lhs m x k with row stride k, rhs k x n with row stride n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            input.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out = out + b (+ residual)`, row by row (a linear projection's epilogue).
fn bias_residual(out: &mut [f32], b: &[f32], residual: Option<&[f32]>) {
    match residual {
        Some(r) => {
            for (row, r) in out.chunks_exact_mut(b.len()).zip(r.chunks_exact(b.len())) {
                for ((o, bias), r) in row.iter_mut().zip(b).zip(r) {
                    *o = *o + bias + r;
                }
            }
        }
        None => {
            for row in out.chunks_exact_mut(b.len()) {
                for (o, bias) in row.iter_mut().zip(b) {
                    *o += bias;
                }
            }
        }
    }
}

/// `out[m, n] = input[m, k] · f.w + f.b (+ residual)`: a block's linear projection, with its
/// epilogue in the kernel's store where `isa` is AVX-512.
fn project(
    isa: Isa,
    input: &[f32],
    m: usize,
    k: usize,
    f: &Folded,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let n = f.cout;
    assert!(input.len() >= m * k && f.w.len() == k * n && f.b.len() == n && out.len() >= m * n);
    assert!(residual.is_none_or(|r| r.len() >= m * n));
    #[cfg(target_arch = "x86_64")]
    if let Isa::Avx512 = isa {
        let out = pointwise_avx512::Out {
            dst: out.as_mut_ptr(),
            pixel_stride: n,
            slice_stride: 16,
            residual: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
            relu6: false,
        };
        // SAFETY: `isa` is one the CPU runs; the asserts above bound every access.
        unsafe { pointwise_avx512::run(input.as_ptr(), m, k, f, &out) };
        return;
    }
    let _ = isa;
    pointwise(input, m, k, &f.w, n, out);
    bias_residual(&mut out[..m * n], &f.b, residual);
}

/// The AVX-512 1x1 convolution kernel behind [`project`] and the depthwise module's expand:
/// register blocks of 7 pixels x 48 channels, masked where the channels are not a multiple of
/// 16, with the epilogue (bias, then residual or ReLU6) in the store.
#[cfg(target_arch = "x86_64")]
mod pointwise_avx512 {
    use std::arch::x86_64::*;

    use super::Folded;

    /// Channels per vector.
    const L: usize = 16;
    /// Pixels per register block: 7 divides every MobileNetV2 width, and 7 pixels x 3 slices
    /// fill the registers.
    const PIXELS: usize = 7;

    /// Where and how results are stored.
    pub(super) struct Out {
        /// Pixel 0, channel 0.
        pub(super) dst: *mut f32,
        /// Floats from one pixel to the next.
        pub(super) pixel_stride: usize,
        /// Floats from one 16-channel slice to the next.
        pub(super) slice_stride: usize,
        /// Values added in the store, laid out as `dst` (null: none).
        pub(super) residual: *const f32,
        /// Whether ReLU6 is applied in the store.
        pub(super) relu6: bool,
    }

    /// `out = epilogue(x[m, k] · f.w + f.b)`; lengths checked by the caller.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(x: *const f32, m: usize, k: usize, f: &Folded, out: &Out) {
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
}

/// ReLU6 of a raw GEMM output `x` with its per-channel bias `b`.
#[inline(always)]
fn relu6_biased(x: f32, b: f32) -> f32 {
    (x + b).clamp(0.0, 6.0)
}

/// 3x3 depthwise convolution + bias + ReLU6 (TensorFlow 'SAME' padding), a band of output rows
/// at a time.
///
/// The input rows an output row needs are copied once each, in order and with the pending
/// ReLU6 applied, into a [`depthwise::Ring`] of three rows that stays in cache: each ring row is laid out
/// [`depthwise::SLICE`] channels at a time, with a zero column on each side. Each slice of an output row
/// is then computed with its 9 taps held in registers and no bounds checks. AVX-512 where the
/// CPU has it (several output pixels per step, each loaded vector serving up to three taps),
/// else portable code compiled for AVX2 + FMA where present.
mod depthwise {
    use std::ops::Range;

    use super::{pad_before, relu6_biased, Folded};

    /// Channels per ring slice (one AVX-512 vector); channel counts must be multiples of it.
    pub(super) const SLICE: usize = 16;

    /// Three pre-activated input rows and a row of zeros; which input row each slot holds.
    #[derive(Default)]
    pub(super) struct Ring {
        buf: Vec<f32>,
        held: [usize; 3],
        row_len: usize,
    }

    impl Ring {
        /// Readies the ring for a new image of `w` columns and `c` channels.
        pub(super) fn start(&mut self, w: usize, c: usize) {
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
    pub(super) enum Source<'a> {
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
    pub(super) fn rows(
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

    /// A set of kernels.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(super) enum Isa {
        #[cfg(target_arch = "x86_64")]
        Avx512,
        #[cfg(target_arch = "x86_64")]
        Avx2,
        Portable,
    }

    impl Isa {
        /// Every set this CPU can run, fastest first.
        #[cfg(test)]
        pub(super) fn supported() -> Vec<Isa> {
            let mut all = vec![Isa::detect()];
            #[cfg(target_arch = "x86_64")]
            if matches!(all[0], Isa::Avx512) && is_x86_feature_detected!("fma") {
                all.push(Isa::Avx2);
            }
            all.push(Isa::Portable);
            all.dedup();
            all
        }

        /// Whether [`Source::Expand`] is faster with these kernels than a GEMM followed by
        /// [`Source::Rows`].
        pub(super) fn expands_in_ring(self) -> bool {
            #[cfg(target_arch = "x86_64")]
            if let Isa::Avx512 = self {
                return true;
            }
            false
        }

        /// The fastest set this CPU runs.
        pub(super) fn detect() -> Isa {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        }

        /// Copies input row `src` (`w` pixels of `c` channels) into ring row `dst`.
        fn fill(self, src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
            match self {
                // SAFETY (both): the CPU has the features; `rows` checked every length.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::fill(src, w, c, pre, dst) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { fill_avx2(src, w, c, pre, dst) },
                Isa::Portable => fill_portable(src, w, c, pre, dst),
            }
        }

        /// ReLU6 of the 1x1 convolution `e` of input row `x` (`w` pixels of `k` channels)
        /// into ring row `dst`.
        fn expand(self, x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
            match self {
                // SAFETY: the CPU has the features; `rows` checked every length.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::expand(x, w, k, e, dst) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { expand_avx2(x, w, k, e, dst) },
                Isa::Portable => expand_portable(x, w, k, e, dst),
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
                // SAFETY (both): the CPU has the features; `rows` checked every length.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::row(rows, w, c, stride, pl, f, dst) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { row_avx2(rows, w, c, stride, pl, f, dst) },
                Isa::Portable => row_portable(rows, w, c, stride, pl, f, dst),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fill_avx2(src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
        fill_portable(src, w, c, pre, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_avx2(
        rows: &[&[f32]; 3],
        w: usize,
        c: usize,
        stride: usize,
        pl: usize,
        f: &Folded,
        dst: &mut [f32],
    ) {
        row_portable(rows, w, c, stride, pl, f, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn expand_avx2(x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
        expand_portable(x, w, k, e, dst);
    }

    #[inline(always)]
    fn expand_portable(x: &[f32], w: usize, k: usize, e: &Folded, dst: &mut [f32]) {
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
    fn fill_portable(src: &[f32], w: usize, c: usize, pre: Option<&[f32]>, dst: &mut [f32]) {
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
    fn row_portable(
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

    /// The AVX-512 kernels ([`SLICE`] = one vector).
    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use std::arch::x86_64::*;

        use super::{Folded, SLICE as L};
        use crate::net::pointwise_avx512::{self, Out};

        /// Output pixels computed together.
        const TILE: usize = 4;

        /// See [`super::Isa::fill`]; lengths checked by the caller.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn fill(
            src: &[f32],
            w: usize,
            c: usize,
            pre: Option<&[f32]>,
            dst: &mut [f32],
        ) {
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

        /// See [`super::Isa::expand`]; lengths checked by the caller: the zero columns, then
        /// the shared 1x1 kernel storing slice by slice into the ring row.
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

        /// See [`super::Isa::row`]; lengths checked by the caller.
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_is_tensorflows() {
        assert_eq!(pad_before(224, 2), 0);
        assert_eq!(pad_before(112, 2), 0);
        assert_eq!(pad_before(7, 2), 1);
        assert_eq!(pad_before(56, 1), 1);
    }

    /// Every kernel set the CPU runs, against a naive f64 loop: with and without a pending
    /// ReLU6, both strides, odd and even sizes, whole images and bands fed a few rows at a time.
    #[test]
    fn depthwise_matches_naive_reference() {
        use depthwise::{rows, Isa, Ring, Source};
        for (h, w, c) in [(5, 4, 16), (7, 7, 32), (8, 11, 48), (3, 2, 16), (1, 1, 16)] {
            let input: Vec<f32> = (0..h * w * c)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.7)
                .collect();
            let f = Folded {
                w: (0..9 * c)
                    .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2)
                    .collect(),
                b: (0..c).map(|i| i as f32 * 0.05).collect(),
                cout: c,
            };
            let pre_bias: Vec<f32> = (0..c).map(|i| (i % 5) as f32 - 2.0).collect();
            for stride in [1, 2] {
                for pre in [None, Some(&pre_bias[..])] {
                    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
                    let (pt, pl) = (pad_before(h, stride), pad_before(w, stride));
                    let mut want = vec![0.0f64; ho * wo * c];
                    for oy in 0..ho {
                        for ox in 0..wo {
                            for ch in 0..c {
                                let mut s = f.b[ch] as f64;
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let iy = (oy * stride + ky).wrapping_sub(pt);
                                        let ix = (ox * stride + kx).wrapping_sub(pl);
                                        if iy < h && ix < w {
                                            let x = input[(iy * w + ix) * c + ch];
                                            let x = pre.map_or(x, |p| relu6_biased(x, p[ch]));
                                            s += x as f64 * f.w[(ky * 3 + kx) * c + ch] as f64;
                                        }
                                    }
                                }
                                want[(oy * wo + ox) * c + ch] = s.clamp(0.0, 6.0);
                            }
                        }
                    }
                    for isa in Isa::supported() {
                        for band in [ho, 1, 2] {
                            let mut got = vec![0.0; ho * wo * c];
                            let mut ring = Ring::default();
                            ring.start(w, c);
                            // Feed each band only the input rows it adds, as `run_blocks` does.
                            let mut next = 0;
                            for oy0 in (0..ho).step_by(band) {
                                let oy1 = (oy0 + band).min(ho);
                                let hi = ((oy1 - 1) * stride + 3).saturating_sub(pt).min(h);
                                let src = Source::Rows {
                                    src: &input[next * w * c..hi * w * c],
                                    first: next,
                                    pre,
                                };
                                let out = &mut got[oy0 * wo * c..oy1 * wo * c];
                                let (shape, range) = ((h, w, c), oy0..oy1);
                                rows(isa, src, shape, stride, &f, range, out, &mut ring);
                                next = hi;
                            }
                            for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    (*g as f64 - v).abs() < 1e-4,
                                    "{isa:?} {h}x{w}x{c} stride {stride} band {band} pre {}: \
                                     value {i} is {g}, want {v}",
                                    pre.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Expanding straight into the ring equals the GEMM, then filling with its ReLU6.
    #[test]
    fn depthwise_from_expand_matches_gemm_then_fill() {
        use depthwise::{rows, Isa, Ring, Source};
        // Widths and channels cover whole register blocks and the single-pixel/slice rest.
        for (h, w, k, c) in [
            (4, 30, 24, 64),
            (7, 7, 16, 48),
            (3, 2, 8, 16),
            (2, 14, 5, 96),
        ] {
            let x: Vec<f32> = (0..h * w * k)
                .map(|i| ((i * 7 % 17) as f32 - 8.0) * 0.3)
                .collect();
            let e = Folded {
                w: (0..k * c)
                    .map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.25)
                    .collect(),
                b: (0..c).map(|i| (i % 4) as f32 - 1.5).collect(),
                cout: c,
            };
            let f = Folded {
                w: (0..9 * c)
                    .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2)
                    .collect(),
                b: (0..c).map(|i| i as f32 * 0.05).collect(),
                cout: c,
            };
            let mut mid = vec![0.0; h * w * c];
            pointwise(&x, h * w, k, &e.w, c, &mut mid);
            for stride in [1, 2] {
                let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
                let mut want = vec![0.0; ho * wo * c];
                let mut ring = Ring::default();
                ring.start(w, c);
                let src = Source::Rows {
                    src: &mid,
                    first: 0,
                    pre: Some(&e.b),
                };
                let isa = Isa::supported()[0];
                rows(isa, src, (h, w, c), stride, &f, 0..ho, &mut want, &mut ring);
                for isa in Isa::supported() {
                    let mut got = vec![0.0; ho * wo * c];
                    ring.start(w, c);
                    let src = Source::Expand { x: &x, k, e: &e };
                    rows(isa, src, (h, w, c), stride, &f, 0..ho, &mut got, &mut ring);
                    for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - v).abs() < 1e-4,
                            "{isa:?} {h}x{w}x{k}->{c} s{stride}: {i}: {g} vs {v}"
                        );
                    }
                }
            }
        }
    }

    /// The projection kernel equals GEMM + bias (+ residual), for channel counts that are and
    /// are not multiples of 16 and pixel counts that are and are not multiples of 7.
    #[test]
    fn project_matches_gemm_and_epilogue() {
        for (m, k, n) in [
            (15, 24, 24),
            (14, 40, 64),
            (3, 16, 96),
            (8, 9, 160),
            (7, 5, 8),
            (22, 7, 320),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 17) as f32 - 8.0) * 0.3)
                .collect();
            let f = Folded {
                w: (0..k * n)
                    .map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.25)
                    .collect(),
                b: (0..n).map(|i| (i % 4) as f32 - 1.5).collect(),
                cout: n,
            };
            let r: Vec<f32> = (0..m * n).map(|i| (i % 9) as f32 * 0.5).collect();
            for residual in [None, Some(&r[..])] {
                let mut want = vec![0.0; m * n];
                pointwise(&x, m, k, &f.w, n, &mut want);
                bias_residual(&mut want, &f.b, residual);
                let mut got = vec![f32::NAN; m * n + 5];
                project(Isa::Portable, &x, m, k, &f, residual, &mut got);
                let mut fast = vec![f32::NAN; m * n + 5];
                project(Isa::detect(), &x, m, k, &f, residual, &mut fast);
                for (a, b) in got.iter().zip(&fast).take(m * n) {
                    assert!((a - b).abs() < 1e-4, "{m}x{k}->{n}: {a} vs {b}");
                }
                for (i, (g, v)) in got.iter().zip(&want).enumerate() {
                    assert!((g - v).abs() < 1e-4, "{m}x{k}->{n}: {i}: {g} vs {v}");
                }
                assert!(
                    got[m * n..].iter().all(|v| v.is_nan()),
                    "wrote past the output"
                );
            }
        }
    }

    /// The whole network gives the same features with every kernel set the CPU runs (the
    /// fused AVX-512 path and the GEMM + ring path of other CPUs).
    #[test]
    fn every_kernel_set_gives_the_same_features() {
        let dir = tempfile::tempdir().unwrap();
        fruits_testkit::synthetic_weights(dir.path(), 3);
        let net = MobileNetV2::from_tensors(&Tensors::read(dir.path()).unwrap()).unwrap();
        let x: Vec<f32> = (0..2 * INPUT_LEN)
            .map(|i| ((i * 7919 % 255) as f32 / 127.5) - 1.0)
            .collect();
        let mut first: Option<Vec<f32>> = None;
        for isa in Isa::supported() {
            let mut ws = Workspace {
                isa,
                ..Workspace::default()
            };
            let mut y = vec![0.0f32; 2 * FEATURES];
            net.forward_chunk(&x, &mut y, &mut ws);
            assert!(y.iter().any(|v| *v != 0.0), "{isa:?}: all zero");
            match &first {
                None => first = Some(y),
                Some(f) => {
                    for (a, b) in y.iter().zip(f) {
                        assert!(
                            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                            "{isa:?}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pointwise_is_a_matrix_product_with_its_epilogue() {
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let input = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let mut out = [0.0; 4];
        pointwise(&input, 2, 3, &w, 2, &mut out);
        assert_eq!(out, [9.0, 12.0, 3.0, 4.0]);
        bias_residual(&mut out, &[0.5, -100.0], Some(&[1.0, 2.0, 3.0, 4.0]));
        assert_eq!(out, [10.5, -86.0, 6.5, -92.0]);
        bias_residual(&mut out, &[1.0, 1.0], None);
        assert_eq!(out, [11.5, -85.0, 7.5, -91.0]);
        assert_eq!(relu6_biased(-1.0, 0.5), 0.0);
        assert_eq!(relu6_biased(7.0, 0.5), 6.0);
        assert_eq!(relu6_biased(1.0, 0.5), 1.5);
    }
}
