//! `AdamW` with decoupled weight decay that skips biases and LayerNorm (as BERT recipes do),
//! global gradient-norm clipping, and the linear warm-up / linear decay learning-rate schedule.
//! candle-nn's `AdamW` has no parameter groups, no clipping and private moments (no resume).
//!
//! The update is PyTorch's `torch.optim.AdamW`:
//! `p ← p − lr·wd·p; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//!  p ← p − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Result, Tensor, Var, WithDType};
use rayon::prelude::{IndexedParallelIterator, IntoParallelIterator, ParallelIterator, ParallelSliceMut};

use super::gradients::{Gradients, ParamGrad, View};
use crate::error::{StepError, StepResult};

/// Whether weight decay applies to a parameter: not to biases and LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm") || name.ends_with("predictions.bias"))
}

/// One parameter and its moments. The moments live in host memory in f64 whatever the
/// parameter's dtype, so the update is one fused pass and checkpoints are exact.
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Vec<f64>,
    v: Vec<f64>,
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
    /// Updates `p` from its gradient `g` (before `scale`).
    fn apply<T: WithDType>(&self, p: &mut [T], g: &[f64], m: &mut [f64], v: &mut [f64]) {
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * self.scale;
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            let decayed = p.to_f64() * (1.0 - self.lr * self.decay);
            *p = T::from_f64(decayed - self.lr * (*m / self.c1) / ((*v / self.c2).sqrt() + self.eps));
        }
    }

    /// [`Update::apply`] with the gradient read from `grad` block by block, in chunks of
    /// [`CHUNK`] elements on rayon's pool.
    fn apply_view<T: WithDType>(&self, p: &mut [T], grad: &View<'_, T>, m: &mut [f64], v: &mut [f64]) {
        p.par_chunks_mut(CHUNK).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).enumerate().for_each(
            |(c, ((p, m), v))| {
                let mut g = [0.0f64; BLOCK];
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
    moments: RefCell<(&'a mut [f64], &'a mut [f64])>,
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
        let (m, v) = &mut *moments;
        match storage {
            CpuStorage::F32(p) => self.update.apply_view(&mut p[p0..p1], &self.grad.view::<f32>(&guards)?, m, v),
            CpuStorage::F64(p) => self.update.apply_view(&mut p[p0..p1], &self.grad.view::<f64>(&guards)?, m, v),
            _ => candle_core::bail!("adamw: parameters must be f32 or f64"),
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
                let n = var.elem_count();
                Slot { name: name.to_string(), var: var.clone(), decay: decays(name), m: vec![0.0; n], v: vec![0.0; n] }
            })
            .collect();
        Ok(AdamW { slots, beta1: 0.9, beta2: 0.999, eps: 1e-6, weight_decay, step: 0 })
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left as they are.
    pub fn step(&mut self, grads: GradStore, lr: f64) -> Result<()> {
        self.step_scaled(&[Gradients::from(grads)], lr, 1.0)
    }

    /// One update from the sum of the gradients in `grads` (one store per shard of the batch),
    /// multiplied by `scale` (see [`clip_scale`]). Parameters without a gradient are left as
    /// they are.
    pub fn step_scaled(&mut self, grads: &[Gradients], lr: f64, scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for slot in &mut self.slots {
            let Some(grad) = ParamGrad::collect(grads, &slot.var)? else { continue };
            let update = Update {
                lr,
                decay: if slot.decay { self.weight_decay } else { 0.0 },
                beta1: self.beta1,
                beta2: self.beta2,
                c1: 1.0 - self.beta1.powi(t),
                c2: 1.0 - self.beta2.powi(t),
                eps: self.eps,
                scale,
            };
            if slot.var.device().is_cpu() && grad.is_cpu() && slot.var.as_tensor().is_contiguous() {
                let op = InPlace { update, grad: &grad, moments: RefCell::new((&mut slot.m, &mut slot.v)) };
                slot.var.as_tensor().inplace_op1(&op)?;
            } else {
                let dtype = slot.var.dtype();
                let mut p = slot.var.as_tensor().flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                let g = grad.to_tensor(&slot.var)?.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                update.apply(&mut p, &g, &mut slot.m, &mut slot.v);
                let p = Tensor::from_vec(p, slot.var.shape(), slot.var.device())?.to_dtype(dtype)?;
                slot.var.set(&p)?;
            }
        }
        Ok(())
    }

    /// Writes the moments and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> StepResult<()> {
        let failed = |e: candle_core::Error| StepError::failed(format!("writing {}: {e}", path.display()));
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for slot in &self.slots {
            let shape = slot.var.shape();
            all.insert(format!("m.{}", slot.name), Tensor::from_slice(&slot.m, shape, &Device::Cpu).map_err(failed)?);
            all.insert(format!("v.{}", slot.name), Tensor::from_slice(&slot.v, shape, &Device::Cpu).map_err(failed)?);
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
            let mut take = |key: String| -> StepResult<Vec<f64>> {
                let t = all.remove(&key).ok_or_else(|| bad(format!("no tensor `{key}`")))?;
                let values = t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1::<f64>());
                let values = values.map_err(|e| bad(e.to_string()))?;
                if values.len() != n {
                    return Err(bad(format!("tensor `{key}` has {} values, the parameter {n}", values.len())));
                }
                Ok(values)
            };
            slot.m = take(format!("m.{}", slot.name))?;
            slot.v = take(format!("v.{}", slot.name))?;
        }
        let step = all.remove("step").ok_or_else(|| bad("no tensor `step`".into()))?;
        let step = step.to_vec1::<i64>().map_err(|e| bad(e.to_string()))?;
        self.step = step.first().copied().unwrap_or(0) as u64;
        Ok(())
    }
}

/// `Σᵢ gᵢ²` over chunks on rayon's pool, added up in chunk order (the same bytes whatever the
/// number of threads).
fn sum_of_squares<T: WithDType>(grad: &View<'_, T>, n: usize) -> f64 {
    let partial: Vec<f64> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut g = [0.0f64; BLOCK];
            let mut sum = 0.0;
            let mut start = c * CHUNK;
            let end = n.min(start + CHUNK);
            while start < end {
                let g = &mut g[..BLOCK.min(end - start)];
                grad.fill(start, g);
                sum += g.iter().map(|x| x * x).sum::<f64>();
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
