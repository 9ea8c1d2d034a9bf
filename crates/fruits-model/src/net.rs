//! The MobileNetV2 1.0/224 forward pass up to its global average pool.
//!
//! NHWC `f32`, batch norm folded into each convolution, TensorFlow's asymmetric 'SAME' padding
//! for stride 2. Where the time goes and what keeps it short:
//!
//! * 1x1 convolutions (~90 % of the FLOPs) run near the core's FMA peak. On AVX-512, a
//!   block's expand convolution writes straight into the depthwise ring and its projection
//!   adds bias and residual in its store (register blocks of 7 pixels x 48 channels, see
//!   [`kernels::pointwise::avx512`]); elsewhere, and for the stem and head, they are `gemm` crate GEMMs
//!   whose ReLU6 is applied by the consumer as it reads (depthwise or pool).
//! * 3x3 depthwise convolutions read three pre-activated input rows from a small ring with
//!   the taps held in registers (AVX-512, or portable code; see [`kernels::depthwise`]).
//! * Blocks run fused in bands of rows (expand, depthwise, project), so the large expanded
//!   activations stay in L2 instead of streaming through L3.
//! * Each thread keeps its buffers between calls (no page faults or zero-filling).

use std::sync::{Arc, Mutex};

use crate::kernels::depthwise::{self, Source};
use crate::kernels::pointwise::portable::product;
use crate::kernels::pointwise::project;
use crate::kernels::{im2col_3x3_s2, pad_before, Isa};
use crate::layers::{self, Block, Folded, FEATURES, INPUT_LEN, INPUT_SIDE};
use crate::tensors::Tensors;
use crate::ModelError;

/// First block run on several images at once (stage 4: 14x14 and smaller activations).
const BATCHED_FROM: usize = 7;
/// Images run together through the late blocks.
const LATE_BATCH: usize = 8;

/// MobileNetV2 1.0/224 cut at the global average pool: 224x224x3 in, 1280 features out.
///
/// Immutable once loaded: share one instance (in an `Arc`) between threads.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stem: Folded,
    blocks: Vec<Block>,
    head: Folded,
    weights_hash: String,
    workers: Workers,
    /// The kernels every call runs ([`Isa::from_env`]).
    isa: Isa,
}

/// The threads [`MobileNetV2::forward`] splits a call over: started on first use, kept for
/// the model's life, so that each keeps its workspace (no allocation or zero-filling per
/// call). Clones share them.
#[derive(Debug, Clone, Default)]
struct Workers(Arc<Mutex<Option<Arc<rayon::ThreadPool>>>>);

impl Workers {
    /// A pool of `threads` threads (the one kept, or a new one if it has another size);
    /// `None` if the OS starts no threads.
    fn pool(&self, threads: usize) -> Option<Arc<rayon::ThreadPool>> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = kept.as_ref().filter(|p| p.current_num_threads() == threads) {
            return Some(pool.clone());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fruits-model-{i}"))
            .build()
            .ok()?;
        Some(kept.insert(Arc::new(pool)).clone())
    }
}

impl MobileNetV2 {
    /// Builds the network from TF-slim named tensors (see [`Tensors`] and
    /// [`tensor_shapes`](crate::tensor_shapes)), checking every shape, with the fastest
    /// kernels this CPU runs or those `FRUITS_ISA` names (`avx512`, `avx2`, `portable`;
    /// refused where the CPU lacks them).
    pub fn from_tensors(t: &Tensors) -> Result<MobileNetV2, ModelError> {
        let (stem, blocks, head) = layers::load(t)?;
        Ok(MobileNetV2 {
            stem,
            blocks,
            head,
            weights_hash: layers::weights_hash(t)?,
            workers: Workers::default(),
            isa: Isa::from_env()?,
        })
    }

    /// The kernel set it runs: `avx512`, `avx2` or `portable`.
    pub fn kernels(&self) -> &'static str {
        self.isa.name()
    }

    /// The kernel sets this CPU runs, fastest first.
    pub fn kernel_sets() -> Vec<&'static str> {
        Isa::supported().into_iter().map(Isa::name).collect()
    }

    /// The same network on the kernel set `name` (one of [`MobileNetV2::kernel_sets`]), or
    /// `None` where this CPU does not run it.
    pub fn with_kernels(mut self, name: &str) -> Option<MobileNetV2> {
        self.isa = Isa::named(name).ok()?;
        Some(self)
    }

    /// `sha256:` and the hex SHA-256 of the tensors the network was built from (in
    /// [`tensor_shapes`](crate::tensor_shapes) order: name, shape, little-endian values), so
    /// the same weights give the same hash whatever file they came from.
    pub fn weights_hash(&self) -> &str {
        &self.weights_hash
    }

    /// Features of `n` images: `inputs` holds `n * INPUT_LEN` values, `out` receives
    /// `n * FEATURES`. Splits the images over `threads` threads (1 = the calling thread); the
    /// threads are the model's own, started on first use and kept, each with its workspace.
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
                ws.isa = self.isa;
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
        let Some(pool) = self.workers.pool(threads) else {
            // No threads could be started: the calling thread does all of it.
            return self.forward(inputs, out, 1);
        };
        pool.scope(|s| {
            for (xs, ys) in inputs
                .chunks(per * INPUT_LEN)
                .zip(out.chunks_mut(per * FEATURES))
            {
                s.spawn(move |_| self.forward(xs, ys, 1));
            }
        });
    }

    /// Up to [`LATE_BATCH`] images: each alone through the large early layers, then together
    /// from block [`BATCHED_FROM`] on, where one GEMM over all of them is far more efficient
    /// than several 14x14 or 7x7 ones.
    fn forward_chunk(&self, inputs: &[f32], out: &mut [f32], ws: &mut Workspace) {
        let n = inputs.len() / INPUT_LEN;
        let mut batch = std::mem::take(&mut ws.batch);
        let mut shape = (0, 0, 0);
        for (i, x) in inputs.chunks_exact(INPUT_LEN).enumerate() {
            // Stem: 3x3 stride-2 convolution as im2col + GEMM; its bias and ReLU6 are applied
            // where block 0's depthwise convolution reads it.
            let (h, w) = (INPUT_SIDE.div_ceil(2), INPUT_SIDE.div_ceil(2));
            im2col_3x3_s2(x, INPUT_SIDE, INPUT_SIDE, grow(&mut ws.im2col, h * w * 27));
            let stem = grow(&mut ws.act, h * w * self.stem.cout);
            product(&ws.im2col, h * w, 27, &self.stem.w, self.stem.cout, stem);
            let pending = Some(&self.stem.b[..]);
            let stem_shape = (h, w, self.stem.cout);
            shape = self.run_blocks(&self.blocks[..BATCHED_FROM], 1, stem_shape, pending, ws);
            let len = shape.0 * shape.1 * shape.2;
            grow(&mut batch, n * len)[i * len..][..len].copy_from_slice(&ws.act[..len]);
        }
        ws.batch = std::mem::replace(&mut ws.act, batch);
        let (h, w, c) = self.run_blocks(&self.blocks[BATCHED_FROM..], n, shape, None, ws);
        let head = grow(&mut ws.head, n * h * w * FEATURES);
        product(&ws.act, n * h * w, c, &self.head.w, FEATURES, head);
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

    /// Runs `blocks` on `n` images of `(h, w, c)` held in `ws.act`; the result is left there.
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
            let out = grow(&mut ws.next, n * ho * wo * cout);
            // Whole images: expand all `n` at once.
            if let (true, Some(e), false) = (whole, &b.expand, fused) {
                let mid = grow(&mut ws.expanded, n * h * w * mid_c);
                product(&ws.act[..n * h * w * c], n * h * w, c, &e.w, mid_c, mid);
            }
            let dw_all = grow(
                &mut ws.depthwise,
                if whole { n * ho } else { band } * wo * mid_c,
            );
            for img in 0..n {
                let x = &ws.act[img * h * w * c..][..h * w * c];
                ws.ring.start(w, mid_c);
                let mut next = 0; // the next input row to expand
                for oy0 in (0..ho).step_by(band) {
                    let oy1 = (oy0 + band).min(ho);
                    let hi = ((oy1 - 1) * s + 3).saturating_sub(pt).min(h);
                    let src = match (&b.expand, whole) {
                        (Some(e), _) if fused => Source::Expand { x, k: c, e },
                        (Some(e), true) => Source::Rows {
                            src: &ws.expanded[img * h * w * mid_c..][..h * w * mid_c],
                            first: 0,
                            pre: Some(&e.b),
                        },
                        (Some(e), false) => {
                            let rows = hi - next;
                            let mid = grow(&mut ws.expanded, rows * w * mid_c);
                            let x = &x[next * w * c..hi * w * c];
                            product(x, rows * w, c, &e.w, mid_c, mid);
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
                let residual = b.residual.then(|| &ws.act[..out.len()]);
                project(isa, dw_all, n * ho * wo, mid_c, &b.project, residual, out);
            }
            pending = None;
            // The block's output is the next block's input.
            std::mem::swap(&mut ws.act, &mut ws.next);
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

/// Reused buffers of one thread, named by what they hold.
#[derive(Default)]
struct Workspace {
    /// The activations a block reads (the stem's output, then each block's output).
    act: Vec<f32>,
    /// The output a block writes; swapped into `act` when the block is done.
    next: Vec<f32>,
    /// A block's expanded activations (whole images, or a band of rows).
    expanded: Vec<f32>,
    /// A block's depthwise output.
    depthwise: Vec<f32>,
    /// The head convolution's output, before the pool.
    head: Vec<f32>,
    /// The stem's im2col matrix.
    im2col: Vec<f32>,
    /// Every image of a chunk, gathered for the blocks run on all of them at once.
    batch: Vec<f32>,
    /// The depthwise input rows.
    ring: depthwise::Ring,
    /// The kernels this thread runs.
    isa: Isa,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole network gives the same features with every kernel set the CPU runs (the
    /// fused AVX-512 path and the GEMM + ring path of other CPUs).
    #[test]
    fn every_kernel_set_gives_the_same_features() {
        // Made-up weights of the real shapes (batch norms kept near identity).
        let mut t = Tensors::new("synthetic");
        for (i, (name, shape)) in crate::tensor_shapes().into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let fan_in = n / shape.last().copied().unwrap_or(1).max(1);
            let values = (0..n)
                .map(|j| {
                    let r = ((i * 131 + j * 7919) % 1000) as f32 / 500.0 - 1.0;
                    if name.ends_with("variance") || name.ends_with("gamma") {
                        1.0 + 0.1 * r
                    } else if name.ends_with("beta") || name.ends_with("mean") {
                        0.1 * r
                    } else {
                        r * (3.0 / fan_in.max(1) as f32).sqrt()
                    }
                })
                .collect();
            t.insert(name, shape, values);
        }
        let net = MobileNetV2::from_tensors(&t).unwrap();
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
    fn threads_are_kept_between_calls() {
        let workers = Workers::default();
        let first = workers.pool(2).unwrap();
        assert!(Arc::ptr_eq(&first, &workers.pool(2).unwrap()));
        assert_eq!(workers.pool(3).unwrap().current_num_threads(), 3);
    }
}
