//! `Trainer`: the training loop shared by `fine-tune` and `pretrain`. It takes a model's
//! weights, a loss function over shards of batches and a configuration; it runs a batch's
//! shards in parallel ([`super::shard`]), clips gradients, schedules the learning rate, logs as
//! the GluonNLP recipe does and stops on a non-finite loss. Dropout masks and shuffling are
//! functions of `(seed, epoch, batch, shard)`, so a resumed run draws exactly what an
//! uninterrupted one would.
//!
//! On a GPU (or with [`Kernels::Composite`]) a step never waits for the device: the loss and
//! the accuracy stay device scalars until they are read back together once per log interval
//! (at most every [`READBACK_EVERY`] batches, and at the end of the epoch), the gradient norm
//! and the clipping factor are computed there, and AdamW updates there. A non-finite loss is
//! therefore noticed at the next read-back rather than at its batch (the error names its batch).
//! Dropout masks come from the device's generator, seeded at the start of each epoch (resumed
//! runs restart at an epoch, so they still draw what an uninterrupted run would).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::device;
use super::gradients::Gradients;
use super::model::{Kernels, Pass, Precision};
use super::optimizer::{clip_scale, clip_scale_tensor, grad_norm, grad_norm_tensor, AdamW, LrSchedule};
use super::shard;
use super::weights::candle_err;
use crate::error::{StepError, StepResult};
use crate::report::BatchLog;
use crate::step::{Environment, Events, Params};

/// The parameters of a training run that `fine-tune` and `pretrain` share: one name, type and
/// help for each, so the two steps cannot drift apart. Defaults that differ between the steps
/// (they train different things) are arguments. [`TrainConfig::from_params`] reads them and
/// [`TrainConfig::validate`] checks them.
pub mod params {
    use crate::step::{Default, ParamSpec, ParamType};

    /// The names, for tests and docs.
    pub const NAMES: [&str; 10] = [
        "epochs",
        "batch_size",
        "lr",
        "warmup_ratio",
        "weight_decay",
        "max_grad_norm",
        "seed",
        "device",
        "precision",
        "log_every",
    ];

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
    /// No default value on purpose: `f32` is keyed as an absent parameter (see
    /// [`super::super::device::resolve_params`]), so results cached before the parameter existed
    /// keep their keys.
    pub const PRECISION: ParamSpec = ParamSpec::optional(
        "precision",
        ParamType::Str,
        Default::Absent,
        "f32 (when absent) or bf16: mixed precision as PyTorch autocast (bf16 products, f32 weights and AdamW)",
    );
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
    pub precision: Precision,
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
            precision: precision(params)?,
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
        precision(params)?;
        device::check(params.str("device")?)
    }
}

/// The `precision` parameter (f32 when absent).
pub fn precision(params: &Params) -> StepResult<Precision> {
    let Some(value) = params.opt_str("precision")? else { return Ok(Precision::F32) };
    Precision::parse(value).ok_or_else(|| {
        StepError::param("precision", format!("`{value}` is not a precision ({})", Precision::NAMES.join(", ")))
    })
}

/// Batches whose device-side loss and accuracy may wait to be read back (see the module doc).
pub const READBACK_EVERY: usize = 200;

/// What one shard of a batch contributed: the *sum* of its per-prediction losses (a scalar
/// tensor to differentiate; the trainer divides by the batch's `count`), and how many of its
/// predictions were right (a scalar tensor, so a GPU need not be waited for) out of how many.
pub struct BatchOutcome {
    pub loss: Tensor,
    pub correct: Tensor,
    pub count: usize,
}

/// How many of `predicted` equal `wanted` (both `(n,)` u32), as a scalar f32 tensor.
pub fn count_equal(predicted: &Tensor, wanted: &Tensor) -> candle_core::Result<Tensor> {
    predicted.eq(wanted)?.to_dtype(DType::F32)?.sum_all()
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
    /// [`Kernels::Composite`] runs the GPU's code path on the CPU (tests).
    pub kernels: Kernels,
    /// One entry per log line, as it is logged; the step takes them (`fine-tune` keeps them in
    /// its metrics).
    pub logged: Vec<BatchLog>,
    vars: Vec<Var>,
    events: &'a dyn Events,
    env: &'a Environment,
}

/// A batch trained on the device path whose loss and accuracy are not read back yet.
struct Pending {
    batch: usize,
    /// Per shard: the summed loss and the number right, as f64 scalars on the device.
    values: Vec<Tensor>,
    count: usize,
}

/// The running sums of an epoch and of the current log window.
#[derive(Default)]
struct Totals {
    loss_sum: f64,
    correct: usize,
    count: usize,
    window_loss: f64,
    window_correct: usize,
    window_count: usize,
    window_batches: usize,
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
        let vars = vars.into_iter().map(|(_, v)| v).collect();
        Ok(Trainer { config, optimizer, schedule, kernels: Kernels::Auto, logged: Vec::new(), vars, events, env })
    }

    /// What the passes of this trainer's shards are made of.
    fn pass_kind(&self) -> (Kernels, Precision) {
        (self.kernels, self.config.precision)
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
        if !device.is_cpu() || self.kernels == Kernels::Composite {
            return self.epoch_on_device(epoch, batches, loss, &device, start);
        }
        for (b, rows) in batches.iter().enumerate() {
            if self.env.is_cancelled() {
                self.events.progress_finish();
                return Err(StepError::Cancelled);
            }
            let at = |e: candle_core::Error| StepError::failed(format!("epoch {epoch} batch {}: {e}", b + 1));
            let seed = batch_seed(self.config.seed, epoch, b);
            let shards = shard::split(rows, &device);
            let kind = self.pass_kind();
            let outcomes = shard::map(&shards, &device, |s, rows| {
                shard_step(&loss, rows, pass(batch_seed(seed, 0, s), &device, kind))
            });
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
                self.logged.push(BatchLog {
                    epoch,
                    batch: b + 1,
                    update: self.optimizer.step,
                    loss: window_loss / window_batches as f64,
                    accuracy: window_correct as f64 / window_count.max(1) as f64,
                    lr,
                });
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

impl Trainer<'_> {
    /// [`Trainer::epoch`] on the device path (see the module doc): the same updates, logs and
    /// totals, with nothing read back between log intervals.
    fn epoch_on_device(
        &mut self,
        epoch: usize,
        batches: &[Vec<usize>],
        loss: impl Fn(&[usize], &Pass) -> candle_core::Result<BatchOutcome> + Sync + Send,
        device: &Device,
        start: Instant,
    ) -> StepResult<EpochStats> {
        if !device.is_cpu() {
            device
                .set_seed(batch_seed(self.config.seed, epoch, usize::MAX - 1))
                .map_err(candle_err("seeding the device's generator"))?;
        }
        let var_refs: Vec<&Var> = self.vars.iter().collect();
        let (mut totals, mut pending, mut samples, mut lr) = (Totals::default(), Vec::new(), 0usize, 0.0);
        for (b, rows) in batches.iter().enumerate() {
            if self.env.is_cancelled() {
                self.events.progress_finish();
                return Err(StepError::Cancelled);
            }
            let at = |e: candle_core::Error| StepError::failed(format!("epoch {epoch} batch {}: {e}", b + 1));
            let seed = batch_seed(self.config.seed, epoch, b);
            let shards = shard::split(rows, device);
            let kind = self.pass_kind();
            let outcomes = shard::map(&shards, device, |s, rows| {
                let pass = pass(batch_seed(seed, 0, s), device, kind);
                let outcome = loss(rows, &pass)?;
                let grads = Gradients::new(outcome.loss.backward()?, pass.take_lookups());
                let value =
                    Tensor::stack(&[outcome.loss.to_dtype(DType::F64)?, outcome.correct.to_dtype(DType::F64)?], 0)?;
                Ok::<_, candle_core::Error>((value, grads, outcome.count))
            });
            let (mut values, mut grads, mut count) = (Vec::with_capacity(shards.len()), Vec::new(), 0);
            for result in outcomes {
                let (value, store, of) = result.map_err(at)?;
                values.push(value);
                grads.push(store);
                count += of;
            }
            lr = self.schedule.lr(self.optimizer.step + 1);
            device_update(&mut self.optimizer, &grads, &var_refs, lr, count, self.config.max_grad_norm).map_err(at)?;
            pending.push(Pending { batch: b, values, count });
            samples += rows.len();
            self.events.progress_inc(rows.len() as u64);
            let log_now = self.config.log_every > 0 && (b + 1) % self.config.log_every == 0;
            if log_now || pending.len() >= READBACK_EVERY {
                self.read_back(epoch, &mut pending, &mut totals)?;
            }
            if log_now {
                let logged = self.log_window(epoch, b, batches.len(), lr, &mut totals);
                self.logged.push(logged);
            }
        }
        self.read_back(epoch, &mut pending, &mut totals)?;
        self.events.progress_finish();
        Ok(EpochStats {
            loss: totals.loss_sum / totals.count.max(1) as f64,
            accuracy: totals.correct as f64 / totals.count.max(1) as f64,
            samples,
            seconds: start.elapsed().as_secs_f64(),
            lr,
        })
    }

    /// Reads the pending batches' losses and counts back in one transfer and adds them up as
    /// [`Trainer::epoch`] does; stops on a non-finite loss.
    fn read_back(&self, epoch: usize, pending: &mut Vec<Pending>, totals: &mut Totals) -> StepResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let all: Vec<Tensor> = pending.iter().flat_map(|p| p.values.iter().cloned()).collect();
        let values = Tensor::stack(&all, 0)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(candle_err(&format!("epoch {epoch}: reading the losses back")))?;
        let mut at = 0;
        for p in pending.drain(..) {
            let (mut sum, mut right) = (0.0, 0usize);
            for _ in 0..p.values.len() {
                sum += values[at];
                right += values[at + 1] as usize;
                at += 2;
            }
            let value = sum / p.count.max(1) as f64;
            if !value.is_finite() {
                self.events.progress_finish();
                return Err(StepError::failed_with_help(
                    format!("the loss became {value} at epoch {epoch} batch {}", p.batch + 1),
                    "lower `lr`, or set `max_grad_norm` to clip gradients",
                ));
            }
            totals.loss_sum += value * p.count as f64;
            totals.correct += right;
            totals.count += p.count;
            totals.window_loss += value;
            totals.window_correct += right;
            totals.window_count += p.count;
            totals.window_batches += 1;
        }
        Ok(())
    }

    /// The log line of a window, as [`Trainer::epoch`] writes it, and its entry for [`Trainer::logged`].
    fn log_window(&self, epoch: usize, b: usize, batches: usize, lr: f64, totals: &mut Totals) -> BatchLog {
        let mean = totals.window_loss / totals.window_batches.max(1) as f64;
        let accuracy = totals.window_correct as f64 / totals.window_count.max(1) as f64;
        let line = format!("[Epoch {epoch} Batch {}/{batches}] loss={mean:.4}, lr={lr:.7}, acc={accuracy:.3}", b + 1);
        self.events.progress_message(&format!("loss={mean:.4}"));
        self.events.log(&line);
        (totals.window_loss, totals.window_correct, totals.window_count, totals.window_batches) = (0.0, 0, 0, 0);
        BatchLog { epoch, batch: b + 1, update: self.optimizer.step, loss: mean, accuracy, lr }
    }
}

/// The training pass of one shard: sparse word-embedding gradients on the CPU.
fn pass(seed: u64, device: &Device, (kernels, precision): (Kernels, Precision)) -> Pass {
    let pass = if device.is_cpu() { Pass::train(seed).sparse() } else { Pass::train(seed) };
    pass.with_kernels(kernels).with_precision(precision)
}

/// One AdamW update on the device path: the gradient of the batch's mean loss (`count`
/// predictions), clipped to `max_norm`, all in device scalars.
fn device_update(
    optimizer: &mut AdamW,
    grads: &[Gradients],
    vars: &[&Var],
    lr: f64,
    count: usize,
    max_norm: f64,
) -> candle_core::Result<()> {
    let mean = 1.0 / count.max(1) as f64;
    let scale = match grad_norm_tensor(grads, vars)? {
        Some(norm) => (clip_scale_tensor(&norm.affine(mean, 0.0)?, max_norm)? * mean)?,
        None => {
            // No parameter has a gradient: an update that changes nothing, as on the CPU.
            optimizer.step += 1;
            return Ok(());
        }
    };
    optimizer.step_device(grads, lr, &scale)
}

/// One shard's forward and backward pass: its summed loss, gradients and prediction counts.
/// On CPU the word-embedding gradient comes back as rows ([`Pass::sparse`]).
fn shard_step(
    loss: &(impl Fn(&[usize], &Pass) -> candle_core::Result<BatchOutcome> + Sync),
    rows: &[usize],
    pass: Pass,
) -> candle_core::Result<(f64, Gradients, usize, usize)> {
    let outcome = loss(rows, &pass)?;
    let value = outcome.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let correct = outcome.correct.to_dtype(DType::F64)?.to_scalar::<f64>()? as usize;
    let grads = Gradients::new(outcome.loss.backward()?, pass.take_lookups());
    Ok((value, grads, correct, outcome.count))
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
