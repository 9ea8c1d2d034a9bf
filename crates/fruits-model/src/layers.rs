//! What the network is: the MobileNetV2 1.0/224 architecture table, the TF-slim names and
//! shapes of its tensors, and its layers as the kernels take them (batch norm folded into
//! each convolution). The one place that knows the architecture: loading, and any code that
//! needs the tensor list ([`tensor_shapes`]), read it from here.

use crate::tensors::Tensors;
use crate::ModelError;

/// Values per image the network produces (its last convolution's channels).
pub const FEATURES: usize = 1280;
/// Input side the network takes.
pub const INPUT_SIDE: usize = 224;
/// Values of one input image (224 x 224 x 3, HWC, scaled to `[-1, 1]`).
pub const INPUT_LEN: usize = INPUT_SIDE * INPUT_SIDE * 3;

const BN_EPSILON: f32 = 1e-3;
/// Channels of the stem's output.
const STEM_CHANNELS: usize = 32;
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

/// One convolution of the table: its TF-slim prefix, kernel tensor suffix and kernel shape.
pub(crate) struct Conv {
    prefix: String,
    kernel: &'static str,
    shape: [usize; 4],
}

impl Conv {
    fn new(prefix: impl Into<String>, kernel: &'static str, shape: [usize; 4]) -> Conv {
        Conv {
            prefix: prefix.into(),
            kernel,
            shape,
        }
    }

    fn depthwise(&self) -> bool {
        self.kernel.starts_with("depthwise")
    }

    /// Output channels (for depthwise kernels `[3, 3, c, 1]`: `c`).
    fn cout(&self) -> usize {
        if self.depthwise() {
            self.shape[2]
        } else {
            self.shape[3]
        }
    }

    fn weights(&self) -> String {
        format!("{}_{}", self.prefix, self.kernel)
    }

    fn batch_norm(&self, field: &str) -> String {
        format!("{}_BatchNorm_{field}", self.prefix)
    }

    /// Its tensors: kernel, then batch norm.
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut t = vec![(self.weights(), self.shape.to_vec())];
        for f in ["gamma", "beta", "moving_mean", "moving_variance"] {
            t.push((self.batch_norm(f), vec![self.cout()]));
        }
        t
    }
}

/// One block of the table.
struct BlockConvs {
    expand: Option<Conv>,
    depthwise: Conv,
    project: Conv,
    stride: usize,
    residual: bool,
}

/// The table, convolution by convolution: stem, blocks, head.
fn table() -> (Conv, Vec<BlockConvs>, Conv) {
    let stem = Conv::new("Conv", "weights", [3, 3, 3, STEM_CHANNELS]);
    let mut blocks = Vec::new();
    let mut cin = STEM_CHANNELS;
    for (expansion, cout, repeats, first_stride) in STAGES {
        for r in 0..repeats {
            let p = match blocks.len() {
                0 => "expanded_conv".to_string(),
                i => format!("expanded_conv_{i}"),
            };
            let mid = cin * expansion;
            let expand = (expansion != 1)
                .then(|| Conv::new(format!("{p}_expand"), "weights", [1, 1, cin, mid]));
            let stride = if r == 0 { first_stride } else { 1 };
            blocks.push(BlockConvs {
                expand,
                depthwise: Conv::new(
                    format!("{p}_depthwise"),
                    "depthwise_weights",
                    [3, 3, mid, 1],
                ),
                project: Conv::new(format!("{p}_project"), "weights", [1, 1, mid, cout]),
                stride,
                residual: stride == 1 && cin == cout,
            });
            cin = cout;
        }
    }
    let head = Conv::new("Conv_1", "weights", [1, 1, cin, FEATURES]);
    (stem, blocks, head)
}

/// Every tensor the network reads, as `(TF-slim name, shape)`, in network order.
pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
    let (stem, blocks, head) = table();
    let mut t = stem.tensors();
    for b in &blocks {
        if let Some(e) = &b.expand {
            t.extend(e.tensors());
        }
        t.extend(b.depthwise.tensors());
        t.extend(b.project.tensors());
    }
    t.extend(head.tensors());
    t
}

/// The hash [`MobileNetV2::weights_hash`](crate::MobileNetV2::weights_hash) reports.
pub(crate) fn weights_hash(t: &Tensors) -> Result<String, ModelError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, shape) in tensor_shapes() {
        let values = t.take(&name, &shape)?;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in &shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The network's layers, loaded from `t` with every shape checked: stem, blocks, head.
pub(crate) fn load(t: &Tensors) -> Result<(Folded, Vec<Block>, Folded), ModelError> {
    let (stem, table, head) = table();
    let blocks = table
        .iter()
        .map(|b| {
            Ok(Block {
                expand: b.expand.as_ref().map(|e| Folded::load(t, e)).transpose()?,
                depthwise: Folded::load(t, &b.depthwise)?,
                project: Folded::load(t, &b.project)?,
                stride: b.stride,
                residual: b.residual,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok((Folded::load(t, &stem)?, blocks, Folded::load(t, &head)?))
}

/// A convolution with its batch norm folded in: `w` is `[taps * cin, cout]` row-major
/// (for depthwise: `[9, c]`), `b` is `[cout]`.
#[derive(Debug, Clone)]
pub(crate) struct Folded {
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
    pub(crate) cout: usize,
}

impl Folded {
    /// Loads `conv`'s kernel and its batch norm, folded.
    fn load(t: &Tensors, conv: &Conv) -> Result<Folded, ModelError> {
        let mut w = t.take(&conv.weights(), &conv.shape)?;
        let cout = conv.cout();
        let bn = |f: &str| t.take(&conv.batch_norm(f), &[cout]);
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

/// An inverted residual block: optional 1x1 expand, 3x3 depthwise, 1x1 linear projection.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) expand: Option<Folded>,
    pub(crate) depthwise: Folded,
    pub(crate) project: Folded,
    pub(crate) stride: usize,
    pub(crate) residual: bool,
}
