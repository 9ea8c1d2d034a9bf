//! The kernels of the forward pass, one file per instruction set (as `tract-linalg` keeps
//! them), and the token that says which set a thread may run.
//!
//! * [`pointwise`]: 1x1 convolutions: the `gemm` crate's GEMM everywhere
//!   ([`pointwise::portable`]), and on AVX-512 a register-blocked kernel with its epilogue in
//!   the store ([`pointwise::avx512`]).
//! * [`depthwise`]: 3x3 depthwise convolutions from a ring of three rows: portable, AVX2 + FMA
//!   and AVX-512 kernels.
//!
//! Every `unsafe` call into an instruction-set kernel rests on one invariant: the CPU runs
//! that set. [`Isa`] holds it: its only constructors detect the CPU's features at run time,
//! and its variant is private to this module, so no other code can name a set the CPU lacks.

pub(crate) mod depthwise;
pub(crate) mod pointwise;
#[cfg(test)]
mod tests;

use crate::ModelError;

/// A kernel set this CPU runs. Only run-time detection makes one ([`Isa::detect`],
/// [`Isa::from_env`], [`Isa::supported`], and in tests [`Isa::portable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa(Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

/// The variable that chooses a kernel set for measurement and tests ([`Isa::from_env`]).
pub(crate) const ISA_VAR: &str = "FRUITS_ISA";

impl Isa {
    /// The fastest set this CPU runs.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa(Kind::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa(Kind::Avx2);
            }
        }
        Isa(Kind::Portable)
    }

    /// The set [`ISA_VAR`] names, or the fastest this CPU runs where it is unset or empty;
    /// an error where it names no set, or one this CPU lacks.
    pub(crate) fn from_env() -> Result<Isa, ModelError> {
        match std::env::var(ISA_VAR) {
            Ok(name) if !name.is_empty() => Isa::named(&name),
            _ => Ok(Isa::detect()),
        }
    }

    /// The set called `name` (see [`Isa::name`]), if this CPU runs it.
    pub(crate) fn named(name: &str) -> Result<Isa, ModelError> {
        let supported = Isa::supported();
        if let Some(isa) = supported.iter().find(|i| i.name() == name) {
            return Ok(*isa);
        }
        Err(ModelError::Isa {
            requested: name.to_string(),
            runs: supported.iter().map(|i| i.name()).collect(),
        })
    }

    /// Its name, as [`ISA_VAR`] gives it.
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            Kind::Portable => "portable",
        }
    }

    /// The portable set (any CPU).
    #[cfg(test)]
    pub(crate) fn portable() -> Isa {
        Isa(Kind::Portable)
    }

    /// Every set this CPU can run, fastest first.
    pub(crate) fn supported() -> Vec<Isa> {
        let mut all = vec![Isa::detect()];
        #[cfg(target_arch = "x86_64")]
        if all[0] == Isa(Kind::Avx512) && is_x86_feature_detected!("fma") {
            all.push(Isa(Kind::Avx2));
        }
        all.push(Isa(Kind::Portable));
        all.dedup();
        all
    }

    /// Whether [`depthwise::Source::Expand`] is faster with these kernels than a GEMM
    /// followed by [`depthwise::Source::Rows`].
    pub(crate) fn expands_in_ring(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.0 == Kind::Avx512 {
            return true;
        }
        false
    }
}

impl Default for Isa {
    fn default() -> Isa {
        Isa::detect()
    }
}

/// TensorFlow 'SAME' padding before the first row/column for a 3-tap kernel.
pub(crate) fn pad_before(size: usize, stride: usize) -> usize {
    let out = size.div_ceil(stride);
    ((out - 1) * stride + 3).saturating_sub(size) / 2
}

/// ReLU6 of a raw GEMM output `x` with its per-channel bias `b`.
#[inline(always)]
pub(crate) fn relu6_biased(x: f32, b: f32) -> f32 {
    (x + b).clamp(0.0, 6.0)
}

/// im2col of a 3x3 stride-2 'SAME' convolution over 3-channel pixels: row `oy * wo + ox` of
/// `col` holds the 27 taps (zero outside the image).
pub(crate) fn im2col_3x3_s2(input: &[f32], h: usize, w: usize, col: &mut [f32]) {
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
