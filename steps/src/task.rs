//! What a model learns from a label column: the contract between `tokenize` (which encodes the
//! column as the task says), `fine-tune`, `evaluate` and `predict` (the loss, the activation and
//! the metrics) and `config.json` (Hugging Face's `problem_type`, so `transformers` loads the
//! model the same way).
//!
//! - `single_label`: one class per row; softmax and cross-entropy; accuracy, per-class and
//!   macro precision/recall/F1. Its tensor sets and configs are written as before tasks existed
//!   (no `task` in `meta.json`, no `problem_type` in `config.json`).
//! - `multi_label`: any number of classes per row (a JSON list, or a string split on
//!   `label_separator`); a sigmoid per class and binary cross-entropy; a class is predicted when
//!   its probability reaches the `threshold`; micro and macro F1, and subset accuracy (the rows
//!   whose predicted set is exactly their set). `fine-tune` stores the threshold it trained
//!   and chose the epoch with in `config.json` as `multi_label_threshold` ([`THRESHOLD_KEY`];
//!   an extra key, which `transformers` keeps as `model.config.multi_label_threshold`), and
//!   `evaluate`, `predict` and `pipe predict` score at it unless given a `threshold`.
//! - `regression`: one number per row; the identity and mean squared error (`num_labels` 1);
//!   MSE, MAE, Pearson and Spearman correlation.
//!
//! Not in it: multi-output regression, and the `linear` and `ensemble` kinds, which fit and
//! combine single-label classifiers only ([`Task::refuse_unless_single_label`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{StepError, StepResult};
use crate::step::{Default, ParamSpec, ParamType, Params};

/// What a model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, std::default::Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    SingleLabel,
    MultiLabel,
    Regression,
}

/// The `task` parameter (absent: `single_label`, so keys from before tasks existed hold).
pub const TASK_PARAM: ParamSpec = ParamSpec::optional(
    "task",
    ParamType::Choice(&Task::NAMES),
    Default::Absent,
    "single_label (one class per row; when absent), multi_label (a JSON list of classes per row, or classes \
     joined by `label_separator`) or regression (a number per row)",
);

/// The `threshold` parameter of `fine-tune`.
pub const THRESHOLD_PARAM: ParamSpec = ParamSpec::optional(
    "threshold",
    ParamType::Float,
    Default::Absent,
    "multi_label: a class is predicted when its probability is at least this (absent: 0.5); stored in the \
     model's config.json as `multi_label_threshold`",
);

/// The `threshold` parameter of the steps that score a trained multi-label model.
pub const MODEL_THRESHOLD_PARAM: ParamSpec = ParamSpec::optional(
    "threshold",
    ParamType::Float,
    Default::Absent,
    "multi_label: a class is predicted when its probability is at least this (absent: the model's \
     `multi_label_threshold`, what fine-tune used; else 0.5)",
);

/// The `config.json` key of a multi-label model's threshold.
pub const THRESHOLD_KEY: &str = "multi_label_threshold";

/// The threshold when none is given or stored.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl Task {
    pub const NAMES: [&'static str; 3] = ["single_label", "multi_label", "regression"];

    pub fn parse(name: &str) -> Option<Task> {
        match name {
            "single_label" => Some(Task::SingleLabel),
            "multi_label" => Some(Task::MultiLabel),
            "regression" => Some(Task::Regression),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::SingleLabel => "single_label",
            Task::MultiLabel => "multi_label",
            Task::Regression => "regression",
        }
    }

    pub fn is_single_label(&self) -> bool {
        *self == Task::SingleLabel
    }

    /// The `task` parameter of `params` (single_label when absent).
    pub fn of_params(params: &Params) -> StepResult<Task> {
        match params.opt_str("task")? {
            None => Ok(Task::SingleLabel),
            Some(name) => Task::parse(name)
                .ok_or_else(|| StepError::param("task", format!("`{name}` is not one of {}", Task::NAMES.join(", ")))),
        }
    }

    /// Hugging Face's `problem_type` for this task.
    pub fn problem_type(self) -> &'static str {
        match self {
            Task::SingleLabel => "single_label_classification",
            Task::MultiLabel => "multi_label_classification",
            Task::Regression => "regression",
        }
    }

    /// The task of a `problem_type` (absent: single-label, as `transformers` infers for
    /// `num_labels` > 1).
    pub fn of_problem_type(problem_type: Option<&str>) -> Option<Task> {
        match problem_type {
            None | Some("single_label_classification") => Some(Task::SingleLabel),
            Some("multi_label_classification") => Some(Task::MultiLabel),
            Some("regression") => Some(Task::Regression),
            Some(_) => None,
        }
    }

    /// The error of a kind that handles single-label classification only, for a `task` it was
    /// given (`what`: where the task came from, e.g. "parameter `task`").
    pub fn refuse_unless_single_label(self, kind: &str, what: &str) -> StepResult<()> {
        if self.is_single_label() {
            return Ok(());
        }
        Err(StepError::input_with_help(
            format!(
                "step kind `{kind}` fits and combines single-label classifiers (N classes) only; {what} is `{}`, \
                 which it does not support",
                self.name()
            ),
            format!("train and evaluate `{}` models with fine-tune and evaluate", self.name()),
        ))
    }
}

/// The `threshold` parameter, checked (0.5 when absent).
pub fn threshold(params: &Params) -> StepResult<f32> {
    Ok(given_threshold(params)?.unwrap_or(DEFAULT_THRESHOLD))
}

/// The `threshold` parameter, checked, when it is given.
pub fn given_threshold(params: &Params) -> StepResult<Option<f32>> {
    let Some(t) = params.opt_f64("threshold")? else { return Ok(None) };
    if !(t > 0.0 && t < 1.0) {
        return Err(StepError::param("threshold", format!("must be in (0, 1), got {t}")));
    }
    Ok(Some(t as f32))
}

/// The threshold a model's `config.json` stores ([`THRESHOLD_KEY`]), when it is one; a value
/// outside (0, 1) is an error naming the file.
pub fn stored_threshold(extra: &BTreeMap<String, Value>, file: &Path) -> StepResult<Option<f32>> {
    match extra.get(THRESHOLD_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t < 1.0 => Ok(Some(t as f32)),
            _ => Err(StepError::input_with_help(
                format!("{}: `{THRESHOLD_KEY}` must be a number in (0, 1), got {v}", file.display()),
                format!("fix or remove `{THRESHOLD_KEY}` (the threshold then defaults to {DEFAULT_THRESHOLD})"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_problem_types_round_trip() {
        for name in Task::NAMES {
            let task = Task::parse(name).unwrap();
            assert_eq!(task.name(), name);
            assert_eq!(Task::of_problem_type(Some(task.problem_type())), Some(task));
            assert_eq!(serde_json::to_value(task).unwrap(), serde_json::json!(name));
        }
        assert_eq!(Task::of_problem_type(None), Some(Task::SingleLabel));
        assert_eq!(Task::of_problem_type(Some("ranking")), None);
        let e = Task::MultiLabel.refuse_unless_single_label("linear", "parameter `task`").unwrap_err();
        assert!(e.is_bad_input() && e.to_string().contains("`multi_label`, which it does not support"), "{e}");
    }
}
