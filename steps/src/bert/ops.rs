//! Fused CPU kernels with their own backward passes for the element-wise parts of a BERT layer
//! that dominate training time once matmuls are fast: LayerNorm (normalisation, then its
//! affine part), the erf GELU, dropout (alone and with the
//! residual add) and the attention softmax with its scale, padding bias and dropout.
//!
//! candle's composites for these (`layer_norm_slow`, `softmax`, `gelu_erf`) are differentiable
//! but run as 6–12 separate tensor passes forward and more backward, each allocating; these
//! kernels do one pass forward and one backward, row-parallel on rayon's pool. They are used on
//! CPU for f32 and f64 (the finite-difference test in `tests/bert_model.rs` runs through them);
//! other devices use candle's composites.

use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::{IndexedParallelIterator, ParallelIterator, ParallelSlice, ParallelSliceMut};

/// The float types the kernels compute in: each computes in its input's own precision, as
/// PyTorch does (f32 for training; f64 for the finite-difference tests).
pub trait Real: WithDType {
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    /// The error function; for f32 a rational approximation that vectorises.
    fn erf(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn erf(self) -> Self {
        erf_fast(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn erf(self) -> Self {
        erf_f64(self)
    }
}

/// `erf(x)` in f32 as a rational function of x (the approximation Eigen and XLA use): within
/// 1e-6 of the exact value over the whole line, and without branches or `exp`, so loops over
/// it vectorise (libm's `erff` took 6–8% of a training step).
pub fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906_3e-4;
    p = x2 * p - 2.954_600_1e-3;
    p = x2 * p - 1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329_2e-3;
    q = x2 * q - 1.426_474e-2;
    x * p / q
}

/// Rows handed to one rayon task: enough work to amortise the scheduling.
const ROWS_PER_TASK: usize = 64;

/// The values of a contiguous CPU storage as seen through `layout`.
pub(crate) fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Applies `f(input_rows, output_rows)` to chunks of rows of length `n`, in parallel.
fn rows_map<T: WithDType>(input: &[T], n: usize, f: impl Fn(&[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); input.len()];
    out.par_chunks_mut(n * ROWS_PER_TASK).zip(input.par_chunks(n * ROWS_PER_TASK)).for_each(|(o, i)| f(i, o));
    out
}

/// Like [`rows_map`] with a second input of the same shape.
fn rows_map2<T: WithDType>(a: &[T], b: &[T], n: usize, f: impl Fn(&[T], &[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(a.par_chunks(n * ROWS_PER_TASK).zip(b.par_chunks(n * ROWS_PER_TASK)))
        .for_each(|(o, (a, b))| f(a, b, o));
    out
}

fn last_dim(layout: &Layout) -> Result<usize> {
    layout
        .shape()
        .dims()
        .last()
        .copied()
        .filter(|&n| n > 0)
        .ok_or_else(|| candle_core::Error::Msg("empty last dimension".into()))
}

macro_rules! dispatch1 {
    ($storage:expr, $layout:expr, $name:expr, $f:ident) => {
        match $storage {
            CpuStorage::F32(_) => {
                Ok(($f::<f32>(contiguous($storage, $layout, $name)?, last_dim($layout)?), $layout.shape().clone()))
            }
            CpuStorage::F64(_) => {
                Ok(($f::<f64>(contiguous($storage, $layout, $name)?, last_dim($layout)?), $layout.shape().clone()))
            }
            _ => candle_core::bail!("{}: only f32 and f64", $name),
        }
    };
}

macro_rules! dispatch2 {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $name:expr, $f:ident $(, $arg:expr)*) => {{
        if $l1.shape() != $l2.shape() {
            candle_core::bail!("{}: shape mismatch", $name);
        }
        match ($s1, $s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => Ok((
                $f::<f32>(contiguous($s1, $l1, $name)?, contiguous($s2, $l2, $name)?, last_dim($l1)? $(, $arg)*),
                $l1.shape().clone(),
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => Ok((
                $f::<f64>(contiguous($s1, $l1, $name)?, contiguous($s2, $l2, $name)?, last_dim($l1)? $(, $arg)*),
                $l1.shape().clone(),
            )),
            _ => candle_core::bail!("{}: only f32 and f64 of one type", $name),
        }
    }};
}

/// Mean and `1 / sqrt(var + eps)` of one row (two passes).
fn moments<T: Real>(row: &[T], eps: T) -> (T, T) {
    let n = T::from_f64(row.len() as f64);
    let mut sum = T::zero();
    for &v in row {
        sum += v;
    }
    let mean = sum / n;
    let mut var = T::zero();
    for &v in row {
        var += (v - mean) * (v - mean);
    }
    (mean, T::one() / (var / n + eps).sqrt())
}

/// `(x - mean) / sqrt(var + eps)` over the last dimension (LayerNorm without its affine part).
pub struct Normalize {
    pub eps: f64,
}

fn normalize_fwd<T: Real>(x: &[T], n: usize, eps: f64) -> CpuStorage {
    let eps = T::from_f64(eps);
    let out = rows_map(x, n, |input, output| {
        for (row, out) in input.chunks(n).zip(output.chunks_mut(n)) {
            let (mean, rstd) = moments(row, eps);
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v - mean) * rstd;
            }
        }
    });
    T::to_cpu_storage_owned(out)
}

/// The gradient of [`Normalize`]: `rstd * (g - mean(g) - x̂ * mean(g * x̂))`.
struct NormalizeGrad {
    eps: f64,
}

fn normalize_bwd<T: Real>(x: &[T], g: &[T], n: usize, eps: f64) -> CpuStorage {
    let eps = T::from_f64(eps);
    let count = T::from_f64(n as f64);
    let out = rows_map2(x, g, n, |xs, gs, output| {
        for ((row, grad), out) in xs.chunks(n).zip(gs.chunks(n)).zip(output.chunks_mut(n)) {
            let (mean, rstd) = moments(row, eps);
            let (mut g_mean, mut gx_mean) = (T::zero(), T::zero());
            for (&v, &gv) in row.iter().zip(grad) {
                g_mean += gv;
                gx_mean += gv * ((v - mean) * rstd);
            }
            g_mean /= count;
            gx_mean /= count;
            for ((o, &v), &gv) in out.iter_mut().zip(row).zip(grad) {
                *o = rstd * (gv - g_mean - (v - mean) * rstd * gx_mean);
            }
        }
    });
    T::to_cpu_storage_owned(out)
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "pipe-normalize"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let eps = self.eps;
        match storage {
            CpuStorage::F32(_) => Ok((
                normalize_fwd::<f32>(contiguous(storage, layout, "normalize")?, last_dim(layout)?, eps),
                layout.shape().clone(),
            )),
            CpuStorage::F64(_) => Ok((
                normalize_fwd::<f64>(contiguous(storage, layout, "normalize")?, last_dim(layout)?, eps),
                layout.shape().clone(),
            )),
            _ => candle_core::bail!("normalize: only f32 and f64"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &NormalizeGrad { eps: self.eps })?))
    }
}

impl CustomOp2 for NormalizeGrad {
    fn name(&self) -> &'static str {
        "pipe-normalize-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch2!(s1, l1, s2, l2, "normalize-grad", normalize_bwd, self.eps)
    }
}

/// GELU with the exact erf: `x * Φ(x)`.
pub struct GeluErf;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

fn gelu_fwd<T: Real>(x: &[T], n: usize) -> CpuStorage {
    let (half, frac) = (T::from_f64(0.5), T::from_f64(std::f64::consts::FRAC_1_SQRT_2));
    let out = rows_map(x, n, |input, output| {
        for (o, &v) in output.iter_mut().zip(input) {
            *o = v * half * (T::one() + (v * frac).erf());
        }
    });
    T::to_cpu_storage_owned(out)
}

/// The gradient of [`GeluErf`]: `g * (Φ(x) + x φ(x))`.
struct GeluErfGrad;

fn gelu_bwd<T: Real>(x: &[T], g: &[T], n: usize) -> CpuStorage {
    let (half, frac, pdf) =
        (T::from_f64(0.5), T::from_f64(std::f64::consts::FRAC_1_SQRT_2), T::from_f64(FRAC_1_SQRT_2PI));
    let out = rows_map2(x, g, n, |xs, gs, output| {
        for ((o, &v), &g) in output.iter_mut().zip(xs).zip(gs) {
            let cdf = half * (T::one() + (v * frac).erf());
            *o = g * (cdf + v * pdf * (T::zero() - half * v * v).exp());
        }
    });
    T::to_cpu_storage_owned(out)
}

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "pipe-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch1!(storage, layout, "gelu", gelu_fwd)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluErfGrad)?))
    }
}

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "pipe-gelu-erf-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch2!(s1, l1, s2, l2, "gelu-grad", gelu_bwd)
    }
}

fn row_len_matches(l1: &Layout, l2: &Layout, name: &str) -> Result<usize> {
    let n = last_dim(l1)?;
    if l2.shape().elem_count() != n {
        candle_core::bail!("{name}: expected {n} values per row, got {}", l2.shape().elem_count());
    }
    Ok(n)
}

/// Sums of the columns of a row-major matrix: the gradient of a vector broadcast over rows.
/// One contiguous pass (candle's reduction over a leading dimension walks with a stride).
pub struct ColumnSum;

fn column_sum<T: WithDType>(x: &[T], n: usize) -> CpuStorage {
    let mut acc = vec![0f64; n];
    for row in x.chunks(n) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v.to_f64();
        }
    }
    T::to_cpu_storage_owned(acc.into_iter().map(T::from_f64).collect())
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "pipe-column-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = last_dim(layout)?;
        let out = match storage {
            CpuStorage::F32(_) => column_sum::<f32>(contiguous(storage, layout, "column-sum")?, n),
            CpuStorage::F64(_) => column_sum::<f64>(contiguous(storage, layout, "column-sum")?, n),
            _ => candle_core::bail!("column-sum: only f32 and f64"),
        };
        Ok((out, Shape::from(n)))
    }
}

/// `x̂ * weight + bias` per row (LayerNorm's affine part), with a one-pass backward.
pub struct ScaleShift;

fn scale_shift<T: WithDType>(x: &[T], w: &[T], b: &[T], n: usize) -> CpuStorage {
    let mut out = x.to_vec();
    for row in out.chunks_mut(n) {
        for ((o, w), b) in row.iter_mut().zip(w).zip(b) {
            *o = *o * *w + *b;
        }
    }
    T::to_cpu_storage_owned(out)
}

/// `g * weight` per row: the gradient of [`ScaleShift`] for `x̂`.
struct RowScale;

fn row_scale<T: WithDType>(g: &[T], w: &[T], n: usize) -> CpuStorage {
    let mut out = g.to_vec();
    for row in out.chunks_mut(n) {
        for (o, w) in row.iter_mut().zip(w) {
            *o *= *w;
        }
    }
    T::to_cpu_storage_owned(out)
}

/// Column sums of `g * x̂`: the gradient of [`ScaleShift`] for the weight.
struct ColumnDot;

fn column_dot<T: WithDType>(g: &[T], x: &[T], n: usize) -> CpuStorage {
    let mut acc = vec![0f64; n];
    for (gr, xr) in g.chunks(n).zip(x.chunks(n)) {
        for ((a, g), x) in acc.iter_mut().zip(gr).zip(xr) {
            *a += g.to_f64() * x.to_f64();
        }
    }
    T::to_cpu_storage_owned(acc.into_iter().map(T::from_f64).collect())
}

impl CustomOp3 for ScaleShift {
    fn name(&self) -> &'static str {
        "pipe-scale-shift"
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
        let n = row_len_matches(l1, l2, "scale-shift")?;
        row_len_matches(l1, l3, "scale-shift")?;
        let name = "scale-shift";
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                scale_shift::<f32>(contiguous(s1, l1, name)?, contiguous(s2, l2, name)?, contiguous(s3, l3, name)?, n)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                scale_shift::<f64>(contiguous(s1, l1, name)?, contiguous(s2, l2, name)?, contiguous(s3, l3, name)?, n)
            }
            _ => candle_core::bail!("scale-shift: only f32 and f64 of one type"),
        };
        Ok((out, l1.shape().clone()))
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
        let grad_x = grad.apply_op2_no_bwd(w, &RowScale)?;
        let grad_w = grad.apply_op2_no_bwd(&x.contiguous()?, &ColumnDot)?;
        let grad_b = grad.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(grad_x), Some(grad_w), Some(grad_b)))
    }
}

impl CustomOp2 for RowScale {
    fn name(&self) -> &'static str {
        "pipe-row-scale"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = row_len_matches(l1, l2, "row-scale")?;
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                row_scale::<f32>(contiguous(s1, l1, "row-scale")?, contiguous(s2, l2, "row-scale")?, n)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                row_scale::<f64>(contiguous(s1, l1, "row-scale")?, contiguous(s2, l2, "row-scale")?, n)
            }
            _ => candle_core::bail!("row-scale: only f32 and f64 of one type"),
        };
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp2 for ColumnDot {
    fn name(&self) -> &'static str {
        "pipe-column-dot"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("column-dot: shape mismatch");
        }
        let n = last_dim(l1)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                column_dot::<f32>(contiguous(s1, l1, "column-dot")?, contiguous(s2, l2, "column-dot")?, n)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                column_dot::<f64>(contiguous(s1, l1, "column-dot")?, contiguous(s2, l2, "column-dot")?, n)
            }
            _ => candle_core::bail!("column-dot: only f32 and f64 of one type"),
        };
        Ok((out, Shape::from(n)))
    }
}

/// The contiguous values of a CPU tensor of type `T` while `guard` holds its storage.
fn tensor_slice<'g, T: WithDType>(guard: &'g (candle_core::StorageRef<'_>, &Layout), what: &str) -> Result<&'g [T]> {
    let (storage, layout) = guard;
    let candle_core::Storage::Cpu(cpu) = &**storage else { candle_core::bail!("{what}: the mask must be on the CPU") };
    contiguous(cpu, layout, what)
}

/// `x * mask`: dropout with a mask drawn by the caller (0, or `1 / (1 - p)` to keep).
pub struct Dropout {
    pub mask: Tensor,
}

fn mul_mask<T: WithDType>(x: &[T], mask: &[T]) -> CpuStorage {
    T::to_cpu_storage_owned(x.iter().zip(mask).map(|(&x, &m)| x * m).collect())
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "pipe-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if self.mask.shape() != layout.shape() {
            candle_core::bail!("dropout: mask shape {:?}, input {:?}", self.mask.shape(), layout.shape());
        }
        let guard = self.mask.storage_and_layout();
        let out = match storage {
            CpuStorage::F32(_) => {
                mul_mask::<f32>(contiguous(storage, layout, "dropout")?, tensor_slice(&guard, "dropout")?)
            }
            CpuStorage::F64(_) => {
                mul_mask::<f64>(contiguous(storage, layout, "dropout")?, tensor_slice(&guard, "dropout")?)
            }
            _ => candle_core::bail!("dropout: only f32 and f64"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Dropout { mask: self.mask.clone() })?))
    }
}

/// `x * mask + residual`: dropout on a sub-layer's output, then the residual connection, in
/// one pass (and one pass backward).
pub struct DropoutAdd {
    pub mask: Tensor,
}

fn mul_mask_add<T: WithDType>(x: &[T], residual: &[T], mask: &[T]) -> CpuStorage {
    T::to_cpu_storage_owned(x.iter().zip(mask).zip(residual).map(|((&x, &m), &r)| x * m + r).collect())
}

impl CustomOp2 for DropoutAdd {
    fn name(&self) -> &'static str {
        "pipe-dropout-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() || self.mask.shape() != l1.shape() {
            candle_core::bail!("dropout-add: shapes {:?}, {:?}, mask {:?}", l1.shape(), l2.shape(), self.mask.shape());
        }
        let guard = self.mask.storage_and_layout();
        let name = "dropout-add";
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                mul_mask_add::<f32>(contiguous(s1, l1, name)?, contiguous(s2, l2, name)?, tensor_slice(&guard, name)?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                mul_mask_add::<f64>(contiguous(s1, l1, name)?, contiguous(s2, l2, name)?, tensor_slice(&guard, name)?)
            }
            _ => candle_core::bail!("dropout-add: only f32 and f64 of one type"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _r: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = grad.apply_op1_no_bwd(&Dropout { mask: self.mask.clone() })?;
        Ok((Some(grad_x), Some(grad)))
    }
}

/// Attention probabilities from raw scores `(batch, heads, queries, keys)`:
/// `dropout(softmax(scale * scores + bias))`, where `bias` `(batch, keys)` is 0 for real tokens
/// and very negative for padding, in one pass. The backward pass recomputes the softmax from
/// the scores rather than keeping it.
pub struct AttentionSoftmax {
    pub scale: f64,
    /// Dropout mask shaped like the scores (training passes).
    pub mask: Option<Tensor>,
}

/// Rows of the scores per batch element, and the row length (keys).
fn attention_dims(scores: &Layout, bias: &Layout) -> Result<(usize, usize)> {
    let dims = scores.shape().dims();
    let [b, h, q, k] = dims else { candle_core::bail!("attention-softmax: scores must be 4-d, got {dims:?}") };
    if bias.shape().dims() != [*b, *k] {
        candle_core::bail!("attention-softmax: bias {:?} does not match scores {dims:?}", bias.shape());
    }
    Ok((h * q, *k))
}

/// Writes `softmax(scale * x + bias)` of one row to `y`.
fn scaled_softmax_row<T: Real>(x: &[T], bias: &[T], scale: T, y: &mut [T]) {
    for ((y, &x), &b) in y.iter_mut().zip(x).zip(bias) {
        *y = scale * x + b;
    }
    let max = y.iter().copied().fold(y[0], |m, v| if v > m { v } else { m });
    let mut sum = T::zero();
    for y in y.iter_mut() {
        *y = (*y - max).exp();
        sum += *y;
    }
    let inv = T::one() / sum;
    for y in y.iter_mut() {
        *y *= inv;
    }
}

fn attention_fwd<T: Real>(
    x: &[T],
    bias: &[T],
    mask: Option<&[T]>,
    per_batch: usize,
    n: usize,
    scale: f64,
) -> CpuStorage {
    let scale = T::from_f64(scale);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(n * ROWS_PER_TASK).enumerate().for_each(|(c, out)| {
        for (i, y) in out.chunks_mut(n).enumerate() {
            let row = c * ROWS_PER_TASK + i;
            let at = row * n;
            let b = row / per_batch;
            scaled_softmax_row(&x[at..at + n], &bias[b * n..(b + 1) * n], scale, y);
            if let Some(mask) = mask {
                for (y, &m) in y.iter_mut().zip(&mask[at..at + n]) {
                    *y *= m;
                }
            }
        }
    });
    T::to_cpu_storage_owned(out)
}

/// `dx = scale * y * (g' - Σ g' y)` with `g' = g * mask` and `y` recomputed from the scores.
fn attention_bwd<T: Real>(
    x: &[T],
    bias: &[T],
    mask: Option<&[T]>,
    g: &[T],
    per_batch: usize,
    n: usize,
    scale: f64,
) -> CpuStorage {
    let scale = T::from_f64(scale);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(n * ROWS_PER_TASK).enumerate().for_each(|(c, out)| {
        let mut y = vec![T::zero(); n];
        for (i, dx) in out.chunks_mut(n).enumerate() {
            let row = c * ROWS_PER_TASK + i;
            let at = row * n;
            let b = row / per_batch;
            scaled_softmax_row(&x[at..at + n], &bias[b * n..(b + 1) * n], scale, &mut y);
            for (d, &g) in dx.iter_mut().zip(&g[at..at + n]) {
                *d = g;
            }
            if let Some(mask) = mask {
                for (d, &m) in dx.iter_mut().zip(&mask[at..at + n]) {
                    *d *= m;
                }
            }
            let mut dot = T::zero();
            for (&d, &y) in dx.iter().zip(&y) {
                dot += d * y;
            }
            for (d, &y) in dx.iter_mut().zip(&y) {
                *d = scale * y * (*d - dot);
            }
        }
    });
    T::to_cpu_storage_owned(out)
}

/// The gradient of [`AttentionSoftmax`] for the scores, from the scores and `dL/dprobs`.
struct AttentionSoftmaxGrad {
    scale: f64,
    mask: Option<Tensor>,
    bias: Tensor,
}

impl AttentionSoftmax {
    /// The forward pass over scores `s1` and bias `s2` of type `T`.
    fn run<T: Real>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
        let (per_batch, n) = attention_dims(l1, l2)?;
        let guard = self.mask.as_ref().map(Tensor::storage_and_layout);
        let name = "attention-softmax";
        let mask = guard.as_ref().map(|g| tensor_slice::<T>(g, name)).transpose()?;
        Ok(attention_fwd(contiguous(s1, l1, name)?, contiguous(s2, l2, name)?, mask, per_batch, n, self.scale))
    }
}

impl AttentionSoftmaxGrad {
    /// The backward pass from scores `s1` and the gradient `s2` of type `T`.
    fn run<T: Real>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<CpuStorage> {
        let bias_guard = self.bias.storage_and_layout();
        let (per_batch, n) = attention_dims(l1, bias_guard.1)?;
        let guard = self.mask.as_ref().map(Tensor::storage_and_layout);
        let name = "attention-softmax-grad";
        let mask = guard.as_ref().map(|g| tensor_slice::<T>(g, name)).transpose()?;
        let bias = tensor_slice::<T>(&bias_guard, name)?;
        let (x, g) = (contiguous(s1, l1, name)?, contiguous(s2, l2, name)?);
        Ok(attention_bwd(x, bias, mask, g, per_batch, n, self.scale))
    }
}

impl CustomOp2 for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "pipe-attention-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>(s1, l1, s2, l2)?,
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>(s1, l1, s2, l2)?,
            _ => candle_core::bail!("attention-softmax: only f32 and f64 of one type"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = AttentionSoftmaxGrad { scale: self.scale, mask: self.mask.clone(), bias: bias.contiguous()? };
        Ok((Some(x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &op)?), None))
    }
}

impl CustomOp2 for AttentionSoftmaxGrad {
    fn name(&self) -> &'static str {
        "pipe-attention-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("attention-softmax-grad: shape mismatch");
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>(s1, l1, s2, l2)?,
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>(s1, l1, s2, l2)?,
            _ => candle_core::bail!("attention-softmax-grad: only f32 and f64 of one type"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_is_within_a_micro_of_the_exact_one() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f64 * 1e-4;
            worst = worst.max((f64::from(erf_fast(x as f32)) - erf_f64(x)).abs());
        }
        assert!(worst < 1e-6, "largest error {worst}");
    }
}
