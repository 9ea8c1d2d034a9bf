//! Each kernel against a plain reference, on every kernel set the CPU runs.

use super::depthwise::{rows, Ring, Source};
use super::pointwise::portable::{bias_residual, product};
use super::pointwise::project;
use super::{pad_before, relu6_biased, Isa};
use crate::layers::Folded;

#[test]
fn every_set_the_cpu_runs_is_named_and_no_other() {
    let all = Isa::supported();
    assert_eq!(all[0], Isa::detect());
    assert_eq!(all.last(), Some(&Isa::portable()));
    for isa in &all {
        assert_eq!(Isa::named(isa.name()).ok(), Some(*isa));
    }
    let err = Isa::named("sse9").unwrap_err().to_string();
    assert!(
        err.starts_with("FRUITS_ISA=sse9: ") && err.ends_with("portable)"),
        "{err}"
    );
}

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
        product(&x, h * w, k, &e.w, c, &mut mid);
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
            product(&x, m, k, &f.w, n, &mut want);
            bias_residual(&mut want, &f.b, residual);
            let mut got = vec![f32::NAN; m * n + 5];
            project(Isa::portable(), &x, m, k, &f, residual, &mut got);
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

#[test]
fn pointwise_is_a_matrix_product_with_its_epilogue() {
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let input = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0];
    let mut out = [0.0; 4];
    product(&input, 2, 3, &w, 2, &mut out);
    assert_eq!(out, [9.0, 12.0, 3.0, 4.0]);
    bias_residual(&mut out, &[0.5, -100.0], Some(&[1.0, 2.0, 3.0, 4.0]));
    assert_eq!(out, [10.5, -86.0, 6.5, -92.0]);
    bias_residual(&mut out, &[1.0, 1.0], None);
    assert_eq!(out, [11.5, -85.0, 7.5, -91.0]);
    assert_eq!(relu6_biased(-1.0, 0.5), 0.0);
    assert_eq!(relu6_biased(7.0, 0.5), 6.0);
    assert_eq!(relu6_biased(1.0, 0.5), 1.5);
}
