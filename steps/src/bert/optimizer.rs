//! `AdamW` with decoupled weight decay that skips biases and LayerNorm (as BERT recipes do),
//! global gradient-norm clipping, and the linear warm-up / linear decay learning-rate schedule.
//! candle-nn's `AdamW` has no parameter groups, no clipping and private moments (no resume).
//!
//! The update is PyTorch's `torch.optim.AdamW`:
//! `p ← p − lr·wd·p; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//!  p ← p − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)`.
//!
//! Two implementations: on the CPU one fused in-place pass per parameter over host moments
//! ([`AdamW::step_scaled`]); on a GPU the same formula as tensor operations on moments kept on
//! the device, with the gradient scale (clipping) a device scalar, so an update never waits for
//! the device ([`AdamW::step_device`], [`grad_norm_tensor`], [`clip_scale_tensor`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Result, Tensor, Var};
use rayon::prelude::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator, ParallelSliceMut};

use super::gradients::{Gradients, ParamGrad, View};
use super::ops::Real;
use crate::error::{StepError, StepResult};

/// Whether weight decay applies to a parameter: not to biases and LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm") || name.ends_with("predictions.bias"))
}

/// The first and second moments of one parameter, in the parameter's precision (f32 for
/// training, as PyTorch keeps them; f64 for the tests against PyTorch in f64).
enum Moments {
    F32(Vec<f32>, Vec<f32>),
    F64(Vec<f64>, Vec<f64>),
    /// On the parameter's device, shaped like it (the device path).
    Tensors(Tensor, Tensor),
}

impl Moments {
    /// The moments as tensors on `var`'s device and in its type (moving host moments there).
    fn on_device(&mut self, var: &Var) -> Result<(Tensor, Tensor)> {
        if let Moments::Tensors(m, v) = self {
            return Ok((m.clone(), v.clone()));
        }
        let (m, v) = self.tensors(var.shape())?;
        let to = |t: Tensor| t.to_dtype(var.dtype()).and_then(|t| t.to_device(var.device()));
        let (m, v) = (to(m)?, to(v)?);
        *self = Moments::Tensors(m.clone(), v.clone());
        Ok((m, v))
    }

    fn zeros(dtype: DType, n: usize) -> Moments {
        match dtype {
            DType::F64 => Moments::F64(vec![0.0; n], vec![0.0; n]),
            _ => Moments::F32(vec![0.0; n], vec![0.0; n]),
        }
    }

    /// `(m, v)` as tensors, for checkpoints.
    fn tensors(&self, shape: &candle_core::Shape) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::F32(m, v) => {
                (Tensor::from_slice(m, shape, &Device::Cpu)?, Tensor::from_slice(v, shape, &Device::Cpu)?)
            }
            Moments::F64(m, v) => {
                (Tensor::from_slice(m, shape, &Device::Cpu)?, Tensor::from_slice(v, shape, &Device::Cpu)?)
            }
            Moments::Tensors(m, v) => {
                let host = |t: &Tensor| t.to_device(&Device::Cpu).and_then(|t| t.reshape(shape));
                (host(m)?, host(v)?)
            }
        })
    }

    /// Moments of the same precision as `self` from checkpoint tensors (in host memory: the
    /// device path moves them on its next update).
    fn like_from_tensors(&self, m: &Tensor, v: &Tensor) -> Result<Moments> {
        let flat = |t: &Tensor, dtype: DType| t.flatten_all().and_then(|t| t.to_dtype(dtype));
        let f64s = match self {
            Moments::F32(..) => false,
            Moments::F64(..) => true,
            Moments::Tensors(t, _) => t.dtype() == DType::F64,
        };
        Ok(if f64s {
            Moments::F64(flat(m, DType::F64)?.to_vec1()?, flat(v, DType::F64)?.to_vec1()?)
        } else {
            Moments::F32(flat(m, DType::F32)?.to_vec1()?, flat(v, DType::F32)?.to_vec1()?)
        })
    }
}

/// One parameter and its moments (in host memory, so the update is one fused pass).
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
}

/// The scalars of one update.
#[derive(Clone, Copy)]
struct Update {
    lr: f64,
    decay: f64,
    beta1: f64,
    beta2: f64,
    c1: f64,
    c2: f64,
    eps: f64,
    /// Gradient scale (clipping, and the mean over the batch).
    scale: f64,
}

/// Elements of one parameter updated together on one thread.
const CHUNK: usize = 1 << 15;
/// Elements whose gradient is summed into a buffer at a time (fits in L1 with the moments).
const BLOCK: usize = 512;

impl Update {
    /// Updates `p` from its gradient `g` (before `scale`), computing in `T`.
    fn apply<T: Real>(&self, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
        let f = T::from_f64;
        let (scale, b1, b2, nb1, nb2) =
            (f(self.scale), f(self.beta1), f(self.beta2), f(1.0 - self.beta1), f(1.0 - self.beta2));
        let (keep, step, rc2, eps) =
            (f(1.0 - self.lr * self.decay), f(self.lr / self.c1), f(1.0 / self.c2), f(self.eps));
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * scale;
            *m = b1 * *m + nb1 * g;
            *v = b2 * *v + nb2 * g * g;
            *p = *p * keep - step * *m / ((*v * rc2).sqrt() + eps);
        }
    }

    /// [`Update::apply`] as tensor operations on `p`'s device: the new `(p, m, v)`. `scale`,
    /// a scalar tensor, multiplies the gradient on top of `self.scale`.
    fn apply_tensors(
        &self,
        p: &Tensor,
        g: &Tensor,
        (m, v): (&Tensor, &Tensor),
        scale: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let g = g.to_dtype(p.dtype())?;
        let g = match scale {
            Some(s) => g.broadcast_mul(&s.to_dtype(p.dtype())?)?.affine(self.scale, 0.0)?,
            None => g.affine(self.scale, 0.0)?,
        };
        let m = (m.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
        let v = (v.affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
        let denominator = v.affine(1.0 / self.c2, 0.0)?.sqrt()?.affine(1.0, self.eps)?;
        let step = m.affine(self.lr / self.c1, 0.0)?.div(&denominator)?;
        let p = (p.affine(1.0 - self.lr * self.decay, 0.0)? - step)?;
        Ok((p, m, v))
    }

    /// [`Update::apply`] with the gradient read from `grad` block by block, in chunks of
    /// [`CHUNK`] elements on rayon's pool.
    fn apply_view<T: Real>(&self, p: &mut [T], grad: &View<'_, T>, m: &mut [T], v: &mut [T]) {
        p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).enumerate().for_each(
            |(c, ((p, m), v))| {
                let mut g = [T::zero(); BLOCK];
                for (b, ((p, m), v)) in
                    p.chunks_mut(BLOCK).zip(m.chunks_mut(BLOCK)).zip(v.chunks_mut(BLOCK)).enumerate()
                {
                    let g = &mut g[..p.len()];
                    grad.fill(c * CHUNK + b * BLOCK, g);
                    self.apply(p, g, m, v);
                }
            },
        );
    }
}

/// The fused in-place update of one CPU parameter from its gradient summed over shards.
struct InPlace<'a> {
    update: Update,
    grad: &'a ParamGrad,
    moments: RefCell<&'a mut Moments>,
}

impl InplaceOp1 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "pipe-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let Some((p0, p1)) = layout.contiguous_offsets() else {
            candle_core::bail!("adamw: parameter must be contiguous")
        };
        let guards = self.grad.guards();
        let mut moments = self.moments.borrow_mut();
        match (storage, &mut **moments) {
            (CpuStorage::F32(p), Moments::F32(m, v)) => {
                self.update.apply_view(&mut p[p0..p1], &self.grad.view::<f32>(&guards)?, m, v)
            }
            (CpuStorage::F64(p), Moments::F64(m, v)) => {
                self.update.apply_view(&mut p[p0..p1], &self.grad.view::<f64>(&guards)?, m, v)
            }
            _ => candle_core::bail!("adamw: parameters must be f32 or f64 with host moments"),
        }
        Ok(())
    }
}

/// AdamW over named parameters, with its moments readable for checkpoints.
pub struct AdamW {
    slots: Vec<Slot>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of updates done so far.
    pub step: u64,
}

impl AdamW {
    pub fn new<'a>(params: impl IntoIterator<Item = (&'a str, &'a Var)>, weight_decay: f64) -> Result<AdamW> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let moments = Moments::zeros(var.dtype(), var.elem_count());
                Slot { name: name.to_string(), var: var.clone(), decay: decays(name), moments }
            })
            .collect();
        Ok(AdamW { slots, beta1: 0.9, beta2: 0.999, eps: 1e-6, weight_decay, step: 0 })
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left as they are.
    pub fn step(&mut self, grads: GradStore, lr: f64) -> Result<()> {
        self.step_scaled(&[Gradients::from(grads)], lr, 1.0)
    }

    /// The scalars of update number `self.step` for `slot`.
    fn update(&self, decay: bool, lr: f64, scale: f64) -> Update {
        let t = self.step as i32;
        Update {
            lr,
            decay: if decay { self.weight_decay } else { 0.0 },
            beta1: self.beta1,
            beta2: self.beta2,
            c1: 1.0 - self.beta1.powi(t),
            c2: 1.0 - self.beta2.powi(t),
            eps: self.eps,
            scale,
        }
    }

    /// One update from the sum of the gradients in `grads` (one store per shard of the batch),
    /// multiplied by `scale` (see [`clip_scale`]). Parameters without a gradient are left as
    /// they are. CPU parameters are updated in place; others as in [`AdamW::step_device`].
    pub fn step_scaled(&mut self, grads: &[Gradients], lr: f64, scale: f64) -> Result<()> {
        self.step += 1;
        for i in 0..self.slots.len() {
            let update = self.update(self.slots[i].decay, lr, scale);
            let slot = &mut self.slots[i];
            let Some(grad) = ParamGrad::collect(grads, &slot.var)? else { continue };
            let host_moments = matches!(slot.moments, Moments::F32(..) | Moments::F64(..));
            if slot.var.device().is_cpu() && grad.is_cpu() && slot.var.as_tensor().is_contiguous() && host_moments {
                let op = InPlace { update, grad: &grad, moments: RefCell::new(&mut slot.moments) };
                slot.var.as_tensor().inplace_op1(&op)?;
            } else {
                Self::update_on_device(slot, &grad, update, None)?;
            }
        }
        Ok(())
    }

    /// One update as tensor operations on the parameters' device, the gradient multiplied by
    /// `scale`, a scalar tensor there (clipping and the mean over the batch, see
    /// [`clip_scale_tensor`]): nothing is read back to the host. Parameters without a gradient
    /// are left as they are.
    pub fn step_device(&mut self, grads: &[Gradients], lr: f64, scale: &Tensor) -> Result<()> {
        self.step += 1;
        for i in 0..self.slots.len() {
            let update = self.update(self.slots[i].decay, lr, 1.0);
            let slot = &mut self.slots[i];
            let Some(grad) = ParamGrad::collect(grads, &slot.var)? else { continue };
            Self::update_on_device(slot, &grad, update, Some(scale))?;
        }
        Ok(())
    }

    fn update_on_device(slot: &mut Slot, grad: &ParamGrad, update: Update, scale: Option<&Tensor>) -> Result<()> {
        let g = grad.to_tensor(&slot.var)?;
        let (m, v) = slot.moments.on_device(&slot.var)?;
        let (p, m, v) = update.apply_tensors(slot.var.as_tensor(), &g, (&m, &v), scale)?;
        slot.var.set(&p)?;
        slot.moments = Moments::Tensors(m, v);
        Ok(())
    }

    /// Writes the moments and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> StepResult<()> {
        let failed = |e: candle_core::Error| StepError::failed(format!("writing {}: {e}", path.display()));
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for slot in &self.slots {
            let (m, v) = slot.moments.tensors(slot.var.shape()).map_err(failed)?;
            all.insert(format!("m.{}", slot.name), m);
            all.insert(format!("v.{}", slot.name), v);
        }
        all.insert("step".into(), Tensor::new(&[self.step as i64], &Device::Cpu).map_err(failed)?);
        candle_core::safetensors::save(&all, path).map_err(failed)
    }

    /// Restores what [`AdamW::save`] wrote.
    pub fn load(&mut self, path: &Path) -> StepResult<()> {
        let bad = |m: String| StepError::failed(format!("{}: {m}", path.display()));
        let mut all = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
        for slot in &mut self.slots {
            let n = slot.var.elem_count();
            let mut take = |key: String| -> StepResult<Tensor> {
                let t = all.remove(&key).ok_or_else(|| bad(format!("no tensor `{key}`")))?;
                if t.elem_count() != n {
                    return Err(bad(format!("tensor `{key}` has {} values, the parameter {n}", t.elem_count())));
                }
                Ok(t)
            };
            let (m, v) = (take(format!("m.{}", slot.name))?, take(format!("v.{}", slot.name))?);
            slot.moments = slot.moments.like_from_tensors(&m, &v).map_err(|e| bad(e.to_string()))?;
        }
        let step = all.remove("step").ok_or_else(|| bad("no tensor `step`".into()))?;
        let step = step.to_vec1::<i64>().map_err(|e| bad(e.to_string()))?;
        self.step = step.first().copied().unwrap_or(0) as u64;
        Ok(())
    }
}

/// `Σᵢ gᵢ²` over chunks on rayon's pool, added up in chunk order (the same bytes whatever the
/// number of threads).
fn sum_of_squares<T: Real>(grad: &View<'_, T>, n: usize) -> f64 {
    let partial: Vec<f64> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut g = [T::zero(); BLOCK];
            let mut sum = 0.0f64;
            let mut start = c * CHUNK;
            let end = n.min(start + CHUNK);
            while start < end {
                let g = &mut g[..BLOCK.min(end - start)];
                grad.fill(start, g);
                sum += g.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>();
                start += g.len();
            }
            sum
        })
        .collect();
    partial.iter().sum()
}

/// The global L2 norm of the gradients of `vars` summed over the shards in `grads`, as
/// `torch.nn.utils.clip_grad_norm_` computes it; read in place on CPU.
pub fn grad_norm(grads: &[Gradients], vars: &[&Var]) -> Result<f64> {
    let mut total = 0.0f64;
    for var in vars {
        let Some(grad) = ParamGrad::collect(grads, var)? else { continue };
        if var.device().is_cpu() && grad.is_cpu() {
            let guards = grad.guards();
            let n = var.elem_count();
            total += match var.dtype() {
                DType::F32 => sum_of_squares(&grad.view::<f32>(&guards)?, n),
                DType::F64 => sum_of_squares(&grad.view::<f64>(&guards)?, n),
                other => candle_core::bail!("gradient norm: unsupported dtype {other:?}"),
            };
        } else {
            total += grad.to_tensor(var)?.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
    }
    Ok(total.sqrt())
}

/// [`grad_norm`] as a scalar f32 tensor on the parameters' device, computed there without
/// reading anything back (`None` when no parameter has a gradient).
pub fn grad_norm_tensor(grads: &[Gradients], vars: &[&Var]) -> Result<Option<Tensor>> {
    let mut squares = Vec::with_capacity(vars.len());
    for var in vars {
        let Some(grad) = ParamGrad::collect(grads, var)? else { continue };
        squares.push(grad.to_tensor(var)?.to_dtype(DType::F32)?.sqr()?.sum_all()?);
    }
    if squares.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tensor::stack(&squares, 0)?.sum_all()?.sqrt()?))
}

/// [`clip_scale`] of a scalar norm tensor, as a scalar tensor on its device.
pub fn clip_scale_tensor(norm: &Tensor, max_norm: f64) -> Result<Tensor> {
    let one = norm.ones_like()?;
    if max_norm <= 0.0 {
        return Ok(one);
    }
    let clipped = (norm.affine(1.0, 1e-6)?.recip()? * max_norm)?;
    norm.gt(max_norm)?.where_cond(&clipped, &one)
}

/// The factor that brings a gradient of norm `norm` down to `max_norm` (1 when it is already
/// within, or when `max_norm` is 0: no clipping), as PyTorch computes it.
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// Linear warm-up from 0 to `peak` over `warmup` updates, then linear decay to 0 at `total`
/// (the GluonNLP fine-tuning recipe).
#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LrSchedule {
    pub fn new(peak: f64, warmup_ratio: f64, total: u64) -> Self {
        LrSchedule { peak, warmup: (total as f64 * warmup_ratio).floor() as u64, total }
    }

    /// The learning rate of update number `step` (1-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            self.peak * step as f64 / self.warmup as f64
        } else if self.total <= self.warmup {
            self.peak
        } else {
            let offset = (step - self.warmup) as f64 * self.peak / (self.total - self.warmup) as f64;
            (self.peak - offset).max(0.0)
        }
    }
}
