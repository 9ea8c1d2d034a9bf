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
            let mut ws = Workspace::default();
            for (x, y) in inputs
                .chunks(LATE_BATCH * INPUT_LEN)
                .zip(out.chunks_mut(LATE_BATCH * FEATURES))
            {
                self.forward_chunk(x, y, &mut ws);
            }
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
        late.clear();
        let mut shape = (0, 0, 0);
        for x in inputs.chunks_exact(INPUT_LEN) {
            // Stem: 3x3 stride-2 convolution as im2col + GEMM.
            let (h, w) = (INPUT_SIDE.div_ceil(2), INPUT_SIDE.div_ceil(2));
            im2col_3x3_s2(x, INPUT_SIDE, INPUT_SIDE, 3, &mut ws.col);
            ws.a.resize(h * w * 32, 0.0);
            pointwise(&ws.col, h * w, 27, &self.stem, true, &mut ws.a);
            shape = self.run_blocks(&self.blocks[..BATCHED_FROM], 1, (h, w, 32), ws);
            late.extend_from_slice(&ws.a[..shape.0 * shape.1 * shape.2]);
        }
        ws.late = std::mem::replace(&mut ws.a, late);
        let (h, w, c) = self.run_blocks(&self.blocks[BATCHED_FROM..], n, shape, ws);
        ws.b.resize(n * h * w * FEATURES, 0.0);
        pointwise(&ws.a, n * h * w, c, &self.head, true, &mut ws.b);
        // Global average pool, image by image.
        let inv = 1.0 / (h * w) as f32;
        for (pixels, o) in
            ws.b.chunks_exact(h * w * FEATURES)
                .zip(out.chunks_exact_mut(FEATURES))
        {
            o.fill(0.0);
            for row in pixels.chunks_exact(FEATURES) {
                for (o, v) in o.iter_mut().zip(row) {
                    *o += v;
                }
            }
            o.iter_mut().for_each(|o| *o *= inv);
        }
    }

    /// Runs `blocks` on `n` images of `(h, w, c)` held in `ws.a`; the result is left in `ws.a`.
    fn run_blocks(
        &self,
        blocks: &[Block],
        n: usize,
        shape: (usize, usize, usize),
        ws: &mut Workspace,
    ) -> (usize, usize, usize) {
        let (mut h, mut w, mut c) = shape;
        for b in blocks {
            let mid_c;
            let mid: &[f32] = if let Some(e) = &b.expand {
                ws.b.resize(n * h * w * e.cout, 0.0);
                pointwise(&ws.a, n * h * w, c, e, true, &mut ws.b);
                mid_c = e.cout;
                &ws.b
            } else {
                mid_c = c;
                &ws.a
            };
            let (ho, wo) = (h.div_ceil(b.stride), w.div_ceil(b.stride));
            ws.c.resize(n * ho * wo * mid_c, 0.0);
            for (src, dst) in mid
                .chunks_exact(h * w * mid_c)
                .zip(ws.c.chunks_exact_mut(ho * wo * mid_c))
                .take(n)
            {
                depthwise_3x3(src, h, w, mid_c, b.stride, &b.depthwise, dst);
            }
            let cout = b.project.cout;
            ws.d.resize(n * ho * wo * cout, 0.0);
            pointwise(&ws.c, n * ho * wo, mid_c, &b.project, false, &mut ws.d);
            if b.residual {
                for (o, i) in ws.d.iter_mut().zip(&ws.a) {
                    *o += i;
                }
            }
            std::mem::swap(&mut ws.a, &mut ws.d);
            (h, w, c) = (ho, wo, cout);
        }
        (h, w, c)
    }
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
}

/// TensorFlow 'SAME' padding before the first row/column for a 3-tap kernel.
fn pad_before(size: usize, stride: usize) -> usize {
    let out = size.div_ceil(stride);
    ((out - 1) * stride + 3).saturating_sub(size) / 2
}

fn im2col_3x3_s2(input: &[f32], h: usize, w: usize, c: usize, col: &mut Vec<f32>) {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let (pt, pl) = (pad_before(h, 2), pad_before(w, 2));
    col.clear();
    col.resize(ho * wo * 9 * c, 0.0);
    for oy in 0..ho {
        for ox in 0..wo {
            let dst = &mut col[(oy * wo + ox) * 9 * c..][..9 * c];
            for ky in 0..3 {
                let iy = (oy * 2 + ky) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..3 {
                    let ix = (ox * 2 + kx) as isize - pl as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let src = &input[(iy as usize * w + ix as usize) * c..][..c];
                    dst[(ky * 3 + kx) * c..][..c].copy_from_slice(src);
                }
            }
        }
    }
}

/// `out[m, cout] = act(input[m, k] · w[k, cout] + b)`.
fn pointwise(input: &[f32], m: usize, k: usize, f: &Folded, relu6: bool, out: &mut [f32]) {
    let n = f.cout;
    debug_assert_eq!(input.len(), m * k);
    debug_assert_eq!(f.w.len(), k * n);
    assert!(out.len() >= m * n);
    // SAFETY: the asserts above bound every index gemm touches: dst is m x n with row stride n,
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
            f.w.as_ptr(),
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
    bias_act(&mut out[..m * n], &f.b, relu6);
}

fn bias_act(out: &mut [f32], b: &[f32], relu6: bool) {
    for row in out.chunks_exact_mut(b.len()) {
        for (o, bias) in row.iter_mut().zip(b) {
            let v = *o + bias;
            *o = if relu6 { v.clamp(0.0, 6.0) } else { v };
        }
    }
}

fn depthwise_3x3(
    input: &[f32],
    h: usize,
    w: usize,
    c: usize,
    stride: usize,
    f: &Folded,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { depthwise_3x3_avx512(input, h, w, c, stride, f, out) };
            return;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { depthwise_3x3_avx2(input, h, w, c, stride, f, out) };
            return;
        }
    }
    depthwise_3x3_generic(input, h, w, c, stride, f, out);
}

/// [`depthwise_3x3_generic`] compiled for a set of CPU features (call only where present).
macro_rules! depthwise_with_features {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            input: &[f32],
            h: usize,
            w: usize,
            c: usize,
            stride: usize,
            f: &Folded,
            out: &mut [f32],
        ) {
            depthwise_3x3_generic(input, h, w, c, stride, f, out);
        }
    };
}
depthwise_with_features!(depthwise_3x3_avx2, "avx2,fma");
depthwise_with_features!(depthwise_3x3_avx512, "avx512f,avx2,fma");

/// 3x3 depthwise convolution + bias + ReLU6; channels are the vectorised inner loop.
#[inline(always)]
fn depthwise_3x3_generic(
    input: &[f32],
    h: usize,
    w: usize,
    c: usize,
    stride: usize,
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
                let iy = (oy * stride + ky) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..3 {
                    let ix = (ox * stride + kx) as isize - pl as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let src = &input[(iy as usize * w + ix as usize) * c..][..c];
                    let k = &f.w[(ky * 3 + kx) * c..][..c];
                    for ((a, x), k) in acc.iter_mut().zip(src).zip(k) {
                        *a = x.mul_add(*k, *a);
                    }
                }
            }
            for a in acc.iter_mut() {
                *a = a.clamp(0.0, 6.0);
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

    #[test]
    fn depthwise_matches_naive_reference() {
        let (h, w, c) = (5, 4, 8);
        let input: Vec<f32> = (0..h * w * c)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let f = Folded {
            w: (0..9 * c)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2)
                .collect(),
            b: (0..c).map(|i| i as f32 * 0.05).collect(),
            cout: c,
        };
        for stride in [1, 2] {
            let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
            let mut out = vec![0.0; ho * wo * c];
            depthwise_3x3(&input, h, w, c, stride, &f, &mut out);
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
                                    s += input[(iy as usize * w + ix as usize) * c + ch] as f64
                                        * f.w[(ky * 3 + kx) * c + ch] as f64;
                                }
                            }
                        }
                        let got = out[(oy * wo + ox) * c + ch] as f64;
                        assert!(
                            (got - s.clamp(0.0, 6.0)).abs() < 1e-5,
                            "stride {stride} at {oy},{ox},{ch}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pointwise_is_a_matrix_product() {
        let f = Folded {
            w: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            b: vec![0.5, -100.0],
            cout: 2,
        };
        let input = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let mut out = [0.0; 4];
        pointwise(&input, 2, 3, &f, false, &mut out);
        assert_eq!(out, [9.5, -88.0, 3.5, -96.0]);
        pointwise(&input, 2, 3, &f, true, &mut out);
        assert_eq!(out, [6.0, 0.0, 3.5, 0.0]);
    }
}
