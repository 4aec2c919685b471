//! `AdamW` with decoupled weight decay that skips biases and LayerNorm (as BERT recipes do),
//! global gradient-norm clipping, and the linear warm-up / linear decay learning-rate schedule.
//! candle-nn's `AdamW` has no parameter groups, no clipping and private moments (no resume).
//!
//! The update is PyTorch's `torch.optim.AdamW`:
//! `p ← p − lr·wd·p; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//!  p ← p − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};

use crate::error::{StepError, StepResult};

/// Whether weight decay applies to a parameter: not to biases and LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm") || name.ends_with("predictions.bias"))
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
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
        let mut slots = Vec::new();
        for (name, var) in params {
            let zeros = var.as_tensor().zeros_like()?;
            slots.push(Slot { name: name.to_string(), var: var.clone(), decay: decays(name), m: zeros.clone(), v: zeros });
        }
        Ok(AdamW { slots, beta1: 0.9, beta2: 0.999, eps: 1e-6, weight_decay, step: 0 })
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left as they are.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else { continue };
            let p = slot.var.as_tensor();
            slot.m = ((&slot.m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            slot.v = ((&slot.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let decayed = if slot.decay && self.weight_decay > 0.0 { (p * (1.0 - lr * self.weight_decay))? } else { p.clone() };
            let denom = ((&slot.v / c2)?.sqrt()? + self.eps)?;
            let update = ((&slot.m / c1)? / denom)?;
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Writes the moments and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> StepResult<()> {
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for slot in &self.slots {
            all.insert(format!("m.{}", slot.name), slot.m.clone());
            all.insert(format!("v.{}", slot.name), slot.v.clone());
        }
        let step = Tensor::new(&[self.step as i64], &Device::Cpu).map_err(|e| StepError::failed(e.to_string()))?;
        all.insert("step".into(), step);
        candle_core::safetensors::save(&all, path).map_err(|e| StepError::failed(format!("writing {}: {e}", path.display())))
    }

    /// Restores what [`AdamW::save`] wrote.
    pub fn load(&mut self, path: &Path) -> StepResult<()> {
        let bad = |m: String| StepError::failed(format!("{}: {m}", path.display()));
        let mut all = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
        for slot in &mut self.slots {
            let device = slot.var.device().clone();
            let mut take = |key: String| -> StepResult<Tensor> {
                let t = all.remove(&key).ok_or_else(|| bad(format!("no tensor `{key}`")))?;
                t.to_device(&device).map_err(|e| bad(e.to_string()))
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

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (as `torch.nn.utils.clip_grad_norm_`).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[&Var], max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for var in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * factor)?);
            }
        }
    }
    Ok(norm)
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
