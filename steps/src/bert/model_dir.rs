//! `ModelDir`: a model in Hugging Face layout (`config.json`, `model.safetensors`, tokenizer),
//! found in a step's output, a local directory, or on the Hugging Face hub, and written by the
//! training steps.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::config::BertConfig;
use super::tokenizer_files;
use crate::error::{StepError, StepResult};
use crate::hub::{self, HubRef};
use crate::step::Environment;
use crate::task::Task;
use crate::tensor_set::{TensorSetMeta, TOKENIZER_FILE};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const TOKENIZER: &str = "tokenizer.json";

/// The files of a model.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: Option<PathBuf>,
}

impl ModelDir {
    /// A local directory in Hugging Face layout.
    pub fn local(dir: &Path) -> StepResult<ModelDir> {
        if !dir.is_dir() {
            return Err(StepError::input(format!("model directory {} does not exist", dir.display())));
        }
        let config = dir.join(CONFIG);
        if !config.is_file() {
            return Err(StepError::input_with_help(
                format!("{} has no {CONFIG}", dir.display()),
                "a model directory needs Hugging Face layout: config.json, model.safetensors, tokenizer.json",
            ));
        }
        let weights = dir.join(WEIGHTS);
        if !weights.is_file() {
            let help = if dir.join("pytorch_model.bin").is_file() {
                "only safetensors checkpoints are read; convert pytorch_model.bin with `transformers` (save_pretrained(safe_serialization=True))"
            } else {
                "a model directory needs Hugging Face layout: config.json, model.safetensors, tokenizer.json"
            };
            return Err(StepError::input_with_help(format!("{} has no {WEIGHTS}", dir.display()), help));
        }
        let tokenizer = Some(dir.join(TOKENIZER)).filter(|p| p.is_file());
        Ok(ModelDir { config, weights, tokenizer })
    }

    /// A model on the Hugging Face hub at a revision (`owner/name@<sha>` after
    /// [`crate::hub::pin_param`]), fetched into the hub cache, or read from it without the
    /// network when that commit's files are there. `tokenizer.json` is optional.
    pub fn hub(hub_ref: &HubRef, env: &Environment) -> StepResult<ModelDir> {
        let fetch = |file: &str| {
            hub::fetch(hub_ref, file, env).map_err(|e| match e {
                e @ hub::FetchError::NotFound { .. } if file == WEIGHTS => StepError::input_with_help(
                    e.to_string(),
                    "only safetensors checkpoints are read; pick a revision with model.safetensors, or convert \
                     the model with `transformers` (save_pretrained(safe_serialization=True)) and give its directory",
                ),
                e => e.into_step_error("model"),
            })
        };
        let config = fetch(CONFIG)?;
        let weights = fetch(WEIGHTS)?;
        let tokenizer = match hub::fetch(hub_ref, TOKENIZER, env) {
            Ok(path) => Some(path),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into_step_error("model")),
        };
        Ok(ModelDir { config, weights, tokenizer })
    }

    /// From a step input (a model directory) or a `model` parameter (a local path or a hub
    /// reference `id[@revision]`).
    pub fn resolve(input: Option<&Path>, param: Option<&str>, env: &Environment) -> StepResult<ModelDir> {
        match (input, param) {
            (Some(dir), _) => ModelDir::local(dir),
            (None, Some(p)) if Path::new(p).exists() => ModelDir::local(Path::new(p)),
            (None, Some(p)) => match HubRef::parse(p) {
                Some(hub_ref) => ModelDir::hub(&hub_ref, env),
                None => Err(StepError::param("model", format!("`{p}` is neither an existing path nor a hub model id"))),
            },
            (None, None) => Err(StepError::param("model", "give a `model` parameter or a `model` input")),
        }
    }

    pub fn config(&self) -> StepResult<BertConfig> {
        BertConfig::load(&self.config)
    }

    /// The class names of a classification model (`config.json`'s `id2label`, in class order;
    /// a regression model's one name is its value's).
    pub fn class_names(&self, config: &BertConfig) -> StepResult<Vec<String>> {
        class_names(&config.extra, &self.config)
    }

    /// The model's task, from `config.json`'s `problem_type` (absent: single-label).
    pub fn task(&self, config: &BertConfig) -> StepResult<Task> {
        let given = config.extra.get("problem_type").and_then(Value::as_str);
        Task::of_problem_type(given).ok_or_else(|| {
            StepError::input(format!(
                "{}: `problem_type` `{}` is none of single_label_classification, multi_label_classification, \
                 regression",
                self.config.display(),
                given.unwrap_or_default()
            ))
        })
    }
}

/// The class names in `id2label` (of the config file at `path`, for errors), in class order.
fn class_names(extra: &std::collections::BTreeMap<String, Value>, path: &Path) -> StepResult<Vec<String>> {
    let not_classifier = || {
        StepError::input_with_help(
            format!("{}: not a classification model (no `id2label` with classes 0..N)", path.display()),
            "give a model written by `fine-tune` (or any BertForSequenceClassification)",
        )
    };
    let map = extra.get("id2label").and_then(Value::as_object).ok_or_else(not_classifier)?;
    let mut names = vec![None; map.len()];
    for (k, v) in map {
        let class: usize = k.parse().map_err(|_| not_classifier())?;
        let name = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *names.get_mut(class).ok_or_else(not_classifier)? = Some(name);
    }
    names.into_iter().collect::<Option<Vec<String>>>().ok_or_else(not_classifier)
}

/// The head a written model has.
#[derive(Debug, Clone, Copy)]
pub enum Head<'a> {
    /// `BertForSequenceClassification` for `task`, its outputs named by `labels` (one for
    /// regression).
    Classifier {
        labels: &'a [String],
        task: Task,
    },
    MaskedLm,
}

/// Writes `config.json` for a model head: `BertForSequenceClassification` with its class names
/// (`id2label`, `label2id`: what `transformers.pipeline` reports) and, for multi-label and
/// regression models, Hugging Face's `problem_type` (single-label configs are written as before
/// tasks existed: `transformers` takes `num_labels` > 1 as single-label), or `BertForMaskedLM`.
pub fn write_config(dir: &Path, config: &BertConfig, head: Head<'_>) -> StepResult<()> {
    let mut config = config.clone();
    match head {
        Head::Classifier { labels, task } => {
            if !task.is_single_label() {
                config.extra.insert("problem_type".into(), json!(task.problem_type()));
            } else if config.extra.get("problem_type") != Some(&json!(task.problem_type())) {
                // A source model of another task: not this one's.
                config.extra.remove("problem_type");
            }
            let id2label: serde_json::Map<String, Value> =
                labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
            let label2id: serde_json::Map<String, Value> =
                labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
            config.extra.insert("architectures".into(), json!(["BertForSequenceClassification"]));
            config.extra.insert("num_labels".into(), json!(labels.len()));
            config.extra.insert("id2label".into(), Value::Object(id2label));
            config.extra.insert("label2id".into(), Value::Object(label2id));
        }
        Head::MaskedLm => {
            config.extra.insert("architectures".into(), json!(["BertForMaskedLM"]));
        }
    }
    config.extra.insert("model_type".into(), json!("bert"));
    config.save(&dir.join(CONFIG))
}

/// Writes the tokenizer of a tensor set (or of the source model) next to a written model:
/// `tokenizer.json` with `tokenizer_config.json`, `special_tokens_map.json` and `vocab.txt`
/// that make `AutoTokenizer.from_pretrained` tokenize as `tokenize` did for `meta`'s set
/// ([`super::tokenizer_files`]). Nothing is written without a tokenizer.
pub fn write_tokenizer(dir: &Path, tokenizer: Option<&Path>, meta: &TensorSetMeta) -> StepResult<()> {
    let Some(source) = tokenizer.filter(|p| p.is_file()) else { return Ok(()) };
    tokenizer_files::write(dir, source, meta)
}

/// The tokenizer stored beside a tensor set.
pub fn tensor_set_tokenizer(set_dir: &Path) -> Option<PathBuf> {
    Some(set_dir.join(TOKENIZER_FILE)).filter(|p| p.is_file())
}
