//! The portable 1x1 convolution: the `gemm` crate's GEMM (which picks its own instruction
//! set), then the epilogue.

/// `out[m, n] = input[m, k] · w[k, n]` (the raw product: bias and activation come later).
pub(crate) fn product(input: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
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
pub(crate) fn bias_residual(out: &mut [f32], b: &[f32], residual: Option<&[f32]>) {
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
