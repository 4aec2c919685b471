//! L2-regularised logistic regression on sparse features by truncated Newton: each step solves
//! `H d = −g` approximately with conjugate gradients (Hessian-vector products, the Hessian is
//! never formed), then backtracks along `d` until the Armijo condition holds. This is the
//! method of liblinear's primal solver without the trust region; the objective is strongly
//! convex in the weights, so a line search suffices.
//!
//! The objective is scikit-learn's `LogisticRegression` objective divided by `C`:
//! `Σᵢ ℓᵢ + ‖W‖² / (2C)`, the intercepts unpenalised (as sklearn's `lbfgs` solver). Two classes
//! use one weight vector (sigmoid); more use one per class (multinomial softmax, sklearn's
//! default for more than two classes).
//!
//! All sums are split into fixed chunks ([`super::sparse::CHUNK`]), so a fit gives the same bits
//! for any number of threads.

use super::sparse::{det_sum, mul_transposed, Csr};
use crate::error::StepResult;

/// What to fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Inverse regularisation strength, as sklearn's `C`.
    pub c: f64,
    /// Stop when `‖g‖ ≤ tol · ‖g₀‖` (the gradient at the start, all weights zero).
    pub tol: f64,
    /// Newton steps at most.
    pub max_iter: usize,
}

/// One Newton step, for logging.
#[derive(Debug, Clone, Copy)]
pub struct Iteration {
    pub iteration: usize,
    pub objective: f64,
    /// `‖g‖ / ‖g₀‖` after the step.
    pub gradient_ratio: f64,
    pub cg_steps: usize,
    pub step_size: f64,
}

/// How a fit ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSummary {
    pub iterations: usize,
    pub converged: bool,
    pub objective: f64,
    pub gradient_ratio: f64,
}

/// A fitted model: `m` score columns (1 for two classes, else one per class).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub classes: usize,
    pub features: usize,
    /// Feature-major weights: `weights[j * m + c]`.
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
}

/// Score columns for `classes` classes.
fn columns(classes: usize) -> usize {
    if classes == 2 {
        1
    } else {
        classes
    }
}

/// `log(1 + eˣ)` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    det_sum(a.len(), |i| a[i] * b[i])
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

impl Model {
    fn m(&self) -> usize {
        columns(self.classes)
    }

    /// Raw scores of every row of `x` (`x.rows × m`, row-major).
    pub fn scores(&self, x: &Csr) -> Vec<f64> {
        let m = self.m();
        let mut z = vec![0.0; x.rows * m];
        x.mul_dense(&self.weights, &self.bias, m, &mut z);
        z
    }

    /// Class probabilities of every row of `x`. Features beyond the model's are an error of the
    /// caller (transform with the training vocabulary).
    pub fn probabilities(&self, x: &Csr) -> Vec<Vec<f64>> {
        assert_eq!(x.cols, self.features, "features must come from the training vocabulary");
        let m = self.m();
        self.scores(x)
            .chunks(m)
            .map(|z| {
                if m == 1 {
                    let p = sigmoid(z[0]);
                    vec![1.0 - p, p]
                } else {
                    softmax(z)
                }
            })
            .collect()
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// The objective over a training matrix; `theta` is the weights (feature-major) then the biases.
struct Objective<'a> {
    x: &'a Csr,
    xt: Csr,
    y: &'a [u32],
    m: usize,
    inv_c: f64,
}

impl Objective<'_> {
    fn dim(&self) -> usize {
        self.x.cols * self.m + self.m
    }

    fn split<'t>(&self, theta: &'t [f64]) -> (&'t [f64], &'t [f64]) {
        theta.split_at(self.x.cols * self.m)
    }

    /// The objective at `theta`; leaves the scores in `z`.
    fn value(&self, theta: &[f64], z: &mut [f64]) -> f64 {
        let (w, b) = self.split(theta);
        self.x.mul_dense(w, b, self.m, z);
        let m = self.m;
        let data = det_sum(self.x.rows, |i| {
            let zi = &z[i * m..i * m + m];
            let y = self.y[i] as usize;
            if m == 1 {
                softplus(zi[0]) - if y == 1 { zi[0] } else { 0.0 }
            } else {
                let max = zi.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + zi.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                lse - zi[y]
            }
        });
        data + 0.5 * self.inv_c * dot(w, w)
    }

    /// The gradient at `theta` from its scores `z`; leaves the probabilities in `p` (`rows × m`).
    fn gradient(&self, theta: &[f64], z: &[f64], p: &mut [f64], g: &mut [f64]) {
        let m = self.m;
        for (pi, zi) in p.chunks_mut(m).zip(z.chunks(m)) {
            if m == 1 {
                pi[0] = sigmoid(zi[0]);
            } else {
                pi.copy_from_slice(&softmax(zi));
            }
        }
        // The residual P − Y, in a buffer of its own (p is kept for Hessian products).
        let mut r = p.to_vec();
        for (i, ri) in r.chunks_mut(m).enumerate() {
            let y = self.y[i] as usize;
            if m == 1 {
                ri[0] -= if y == 1 { 1.0 } else { 0.0 };
            } else {
                ri[y] -= 1.0;
            }
        }
        self.back(theta, &r, g);
    }

    /// `g = Xᵀ r + W / C` for the weights and `Σᵢ rᵢ` for the biases.
    fn back(&self, theta_or_v: &[f64], r: &[f64], g: &mut [f64]) {
        let m = self.m;
        let (gw, gb) = g.split_at_mut(self.x.cols * m);
        mul_transposed(&self.xt, r, m, gw);
        let (w, _) = self.split(theta_or_v);
        for (gj, wj) in gw.iter_mut().zip(w) {
            *gj += self.inv_c * wj;
        }
        for (c, gbc) in gb.iter_mut().enumerate() {
            *gbc = det_sum(self.x.rows, |i| r[i * m + c]);
        }
    }

    /// `out = H v` at the point whose probabilities are `p`.
    fn hess_vec(&self, p: &[f64], v: &[f64], u: &mut [f64], out: &mut [f64]) {
        let m = self.m;
        let (vw, vb) = self.split(v);
        self.x.mul_dense(vw, vb, m, u);
        for (ui, pi) in u.chunks_mut(m).zip(p.chunks(m)) {
            if m == 1 {
                ui[0] *= pi[0] * (1.0 - pi[0]);
            } else {
                let mean: f64 = ui.iter().zip(pi).map(|(a, b)| a * b).sum();
                for (uc, pc) in ui.iter_mut().zip(pi) {
                    *uc = pc * (*uc - mean);
                }
            }
        }
        self.back(v, u, out);
    }
}

/// Fits `classes` classes (`y[i] < classes`, at least 2) to the rows of `x`. `on_iteration` sees
/// every Newton step and may stop the fit by returning an error (cancellation).
pub fn fit(
    x: &Csr,
    y: &[u32],
    classes: usize,
    options: &Options,
    on_iteration: &mut dyn FnMut(&Iteration) -> StepResult<()>,
) -> StepResult<(Model, FitSummary)> {
    assert!(classes >= 2, "a classifier needs two classes");
    assert_eq!(x.rows, y.len(), "one label per row");
    let m = columns(classes);
    let objective = Objective { x, xt: x.transpose(), y, m, inv_c: 1.0 / options.c };
    let dim = objective.dim();
    let n = x.rows * m;
    let mut theta = vec![0.0; dim];
    let (mut z, mut z_new, mut p, mut u) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut g = vec![0.0; dim];
    let mut f = objective.value(&theta, &mut z);
    objective.gradient(&theta, &z, &mut p, &mut g);
    let g0 = norm(&g);
    let mut summary = FitSummary { iterations: 0, converged: g0 == 0.0, objective: f, gradient_ratio: 0.0 };
    let (mut d, mut r, mut dir, mut hd, mut next) =
        (vec![0.0; dim], vec![0.0; dim], vec![0.0; dim], vec![0.0; dim], vec![0.0; dim]);
    // CG stops at a residual of this share of the gradient (liblinear's choice).
    const CG_ETA: f64 = 0.1;
    const MAX_CG: usize = 100;
    while !summary.converged && summary.iterations < options.max_iter {
        let gnorm = norm(&g);
        // Conjugate gradients on H d = −g from d = 0.
        d.iter_mut().for_each(|v| *v = 0.0);
        for (ri, gi) in r.iter_mut().zip(&g) {
            *ri = -gi;
        }
        dir.copy_from_slice(&r);
        let mut rr = dot(&r, &r);
        let mut cg_steps = 0;
        while cg_steps < MAX_CG {
            objective.hess_vec(&p, &dir, &mut u, &mut hd);
            let curvature = dot(&dir, &hd);
            if curvature <= 0.0 {
                break;
            }
            cg_steps += 1;
            let alpha = rr / curvature;
            for i in 0..dim {
                d[i] += alpha * dir[i];
                r[i] -= alpha * hd[i];
            }
            let rr_new = dot(&r, &r);
            if rr_new.sqrt() <= CG_ETA * gnorm {
                break;
            }
            let beta = rr_new / rr;
            for i in 0..dim {
                dir[i] = r[i] + beta * dir[i];
            }
            rr = rr_new;
        }
        if cg_steps == 0 {
            // No direction of positive curvature: the gradient direction still descends.
            d.copy_from_slice(&r);
        }
        // Backtracking (Armijo) from the full Newton step.
        let slope = dot(&g, &d);
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            for i in 0..dim {
                next[i] = theta[i] + step * d[i];
            }
            let f_new = objective.value(&next, &mut z_new);
            if f_new <= f + 1e-4 * step * slope {
                accepted = Some(f_new);
                break;
            }
            step *= 0.5;
        }
        let Some(f_new) = accepted else {
            // No decrease along a descent direction: the fit is at the precision limit.
            summary.converged = true;
            break;
        };
        std::mem::swap(&mut theta, &mut next);
        std::mem::swap(&mut z, &mut z_new);
        let decrease = f - f_new;
        f = f_new;
        objective.gradient(&theta, &z, &mut p, &mut g);
        summary.iterations += 1;
        summary.objective = f;
        summary.gradient_ratio = if g0 > 0.0 { norm(&g) / g0 } else { 0.0 };
        summary.converged = summary.gradient_ratio <= options.tol || decrease <= f.abs() * 1e-15;
        on_iteration(&Iteration {
            iteration: summary.iterations,
            objective: f,
            gradient_ratio: summary.gradient_ratio,
            cg_steps,
            step_size: step,
        })?;
    }
    let weights = theta[..x.cols * m].to_vec();
    let bias = theta[x.cols * m..].to_vec();
    Ok((Model { classes, features: x.cols, weights, bias }, summary))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A random sparse matrix with about `density` of its entries set.
    fn random_matrix(rows: usize, cols: usize, density: f64, rng: &mut StdRng) -> Csr {
        let dense: Vec<Vec<f32>> = (0..rows)
            .map(|_| {
                (0..cols).map(|_| if rng.random_bool(density) { rng.random_range(-1.0..1.0) } else { 0.0 }).collect()
            })
            .collect();
        Csr::from_dense(&dense)
    }

    fn objective<'a>(x: &'a Csr, y: &'a [u32], classes: usize) -> Objective<'a> {
        Objective { x, xt: x.transpose(), y, m: columns(classes), inv_c: 1.0 / 0.7 }
    }

    #[test]
    fn gradient_and_hessian_products_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        for classes in [2, 3] {
            let x = random_matrix(30, 6, 0.5, &mut rng);
            let y: Vec<u32> = (0..30).map(|_| rng.random_range(0..classes as u32)).collect();
            let obj = objective(&x, &y, classes);
            let n = x.rows * obj.m;
            let theta: Vec<f64> = (0..obj.dim()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (mut z, mut p, mut g) = (vec![0.0; n], vec![0.0; n], vec![0.0; obj.dim()]);
            obj.value(&theta, &mut z);
            obj.gradient(&theta, &z, &mut p, &mut g);
            let h = 1e-6;
            let at = |t: &[f64]| obj.value(t, &mut vec![0.0; n]);
            let grad_at = |t: &[f64]| {
                let (mut z, mut p, mut g) = (vec![0.0; n], vec![0.0; n], vec![0.0; obj.dim()]);
                obj.value(t, &mut z);
                obj.gradient(t, &z, &mut p, &mut g);
                g
            };
            for k in 0..obj.dim() {
                let (mut plus, mut minus) = (theta.clone(), theta.clone());
                plus[k] += h;
                minus[k] -= h;
                let numeric = (at(&plus) - at(&minus)) / (2.0 * h);
                assert!((numeric - g[k]).abs() < 1e-6 * (1.0 + g[k].abs()), "{classes} classes, d/dθ{k}");
            }
            let v: Vec<f64> = (0..obj.dim()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut hv = vec![0.0; obj.dim()];
            obj.hess_vec(&p, &v, &mut vec![0.0; n], &mut hv);
            let plus: Vec<f64> = theta.iter().zip(&v).map(|(t, v)| t + h * v).collect();
            let minus: Vec<f64> = theta.iter().zip(&v).map(|(t, v)| t - h * v).collect();
            let (gp, gm) = (grad_at(&plus), grad_at(&minus));
            for k in 0..obj.dim() {
                let numeric = (gp[k] - gm[k]) / (2.0 * h);
                assert!((numeric - hv[k]).abs() < 1e-5 * (1.0 + hv[k].abs()), "{classes} classes, (Hv){k}");
            }
        }
    }

    fn no_log(_: &Iteration) -> StepResult<()> {
        Ok(())
    }

    /// A small problem solved by scikit-learn 1.9.1 (`LogisticRegression(C=0.7, tol=1e-12,
    /// max_iter=10000)`, lbfgs): the optimum is the same whatever the method.
    fn sklearn_problem() -> (Csr, Vec<u32>) {
        let x = Csr::from_dense(&[
            vec![1.0, 0.0, 0.5],
            vec![0.0, 1.0, 0.0],
            vec![0.3, 0.0, 1.0],
            vec![1.0, 1.0, 0.0],
            vec![0.0, 0.2, 0.9],
            vec![0.8, 0.0, 0.0],
            vec![0.0, 0.7, 0.4],
            vec![0.5, 0.5, 0.5],
        ]);
        (x, vec![1, 0, 2, 1, 2, 1, 0, 2])
    }

    // Printed by scikit-learn for `sklearn_problem` (labels `y == 1` for the binary fit).
    const SK_BINARY_COEF: [f64; 3] = [0.8014842679121318, -0.16470786914230806, -0.4053763398963149];
    const SK_BINARY_INTERCEPT: f64 = -0.6544552332423368;
    const SK_MULTI_COEF: [[f64; 3]; 3] = [
        [-0.49047336361241956, 0.42413806477902205, -0.22420815959482218],
        [0.7274015302016852, -0.16582604915466176, -0.3550096213518489],
        [-0.23692816658926574, -0.25831201562436024, 0.5792177809466712],
    ];
    const SK_MULTI_PROBA: [[f64; 3]; 8] = [
        [0.1381992696943847, 0.5153334288757848, 0.3464673014298304],
        [0.4327386915486457, 0.282538064813541, 0.28472324363781326],
        [0.1777359205660756, 0.2646751469116875, 0.5575889325222368],
        [0.2466300025470762, 0.5442688661871679, 0.20910113126575586],
        [0.23413111847954696, 0.21785081482030458, 0.5480180667001485],
        [0.17497755161892584, 0.5459901606724291, 0.27903228770864497],
        [0.3504991575910552, 0.259227532746797, 0.39027330966214774],
        [0.2450882749214908, 0.37011599131399303, 0.3847957337645162],
    ];

    #[test]
    fn binary_fit_matches_scikit_learn() {
        let (x, y3) = sklearn_problem();
        let y: Vec<u32> = y3.iter().map(|&c| u32::from(c == 1)).collect();
        let options = Options { c: 0.7, tol: 1e-12, max_iter: 100 };
        let (model, summary) = fit(&x, &y, 2, &options, &mut no_log).unwrap();
        assert!(summary.converged, "{summary:?}");
        let want_w = [SK_BINARY_COEF[0], SK_BINARY_COEF[1], SK_BINARY_COEF[2]];
        for (got, want) in model.weights.iter().zip(want_w) {
            assert!((got - want).abs() < 1e-6, "weights {:?} vs {want_w:?}", model.weights);
        }
        assert!((model.bias[0] - SK_BINARY_INTERCEPT).abs() < 1e-6, "bias {:?}", model.bias);
    }

    #[test]
    fn multinomial_fit_matches_scikit_learn() {
        let (x, y) = sklearn_problem();
        let options = Options { c: 0.7, tol: 1e-12, max_iter: 100 };
        let (model, summary) = fit(&x, &y, 3, &options, &mut no_log).unwrap();
        assert!(summary.converged, "{summary:?}");
        // Weights are identified (the penalty fixes them); compare probabilities too, which do
        // not depend on how the unpenalised biases share a constant.
        for (c, coef) in SK_MULTI_COEF.iter().enumerate() {
            for (j, &want) in coef.iter().enumerate() {
                let got = model.weights[j * 3 + c];
                assert!((got - want).abs() < 1e-6, "w[class {c}][feature {j}] = {got}, sklearn {want}");
            }
        }
        for (row, p) in model.probabilities(&x).iter().enumerate() {
            for c in 0..3 {
                assert!((p[c] - SK_MULTI_PROBA[row][c]).abs() < 1e-6, "row {row}: {p:?} vs {:?}", SK_MULTI_PROBA[row]);
            }
        }
    }

    #[test]
    fn separable_data_is_fit_exactly_and_the_fit_is_deterministic() {
        let mut rng = StdRng::seed_from_u64(9);
        let x = random_matrix(500, 40, 0.2, &mut rng);
        // Labels from a known direction: the fit must reproduce them.
        let truth: Vec<f64> = (0..40).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<u32> = (0..500)
            .map(|i| {
                let (cols, vals) = x.row(i);
                let s: f64 = cols.iter().zip(vals).map(|(&j, &v)| truth[j as usize] * f64::from(v)).sum();
                u32::from(s > 0.0)
            })
            .collect();
        let options = Options { c: 1000.0, tol: 1e-8, max_iter: 200 };
        let (model, _) = fit(&x, &y, 2, &options, &mut no_log).unwrap();
        let right = model.probabilities(&x).iter().zip(&y).filter(|(p, &y)| (p[1] > 0.5) == (y == 1)).count();
        assert!(right >= 495, "{right}/500");
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (again, _) = one.install(|| fit(&x, &y, 2, &options, &mut no_log)).unwrap();
        assert_eq!(model, again, "one thread and many give the same bits");
    }
}
