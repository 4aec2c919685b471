//! `Trainer`: the training loop shared by `fine-tune` and `pretrain`. It takes a model's
//! weights, a loss function over shards of batches and a configuration; it runs a batch's
//! shards in parallel ([`super::shard`]), clips gradients, schedules the learning rate, logs as
//! the GluonNLP recipe does and stops on a non-finite loss. Dropout masks and shuffling are
//! functions of `(seed, epoch, batch, shard)`, so a resumed run draws exactly what an
//! uninterrupted one would.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::device;
use super::gradients::Gradients;
use super::model::Pass;
use super::optimizer::{clip_scale, grad_norm, AdamW, LrSchedule};
use super::shard;
use super::weights::candle_err;
use crate::error::{StepError, StepResult};
use crate::step::{Environment, Events, Params};

/// The parameters of a training run that `fine-tune` and `pretrain` share: one name, type and
/// help for each, so the two steps cannot drift apart. Defaults that differ between the steps
/// (they train different things) are arguments. [`TrainConfig::from_params`] reads them and
/// [`TrainConfig::validate`] checks them.
pub mod params {
    use crate::step::{Default, ParamSpec, ParamType};

    /// The names, for tests and docs.
    pub const NAMES: [&str; 9] =
        ["epochs", "batch_size", "lr", "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "device", "log_every"];

    pub const fn epochs(default: i64) -> ParamSpec {
        ParamSpec::optional("epochs", ParamType::Uint, Default::Int(default), "passes over the training data")
    }
    pub const fn batch_size(default: i64) -> ParamSpec {
        ParamSpec::optional("batch_size", ParamType::Uint, Default::Int(default), "rows per update")
    }
    pub const fn lr(default: f64) -> ParamSpec {
        ParamSpec::optional("lr", ParamType::Float, Default::Float(default), "peak learning rate")
    }
    pub const fn warmup_ratio(default: f64) -> ParamSpec {
        ParamSpec::optional(
            "warmup_ratio",
            ParamType::Float,
            Default::Float(default),
            "fraction of updates with linear warm-up (then linear decay to 0)",
        )
    }
    pub const WEIGHT_DECAY: ParamSpec = ParamSpec::optional(
        "weight_decay",
        ParamType::Float,
        Default::Float(0.01),
        "AdamW weight decay (not on biases and LayerNorm)",
    );
    pub const MAX_GRAD_NORM: ParamSpec = ParamSpec::optional(
        "max_grad_norm",
        ParamType::Float,
        Default::Float(1.0),
        "clip the global gradient norm to this (0: no clipping)",
    );
    pub const SEED: ParamSpec = ParamSpec::optional(
        "seed",
        ParamType::Uint,
        Default::Int(42),
        "seed of every random draw (initialisation, shuffling, dropout and any masking)",
    );
    pub const DEVICE: ParamSpec =
        ParamSpec::optional("device", ParamType::Str, Default::Str("cpu"), "cpu, auto, cuda, cuda:N or metal");
    /// How often to log: not in the key (it changes no byte of the output).
    pub const fn log_every(default: i64) -> ParamSpec {
        ParamSpec::optional("log_every", ParamType::Uint, Default::Int(default), "log every N batches (0: never)")
            .not_in_key()
    }
}

/// The optimisation settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Log every N batches (0: never).
    pub log_every: usize,
}

impl TrainConfig {
    /// The settings from the [`params`] of a step.
    pub fn from_params(params: &Params) -> StepResult<TrainConfig> {
        Ok(TrainConfig {
            epochs: params.usize("epochs")?,
            batch_size: params.usize("batch_size")?,
            lr: params.f64("lr")?,
            warmup_ratio: params.f64("warmup_ratio")?,
            weight_decay: params.f64("weight_decay")?,
            max_grad_norm: params.f64("max_grad_norm")?,
            seed: params.usize("seed")? as u64,
            log_every: params.opt_usize("log_every")?.unwrap_or(0),
        })
    }

    /// Range checks of the [`params`], before anything runs.
    pub fn validate(params: &Params) -> StepResult<()> {
        if params.usize("epochs")? == 0 {
            return Err(StepError::param("epochs", "must be at least 1"));
        }
        if params.usize("batch_size")? == 0 {
            return Err(StepError::param("batch_size", "must be at least 1"));
        }
        let lr = params.f64("lr")?;
        if !(lr > 0.0 && lr < 1.0) {
            return Err(StepError::param("lr", format!("must be in (0, 1), got {lr}")));
        }
        let warmup = params.f64("warmup_ratio")?;
        if !(0.0..1.0).contains(&warmup) {
            return Err(StepError::param("warmup_ratio", format!("must be in [0, 1), got {warmup}")));
        }
        if params.f64("weight_decay")? < 0.0 {
            return Err(StepError::param("weight_decay", "must not be negative"));
        }
        if params.f64("max_grad_norm")? < 0.0 {
            return Err(StepError::param("max_grad_norm", "must not be negative"));
        }
        device::check(params.str("device")?)
    }
}

/// What one shard of a batch contributed: the *sum* of its per-prediction losses (a scalar
/// tensor to differentiate; the trainer divides by the batch's `count`), and how many of its
/// predictions were right out of how many.
pub struct BatchOutcome {
    pub loss: Tensor,
    pub correct: usize,
    pub count: usize,
}

/// Totals of one epoch of training.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpochStats {
    pub loss: f64,
    pub accuracy: f64,
    pub samples: usize,
    pub seconds: f64,
    pub lr: f64,
}

/// A seed for one batch's dropout or masking, mixed from the run seed, epoch and batch
/// (SplitMix64), so resumed runs repeat uninterrupted ones.
pub fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    let mut z = seed ^ ((epoch as u64) << 40) ^ (batch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Trainer<'a> {
    pub config: TrainConfig,
    pub optimizer: AdamW,
    pub schedule: LrSchedule,
    vars: Vec<Var>,
    events: &'a dyn Events,
    env: &'a Environment,
}

impl<'a> Trainer<'a> {
    /// `vars` are the trained parameters with their names; `batches_per_epoch` sizes the schedule.
    pub fn new(
        config: TrainConfig,
        vars: Vec<(String, Var)>,
        batches_per_epoch: usize,
        events: &'a dyn Events,
        env: &'a Environment,
    ) -> StepResult<Self> {
        let optimizer = AdamW::new(vars.iter().map(|(n, v)| (n.as_str(), v)), config.weight_decay)
            .map_err(candle_err("creating the optimizer"))?;
        let schedule = LrSchedule::new(config.lr, config.warmup_ratio, (batches_per_epoch * config.epochs) as u64);
        Ok(Trainer { config, optimizer, schedule, vars: vars.into_iter().map(|(_, v)| v).collect(), events, env })
    }

    /// Trains one epoch (1-based) over `batches`, calling `loss(rows, pass)` for each shard of
    /// each batch (on several threads at once) with a training pass seeded for that shard.
    pub fn epoch(
        &mut self,
        epoch: usize,
        batches: &[Vec<usize>],
        loss: impl Fn(&[usize], &Pass) -> candle_core::Result<BatchOutcome> + Sync + Send,
    ) -> StepResult<EpochStats> {
        let start = Instant::now();
        let total_rows: usize = batches.iter().map(Vec::len).sum();
        self.events.progress_start(
            &format!("epoch {epoch}/{}", self.config.epochs),
            Some(total_rows as u64),
            "samples",
        );
        let (mut loss_sum, mut correct, mut count, mut samples) = (0.0f64, 0usize, 0usize, 0usize);
        let (mut window_loss, mut window_correct, mut window_count, mut window_batches) =
            (0.0f64, 0usize, 0usize, 0usize);
        let mut lr = 0.0;
        let var_refs: Vec<&Var> = self.vars.iter().collect();
        let device = self.vars.first().map_or(Device::Cpu, |v| v.device().clone());
        for (b, rows) in batches.iter().enumerate() {
            if self.env.is_cancelled() {
                self.events.progress_finish();
                return Err(StepError::Cancelled);
            }
            let at = |e: candle_core::Error| StepError::failed(format!("epoch {epoch} batch {}: {e}", b + 1));
            let seed = batch_seed(self.config.seed, epoch, b);
            let shards = shard::split(rows, &device);
            let outcomes =
                shard::map(&shards, &device, |s, rows| shard_step(&loss, rows, batch_seed(seed, 0, s), &device));
            let (mut sum, mut grads, mut outcome) = (0.0, Vec::with_capacity(shards.len()), (0, 0));
            for result in outcomes {
                let (value, store, right, of) = result.map_err(at)?;
                sum += value;
                grads.push(store);
                outcome = (outcome.0 + right, outcome.1 + of);
            }
            let (batch_correct, batch_count) = outcome;
            let value = sum / batch_count.max(1) as f64;
            if !value.is_finite() {
                self.events.progress_finish();
                return Err(StepError::failed_with_help(
                    format!("the loss became {value} at epoch {epoch} batch {}", b + 1),
                    "lower `lr`, or set `max_grad_norm` to clip gradients",
                ));
            }
            // The shards' gradients add up to the gradient of the batch's summed loss; the mean
            // divides by the batch's count, folded into the clipping scale.
            let mean = 1.0 / batch_count.max(1) as f64;
            let norm = grad_norm(&grads, &var_refs).map_err(at)? * mean;
            let scale = clip_scale(norm, self.config.max_grad_norm) * mean;
            lr = self.schedule.lr(self.optimizer.step + 1);
            self.optimizer.step_scaled(&grads, lr, scale).map_err(at)?;

            loss_sum += value * batch_count as f64;
            correct += batch_correct;
            count += batch_count;
            samples += rows.len();
            window_loss += value;
            window_correct += batch_correct;
            window_count += batch_count;
            window_batches += 1;
            self.events.progress_inc(rows.len() as u64);
            if self.config.log_every > 0 && (b + 1) % self.config.log_every == 0 {
                let line = format!(
                    "[Epoch {epoch} Batch {}/{}] loss={:.4}, lr={:.7}, acc={:.3}",
                    b + 1,
                    batches.len(),
                    window_loss / window_batches as f64,
                    lr,
                    window_correct as f64 / window_count.max(1) as f64
                );
                self.events.progress_message(&format!("loss={:.4}", window_loss / window_batches as f64));
                self.events.log(&line);
                (window_loss, window_correct, window_count, window_batches) = (0.0, 0, 0, 0);
            }
        }
        self.events.progress_finish();
        Ok(EpochStats {
            loss: loss_sum / count.max(1) as f64,
            accuracy: correct as f64 / count.max(1) as f64,
            samples,
            seconds: start.elapsed().as_secs_f64(),
            lr,
        })
    }
}

/// One shard's forward and backward pass: its summed loss, gradients and prediction counts.
/// On CPU the word-embedding gradient comes back as rows ([`Pass::sparse`]).
fn shard_step(
    loss: &(impl Fn(&[usize], &Pass) -> candle_core::Result<BatchOutcome> + Sync),
    rows: &[usize],
    seed: u64,
    device: &Device,
) -> candle_core::Result<(f64, Gradients, usize, usize)> {
    let pass = if device.is_cpu() { Pass::train(seed).sparse() } else { Pass::train(seed) };
    let outcome = loss(rows, &pass)?;
    let value = outcome.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let grads = Gradients::new(outcome.loss.backward()?, pass.take_lookups());
    Ok((value, grads, outcome.correct, outcome.count))
}

#[cfg(test)]
mod tests {
    use super::params::NAMES;
    use crate::bert::{FineTune, Pretrain};
    use crate::step::Step;

    #[test]
    fn fine_tune_and_pretrain_declare_the_training_parameters_alike() {
        for name in NAMES {
            let (f, p) = (FineTune.spec().param(name), Pretrain.spec().param(name));
            let (Some(f), Some(p)) = (f, p) else { panic!("`{name}` missing: fine-tune {f:?}, pretrain {p:?}") };
            assert_eq!((f.ty, f.help, f.in_key), (p.ty, p.help, p.in_key), "`{name}` differs");
        }
    }
}
