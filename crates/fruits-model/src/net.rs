//! The MobileNetV2 1.0/224 forward pass up to its global average pool.
//!
//! NHWC `f32`, batch norm folded into each convolution, 1x1 convolutions as one GEMM each
//! (`gemm` crate, runtime-dispatched SIMD), 3x3 depthwise convolutions as channel-vectorised
//! loops, TensorFlow's asymmetric 'SAME' padding for stride 2.

use crate::weights::Tensors;
use crate::ModelError;

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
    fn run_blocks<'m>(
        &'m self,
        blocks: &'m [Block],
        n: usize,
        shape: (usize, usize, usize),
        mut pending: Option<&'m [f32]>,
        ws: &mut Workspace,
    ) -> (usize, usize, usize) {
        let (mut h, mut w, mut c) = shape;
        for b in blocks {
            // Expand: a raw GEMM; its bias and ReLU6 are applied as the depthwise reads it.
            let (mid, mid_c): (&[f32], usize) = match &b.expand {
                Some(e) => {
                    let mid = grow(&mut ws.b, n * h * w * e.cout);
                    pointwise(&ws.a[..n * h * w * c], n * h * w, c, &e.w, e.cout, mid);
                    pending = Some(&e.b);
                    (mid, e.cout)
                }
                None => (&ws.a[..n * h * w * c], c),
            };
            let (ho, wo) = (h.div_ceil(b.stride), w.div_ceil(b.stride));
            let dw = grow(&mut ws.c, n * ho * wo * mid_c);
            for (src, dst) in mid
                .chunks_exact(h * w * mid_c)
                .zip(dw.chunks_exact_mut(ho * wo * mid_c))
            {
                depthwise_3x3(
                    src,
                    (h, w, mid_c),
                    b.stride,
                    pending,
                    &b.depthwise,
                    dst,
                    &mut ws.ring,
                );
            }
            pending = None;
            let cout = b.project.cout;
            let proj = grow(&mut ws.d, n * ho * wo * cout);
            pointwise(dw, n * ho * wo, mid_c, &b.project.w, cout, proj);
            let residual = b.residual.then(|| &ws.a[..proj.len()]);
            bias_residual(proj, &b.project.b, residual);
            std::mem::swap(&mut ws.a, &mut ws.d);
            (h, w, c) = (ho, wo, cout);
        }
        (h, w, c)
    }
}

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
    ring: Vec<f32>,
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

/// ReLU6 of a raw GEMM output `x` with its per-channel bias `b`.
#[inline(always)]
fn relu6_biased(x: f32, b: f32) -> f32 {
    (x + b).clamp(0.0, 6.0)
}

/// 3x3 depthwise convolution + bias + ReLU6 of one image of `(h, w, c)` channels-last values.
/// `pre`: the bias of a ReLU6 still to apply to each input value as it is read (see
/// [`relu6_biased`]); the padding stays zero.
#[allow(clippy::too_many_arguments)]
fn depthwise_3x3(
    input: &[f32],
    (h, w, c): (usize, usize, usize),
    stride: usize,
    pre: Option<&[f32]>,
    f: &Folded,
    out: &mut [f32],
    ring: &mut Vec<f32>,
) {
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    assert!(input.len() >= h * w * c && out.len() >= ho * wo * c);
    assert!(f.w.len() == 9 * c && f.b.len() == c && pre.is_none_or(|p| p.len() == c));
    #[cfg(target_arch = "x86_64")]
    {
        if c % 16 == 0 && is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the asserts above bound every access.
            unsafe { avx512::depthwise(input, (h, w, c), stride, pre, f, out, ring) };
            return;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { depthwise_3x3_avx2(input, (h, w, c), stride, pre, f, out) };
            return;
        }
    }
    depthwise_3x3_generic(input, (h, w, c), stride, pre, f, out);
}

/// [`depthwise_3x3_generic`] compiled for AVX2 + FMA (call only where present).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_3x3_avx2(
    input: &[f32],
    shape: (usize, usize, usize),
    stride: usize,
    pre: Option<&[f32]>,
    f: &Folded,
    out: &mut [f32],
) {
    depthwise_3x3_generic(input, shape, stride, pre, f, out);
}

/// Portable [`depthwise_3x3`]: pixel by pixel, channels as the vectorised inner loop.
#[inline(always)]
fn depthwise_3x3_generic(
    input: &[f32],
    (h, w, c): (usize, usize, usize),
    stride: usize,
    pre: Option<&[f32]>,
    f: &Folded,
    out: &mut [f32],
) {
    let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
    let (pt, pl) = (pad_before(h, stride), pad_before(w, stride));
    for oy in 0..ho {
        for ox in 0..wo {
            let acc = &mut out[(oy * wo + ox) * c..][..c];
            acc.copy_from_slice(&f.b);
            for ky in 0..3 {
                let iy = (oy * stride + ky).wrapping_sub(pt);
                if iy >= h {
                    continue;
                }
                for kx in 0..3 {
                    let ix = (ox * stride + kx).wrapping_sub(pl);
                    if ix >= w {
                        continue;
                    }
                    let src = &input[(iy * w + ix) * c..][..c];
                    let k = &f.w[(ky * 3 + kx) * c..][..c];
                    match pre {
                        Some(p) => {
                            for (((a, x), k), p) in acc.iter_mut().zip(src).zip(k).zip(p) {
                                *a = relu6_biased(*x, *p).mul_add(*k, *a);
                            }
                        }
                        None => {
                            for ((a, x), k) in acc.iter_mut().zip(src).zip(k) {
                                *a = x.mul_add(*k, *a);
                            }
                        }
                    }
                }
            }
            for a in acc.iter_mut() {
                *a = a.clamp(0.0, 6.0);
            }
        }
    }
}

/// The AVX-512 depthwise kernel.
///
/// The input rows an output row needs are copied once each, read in order and with `pre`
/// applied, into a ring of three rows that stays in L2: each ring row is laid out 16-channel
/// slice by slice, padded with a zero column on each side. Each slice of an output row is
/// then computed [`TILE`] pixels at a time with its 9 taps held in registers, no bounds
/// checks, and each loaded input vector serving up to three taps.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{pad_before, Folded};

    /// Channels per vector.
    const L: usize = 16;
    /// Output pixels computed together.
    const TILE: usize = 4;

    /// See [`super::depthwise_3x3`]; `c` must be a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn depthwise(
        input: &[f32],
        (h, w, c): (usize, usize, usize),
        stride: usize,
        pre: Option<&[f32]>,
        f: &Folded,
        out: &mut [f32],
        ring: &mut Vec<f32>,
    ) {
        let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
        let (pt, pl) = (pad_before(h, stride), pad_before(w, stride));
        // Ring rows hold input columns -1..=w; 'SAME' padding of a 3-tap kernel never reads
        // further out.
        debug_assert!(pl <= 1 && (wo - 1) * stride + 2 <= w + pl);
        let slice_len = (w + 2) * L;
        let row_len = slice_len * (c / L);
        if ring.len() < 4 * row_len {
            ring.resize(4 * row_len, 0.0);
        }
        // Rows 0..3: the ring; row 3: zeros (rows above or below the image).
        ring[3 * row_len..4 * row_len].fill(0.0);
        let ring = ring.as_mut_ptr();
        let zero = _mm512_setzero_ps();
        let six = _mm512_set1_ps(6.0);
        let mut held = [usize::MAX; 3];
        for oy in 0..ho {
            let mut rows = [ring.add(3 * row_len) as *const f32; 3];
            for (ky, row) in rows.iter_mut().enumerate() {
                let iy = (oy * stride + ky).wrapping_sub(pt);
                if iy >= h {
                    continue;
                }
                let slot = iy % 3;
                let dst = ring.add(slot * row_len);
                if held[slot] != iy {
                    held[slot] = iy;
                    fill_row(input.as_ptr().add(iy * w * c), w, c, pre, dst);
                }
                *row = dst;
            }
            let dst = out.as_mut_ptr().add(oy * wo * c);
            for ch in (0..c).step_by(L) {
                let mut k = [zero; 9];
                for (t, k) in k.iter_mut().enumerate() {
                    *k = _mm512_loadu_ps(f.w.as_ptr().add(t * c + ch));
                }
                let bias = _mm512_loadu_ps(f.b.as_ptr().add(ch));
                let off = ch / L * slice_len;
                let rows = rows.map(|r| r.add(off));
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
    }

    /// Copies one input row (`w` pixels of `c` channels, `pre` applied) into ring row `dst`,
    /// 16-channel slice by slice, with a zero column before and after each slice.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn fill_row(src: *const f32, w: usize, c: usize, pre: Option<&[f32]>, dst: *mut f32) {
        let slice_len = (w + 2) * L;
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

    /// [`TILE`] output pixels at stride `S` from ring rows starting at padded column `first`
    /// (`N` = the input columns they read), stored `c` floats apart.
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

    /// Every path (AVX-512 where the CPU has it, AVX2, portable) against a naive f64 loop,
    /// with and without a pending ReLU6, at both strides, odd and even sizes.
    #[test]
    fn depthwise_matches_naive_reference() {
        for (h, w, c) in [(5, 4, 16), (7, 7, 32), (8, 11, 48), (3, 2, 8)] {
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
            for (stride, pre) in [
                (1, None),
                (2, None),
                (1, Some(&pre_bias[..])),
                (2, Some(&pre_bias[..])),
            ] {
                let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
                let mut fast = vec![0.0; ho * wo * c];
                depthwise_3x3(
                    &input,
                    (h, w, c),
                    stride,
                    pre,
                    &f,
                    &mut fast,
                    &mut Vec::new(),
                );
                let mut portable = vec![0.0; ho * wo * c];
                depthwise_3x3_generic(&input, (h, w, c), stride, pre, &f, &mut portable);
                let (pt, pl) = (
                    pad_before(h, stride) as isize,
                    pad_before(w, stride) as isize,
                );
                for oy in 0..ho {
                    for ox in 0..wo {
                        for ch in 0..c {
                            let mut s = f.b[ch] as f64;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (oy * stride + ky) as isize - pt;
                                    let ix = (ox * stride + kx) as isize - pl;
                                    if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                                        let x = input[(iy as usize * w + ix as usize) * c + ch];
                                        let x = pre.map_or(x, |p| relu6_biased(x, p[ch]));
                                        s += x as f64 * f.w[(ky * 3 + kx) * c + ch] as f64;
                                    }
                                }
                            }
                            let at = (oy * wo + ox) * c + ch;
                            for got in [fast[at], portable[at]] {
                                assert!(
                                    (got as f64 - s.clamp(0.0, 6.0)).abs() < 1e-4,
                                    "{h}x{w}x{c} stride {stride} pre {} at {oy},{ox},{ch}",
                                    pre.is_some()
                                );
                            }
                        }
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
