//! 1x1 convolutions: [`project`] (a block's linear projection, bias and residual added) picks
//! the kernel of the thread's [`Isa`]; the stem, the head and the expand convolutions of CPUs
//! without AVX-512 use [`portable::product`].

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod portable;

use super::{Isa, Kind};
use crate::layers::Folded;

/// `out[m, n] = input[m, k] · f.w + f.b (+ residual)`: a block's linear projection, with its
/// epilogue in the kernel's store where `isa` is AVX-512.
pub(crate) fn project(
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
    if isa.0 == Kind::Avx512 {
        let out = avx512::Out {
            dst: out.as_mut_ptr(),
            pixel_stride: n,
            slice_stride: 16,
            residual: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
            relu6: false,
        };
        // SAFETY: an `Isa` of kind Avx512 exists only where the CPU has AVX-512F
        // (`Isa::detect`); the asserts above bound every access `run` makes through `out`.
        unsafe { avx512::run(input.as_ptr(), m, k, f, &out) };
        return;
    }
    let _ = isa;
    portable::product(input, m, k, &f.w, n, out);
    portable::bias_residual(&mut out[..m * n], &f.b, residual);
}
