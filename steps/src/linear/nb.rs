//! Naive-Bayes feature scaling for two classes (NB-LR, the logistic-regression form of Wang &
//! Manning's NB-SVM, 2012): every column is multiplied by its log-count ratio
//! `r = ln((p / ‖p‖₁) / (q / ‖q‖₁))`, where `p` and `q` count the training rows of class 1 and
//! class 0 that contain the n-gram, each plus `alpha`. The regression then starts from what a
//! naive-Bayes model believes about each n-gram, which on short sentiment texts beats the plain
//! TF-IDF features (NSMC: BENCHMARKS_LINEAR.md).
//!
//! Fit on the training rows only and applied to every matrix after the vectorizer (so on top of
//! TF-IDF weighting and row normalisation, as `X.multiply(r)` on scikit-learn's output). Counts are
//! integers and the norms sequential sums, so the ratios do not depend on the thread count.
//! Not in it: more than two classes (one-vs-rest ratios would need one model per class).

use super::sparse::Csr;

/// The per-column log-count ratios.
#[derive(Debug, Clone, PartialEq)]
pub struct NbScale {
    ratio: Vec<f32>,
}

impl NbScale {
    /// Counts, per column, the rows of each class (0 or 1) with a non-zero value.
    pub fn fit(x: &Csr, classes: &[u32], alpha: f64) -> NbScale {
        let mut count = [vec![0u64; x.cols], vec![0u64; x.cols]];
        for (i, &class) in classes.iter().enumerate() {
            let (cols, values) = x.row(i);
            for (&c, &v) in cols.iter().zip(values) {
                if v != 0.0 {
                    count[class as usize][c as usize] += 1;
                }
            }
        }
        let smoothed = |n: &[u64]| -> (Vec<f64>, f64) {
            let v: Vec<f64> = n.iter().map(|&n| n as f64 + alpha).collect();
            let total = v.iter().sum::<f64>();
            (v, total)
        };
        let (q, q_total) = smoothed(&count[0]);
        let (p, p_total) = smoothed(&count[1]);
        let ratio = p.iter().zip(&q).map(|(p, q)| ((p / p_total) / (q / q_total)).ln() as f32).collect();
        NbScale { ratio }
    }

    /// Multiplies every value by its column's ratio.
    pub fn apply(&self, x: &mut Csr) {
        for (v, &c) in x.values.iter_mut().zip(&x.indices) {
            *v *= self.ratio[c as usize];
        }
    }

    pub fn ratio(&self) -> &[f32] {
        &self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_follow_the_class_counts() {
        // Column 0 only in class 1 rows, column 1 only in class 0, column 2 in both equally.
        let x = Csr::from_dense(&[vec![1.0, 0.0, 0.5], vec![0.3, 0.0, 0.0], vec![0.0, 2.0, 0.5], vec![0.0, 1.0, 0.0]]);
        let nb = NbScale::fit(&x, &[1, 1, 0, 0], 1.0);
        // p = [3, 1, 2] / 6, q = [1, 3, 2] / 6.
        let expected = [3f64.ln(), (1.0f64 / 3.0).ln(), 0.0];
        for (got, want) in nb.ratio().iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let mut scaled = x.clone();
        nb.apply(&mut scaled);
        assert_eq!(scaled.indices, x.indices);
        assert!((scaled.values[0] - 3f32.ln()).abs() < 1e-6);
        assert_eq!(scaled.values[1], 0.0, "a column both classes share is weighted 0");
    }
}
