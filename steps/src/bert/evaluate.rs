//! The `evaluate` step kind: runs a fine-tuned classifier over a tensor set and writes its
//! metrics and per-row predictions.

use std::fs;

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
        let labels = source.class_names(&config)?;
        let set = TensorSet::load(ctx.input("data")?)?;
        check_fits(&config, &set, "data")?;
        let classes = classes_of(&set, &labels, "input `data`", "the model's labels")?;
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

        let truth: Vec<&str> = predictions.classes.iter().map(|&c| labels[c as usize].as_str()).collect();
        crate::predictions::write(&ctx.output("predictions"), &labels, &truth, &predictions.probs)
    }
}
