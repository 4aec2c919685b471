//! `Outputs`: a multi-label or regression model's outputs over a tensor set, their metrics, and
//! the training loss of those tasks ([`task_batch`]). Single-label models are scored by
//! [`super::classify::predict`] (softmax and cross-entropy), unchanged since before tasks.
//!
//! Multi-label: a sigmoid per class, binary cross-entropy averaged over every (row, class) as
//! `transformers`' `BCEWithLogitsLoss`; a class is predicted when its probability is at least
//! the threshold. Regression: the one output as it is, mean squared error as `MSELoss`.

use candle_core::{DType, Device, Tensor, D};

use super::batch::{make_batch, Batches};
use super::model::{BertClassifier, Pass, Precision};
use super::shard;
use super::train::BatchOutcome;
use super::weights::candle_err;
use crate::error::{StepError, StepResult};
use crate::labels::quoted;
use crate::report::{pearson, spearman, EvalMetrics, RegressionMetrics};
use crate::step::Environment;
use crate::task::Task;
use crate::tensor_set::TensorSet;

/// A model's activated outputs over a tensor set, in row order: each class's probability
/// (multi-label) or the value (regression, one per row).
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub task: Task,
    pub values: Vec<Vec<f32>>,
}

/// Runs `model` over `set` without gradients, in batches of similar length; activates the
/// logits as `task` says.
pub fn outputs(
    model: &BertClassifier,
    set: &TensorSet,
    task: Task,
    batch_size: usize,
    precision: Precision,
    device: &Device,
    env: &Environment,
) -> StepResult<Outputs> {
    let batches = Batches::by_length(set, batch_size).batches;
    let results = shard::map(&batches, device, |_, rows| {
        if env.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let batch = make_batch(set, rows, None, DType::F32, device)?;
            let logits = model.forward(&batch, &Pass::eval().with_precision(precision))?.to_dtype(DType::F32)?;
            match task {
                Task::MultiLabel => candle_nn::ops::sigmoid(&logits)?.to_vec2::<f32>(),
                Task::Regression => logits.to_vec2::<f32>(),
                Task::SingleLabel => candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>(),
            }
        };
        run().map_err(candle_err("evaluating"))
    });
    let mut values = vec![Vec::new(); set.len()];
    for (rows, result) in batches.iter().zip(results) {
        for (&i, v) in rows.iter().zip(result?) {
            values[i] = v;
        }
    }
    Ok(Outputs { task, values })
}

/// Checks that `set` (named `what`) holds labels of `task`, the model's.
pub fn check_task(set: &TensorSet, task: Task, what: &str) -> StepResult<()> {
    if set.meta.task == task {
        return Ok(());
    }
    let unlabelled = set.meta.label_values.is_empty() && set.meta.task.is_single_label();
    Err(StepError::input_with_help(
        format!(
            "{what} is a `{}` tensor set, and the model is `{}`",
            if unlabelled { "unlabelled" } else { set.meta.task.name() },
            task.name()
        ),
        "tokenize every set with the same `task` (and a label column)",
    ))
}

/// The targets of `set` in the order of the model's classes `classes` (multi-label: a name the
/// model does not know is an error naming it; regression: the value), row after row.
pub fn targets_for(set: &TensorSet, task: Task, classes: &[String], what: &str, known: &str) -> StepResult<Vec<f32>> {
    check_task(set, task, what)?;
    if task == Task::Regression {
        return Ok(set.targets.clone());
    }
    let own = &set.meta.label_names;
    let unknown: Vec<String> = own.iter().filter(|n| !classes.contains(n)).cloned().collect();
    if !unknown.is_empty() {
        return Err(StepError::input_with_help(
            format!("{what}: label(s) {} not among {known} ({})", quoted(&unknown), quoted(classes)),
            "train, valid and test must share one label set: every label must occur in the training rows",
        ));
    }
    let to: Vec<usize> = own.iter().map(|n| classes.iter().position(|c| c == n).unwrap_or(0)).collect();
    let (k, own_k) = (classes.len(), own.len());
    let mut out = vec![0.0; set.len() * k];
    for row in 0..set.len() {
        for (j, &v) in set.targets[row * own_k..(row + 1) * own_k].iter().enumerate() {
            out[row * k + to[j]] = v;
        }
    }
    Ok(out)
}

/// The logit from which a class is predicted: `ln(t / (1 - t))`, where the sigmoid is `t`.
fn logit(threshold: f32) -> f64 {
    let t = f64::from(threshold);
    (t / (1.0 - t)).ln()
}

/// The summed loss of one shard of a multi-label or regression training batch (divided by its
/// rows by the trainer: the mean over (row, class), or the mean squared error) and its rows
/// predicted right (multi-label: every class; regression: none, accuracy does not apply).
/// Multi-label `pos_weight` (one per class) multiplies each class's positive term, as
/// `BCEWithLogitsLoss(pos_weight=...)`: `-(p y ln s(x) + (1 - y) ln(1 - s(x)))`.
#[allow(clippy::too_many_arguments)]
pub fn task_batch(
    model: &BertClassifier,
    set: &TensorSet,
    task: Task,
    targets: &[f32],
    rows: &[usize],
    pass: &Pass,
    device: &Device,
    threshold: f32,
    pos_weight: Option<&[f32]>,
) -> candle_core::Result<BatchOutcome> {
    let batch = make_batch(set, rows, None, DType::F32, device)?;
    let logits = model.forward(&batch, pass)?.to_dtype(DType::F32)?;
    let k = model.num_classes;
    let wanted: Vec<f32> = rows.iter().flat_map(|&i| targets[i * k..(i + 1) * k].iter().copied()).collect();
    let target = Tensor::from_vec(wanted, (rows.len(), k), device)?;
    match task {
        Task::Regression => {
            let loss = (&logits - &target)?.sqr()?.sum_all()?;
            Ok(BatchOutcome { loss, correct: Tensor::zeros((), DType::F32, device)?, count: rows.len() })
        }
        _ => {
            // max(x, 0) - x t + ln(1 + e^-|x|): BCE with logits, stable for large |x|.
            let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            let per = match pos_weight {
                // Unweighted, as before weights existed (the same bits).
                None => ((logits.relu()? - (&logits * &target)?)? + softplus)?,
                // With sp(x) = ln(1 + e^x): (1 - y) sp(x) + p y sp(-x) = (1 + (p - 1) y) sp(x) - p y x.
                Some(w) => {
                    let w = Tensor::from_vec(w.to_vec(), (1, k), device)?;
                    let py = target.broadcast_mul(&w)?;
                    let scale = ((&py - &target)? + 1.0)?;
                    let sp = (logits.relu()? + softplus)?;
                    ((scale * sp)? - (py * &logits)?)?
                }
            };
            let loss = (per.sum_all()? / k as f64)?;
            let predicted = logits.ge(logit(threshold))?.to_dtype(DType::F32)?;
            let correct = predicted.eq(&target)?.to_dtype(DType::F32)?.min(1)?.sum_all()?;
            Ok(BatchOutcome { loss, correct, count: rows.len() })
        }
    }
}

impl Outputs {
    /// Multi-label metrics against `targets` (row after row, `labels.len()` each) at
    /// `threshold`: subset accuracy, BCE, per-class and macro precision/recall/F1, micro F1.
    pub fn multi_label_metrics(&self, targets: &[f32], labels: &[String], threshold: f32) -> EvalMetrics {
        let k = labels.len();
        let (mut tp, mut fp, mut fn_) = (vec![0u64; k], vec![0u64; k], vec![0u64; k]);
        let (mut exact, mut loss) = (0usize, 0.0f64);
        for (row, p) in self.values.iter().enumerate() {
            let mut all_right = true;
            for c in 0..k {
                let (want, prob) = (targets[row * k + c] > 0.5, p[c]);
                let got = prob >= threshold;
                all_right &= want == got;
                match (want, got) {
                    (true, true) => tp[c] += 1,
                    (false, true) => fp[c] += 1,
                    (true, false) => fn_[c] += 1,
                    (false, false) => {}
                }
                // Clamped as PyTorch's BCELoss clamps its log at -100.
                let q = f64::from(if want { prob } else { 1.0 - prob });
                loss -= q.ln().max(-100.0);
            }
            exact += usize::from(all_right);
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let f1_of = |p: f64, r: f64| if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
        let precision: Vec<f64> = (0..k).map(|c| ratio(tp[c], tp[c] + fp[c])).collect();
        let recall: Vec<f64> = (0..k).map(|c| ratio(tp[c], tp[c] + fn_[c])).collect();
        let f1: Vec<f64> = precision.iter().zip(&recall).map(|(&p, &r)| f1_of(p, r)).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / k.max(1) as f64;
        let (all_tp, all_fp, all_fn) = (tp.iter().sum(), fp.iter().sum::<u64>(), fn_.iter().sum::<u64>());
        let micro = f1_of(ratio(all_tp, all_tp + all_fp), ratio(all_tp, all_tp + all_fn));
        let rows = self.values.len();
        EvalMetrics {
            task: Task::MultiLabel,
            rows,
            accuracy: exact as f64 / rows.max(1) as f64,
            loss: loss / (rows * k).max(1) as f64,
            labels: labels.to_vec(),
            macro_precision: mean(&precision),
            macro_recall: mean(&recall),
            macro_f1: mean(&f1),
            precision,
            recall,
            f1,
            confusion: Vec::new(),
            micro_f1: Some(micro),
            threshold: Some(f64::from(threshold)),
            class_rows: (0..k).map(|c| tp[c] + fn_[c]).collect(),
        }
    }

    /// Regression metrics against `targets` (one per row); `target` names the value.
    pub fn regression_metrics(&self, targets: &[f32], target: &str) -> RegressionMetrics {
        let predicted: Vec<f64> = self.values.iter().map(|v| f64::from(v[0])).collect();
        let truth: Vec<f64> = targets.iter().map(|&t| f64::from(t)).collect();
        let n = predicted.len().max(1) as f64;
        let mse = predicted.iter().zip(&truth).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / n;
        let mae = predicted.iter().zip(&truth).map(|(p, t)| (p - t).abs()).sum::<f64>() / n;
        RegressionMetrics {
            task: Task::Regression,
            rows: predicted.len(),
            mse,
            mae,
            pearson: pearson(&predicted, &truth),
            spearman: spearman(&predicted, &truth),
            target: target.to_string(),
        }
    }
}
