//! Multinomial logistic regression (softmax, L2), fitted in f64 with L-BFGS.
//!
//! The objective is scikit-learn's, so `C` means what it means there:
//! `mean_i(-log p(y_i | x_i)) + ||W||^2 / (2 C n)` (the biases are not penalised).

use faer::{Accum, MatMut, MatRef, Par};

/// Settings of a fit.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    /// Largest number of L-BFGS iterations.
    pub max_iter: usize,
    /// Stop when every gradient component is below this (scikit-learn's `tol` for lbfgs).
    pub tol: f64,
    /// Threads for the matrix products.
    pub threads: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-4,
            threads: 1,
        }
    }
}

/// How a fit ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    /// L-BFGS iterations run.
    pub iterations: usize,
    /// Objective evaluations (each two matrix products).
    pub evaluations: usize,
    /// The final objective.
    pub loss: f64,
    /// Whether the gradient fell below the tolerance.
    pub converged: bool,
}

/// A linear softmax head: `d` inputs, `c` classes, `w` row-major `d x c`, `b` of `c`.
#[derive(Debug, Clone, PartialEq)]
pub struct Softmax {
    d: usize,
    c: usize,
    w: Vec<f64>,
    b: Vec<f64>,
}

impl Softmax {
    /// A head of zeros.
    pub fn zeros(d: usize, c: usize) -> Softmax {
        Softmax {
            d,
            c,
            w: vec![0.0; d * c],
            b: vec![0.0; c],
        }
    }

    /// A head from its weights (`d x c`, row-major) and biases; `None` if the sizes disagree
    /// or a value is not finite.
    pub fn new(d: usize, c: usize, w: Vec<f64>, b: Vec<f64>) -> Option<Softmax> {
        let ok =
            c > 0 && w.len() == d * c && b.len() == c && w.iter().chain(&b).all(|v| v.is_finite());
        ok.then_some(Softmax { d, c, w, b })
    }

    /// Inputs.
    pub fn inputs(&self) -> usize {
        self.d
    }

    /// Classes.
    pub fn classes(&self) -> usize {
        self.c
    }

    /// Weights, `d x c` row-major.
    pub fn weights(&self) -> &[f64] {
        &self.w
    }

    /// Biases.
    pub fn biases(&self) -> &[f64] {
        &self.b
    }

    /// Class probabilities of `n` rows of `x` (`n x d`, row-major): `n x c`, row-major.
    ///
    /// Row by row, each logit summed in a fixed order: a row's probabilities are the same
    /// bits whatever other rows come with it (one photo on a server, a whole folder in
    /// `predict`, the validation set in `train`).
    pub fn probabilities(&self, x: &[f64]) -> Vec<f64> {
        let (d, c) = (self.d, self.c);
        let mut p = Vec::with_capacity(x.len() / d.max(1) * c);
        let mut row_out = vec![0.0; c];
        for row in x.chunks_exact(d.max(1)) {
            row_out.copy_from_slice(&self.b);
            for (v, w) in row.iter().zip(self.w.chunks_exact(c)) {
                for (o, w) in row_out.iter_mut().zip(w) {
                    *o += v * w;
                }
            }
            softmax_in_place(&mut row_out);
            p.extend_from_slice(&row_out);
        }
        p
    }

    /// Fits a head on `n` rows of `x` (`n x d`, row-major) with classes `y` (each `< c`),
    /// starting from `self` (a warm start).
    pub fn fit(&mut self, x: &[f64], y: &[u32], opts: &FitOptions) -> FitReport {
        let n = y.len();
        assert_eq!(x.len(), n * self.d, "x holds n rows of d values");
        assert!(y.iter().all(|&k| (k as usize) < self.c), "classes below c");
        let problem = Problem {
            x,
            y,
            n,
            d: self.d,
            c: self.c,
            l2: 1.0 / (opts.c * n.max(1) as f64),
            par: par(opts.threads),
        };
        let mut theta: Vec<f64> = self.w.iter().chain(&self.b).copied().collect();
        let report = lbfgs(&problem, &mut theta, opts);
        let (w, b) = theta.split_at(self.d * self.c);
        self.w = w.to_vec();
        self.b = b.to_vec();
        report
    }
}

fn par(threads: usize) -> Par {
    if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    }
}

#[allow(clippy::too_many_arguments)]
fn logits_of(
    x: &[f64],
    n: usize,
    d: usize,
    c: usize,
    w: &[f64],
    b: &[f64],
    out: &mut [f64],
    par: Par,
) {
    for row in out.chunks_exact_mut(c) {
        row.copy_from_slice(b);
    }
    let x = MatRef::from_row_major_slice(x, n, d);
    let w = MatRef::from_row_major_slice(w, d, c);
    let out = MatMut::from_row_major_slice_mut(out, n, c);
    faer::linalg::matmul::matmul(out, Accum::Add, x, w, 1.0, par);
}

/// `row = softmax(row)`; returns `log(sum(exp(row)))` of the input.
fn softmax_in_place(row: &mut [f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
    max + sum.ln()
}

/// The objective and its data.
struct Problem<'a> {
    x: &'a [f64],
    y: &'a [u32],
    n: usize,
    d: usize,
    c: usize,
    l2: f64,
    par: Par,
}

impl Problem<'_> {
    /// The objective at `theta` (`w` then `b`), its gradient written to `grad`.
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d, c) = (self.n, self.d, self.c);
        let (w, b) = theta.split_at(d * c);
        let mut p = vec![0.0; n * c];
        logits_of(self.x, n, d, c, w, b, &mut p, self.par);
        let mut loss = 0.0;
        let inv_n = 1.0 / n.max(1) as f64;
        for (row, &y) in p.chunks_exact_mut(c).zip(self.y) {
            let truth = row[y as usize];
            let lse = softmax_in_place(row);
            loss += lse - truth;
            row[y as usize] -= 1.0;
            row.iter_mut().for_each(|v| *v *= inv_n);
        }
        let (gw, gb) = grad.split_at_mut(d * c);
        // gw = xᵀ (p - y) / n + l2 w
        gw.copy_from_slice(w);
        gw.iter_mut().for_each(|g| *g *= self.l2);
        let x = MatRef::from_row_major_slice(self.x, n, d);
        let pm = MatRef::from_row_major_slice(&p, n, c);
        let gwm = MatMut::from_row_major_slice_mut(gw, d, c);
        faer::linalg::matmul::matmul(gwm, Accum::Add, x.transpose(), pm, 1.0, self.par);
        gb.fill(0.0);
        for row in p.chunks_exact(c) {
            for (g, v) in gb.iter_mut().zip(row) {
                *g += v;
            }
        }
        let penalty: f64 = w.iter().map(|v| v * v).sum::<f64>() * 0.5 * self.l2;
        loss * inv_n + penalty
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L-BFGS (10 pairs) with a backtracking Armijo line search.
fn lbfgs(problem: &Problem, theta: &mut [f64], opts: &FitOptions) -> FitReport {
    const PAIRS: usize = 10;
    let m = theta.len();
    let mut grad = vec![0.0; m];
    let mut f = problem.eval(theta, &mut grad);
    let mut evaluations = 1;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut next = vec![0.0; m];
    let mut next_grad = vec![0.0; m];
    let max_abs = |g: &[f64]| g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let mut iterations = 0;
    while iterations < opts.max_iter {
        if max_abs(&grad) < opts.tol {
            return FitReport {
                iterations,
                evaluations,
                loss: f,
                converged: true,
            };
        }
        // Two-loop recursion: direction = -H grad.
        let mut q = grad.clone();
        let mut alpha = vec![0.0; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            q.iter_mut()
                .zip(&y_hist[i])
                .for_each(|(q, y)| *q -= alpha[i] * y);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / max_abs(&grad).max(1e-12) * 1e-2,
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for i in 0..s_hist.len() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            q.iter_mut()
                .zip(&s_hist[i])
                .for_each(|(q, s)| *q += (alpha[i] - beta) * s);
        }
        let direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&grad, &direction);
        let direction = if slope >= 0.0 {
            // Not a descent direction: restart from the gradient.
            s_hist.clear();
            y_hist.clear();
            slope = -dot(&grad, &grad);
            grad.iter()
                .map(|g| -g * 1e-2 / max_abs(&grad).max(1e-12))
                .collect()
        } else {
            direction
        };
        // Backtracking: the first step that decreases the objective enough.
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for ((n, t), d) in next.iter_mut().zip(theta.iter()).zip(&direction) {
                *n = t + step * d;
            }
            let f_next = problem.eval(&next, &mut next_grad);
            evaluations += 1;
            if f_next <= f + 1e-4 * step * slope {
                let s: Vec<f64> = next.iter().zip(theta.iter()).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = next_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
                if dot(&s, &y) > 1e-12 {
                    if s_hist.len() == PAIRS {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(y);
                }
                theta.copy_from_slice(&next);
                grad.copy_from_slice(&next_grad);
                let decrease = f - f_next;
                f = f_next;
                accepted = true;
                iterations += 1;
                // No measurable progress left (scikit-learn's ftol).
                if decrease <= 64.0 * f64::EPSILON * f.abs().max(1.0) {
                    return FitReport {
                        iterations,
                        evaluations,
                        loss: f,
                        converged: max_abs(&grad) < opts.tol,
                    };
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    FitReport {
        iterations,
        evaluations,
        loss: f,
        converged: max_abs(&grad) < opts.tol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three blobs in 2-D, one per class.
    fn blobs() -> (Vec<f64>, Vec<u32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..90 {
            let k = i % 3;
            let (cx, cy) = [(0.0, 0.0), (3.0, 0.0), (0.0, 3.0)][k];
            let j = (i / 3) as f64;
            x.push(cx + (j * 0.37).sin() * 0.8);
            x.push(cy + (j * 0.71).cos() * 0.8);
            y.push(k as u32);
        }
        (x, y)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs();
        let p = Problem {
            x: &x,
            y: &y,
            n: y.len(),
            d: 2,
            c: 3,
            l2: 0.1,
            par: Par::Seq,
        };
        let theta: Vec<f64> = (0..9).map(|i| (i as f64 * 0.3).sin()).collect();
        let mut g = vec![0.0; 9];
        p.eval(&theta, &mut g);
        for i in 0..9 {
            let h = 1e-6;
            let (mut a, mut b) = (theta.clone(), theta.clone());
            a[i] += h;
            b[i] -= h;
            let mut scratch = vec![0.0; 9];
            let numeric = (p.eval(&a, &mut scratch) - p.eval(&b, &mut scratch)) / (2.0 * h);
            assert!((numeric - g[i]).abs() < 1e-6, "{i}: {numeric} vs {}", g[i]);
        }
    }

    #[test]
    fn fits_separable_blobs_and_converges() {
        let (x, y) = blobs();
        let mut head = Softmax::zeros(2, 3);
        let report = head.fit(&x, &y, &FitOptions::default());
        assert!(report.converged, "{report:?}");
        let p = head.probabilities(&x);
        let right = p
            .chunks_exact(3)
            .zip(&y)
            .filter(|(row, &k)| {
                let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                best == k as usize
            })
            .count();
        assert_eq!(right, y.len());
        for row in p.chunks_exact(3) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
