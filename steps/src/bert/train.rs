//! `Trainer`: the training loop shared by `fine-tune` and `pretrain`. It takes a model's
//! weights, a loss function over batches and a configuration; it clips gradients, schedules the
//! learning rate, logs as the GluonNLP recipe does and stops on a non-finite loss. Dropout
//! masks and shuffling are functions of `(seed, epoch, batch)`, so a resumed run draws exactly
//! what an uninterrupted one would.

use std::time::Instant;

use candle_core::{Tensor, Var};

use super::optimizer::{clip_scale, grad_norm, AdamW, LrSchedule};
use super::weights::candle_err;
use crate::error::{StepError, StepResult};
use crate::step::{Environment, Events};

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

/// What one batch contributed: its mean loss (a scalar tensor to differentiate), and how many
/// of its predictions were right out of how many.
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

    /// Trains one epoch (1-based) over `batches`, calling `loss` for each.
    pub fn epoch(
        &mut self,
        epoch: usize,
        batches: &[Vec<usize>],
        mut loss: impl FnMut(&[usize], u64) -> candle_core::Result<BatchOutcome>,
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
        for (b, rows) in batches.iter().enumerate() {
            if self.env.is_cancelled() {
                self.events.progress_finish();
                return Err(StepError::Cancelled);
            }
            let at = |e: candle_core::Error| StepError::failed(format!("epoch {epoch} batch {}: {e}", b + 1));
            let outcome = loss(rows, batch_seed(self.config.seed, epoch, b)).map_err(at)?;
            let value =
                outcome.loss.to_dtype(candle_core::DType::F64).and_then(|l| l.to_scalar::<f64>()).map_err(at)?;
            if !value.is_finite() {
                self.events.progress_finish();
                return Err(StepError::failed_with_help(
                    format!("the loss became {value} at epoch {epoch} batch {}", b + 1),
                    "lower `lr`, or set `max_grad_norm` to clip gradients",
                ));
            }
            let grads = outcome.loss.backward().map_err(at)?;
            let scale = clip_scale(grad_norm(&grads, &var_refs).map_err(at)?, self.config.max_grad_norm);
            lr = self.schedule.lr(self.optimizer.step + 1);
            self.optimizer.step_scaled(&grads, lr, scale).map_err(at)?;

            loss_sum += value * outcome.count as f64;
            correct += outcome.correct;
            count += outcome.count;
            samples += rows.len();
            window_loss += value;
            window_correct += outcome.correct;
            window_count += outcome.count;
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
