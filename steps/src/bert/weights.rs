//! `Weights`: the named trainable tensors of a model, created from a seeded RNG, filled from a
//! checkpoint, and written as `model.safetensors` with Hugging Face names.
//!
//! Names are the Hugging Face `BertFor*` names: the encoder under `bert.`, the heads as
//! `classifier.*` and `cls.predictions.*`; ELECTRA's generator and heads (in `pretrain`'s epoch
//! checkpoints) under their own prefixes. A checkpoint's names may omit the `bert.` prefix
//! (a bare `BertModel`, as in sentence-transformers) and may use the old `gamma`/`beta` names
//! for LayerNorm.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::error::{StepError, StepResult};

/// Wraps a candle error with what was being done.
pub fn candle_err(context: &str) -> impl FnOnce(candle_core::Error) -> StepError + '_ {
    move |e| StepError::failed(format!("{context}: {e}"))
}

/// The trainable tensors of a model, by name, in name order.
pub struct Weights {
    vars: BTreeMap<String, Var>,
    dtype: DType,
    device: Device,
}

impl Weights {
    pub fn new(dtype: DType, device: &Device) -> Self {
        Weights { vars: BTreeMap::new(), dtype, device: device.clone() }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn insert(&mut self, name: &str, values: Vec<f32>, shape: &[usize]) -> StepResult<Tensor> {
        let t = Tensor::from_vec(values, shape, &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(candle_err(name))?;
        let var = Var::from_tensor(&t).map_err(candle_err(name))?;
        let tensor = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    /// A tensor drawn from N(0, std²) with the given RNG (the CPU device cannot be seeded).
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64, rng: &mut StdRng) -> StepResult<Tensor> {
        let n: usize = shape.iter().product();
        let dist = Normal::new(0.0f32, std as f32).map_err(|e| StepError::failed(format!("{name}: {e}")))?;
        let values: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
        self.insert(name, values, shape)
    }

    pub fn zeros(&mut self, name: &str, shape: &[usize]) -> StepResult<Tensor> {
        self.insert(name, vec![0.0; shape.iter().product()], shape)
    }

    pub fn ones(&mut self, name: &str, shape: &[usize]) -> StepResult<Tensor> {
        self.insert(name, vec![1.0; shape.iter().product()], shape)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Every trainable tensor with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn parameter_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Overwrites the named tensor, checking its shape.
    pub fn set(&self, name: &str, value: &Tensor, source: &Path) -> StepResult<()> {
        let var = self.vars.get(name).ok_or_else(|| StepError::failed(format!("no parameter `{name}`")))?;
        if var.dims() != value.dims() {
            return Err(StepError::input(format!(
                "{}: tensor `{name}` has shape {:?}, the model expects {:?}",
                source.display(),
                value.dims(),
                var.dims()
            )));
        }
        let value = value.to_dtype(self.dtype).and_then(|v| v.to_device(&self.device)).map_err(candle_err(name))?;
        var.set(&value).map_err(candle_err(name))
    }

    /// Writes every tensor (as f32) to a safetensors file, plus `extra` tensors (aliases such as
    /// a tied decoder weight).
    pub fn save(&self, path: &Path, extra: &[(String, Tensor)]) -> StepResult<()> {
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in &self.vars {
            all.insert(name.clone(), var.as_tensor().to_dtype(DType::F32).map_err(candle_err(name))?);
        }
        for (name, t) in extra {
            all.insert(name.clone(), t.to_dtype(DType::F32).map_err(candle_err(name))?);
        }
        candle_core::safetensors::save(&all, path)
            .map_err(|e| StepError::failed(format!("writing {}: {e}", path.display())))
    }
}

/// The tensors of a checkpoint file, by normalised name (`bert.` prefix added to encoder
/// names, `gamma`/`beta` renamed).
pub struct Checkpoint {
    pub path: std::path::PathBuf,
    tensors: HashMap<String, Tensor>,
}

const HEAD_PREFIXES: [&str; 7] = [
    "classifier.",
    "cls.",
    "bert.",
    "generator.",
    "generator_predictions.",
    "generator_lm_head.",
    "discriminator_predictions.",
];

impl Checkpoint {
    pub fn load(path: &Path) -> StepResult<Checkpoint> {
        let raw = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| StepError::input(format!("{}: not a readable safetensors checkpoint: {e}", path.display())))?;
        let mut tensors = HashMap::new();
        for (name, t) in raw {
            tensors.insert(Self::normalise(&name), t);
        }
        Ok(Checkpoint { path: path.to_path_buf(), tensors })
    }

    fn normalise(name: &str) -> String {
        let name = name.strip_prefix("model.").unwrap_or(name);
        let mut name =
            if HEAD_PREFIXES.iter().any(|p| name.starts_with(p)) { name.to_string() } else { format!("bert.{name}") };
        if name.contains("LayerNorm.") {
            if let Some(stem) = name.strip_suffix(".gamma") {
                name = format!("{stem}.weight");
            } else if let Some(stem) = name.strip_suffix(".beta") {
                name = format!("{stem}.bias");
            }
        }
        name
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Copies every tensor of `weights` whose name starts with one of `prefixes` from the
    /// checkpoint. Missing tensors are an error unless `optional(name)` says otherwise; the
    /// optional ones that were missing are returned.
    pub fn fill(
        &self,
        weights: &Weights,
        prefixes: &[&str],
        optional: impl Fn(&str) -> bool,
    ) -> StepResult<Vec<String>> {
        let mut skipped = Vec::new();
        let names: Vec<String> = weights.names().map(str::to_string).collect();
        for name in names.iter().filter(|n| prefixes.iter().any(|p| n.starts_with(p))) {
            match self.tensors.get(name) {
                Some(t) => weights.set(name, t, &self.path)?,
                None if optional(name) => skipped.push(name.clone()),
                None => return Err(StepError::input_with_help(
                    format!("{}: checkpoint has no tensor `{name}`", self.path.display()),
                    "the checkpoint must be a BERT in Hugging Face layout (names with or without the `bert.` prefix)",
                )),
            }
        }
        Ok(skipped)
    }
}
