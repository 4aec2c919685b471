//! The `evaluate` step kind: runs a fine-tuned classifier over a tensor set and writes its
//! metrics and per-row predictions ([`crate::predictions`]), as the model's task says
//! ([`crate::task`]): single-label [`crate::report::EvalMetrics`], multi-label ones with micro F1
//! at `threshold`, or regression [`crate::report::RegressionMetrics`].

use std::fs;

use super::classify::{check_fits, classes_of, load_classifier, predict};
use super::device;
use super::model_dir::ModelDir;
use super::outputs::{check_task, outputs, targets_for};
use super::weights::Checkpoint;
use crate::error::{StepError, StepResult};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Reported, ReportedOutput, Step,
    StepContext, StepSpec,
};
use crate::task::{given_threshold, stored_threshold, Task, DEFAULT_THRESHOLD, MODEL_THRESHOLD_PARAM};
use crate::tensor_set::TensorSet;

pub struct Evaluate;

static SPEC: StepSpec = StepSpec {
    kind: "evaluate",
    all_cores: true,
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
        MODEL_THRESHOLD_PARAM,
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
    reported: &[ReportedOutput::new("metrics", Reported::Evaluation)],
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
        given_threshold(params)?;
        device::check(params.str("device")?)
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let device = device::open(ctx.params.str("device")?)?;
        let source = ModelDir::resolve(ctx.opt_input("model"), ctx.params.opt_str("model")?, ctx.env)?;
        let config = source.config()?;
        let labels = source.class_names(&config)?;
        let set = TensorSet::load(ctx.input("data")?)?;
        check_fits(&config, &set, "data")?;
        let task = source.task(&config)?;
        if !task.is_single_label() {
            return evaluate_task(ctx, &source, &config, &labels, &set, task, &device);
        }
        check_task(&set, task, "input `data`")?;
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

/// `evaluate` of a multi-label or regression model.
fn evaluate_task(
    ctx: &StepContext<'_>,
    source: &ModelDir,
    config: &super::config::BertConfig,
    labels: &[String],
    set: &TensorSet,
    task: Task,
    device: &candle_core::Device,
) -> StepResult<()> {
    let targets = targets_for(set, task, labels, "input `data`", "the model's labels")?;
    let checkpoint = Checkpoint::load(&source.weights)?;
    let (model, _weights, _) = load_classifier(config, labels.len(), &checkpoint, true, 0, device)?;
    let precision = crate::bert::train::precision(ctx.params)?;
    let batch_size = ctx.params.usize("batch_size")?.max(1);
    let out = outputs(&model, set, task, batch_size, precision, device, ctx.env)?;
    let path = ctx.output("metrics");
    let write_json = |value: serde_json::Result<Vec<u8>>| -> StepResult<()> {
        let text = value.map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(&path, text).map_err(StepError::io("writing", &path))
    };
    if task == Task::Regression {
        let m = out.regression_metrics(&targets, &labels[0]);
        ctx.events.log(&format!(
            "{} rows: MSE={:.4}, MAE={:.4}, Pearson={:.4}, Spearman={:.4}",
            m.rows, m.mse, m.mae, m.pearson, m.spearman
        ));
        write_json(serde_json::to_vec_pretty(&m))?;
        let predicted: Vec<f32> = out.values.iter().map(|v| v[0]).collect();
        return crate::predictions::write_regression(&ctx.output("predictions"), &targets, &predicted);
    }
    let stored = stored_threshold(&config.extra, &source.config)?;
    let threshold = given_threshold(ctx.params)?.or(stored).unwrap_or(DEFAULT_THRESHOLD);
    let m = out.multi_label_metrics(&targets, labels, threshold);
    ctx.events.log(&format!(
        "{} rows: micro F1={:.4}, macro F1={:.4}, subset accuracy={:.4}, loss={:.4} (threshold {threshold})",
        m.rows,
        m.micro_f1.unwrap_or_default(),
        m.macro_f1,
        m.accuracy,
        m.loss
    ));
    write_json(serde_json::to_vec_pretty(&m))?;
    let k = labels.len();
    let truth: Vec<Vec<String>> = (0..set.len())
        .map(|row| (0..k).filter(|&c| targets[row * k + c] > 0.5).map(|c| labels[c].clone()).collect())
        .collect();
    crate::predictions::write_multi_label(&ctx.output("predictions"), labels, &truth, &out.values, threshold)
}
