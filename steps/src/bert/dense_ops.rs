//! Fused CPU ops around the matrix products of a BERT layer: the dense layer `x Wᵀ + b` and the
//! split and merge of attention heads, each one node of candle's autograd graph.
//!
//! Why fewer nodes matter: candle's backward pass gives every node of the graph a zeroed
//! gradient buffer of its output's size and adds the incoming gradient into it, so a dense layer
//! written as reshape → matmul → bias add → reshape pays four zero-fills and four additions of
//! its activations per step, and a head split (reshape → transpose → copy) three more. These
//! ops call gemm directly (single-threaded: shards of a batch run in parallel, see
//! [`super::shard`]) and fold the bias into the product.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use gemm::Parallelism;

use super::ops::{contiguous, ColumnSum};

/// A row-major matrix operand: its values and whether it is used transposed.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    values: &'a [T],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<T> Operand<'_, T> {
    /// Rows and columns of the operand as used, and its (row, column) strides.
    fn used(&self) -> (usize, usize, isize, isize) {
        let stride = self.cols as isize;
        if self.transposed {
            (self.cols, self.rows, 1, stride)
        } else {
            (self.rows, self.cols, stride, 1)
        }
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major `(m, n)`.
fn product<T: WithDType>(dst: &mut [T], a: Operand<'_, T>, b: Operand<'_, T>, accumulate: bool) -> Result<()> {
    let (m, k, a_rs, a_cs) = a.used();
    let (k2, n, b_rs, b_cs) = b.used();
    if k != k2 || dst.len() != m * n || a.values.len() != a.rows * a.cols || b.values.len() != b.rows * b.cols {
        candle_core::bail!("dense: mismatched product ({m}×{k}) · ({k2}×{n}) into {}", dst.len());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return Ok(());
    }
    // SAFETY: the slices hold exactly the (m × k), (k × n) and (m × n) elements the strides
    // address (checked above); dst does not alias the operands (it is a fresh or exclusive
    // buffer).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.values.as_ptr(),
            a_cs,
            a_rs,
            b.values.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    Ok(())
}

/// The dense layer `y = x Wᵀ + b` over the last dimension of `x`, with `W` `(out, in)` in
/// PyTorch layout.
pub struct Dense;

/// `x Wᵀ + b` for `T`-typed storages of `x`, `W` `(outputs, inputs)` and `b`.
fn dense_fwd<T: WithDType>(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    (outputs, inputs): (usize, usize),
) -> Result<Vec<T>> {
    let (x, w, b) =
        (contiguous::<T>(s1, l1, "dense")?, contiguous::<T>(s2, l2, "dense")?, contiguous::<T>(s3, l3, "dense")?);
    let rows = x.len() / inputs;
    let mut y = Vec::with_capacity(rows * outputs);
    for _ in 0..rows {
        y.extend_from_slice(b);
    }
    let x = Operand { values: x, rows, cols: inputs, transposed: false };
    let w = Operand { values: w, rows: outputs, cols: inputs, transposed: true };
    product(&mut y, x, w, true)?;
    Ok(y)
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "pipe-dense"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (outputs, inputs) = l2.shape().dims2()?;
        let mut dims = l1.shape().dims().to_vec();
        if dims.last() != Some(&inputs) || l3.shape().elem_count() != outputs {
            candle_core::bail!("dense: input {:?}, weight {:?}, bias {:?}", l1.shape(), l2.shape(), l3.shape());
        }
        *dims.last_mut().expect("checked above") = outputs;
        let (a, b, c, size) = ((s1, l1), (s2, l2), (s3, l3), (outputs, inputs));
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(dense_fwd(a, b, c, size)?),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(dense_fwd(a, b, c, size)?),
            _ => candle_core::bail!("dense: only f32 and f64 of one type"),
        };
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = grad.apply_op2_no_bwd(w, &Product { transposed: (false, false), shape: x.shape().clone() })?;
        let grad_w =
            grad.apply_op2_no_bwd(&x.contiguous()?, &Product { transposed: (true, false), shape: w.shape().clone() })?;
        let grad_b = grad.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

/// The gradients of [`Dense`]: `a · b` of two tensors seen as matrices of their leading
/// dimensions by their last one, either used transposed, shaped as `shape`.
struct Product {
    transposed: (bool, bool),
    shape: Shape,
}

impl Product {
    fn run<T: WithDType>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<Vec<T>> {
        let ((ar, ac), (br, bc)) = (as_matrix(l1)?, as_matrix(l2)?);
        let name = "dense-grad";
        let mut dst = vec![T::zero(); self.shape.elem_count()];
        let a = Operand { values: contiguous(s1, l1, name)?, rows: ar, cols: ac, transposed: self.transposed.0 };
        let b = Operand { values: contiguous(s2, l2, name)?, rows: br, cols: bc, transposed: self.transposed.1 };
        product(&mut dst, a, b, false)?;
        Ok(dst)
    }
}

fn as_matrix(layout: &Layout) -> Result<(usize, usize)> {
    let cols = *layout.shape().dims().last().ok_or_else(|| candle_core::Error::Msg("dense: a scalar".into()))?;
    Ok((layout.shape().elem_count() / cols.max(1), cols))
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "pipe-dense-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(self.run::<f32>(s1, l1, s2, l2)?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(self.run::<f64>(s1, l1, s2, l2)?),
            _ => candle_core::bail!("dense-grad: only f32 and f64 of one type"),
        };
        Ok((out, self.shape.clone()))
    }
}

/// `(batch, len, heads · head_dim)` → `(batch, heads, len, head_dim)` (or, `transposed`,
/// `(batch, heads, head_dim, len)`, the keys as the attention product wants them), contiguous.
pub struct SplitHeads {
    pub heads: usize,
    pub transposed: bool,
}

/// The inverse of [`SplitHeads`]: `(batch, heads, len, head_dim)` (or transposed) →
/// `(batch, len, heads · head_dim)`.
pub struct MergeHeads {
    pub heads: usize,
    pub transposed: bool,
}

/// Moves values between the merged layout `(b, l, heads, d)` and the split layout
/// `(b, heads, l, d)` (or `(b, heads, d, l)` when `transposed`); `split` says which way.
fn move_heads<T: WithDType>(src: &[T], dims: (usize, usize, usize, usize), transposed: bool, split: bool) -> Vec<T> {
    let (b, l, heads, d) = dims;
    let mut dst = vec![T::zero(); src.len()];
    for bi in 0..b {
        for t in 0..l {
            for hd in 0..heads {
                let merged = ((bi * l + t) * heads + hd) * d;
                for k in 0..d {
                    let split_at = if transposed {
                        ((bi * heads + hd) * d + k) * l + t
                    } else {
                        ((bi * heads + hd) * l + t) * d + k
                    };
                    if split {
                        dst[split_at] = src[merged + k];
                    } else {
                        dst[merged + k] = src[split_at];
                    }
                }
            }
        }
    }
    dst
}

fn heads_storage(
    storage: &CpuStorage,
    layout: &Layout,
    dims: (usize, usize, usize, usize),
    transposed: bool,
    split: bool,
) -> Result<CpuStorage> {
    let name = "heads";
    Ok(match storage {
        CpuStorage::F32(_) => {
            CpuStorage::F32(move_heads::<f32>(contiguous(storage, layout, name)?, dims, transposed, split))
        }
        CpuStorage::F64(_) => {
            CpuStorage::F64(move_heads::<f64>(contiguous(storage, layout, name)?, dims, transposed, split))
        }
        _ => candle_core::bail!("{name}: only f32 and f64"),
    })
}

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "pipe-split-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, l, h) = layout.shape().dims3()?;
        if self.heads == 0 || h % self.heads != 0 {
            candle_core::bail!("split-heads: {h} is not a multiple of {} heads", self.heads);
        }
        let d = h / self.heads;
        let out = heads_storage(storage, layout, (b, l, self.heads, d), self.transposed, true)?;
        let shape = if self.transposed { (b, self.heads, d, l) } else { (b, self.heads, l, d) };
        Ok((out, Shape::from(shape)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&MergeHeads { heads: self.heads, transposed: self.transposed })?))
    }
}

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "pipe-merge-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, heads, x, y) = layout.shape().dims4()?;
        if heads != self.heads {
            candle_core::bail!("merge-heads: {heads} heads, expected {}", self.heads);
        }
        let (l, d) = if self.transposed { (y, x) } else { (x, y) };
        let out = heads_storage(storage, layout, (b, l, heads, d), self.transposed, false)?;
        Ok((out, Shape::from((b, l, heads * d))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&SplitHeads { heads: self.heads, transposed: self.transposed })?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn dense_and_its_gradients_match_candle_composites() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::arange(0.0f64, 24.0, &dev).unwrap().affine(0.1, -1.0).unwrap().reshape((2, 3, 4)).unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(
            &Tensor::arange(0.0f64, 20.0, &dev).unwrap().affine(0.05, -0.4).unwrap().reshape((5, 4)).unwrap(),
        )
        .unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.1f64, -0.2, 0.3, 0.0, 1.0], &dev).unwrap()).unwrap();
        let target = Tensor::arange(0.0f64, 30.0, &dev).unwrap().sin().unwrap().reshape((2, 3, 5)).unwrap();
        let fused = x.as_tensor().apply_op3(w.as_tensor(), b.as_tensor(), Dense).unwrap();
        let plain = x
            .as_tensor()
            .reshape((6, 4))
            .unwrap()
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .reshape((2, 3, 5))
            .unwrap();
        assert_eq!(fused.dims(), &[2, 3, 5]);
        let g1 = (&fused * &target).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&plain * &target).unwrap().sum_all().unwrap().backward().unwrap();
        for (a, b) in values(&fused).iter().zip(values(&plain)) {
            assert!((a - b).abs() < 1e-12);
        }
        for v in [&x, &w, &b] {
            let (a, c) = (values(g1.get(v.as_tensor()).unwrap()), values(g2.get(v.as_tensor()).unwrap()));
            assert_eq!(a.len(), c.len());
            for (a, c) in a.iter().zip(&c) {
                assert!((a - c).abs() < 1e-12, "{a} vs {c}");
            }
        }
    }

    #[test]
    fn heads_split_and_merge_like_reshape_and_transpose() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0.0f64, 48.0, &dev).unwrap().reshape((2, 4, 6)).unwrap();
        let want = x.reshape((2, 4, 3, 2)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let split = x.apply_op1(SplitHeads { heads: 3, transposed: false }).unwrap();
        assert_eq!(values(&split), values(&want));
        let want_t = want.transpose(2, 3).unwrap().contiguous().unwrap();
        let split_t = x.apply_op1(SplitHeads { heads: 3, transposed: true }).unwrap();
        assert_eq!(split_t.dims(), want_t.dims());
        assert_eq!(values(&split_t), values(&want_t));
        assert_eq!(values(&split.apply_op1(MergeHeads { heads: 3, transposed: false }).unwrap()), values(&x));
        assert_eq!(values(&split_t.apply_op1(MergeHeads { heads: 3, transposed: true }).unwrap()), values(&x));
    }
}
