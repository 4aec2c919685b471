//! Compressed sparse row (CSR) matrices of `f32` values, and the two products the solver needs:
//! `X·W` (rows against a dense feature-major weight block) and `Xᵀ·R` (through the transpose,
//! so that every output element is one sequential sum and results do not depend on the thread
//! count). Not a general sparse-matrix library: no arithmetic between sparse matrices.

use rayon::prelude::*;

/// Rows per parallel task: fixed, so sums split the same way whatever the thread count.
pub const CHUNK: usize = 1024;

/// A sparse matrix in CSR form. Column indices within a row are sorted and distinct.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    /// Row `i` is `indices[indptr[i]..indptr[i + 1]]` (and the same range of `values`).
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    /// An empty matrix with `cols` columns, to be filled with [`Csr::push_row`].
    pub fn new(cols: usize) -> Csr {
        Csr { rows: 0, cols, indptr: vec![0], indices: Vec::new(), values: Vec::new() }
    }

    /// Appends a row of `(column, value)` entries; they are sorted here, and must be distinct.
    pub fn push_row(&mut self, entries: &mut [(u32, f32)]) {
        entries.sort_unstable_by_key(|e| e.0);
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "duplicate column in a row");
        debug_assert!(entries.last().is_none_or(|e| (e.0 as usize) < self.cols), "column out of range");
        for &(c, v) in entries.iter() {
            self.indices.push(c);
            self.values.push(v);
        }
        self.indptr.push(self.indices.len());
        self.rows += 1;
    }

    /// A dense matrix (row-major) as CSR, dropping zeros; for tests and small problems.
    pub fn from_dense(rows: &[Vec<f32>]) -> Csr {
        let cols = rows.first().map_or(0, Vec::len);
        let mut m = Csr::new(cols);
        for r in rows {
            let mut entries: Vec<(u32, f32)> =
                r.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(c, v)| (c as u32, *v)).collect();
            m.push_row(&mut entries);
        }
        m
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The column indices and values of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let range = self.indptr[i]..self.indptr[i + 1];
        (&self.indices[range.clone()], &self.values[range])
    }

    /// The transpose (equivalently: this matrix in compressed sparse column form). Row indices
    /// within each transposed row come out in ascending order.
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for j in 0..self.cols {
            counts[j + 1] += counts[j];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for i in 0..self.rows {
            let (cols, vals) = self.row(i);
            for (&c, &v) in cols.iter().zip(vals) {
                let at = next[c as usize];
                indices[at] = i as u32;
                values[at] = v;
                next[c as usize] += 1;
            }
        }
        Csr { rows: self.cols, cols: self.rows, indptr, indices, values }
    }

    /// `out = self · w + bias` where `w` is `cols × m` feature-major (`w[j * m + c]`) and `out`
    /// is `rows × m` row-major. Parallel over rows.
    pub fn mul_dense(&self, w: &[f64], bias: &[f64], m: usize, out: &mut [f64]) {
        debug_assert_eq!(w.len(), self.cols * m);
        debug_assert_eq!(out.len(), self.rows * m);
        out.par_chunks_mut(CHUNK * m).enumerate().for_each(|(chunk, block)| {
            let first = chunk * CHUNK;
            for (k, o) in block.chunks_mut(m).enumerate() {
                o.copy_from_slice(bias);
                let (cols, vals) = self.row(first + k);
                for (&j, &v) in cols.iter().zip(vals) {
                    let wj = &w[j as usize * m..j as usize * m + m];
                    let v = f64::from(v);
                    for (oc, wc) in o.iter_mut().zip(wj) {
                        *oc += v * wc;
                    }
                }
            }
        });
    }
}

/// `out = Xᵀ · r` with `xt` the transpose of `X` (`xt.rows` = features), `r` `X.rows × m`
/// row-major and `out` `xt.rows × m` feature-major. Each output element is summed in row order,
/// so the result is the same for any number of threads.
pub fn mul_transposed(xt: &Csr, r: &[f64], m: usize, out: &mut [f64]) {
    debug_assert_eq!(r.len(), xt.cols * m);
    debug_assert_eq!(out.len(), xt.rows * m);
    out.par_chunks_mut(CHUNK * m).enumerate().for_each(|(chunk, block)| {
        let first = chunk * CHUNK;
        for (k, o) in block.chunks_mut(m).enumerate() {
            o.iter_mut().for_each(|x| *x = 0.0);
            let (rows, vals) = xt.row(first + k);
            for (&i, &v) in rows.iter().zip(vals) {
                let ri = &r[i as usize * m..i as usize * m + m];
                let v = f64::from(v);
                for (oc, rc) in o.iter_mut().zip(ri) {
                    *oc += v * rc;
                }
            }
        }
    });
}

/// The sum of `f(i)` over `0..n`, in fixed chunks summed in order: the same bits for any thread
/// count.
pub fn det_sum(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    let chunks: Vec<f64> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| (c * CHUNK..((c + 1) * CHUNK).min(n)).map(&f).sum::<f64>())
        .collect();
    chunks.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense() -> Vec<Vec<f32>> {
        vec![vec![1.0, 0.0, 2.0], vec![0.0, 0.0, 0.0], vec![0.0, 3.0, -1.0], vec![4.0, 0.0, 0.0]]
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let m = Csr::from_dense(&dense());
        let t = m.transpose();
        assert_eq!((t.rows, t.cols, t.nnz()), (3, 4, 5));
        assert_eq!(t.row(0), (&[0u32, 3][..], &[1.0f32, 4.0][..]));
        assert_eq!(t.row(1), (&[2u32][..], &[3.0f32][..]));
        assert_eq!(t.row(2), (&[0u32, 2][..], &[2.0f32, -1.0][..]));
        assert_eq!(t.transpose(), m);
    }

    #[test]
    fn products_match_dense_arithmetic() {
        let d = dense();
        let m = Csr::from_dense(&d);
        // Two output columns: w is 3 × 2 feature-major.
        let w = [0.5, -1.0, 2.0, 0.0, -0.25, 3.0];
        let bias = [0.1, 0.2];
        let mut out = vec![0.0; 8];
        m.mul_dense(&w, &bias, 2, &mut out);
        for (i, row) in d.iter().enumerate() {
            for c in 0..2 {
                let want: f64 = bias[c] + (0..3).map(|j| f64::from(row[j]) * w[j * 2 + c]).sum::<f64>();
                assert!((out[i * 2 + c] - want).abs() < 1e-12, "row {i} col {c}");
            }
        }
        let r = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut g = vec![0.0; 6];
        mul_transposed(&m.transpose(), &r, 2, &mut g);
        for j in 0..3 {
            for c in 0..2 {
                let want: f64 = (0..4).map(|i| f64::from(d[i][j]) * r[i * 2 + c]).sum();
                assert!((g[j * 2 + c] - want).abs() < 1e-12, "feature {j} col {c}");
            }
        }
    }

    #[test]
    fn deterministic_sum_covers_every_index_once() {
        let n = 3 * CHUNK + 17;
        assert_eq!(det_sum(n, |i| i as f64), (n * (n - 1) / 2) as f64);
        assert_eq!(det_sum(0, |_| 1.0), 0.0);
    }
}
