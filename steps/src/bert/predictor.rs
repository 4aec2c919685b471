//! `Predictor`: a classification or regression model directory ready to score raw text.
//! Shared by the `predict` step kind and `pipe predict`: one function takes texts and returns
//! every class's probability, or the value ([`Predictor::outputs`], as the model's task says:
//! softmax, a sigmoid per class, or the output itself; [`crate::task`]).
//!
//! Texts are tokenized with the model directory's own `tokenizer.json` exactly as `tokenize`
//! tokenizes a table ([`crate::text::encode::Encoder`] and the sentence transform: `[CLS] a
//! [SEP] (b [SEP])`, cut to `max_len`), on every core the run allows, and scored in batches of
//! similar length as `evaluate` scores a tensor set. `max_len` defaults to the model's
//! `tokenizer_config.json` `model_max_length` (what `fine-tune` trained with), else its
//! position table.

use std::fs;
use std::path::Path;

use candle_core::Device;
use serde_json::Value;

use super::classify::{check_fits, load_classifier, probabilities};
use super::config::BertConfig;
use super::model::{BertClassifier, Precision};
use super::model_dir::ModelDir;
use super::outputs::outputs;
use super::weights::{Checkpoint, Weights};
use crate::error::{StepError, StepResult};
use crate::step::Environment;
use crate::task::Task;
use crate::tensor_set::{TensorSet, TensorSetMeta};
use crate::text::encode::Encoder;
use crate::text::sentence_transform::SentenceTransform;
use crate::text::{source, thread_pool};

/// How to run a model.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Rows per batch.
    pub batch_size: usize,
    /// Tokens per row (`None`: the model's own, see the module documentation).
    pub max_len: Option<usize>,
    pub precision: Precision,
    /// Whether inputs are pairs (`[CLS] a [SEP] b [SEP]`).
    pub pair: bool,
}

impl std::default::Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { batch_size: 128, max_len: None, precision: Precision::F32, pair: false }
    }
}

/// A loaded classifier with its tokenizer.
pub struct Predictor {
    model: BertClassifier,
    /// Holds the parameters the model's tensors live in.
    _weights: Weights,
    config: BertConfig,
    /// The class names, in class order (`id2label`; a regression model's one name).
    pub labels: Vec<String>,
    /// What the model predicts (`config.json`'s `problem_type`).
    pub task: Task,
    /// A multi-label model's stored threshold (`config.json`'s `multi_label_threshold`).
    pub threshold: Option<f32>,
    encoder: Encoder,
    transform: SentenceTransform,
    meta: TensorSetMeta,
    device: Device,
    options: PredictOptions,
}

impl Predictor {
    /// Loads the model at `source` onto `device`.
    pub fn load(source: &ModelDir, device: &Device, options: PredictOptions) -> StepResult<Predictor> {
        let config = source.config()?;
        let labels = source.class_names(&config)?;
        let task = source.task(&config)?;
        let threshold = crate::task::stored_threshold(&config.extra, &source.config)?;
        let Some(tokenizer_path) = &source.tokenizer else {
            let dir = source.config.parent().unwrap_or(Path::new("."));
            return Err(StepError::input_with_help(
                format!(
                    "{} has no tokenizer.json: predicting from raw text needs the model's tokenizer",
                    dir.display()
                ),
                "give a model written by `fine-tune` (it copies the tokenizer of its training set)",
            ));
        };
        let loaded = source::load_path(tokenizer_path, None)?;
        let max_len = match options.max_len {
            Some(n) => n,
            None => model_max_length(source).unwrap_or(config.max_position_embeddings),
        }
        .min(config.max_position_embeddings);
        let encoder = Encoder::new(loaded.tokenizer)?;
        let tok = encoder.tokenizer();
        let need = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                StepError::input(format!(
                    "{}: the tokenizer has no `{t}` token; a BERT classifier reads [CLS] a [SEP]",
                    tokenizer_path.display()
                ))
            })
        };
        let (cls, sep) = (need("[CLS]")?, need("[SEP]")?);
        let pad = tok.token_to_id("[PAD]").unwrap_or(0);
        let transform = SentenceTransform::new(max_len, false, options.pair, cls, sep, pad)?;
        let meta = TensorSetMeta {
            max_len,
            pad_id: pad,
            cls_id: cls,
            sep_id: sep,
            mask_id: None,
            unk_id: None,
            vocab_size: tok.get_vocab_size(true),
            pair: options.pair,
            label_values: Vec::new(),
            label_names: Vec::new(),
            task: crate::task::Task::SingleLabel,
        };
        let checkpoint = Checkpoint::load(&source.weights)?;
        let (model, weights, _) = load_classifier(&config, labels.len(), &checkpoint, true, 0, device)?;
        Ok(Predictor {
            model,
            _weights: weights,
            config,
            labels,
            task,
            threshold,
            encoder,
            transform,
            meta,
            device: device.clone(),
            options,
        })
    }

    /// Tokens per row.
    pub fn max_len(&self) -> usize {
        self.meta.max_len
    }

    /// Every class's probability for each text (a regression model: the value; `b`: the
    /// second texts of pairs), in input order. Tokenizes on `env.threads` threads; checks
    /// `env`'s cancellation between batches.
    pub fn outputs(&mut self, a: &[String], b: Option<&[String]>, env: &Environment) -> StepResult<Vec<Vec<f32>>> {
        if b.is_some() != self.options.pair {
            return Err(StepError::failed("pairs given to a predictor loaded for single texts (or the reverse)"));
        }
        let pool = thread_pool(env)?;
        let encoder = &mut self.encoder;
        let (a_ids, b_ids) = pool.install(|| -> StepResult<_> {
            let a_ids = encoder.encode_batch(a)?;
            let b_ids = b.map(|b| encoder.encode_batch(b)).transpose()?;
            Ok((a_ids, b_ids))
        })?;
        let mut set = TensorSet::empty(self.meta.clone());
        let (mut ids, mut types) = (Vec::new(), Vec::new());
        for (k, a) in a_ids.iter().enumerate() {
            ids.clear();
            types.clear();
            let b = b_ids.as_ref().map(|b| b[k].as_slice());
            let info = self.transform.apply_into(a, b, &mut ids, &mut types);
            set.push(&ids, &types, info.valid_length, -1);
        }
        check_fits(&self.config, &set, "the texts")?;
        let (batch, precision) = (self.options.batch_size.max(1), self.options.precision);
        match self.task {
            Task::SingleLabel => probabilities(&self.model, &set, batch, precision, &self.device, env),
            task => Ok(outputs(&self.model, &set, task, batch, precision, &self.device, env)?.values),
        }
    }
}

/// `model_max_length` of the `tokenizer_config.json` beside the model's `config.json`.
fn model_max_length(source: &ModelDir) -> Option<usize> {
    let path = source.config.parent()?.join("tokenizer_config.json");
    let doc: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    // Hugging Face writes a huge sentinel when a tokenizer has no limit.
    doc.get("model_max_length")?.as_u64().filter(|&n| n > 0 && n < 1_000_000).map(|n| n as usize)
}
