//! Building a classifier from a checkpoint, running it over a tensor set, and the metrics of
//! its predictions. Shared by `fine-tune` (per-epoch evaluation) and `evaluate`.

use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::batch::{make_batch, Batches};
use super::config::BertConfig;
use super::model::{BertClassifier, Pass, Precision};
use super::shard;
use super::weights::{candle_err, Checkpoint, Weights};
use crate::error::{StepError, StepResult};
use crate::report::EvalMetrics;
use crate::step::Environment;
use crate::tensor_set::TensorSet;

/// The class index of every row: the position of its label's name in `classes` (the model's
/// class names; [`crate::labels::classes_by_name`]). `known` names the classes in errors.
pub fn classes_of(set: &TensorSet, classes: &[String], what: &str, known: &str) -> StepResult<Vec<u32>> {
    let names = set.label_names();
    let rows: Vec<Option<&str>> = names.iter().map(Option::as_deref).collect();
    crate::labels::classes_by_name(&rows, classes, what, known)
}

/// Checks that a tensor set fits a model: its token ids index the embedding table, its rows fit
/// the position table, its token types fit the type table.
pub fn check_fits(config: &BertConfig, set: &TensorSet, what: &str) -> StepResult<()> {
    if set.meta.vocab_size > config.vocab_size {
        return Err(StepError::input_with_help(
            format!(
                "{what} was tokenized with a vocabulary of {} tokens, larger than the model's embedding table ({} rows)",
                set.meta.vocab_size, config.vocab_size
            ),
            "tokenize with the model's own tokenizer (`tokenizer:` the model directory or hub id)",
        ));
    }
    let longest = set.valid_length.iter().copied().max().unwrap_or(0) as usize;
    if longest > config.max_position_embeddings {
        return Err(StepError::input(format!(
            "{what} has rows of {longest} tokens, more than the model's {} positions; lower `max_len` in tokenize",
            config.max_position_embeddings
        )));
    }
    if set.meta.pair && config.type_vocab_size < 2 {
        return Err(StepError::input(format!("{what} holds sentence pairs but the model has one token type")));
    }
    Ok(())
}

/// A classifier whose encoder comes from `checkpoint`. With `head` the classifier layer must be
/// in the checkpoint too (evaluating a fine-tuned model); without, it is freshly initialised
/// (fine-tuning). Returns the names of freshly initialised tensors the checkpoint lacked.
pub fn load_classifier(
    config: &BertConfig,
    num_classes: usize,
    checkpoint: &Checkpoint,
    head: bool,
    seed: u64,
    device: &Device,
) -> StepResult<(BertClassifier, Weights, Vec<String>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = Weights::new(DType::F32, device);
    let model = BertClassifier::new(config, num_classes, &mut weights, &mut rng)?;
    let prefixes: &[&str] = if head { &["bert.", "classifier."] } else { &["bert."] };
    let fresh = checkpoint.fill(&weights, prefixes, |name| name.starts_with("bert.pooler."))?;
    Ok((model, weights, fresh))
}

/// A model's outputs over a tensor set, in row order.
pub struct Predictions {
    /// Class probabilities of each row.
    pub probs: Vec<Vec<f32>>,
    /// The true class of each row.
    pub classes: Vec<u32>,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Runs `model` over `set` without gradients in `precision`, in batches of similar length
/// (several batches at once on CPU, see [`super::shard`]).
pub fn predict(
    model: &BertClassifier,
    set: &TensorSet,
    classes: &[u32],
    batch_size: usize,
    precision: Precision,
    device: &Device,
    env: &Environment,
) -> StepResult<Predictions> {
    let batches = Batches::by_length(set, batch_size).batches;
    let outputs = shard::map(&batches, device, |_, rows| {
        if env.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let run = || -> candle_core::Result<(Vec<Vec<f32>>, f64)> {
            let batch = make_batch(set, rows, None, DType::F32, device)?;
            let logits = model.forward(&batch, &Pass::eval().with_precision(precision))?;
            let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let target = Tensor::from_vec(rows.iter().map(|&i| classes[i]).collect::<Vec<u32>>(), rows.len(), device)?;
            let nll = log_p.gather(&target.unsqueeze(1)?, 1)?.sum_all()?.to_scalar::<f32>()?;
            Ok((log_p.exp()?.to_vec2::<f32>()?, -f64::from(nll)))
        };
        run().map_err(candle_err("evaluating"))
    });
    let mut probs = vec![Vec::new(); set.len()];
    let mut loss_sum = 0.0f64;
    for (rows, output) in batches.iter().zip(outputs) {
        let (batch_probs, batch_loss) = output?;
        loss_sum += batch_loss;
        for (&i, p) in rows.iter().zip(batch_probs) {
            probs[i] = p;
        }
    }
    Ok(Predictions { probs, classes: classes.to_vec(), loss: loss_sum / set.len().max(1) as f64 })
}

/// The class probabilities of every row of `set`, which needs no labels: [`predict`] with every
/// row taken as class 0 for the loss, which is dropped (one gather per batch).
pub fn probabilities(
    model: &BertClassifier,
    set: &TensorSet,
    batch_size: usize,
    precision: Precision,
    device: &Device,
    env: &Environment,
) -> StepResult<Vec<Vec<f32>>> {
    let classes = vec![0u32; set.len()];
    Ok(predict(model, set, &classes, batch_size, precision, device, env)?.probs)
}

impl Predictions {
    /// The predicted class of each row (ties go to the lower class).
    pub fn predicted(&self) -> Vec<usize> {
        self.probs
            .iter()
            .map(|p| {
                p.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
                    .0
            })
            .collect()
    }

    pub fn accuracy(&self) -> f64 {
        let right = self.predicted().iter().zip(&self.classes).filter(|(p, c)| **p == **c as usize).count();
        right as f64 / self.classes.len().max(1) as f64
    }

    /// Accuracy, per-class and macro precision/recall/F1, and the confusion matrix
    /// (`confusion[true][predicted]`); `labels` names the classes.
    pub fn metrics(&self, labels: &[String]) -> EvalMetrics {
        let k = labels.len();
        let mut confusion = vec![vec![0u64; k]; k];
        for (p, &c) in self.predicted().iter().zip(&self.classes) {
            confusion[c as usize][*p] += 1;
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut precision = Vec::with_capacity(k);
        let mut recall = Vec::with_capacity(k);
        let mut f1 = Vec::with_capacity(k);
        for (c, row) in confusion.iter().enumerate() {
            let tp = row[c];
            let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
            let actual: u64 = row.iter().sum();
            let (p, r) = (ratio(tp, predicted), ratio(tp, actual));
            precision.push(p);
            recall.push(r);
            f1.push(if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 });
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / k.max(1) as f64;
        EvalMetrics {
            rows: self.classes.len(),
            accuracy: self.accuracy(),
            loss: self.loss,
            labels: labels.to_vec(),
            macro_precision: mean(&precision),
            macro_recall: mean(&recall),
            macro_f1: mean(&f1),
            precision,
            recall,
            f1,
            confusion,
            ..EvalMetrics::default()
        }
    }
}
