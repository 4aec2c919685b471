//! The `evaluate` step kind: runs a fine-tuned classifier over a tensor set and writes its
//! metrics and per-row predictions.

use std::fmt::Write as _;
use std::fs;

use serde_json::Value;

use super::classify::{check_fits, classes_of, load_classifier, predict};
use super::device;
use super::model_dir::ModelDir;
use super::weights::Checkpoint;
use crate::error::{StepError, StepResult};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};
use crate::tensor_set::TensorSet;

pub struct Evaluate;

static SPEC: StepSpec = StepSpec {
    kind: "evaluate",
    version: 2,
    summary:
        "run a fine-tuned classifier on a tensor set: accuracy, precision, recall, F1, confusion matrix, predictions",
    params: &[
        ParamSpec::optional(
            "model",
            ParamType::PathOrHubId,
            Default::Absent,
            "a fine-tuned model directory or hub id (else the `model` input)",
        ),
        ParamSpec::optional("device", ParamType::Str, Default::Str("cpu"), "cpu, auto, cuda, cuda:N or metal"),
        crate::bert::train::params::PRECISION,
        // In the key: the batch changes the float summation order, so the loss and, rarely, a
        // prediction (measured: a row's logits differ in their last bits with the number of rows
        // computed beside it, though not with its padding).
        ParamSpec::optional(
            "batch_size",
            ParamType::Uint,
            Default::Int(128),
            "rows per batch (in the key: it changes the last digits of the results)",
        ),
    ],
    inputs: &[
        InputSpec::required("data", "the tensor set to evaluate"),
        InputSpec::optional("model", "a model directory from `fine-tune`"),
    ],
    outputs: &[
        OutputSpec {
            name: "metrics",
            help: "accuracy, loss, per-class and macro precision/recall/F1, confusion matrix (JSON)",
        },
        OutputSpec {
            name: "predictions",
            help: "one CSV row per input row: label, predicted label, class probabilities",
        },
    ],
};

/// The labels of a classification model's `config.json` (`id2label`, in class order).
fn model_labels(
    config_extra: &std::collections::BTreeMap<String, Value>,
    path: &std::path::Path,
) -> StepResult<Vec<i64>> {
    let not_classifier = || {
        StepError::input_with_help(
            format!("{}: not a classification model (no `id2label`)", path.display()),
            "evaluate a model written by `fine-tune`",
        )
    };
    let map = config_extra.get("id2label").and_then(Value::as_object).ok_or_else(not_classifier)?;
    let mut labels = vec![None; map.len()];
    for (k, v) in map {
        let class: usize = k.parse().map_err(|_| not_classifier())?;
        let label = v
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| v.as_i64())
            .ok_or_else(|| StepError::input(format!("{}: label `{v}` is not an integer", path.display())))?;
        if class < labels.len() {
            labels[class] = Some(label);
        }
    }
    labels.into_iter().collect::<Option<Vec<i64>>>().ok_or_else(not_classifier)
}

impl Step for Evaluate {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        device::resolve_params(params, env)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        crate::bert::train::precision(params)?;
        device::check(params.str("device")?)
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let device = device::open(ctx.params.str("device")?)?;
        let source = ModelDir::resolve(ctx.opt_input("model"), ctx.params.opt_str("model")?, ctx.env)?;
        let config = source.config()?;
        let labels = model_labels(&config.extra, &source.config)?;
        let set = TensorSet::load(ctx.input("data")?)?;
        check_fits(&config, &set, "data")?;
        let classes = classes_of(&set, &labels, "data")?;
        let checkpoint = Checkpoint::load(&source.weights)?;
        let (model, _weights, _) = load_classifier(&config, labels.len(), &checkpoint, true, 0, &device)?;
        let precision = crate::bert::train::precision(ctx.params)?;
        let batch_size = ctx.params.usize("batch_size")?.max(1);
        let predictions = predict(&model, &set, &classes, batch_size, precision, &device, ctx.env)?;
        let metrics = predictions.metrics(&labels);
        ctx.events.log(&format!(
            "{} rows: accuracy={:.4}, macro F1={:.4}, loss={:.4}",
            metrics.rows, metrics.accuracy, metrics.macro_f1, metrics.loss
        ));
        let path = ctx.output("metrics");
        let text = serde_json::to_vec_pretty(&metrics).map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(&path, text).map_err(StepError::io("writing", &path))?;

        let mut csv = String::from("row,label,predicted");
        for l in &labels {
            let _ = write!(csv, ",p_{l}");
        }
        csv.push('\n');
        for (row, (p, predicted)) in predictions.probs.iter().zip(predictions.predicted()).enumerate() {
            let _ = write!(csv, "{row},{},{}", set.labels[row], labels[predicted]);
            for v in p {
                let _ = write!(csv, ",{v:.6}");
            }
            csv.push('\n');
        }
        let path = ctx.output("predictions");
        fs::write(&path, csv).map_err(StepError::io("writing", &path))
    }
}
