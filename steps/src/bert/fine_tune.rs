//! The `fine-tune` step kind: BERT encoder + pooler + dropout + dense classifier trained end to
//! end (the GluonNLP recipe), evaluated after every epoch, checkpointed after every epoch.
//!
//! For imbalanced data the loss can weigh classes (`class_weights`; multi-label: each label's
//! positive term, as PyTorch's `pos_weight`). The saved model is the
//! epoch chosen on the validation set (`select_by`, [`TrainingMetrics::chosen`]; the last epoch
//! without one), so `evaluate`, `ensemble` and the report all see the weights the report
//! headlines; `early_stopping_patience` ends training once that figure stops improving.
//!
//! The task comes from the training set ([`crate::task`]): single-label (softmax, cross-entropy,
//! written as before tasks), multi-label (a sigmoid per class, binary cross-entropy; micro and
//! macro F1 at `threshold`) or regression (one output, MSE; Pearson and Spearman). The model's
//! `config.json` says so in Hugging Face's `problem_type`; a multi-label model's also holds the
//! `threshold` it was trained and chosen at (`multi_label_threshold`).

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use serde_json::Value;

use super::batch::{make_batch, Batches};
use super::checkpoint::EpochCheckpoints;
use super::classify::{check_fits, classes_of, load_classifier, predict};
use super::device;
use super::model::{BertClassifier, Pass};
use super::model_dir::{tensor_set_tokenizer, write_config, write_tokenizer, Head, ModelDir, WEIGHTS};
use super::outputs::{check_task, outputs, targets_for, task_batch};
use super::train::{batch_seed, count_equal, params as train, BatchOutcome, TrainConfig, Trainer};
use super::weights::Checkpoint;
use crate::error::{StepError, StepResult};
use crate::report::{ChosenBy, EarlyStop, EpochMetrics, SelectBy, TrainingMetrics};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Reported, ReportedOutput, Step,
    StepContext, StepSpec, Timing,
};
use crate::task::{threshold, Task, DEFAULT_THRESHOLD, THRESHOLD_KEY, THRESHOLD_PARAM};
use crate::tensor_set::TensorSet;

pub struct FineTune;

static SPEC: StepSpec = StepSpec {
    kind: "fine-tune",
    all_cores: true,
    // 4: the metrics keep the logged batches (`batches`); the model's bytes are unchanged.
    // 5: no timings in the metrics (they go to the run record through `Events::timing`).
    // 5: the model is the chosen epoch's weights, not the last epoch's; the metrics record the
    // saved epoch and each epoch's macro F1.
    // 6: both of the above (5 was either, on the branches that made them).
    // Multi-label and regression sets are new (single-label outputs are unchanged).
    // Not bumped for `multi_label_threshold` in a multi-label model's config.json: it would
    // make every fine-tune rerun for a multi-label-only change. A multi-label result cached
    // before it lacks the key, and readers then score at the default threshold, as they did.
    version: 6,
    summary: "train BERT + pooler + dropout + dense classifier on a tensor set, evaluating every epoch",
    params: &[
        ParamSpec::optional(
            "model",
            ParamType::PathOrHubId,
            Default::Absent,
            "pre-trained BERT: a local directory in Hugging Face layout or a hub id (else the `model` input)",
        ),
        train::epochs(4),
        train::batch_size(32),
        train::lr(5e-5),
        train::warmup_ratio(0.1),
        train::WEIGHT_DECAY,
        train::MAX_GRAD_NORM,
        ParamSpec::optional("dropout", ParamType::Float, Default::Float(0.1), "dropout before the classifier"),
        train::SEED,
        train::DEVICE,
        train::PRECISION,
        // In the key: evaluation batches change the float summation order, so the per-epoch
        // valid/test losses and (rarely) accuracies (measured: a row's logits differ in their
        // last bits with the number of rows computed beside it).
        ParamSpec::optional(
            "eval_batch_size",
            ParamType::Uint,
            Default::Int(128),
            "rows per evaluation batch (in the key: it changes the last digits of the metrics)",
        ),
        train::log_every(50),
        // The three below are absent from the key at their defaults (see `resolve`), so results
        // cached without them keep their keys.
        ParamSpec::optional(
            "class_weights",
            ParamType::NameOrNumbers(&["balanced"]),
            Default::Absent,
            "weigh each class's rows in the training loss: `balanced` (rows / (classes x rows of the class), as \
             scikit-learn), one positive number per class in label order, or a map of labels to numbers (a label \
             not named weighs 1); a batch's loss is the sum of its rows' weighted losses divided by its rows. \
             multi_label: each label's positive term of the binary cross-entropy (PyTorch's `pos_weight`), \
             `balanced` being negatives / positives of the label (absent: every class weighs 1)",
        ),
        ParamSpec::optional(
            "select_by",
            ParamType::Choice(&SelectBy::NAMES),
            Default::Str("accuracy"),
            "the validation figure that chooses the saved epoch (the earliest best; without a `valid` input the last \
             epoch is saved): accuracy or macro_f1; multi_label also micro_f1 (accuracy: every class right); \
             regression mse, pearson or spearman (the default there is mse)",
        ),
        ParamSpec::optional(
            "early_stopping_patience",
            ParamType::Uint,
            Default::Absent,
            "stop once the `select_by` figure has not improved for N epochs (needs `valid`; absent: train every \
             epoch); the saved model is the chosen epoch's",
        ),
        THRESHOLD_PARAM,
    ],
    inputs: &[
        InputSpec::required("train", "tensor set to train on"),
        InputSpec::optional(
            "valid",
            "tensor set evaluated after every epoch; its `select_by` figure chooses the epoch whose weights are saved",
        ),
        InputSpec::optional("test", "tensor set evaluated after every epoch (reported, never used to choose)"),
        InputSpec::optional("model", "a model directory from `pretrain` or another step"),
    ],
    outputs: &[
        OutputSpec {
            name: "model",
            help: "the fine-tuned model in Hugging Face layout (BertForSequenceClassification)",
        },
        OutputSpec { name: "metrics", help: "per-epoch metrics and the logged batches (JSON)" },
    ],
    reported: &[ReportedOutput::new("metrics", Reported::Training)],
};

impl Step for FineTune {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        let mut resolved = device::resolve_params(params, env)?;
        // The default is keyed as the parameter's absence: keys from before it existed hold.
        if params.opt_str("select_by")? == Some("accuracy") {
            let mut values = resolved.values().clone();
            values.remove("select_by");
            resolved = Params::new(values);
        }
        Ok(resolved)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        TrainConfig::validate(params)?;
        let dropout = params.f64("dropout")?;
        if !(0.0..1.0).contains(&dropout) {
            return Err(StepError::param("dropout", format!("must be in [0, 1), got {dropout}")));
        }
        ClassWeights::from_params(params)?;
        select_by(params, None)?;
        threshold(params)?;
        if params.opt_usize("early_stopping_patience")? == Some(0) {
            return Err(StepError::param(
                "early_stopping_patience",
                "must be at least 1 (leave it out to train every epoch)",
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let params = ctx.params;
        let cfg = TrainConfig::from_params(params)?;
        let device = device::open(params.str("device")?)?;
        let train_dir = ctx.input("train")?;
        let train = TensorSet::load(train_dir)?;
        let valid = ctx.opt_input("valid").map(TensorSet::load).transpose()?;
        let test = ctx.opt_input("test").map(TensorSet::load).transpose()?;
        let task = train.meta.task;
        let labels = train.meta.class_names();
        let least = if task == Task::Regression { 1 } else { 2 };
        if labels.len() < least {
            return Err(StepError::input(format!(
                "the training set has {} distinct label(s); a classifier needs at least 2",
                labels.len()
            )));
        }
        let known = "the training labels";
        let targets = |set: &TensorSet, what: &str| -> StepResult<Targets> {
            check_task(set, task, what)?;
            Ok(match task {
                Task::SingleLabel => Targets::Classes(classes_of(set, &labels, what, known)?),
                _ => Targets::Values(targets_for(set, task, &labels, what, known)?),
            })
        };
        let train_targets = targets(&train, "input `train`")?;
        let valid_targets = valid.as_ref().map(|s| targets(s, "input `valid`")).transpose()?;
        let test_targets = test.as_ref().map(|s| targets(s, "input `test`")).transpose()?;
        let class_weights = match (ClassWeights::from_params(params)?, &train_targets) {
            (Some(w), Targets::Classes(classes)) => Some(w.per_class(classes, &labels)?),
            (Some(w), Targets::Values(values)) if task == Task::MultiLabel => Some(w.per_label(values, &labels)?),
            (Some(_), Targets::Values(_)) => {
                return Err(StepError::input_with_help(
                    format!(
                        "parameter `class_weights` weighs classes or labels; the training set is `{}`",
                        task.name()
                    ),
                    "remove `class_weights`",
                ))
            }
            (None, _) => None,
        };
        let select_by = select_by(params, Some(task))?;
        let threshold = threshold(params)?;
        let patience = params.opt_usize("early_stopping_patience")?;
        if valid.is_none() {
            let needs = [
                ("early_stopping_patience", patience.is_some()),
                ("select_by", params.opt_str("select_by")?.is_some_and(|s| s != "accuracy")),
            ];
            if let Some((name, _)) = needs.iter().find(|(_, set)| *set) {
                return Err(StepError::input_with_help(
                    format!("parameter `{name}` chooses on the validation set, and the step has no `valid` input"),
                    format!("add `valid: <step>.<output>` to the step's inputs, or remove `{name}`"),
                ));
            }
        }

        let source = ModelDir::resolve(ctx.opt_input("model"), params.opt_str("model")?, ctx.env)?;
        let config = source.config()?;
        for (set, what) in [(Some(&train), "train"), (valid.as_ref(), "valid"), (test.as_ref(), "test")] {
            if let Some(set) = set {
                check_fits(&config, set, what)?;
            }
        }
        let checkpoint = Checkpoint::load(&source.weights)?;
        let (mut model, weights, fresh) =
            load_classifier(&config, labels.len(), &checkpoint, false, cfg.seed, &device)?;
        model.dropout = params.f64("dropout")?;
        if !fresh.is_empty() {
            ctx.events.log("the checkpoint has no pooler weights: the pooler starts freshly initialised");
        }
        ctx.events.log(&format!(
            "model: {} layers, hidden {}, {} heads, {:.1}M parameters; {} training rows, {}",
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            weights.parameter_count() as f64 / 1e6,
            train.len(),
            match task {
                Task::SingleLabel => format!("{} classes", labels.len()),
                Task::MultiLabel => format!("{} labels (multi_label)", labels.len()),
                Task::Regression => format!("regression of `{}`", labels[0]),
            }
        ));

        let batches_per_epoch = train.len().div_ceil(cfg.batch_size);
        let vars = weights.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let mut trainer = Trainer::new(cfg.clone(), vars, batches_per_epoch, ctx.events, ctx.env)?;
        let checkpoints = EpochCheckpoints::new(ctx.checkpoint_dir);
        let mut metrics = TrainingMetrics {
            task,
            epochs: Vec::new(),
            best_epoch: None,
            select_by,
            saved_epoch: None,
            stopped_early: None,
            class_weights: class_weights.clone(),
            batches: Vec::new(),
        };
        // A checkpoint keeps the chosen epoch's weights beside the latest's.
        let kept = |m: &TrainingMetrics, _| m.chosen_epoch().map(|c| c.epoch);
        if let Some((epoch, state)) = checkpoints.resume(&weights, &mut trainer.optimizer, ctx.events, kept)? {
            metrics = state;
            ctx.events.log(&format!("resuming after epoch {epoch} from its checkpoint"));
        }
        let eval_batch = params.usize("eval_batch_size")?.max(1);
        let loss_weights: Option<Vec<f32>> = class_weights.as_ref().map(|w| w.iter().map(|&x| x as f32).collect());
        for epoch in metrics.epochs.len() + 1..=cfg.epochs {
            if metrics.stopped_early.is_some() {
                break;
            }
            let order = Batches::shuffled(&train, cfg.batch_size, batch_seed(cfg.seed, epoch, usize::MAX));
            let stats = trainer.epoch(epoch, &order.batches, |rows, pass| match &train_targets {
                Targets::Classes(classes) => {
                    classify_batch(&model, &train, classes, rows, pass, &device, loss_weights.as_deref())
                }
                Targets::Values(values) => {
                    task_batch(&model, &train, task, values, rows, pass, &device, threshold, loss_weights.as_deref())
                }
            })?;
            let train_accuracy = (task != Task::Regression).then_some(stats.accuracy);
            let mut row = EpochMetrics::new(epoch, stats.loss, train_accuracy, stats.lr);
            let eval = |set: &TensorSet, t: &Targets| -> StepResult<Scores> {
                Ok(match t {
                    Targets::Classes(classes) => {
                        let p = predict(&model, set, classes, eval_batch, cfg.precision, &device, ctx.env)?;
                        Scores {
                            loss: p.loss,
                            accuracy: Some(p.accuracy()),
                            macro_f1: Some(p.metrics(&labels).macro_f1),
                            ..Scores::default()
                        }
                    }
                    Targets::Values(values) => {
                        let out = outputs(&model, set, task, eval_batch, cfg.precision, &device, ctx.env)?;
                        if task == Task::Regression {
                            let m = out.regression_metrics(values, &labels[0]);
                            Scores {
                                loss: m.mse,
                                pearson: Some(m.pearson),
                                spearman: Some(m.spearman),
                                ..Scores::default()
                            }
                        } else {
                            let m = out.multi_label_metrics(values, &labels, threshold);
                            Scores {
                                loss: m.loss,
                                accuracy: Some(m.accuracy),
                                macro_f1: Some(m.macro_f1),
                                micro_f1: m.micro_f1,
                                ..Scores::default()
                            }
                        }
                    }
                })
            };
            if let (Some(set), Some(t)) = (&valid, &valid_targets) {
                let s = eval(set, t)?;
                (row.valid_loss, row.valid_accuracy, row.valid_macro_f1) = (Some(s.loss), s.accuracy, s.macro_f1);
                (row.valid_micro_f1, row.valid_pearson, row.valid_spearman) = (s.micro_f1, s.pearson, s.spearman);
            }
            if let (Some(set), Some(t)) = (&test, &test_targets) {
                let s = eval(set, t)?;
                (row.test_loss, row.test_accuracy, row.test_macro_f1) = (Some(s.loss), s.accuracy, s.macro_f1);
                (row.test_micro_f1, row.test_pearson, row.test_spearman) = (s.micro_f1, s.pearson, s.spearman);
            }
            let timing = Timing::epoch(epoch, stats.seconds, stats.samples as u64);
            ctx.events.log(&format!("{}; {}", epoch_line(&row, select_by), timing.describe()));
            ctx.events.timing(&timing);
            metrics.epochs.push(row);
            metrics.batches.append(&mut trainer.logged);
            if let Some(patience) = patience {
                metrics.stopped_early = metrics.early_stop(patience, cfg.epochs);
            }
            let keep = metrics.chosen_epoch().map(|c| c.epoch);
            checkpoints.save(epoch, &weights, &trainer.optimizer, &metrics, keep)?;
            if let Some(stop) = &metrics.stopped_early {
                ctx.events.log(&stop_line(stop, select_by));
            }
        }
        let chosen = metrics.chosen_epoch();
        metrics.best_epoch = chosen.filter(|c| c.by != ChosenBy::LastEpoch).map(|c| c.epoch);
        let last = metrics.epochs.last().map(|e| e.epoch);
        if let (Some(c), Some(last)) = (chosen, last) {
            if c.epoch != last {
                checkpoints.load_weights(c.epoch, &weights)?;
                ctx.events.log(&format!(
                    "the model is epoch {}'s, chosen by {} (not the last epoch, {last})",
                    c.epoch,
                    select_by.describe()
                ));
            }
        }
        metrics.saved_epoch = chosen.map(|c| c.epoch);

        let out = ctx.output("model");
        fs::create_dir_all(&out).map_err(StepError::io("creating", &out))?;
        weights.save(&out.join(WEIGHTS), &[])?;
        // The threshold the epoch was chosen at, for whoever scores the model (`crate::task`).
        let mut config = config;
        match task {
            Task::MultiLabel => {
                let t = params.opt_f64("threshold")?.unwrap_or(f64::from(DEFAULT_THRESHOLD));
                config.extra.insert(THRESHOLD_KEY.into(), serde_json::json!(t));
            }
            _ => {
                config.extra.remove(THRESHOLD_KEY);
            }
        }
        write_config(&out, &config, Head::Classifier { labels: &labels, task })?;
        let tokenizer = tensor_set_tokenizer(train_dir).or(source.tokenizer.clone());
        write_tokenizer(&out, tokenizer.as_deref(), &train.meta)?;
        write_metrics(&ctx.output("metrics"), &metrics)
    }
}

/// The summed loss and the accuracy of one shard of a training batch. With `class_weights`
/// (one per class) each row's cross-entropy is multiplied by its class's weight; the trainer
/// divides the sum by the batch's rows either way.
pub fn classify_batch(
    model: &BertClassifier,
    set: &TensorSet,
    classes: &[u32],
    rows: &[usize],
    pass: &Pass,
    device: &Device,
    class_weights: Option<&[f32]>,
) -> candle_core::Result<BatchOutcome> {
    let batch = make_batch(set, rows, None, DType::F32, device)?;
    let logits = model.forward(&batch, pass)?;
    let wanted: Vec<u32> = rows.iter().map(|&i| classes[i]).collect();
    let target = Tensor::from_vec(wanted, rows.len(), device)?;
    let loss = match class_weights {
        // Unweighted, as before weights existed (the same bits).
        None => (candle_nn::loss::cross_entropy(&logits, &target)? * rows.len() as f64)?,
        Some(w) => {
            let row_weights: Vec<f32> = rows.iter().map(|&i| w[classes[i] as usize]).collect();
            let row_weights = Tensor::from_vec(row_weights, rows.len(), device)?;
            let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let picked = log_p.gather(&target.unsqueeze(1)?, 1)?.squeeze(1)?;
            (picked * row_weights)?.sum_all()?.neg()?
        }
    };
    let correct = count_equal(&logits.argmax(1)?, &target)?;
    Ok(BatchOutcome { loss, correct, count: rows.len() })
}

/// What each row of a set is trained towards: its class, or its targets ([`TensorSet::targets`]
/// in the training set's class order).
enum Targets {
    Classes(Vec<u32>),
    Values(Vec<f32>),
}

/// The figures of one evaluation of a set during training (those of its task).
#[derive(Default)]
struct Scores {
    loss: f64,
    accuracy: Option<f64>,
    macro_f1: Option<f64>,
    micro_f1: Option<f64>,
    pearson: Option<f64>,
    spearman: Option<f64>,
}

/// `class_weights` as given: before the training set is known.
#[derive(Debug, Clone, PartialEq)]
enum ClassWeights {
    Balanced,
    /// One weight per class, in label order.
    Given(Vec<f64>),
    /// Weights by label name; a label not named weighs 1.
    Named(Vec<(String, f64)>),
}

impl ClassWeights {
    fn from_params(params: &Params) -> StepResult<Option<ClassWeights>> {
        let bad = |message: String| StepError::param("class_weights", message);
        let positive = |w: f64| {
            if w.is_finite() && w > 0.0 {
                Ok(w)
            } else {
                Err(bad(format!("must hold positive numbers, got {w}")))
            }
        };
        match params.get("class_weights") {
            None => Ok(None),
            Some(Value::String(s)) if s == "balanced" => Ok(Some(ClassWeights::Balanced)),
            Some(Value::Array(items)) => {
                let weights = items
                    .iter()
                    .map(|v| v.as_f64().ok_or_else(|| bad(format!("must be a list of numbers, got `{v}` in it"))))
                    .map(|w| w.and_then(positive))
                    .collect::<StepResult<Vec<f64>>>()?;
                if weights.is_empty() {
                    return Err(bad("must hold one weight per class, got an empty list".into()));
                }
                Ok(Some(ClassWeights::Given(weights)))
            }
            Some(Value::Object(entries)) => {
                let weights = entries
                    .iter()
                    .map(|(name, v)| {
                        let w =
                            v.as_f64().ok_or_else(|| bad(format!("must map labels to numbers, got `{name}: {v}`")))?;
                        Ok((name.clone(), positive(w)?))
                    })
                    .collect::<StepResult<Vec<(String, f64)>>>()?;
                if weights.is_empty() {
                    return Err(bad("must name at least one label, got an empty map".into()));
                }
                Ok(Some(ClassWeights::Named(weights)))
            }
            Some(v) => {
                Err(bad(format!("must be `balanced`, a list of numbers or a map of labels to numbers, got `{v}`")))
            }
        }
    }

    /// Given weights in label order (`None` for `balanced`): a list of one per class, or a
    /// map whose names are all labels (a label it does not name weighs 1).
    /// `unit` names what is weighed (class or label).
    fn given(&self, labels: &[String], unit: &str) -> StepResult<Option<Vec<f64>>> {
        let k = labels.len();
        match self {
            ClassWeights::Balanced => Ok(None),
            ClassWeights::Given(w) if w.len() == k => Ok(Some(w.clone())),
            ClassWeights::Given(w) => Err(StepError::input_with_help(
                format!(
                    "parameter `class_weights` has {} weight(s), and the training set has {k} {unit}{} (labels {})",
                    w.len(),
                    if unit.ends_with('s') { "es" } else { "s" },
                    labels.join(", ")
                ),
                format!(
                    "give one weight per {unit}, in label order ({k} numbers), a map of labels to weights, or \
                     `class_weights: balanced`"
                ),
            )),
            ClassWeights::Named(named) => {
                let mut out = vec![1.0; k];
                for (name, w) in named {
                    let Some(i) = labels.iter().position(|l| l == name) else {
                        let hint = crate::suggest::did_you_mean(name, labels.iter().map(String::as_str))
                            .map(|h| format!(" {h}"))
                            .unwrap_or_default();
                        return Err(StepError::input_with_help(
                            format!("parameter `class_weights` names `{name}`, which is not a training label{hint}"),
                            format!("the labels are {}", crate::labels::quoted(labels)),
                        ));
                    };
                    out[i] = *w;
                }
                Ok(Some(out))
            }
        }
    }

    /// The weight of each class (`classes` are the training rows' classes): `balanced` as
    /// scikit-learn's `compute_class_weight`, rows / (classes x rows of the class).
    fn per_class(&self, classes: &[u32], labels: &[String]) -> StepResult<Vec<f64>> {
        if let Some(w) = self.given(labels, "class")? {
            return Ok(w);
        }
        let k = labels.len();
        let mut counts = vec![0usize; k];
        for &c in classes {
            counts[c as usize] += 1;
        }
        if let Some(c) = counts.iter().position(|&n| n == 0) {
            return Err(StepError::input(format!(
                "parameter `class_weights: balanced`: the training set has no row of label `{}`",
                labels[c]
            )));
        }
        Ok(counts.iter().map(|&n| classes.len() as f64 / (k * n) as f64).collect())
    }

    /// Multi-label: the weight of each label's positive term in the binary cross-entropy
    /// (`pos_weight` of PyTorch's `BCEWithLogitsLoss`; `targets` row after row, one per label):
    /// `balanced` is negatives / positives of each label in the training rows.
    fn per_label(&self, targets: &[f32], labels: &[String]) -> StepResult<Vec<f64>> {
        if let Some(w) = self.given(labels, "label")? {
            return Ok(w);
        }
        let k = labels.len();
        let rows = targets.len() / k.max(1);
        let mut positives = vec![0usize; k];
        for row in targets.chunks(k) {
            for (c, &t) in row.iter().enumerate() {
                positives[c] += usize::from(t > 0.5);
            }
        }
        for (c, &p) in positives.iter().enumerate() {
            if p == 0 || p == rows {
                return Err(StepError::input_with_help(
                    format!(
                        "parameter `class_weights: balanced`: label `{}` is in {} of the {rows} training rows, so \
                         negatives / positives is not a weight",
                        labels[c],
                        if p == 0 { "none" } else { "every one" }
                    ),
                    "give the weights yourself (a list or a map of labels to weights), or drop that label",
                ));
            }
        }
        Ok(positives.iter().map(|&p| (rows - p) as f64 / p as f64).collect())
    }
}

/// The `select_by` parameter (accuracy when absent), checked against the training set's
/// `task` when it is known: regression chooses by MSE where the default says accuracy.
fn select_by(params: &Params, task: Option<Task>) -> StepResult<SelectBy> {
    let given = params.opt_str("select_by")?;
    let by = match given {
        None => SelectBy::Accuracy,
        Some(name) => SelectBy::parse(name).ok_or_else(|| {
            StepError::param("select_by", format!("`{name}` is not one of {}", SelectBy::NAMES.join(", ")))
        })?,
    };
    let Some(task) = task else { return Ok(by) };
    let fits = SelectBy::of_task(task);
    match by {
        SelectBy::Accuracy if task == Task::Regression => Ok(SelectBy::Mse),
        by if fits.contains(&by) => Ok(by),
        by => Err(StepError::input_with_help(
            format!("parameter `select_by: {}` does not apply to the training set's task `{}`", by.name(), task.name()),
            format!(
                "for `{}` choose by one of {}",
                task.name(),
                fits.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn stop_line(stop: &EarlyStop, by: SelectBy) -> String {
    format!(
        "stopping early after epoch {} of {}: {} has not improved for {} epoch(s) since epoch {}",
        stop.after_epoch,
        stop.of_epochs,
        by.describe(),
        stop.after_epoch - stop.best_epoch,
        stop.best_epoch
    )
}

fn epoch_line(e: &EpochMetrics, by: SelectBy) -> String {
    let mut line = format!("[Epoch {}] train loss={:.4}", e.epoch, e.train_loss);
    if let Some(a) = e.train_accuracy {
        line.push_str(&format!(", acc={a:.4}"));
    }
    if let Some(a) = e.valid_accuracy {
        line.push_str(&format!("; valid acc={a:.4}"));
    }
    if let (SelectBy::MacroF1, Some(f)) = (by, e.valid_macro_f1) {
        line.push_str(&format!(", macro F1={f:.4}"));
    }
    if let Some(f) = e.valid_micro_f1 {
        line.push_str(&format!(", micro F1={f:.4}"));
    }
    if let (Some(l), Some(p), Some(r)) = (e.valid_loss, e.valid_pearson, e.valid_spearman) {
        line.push_str(&format!("; valid MSE={l:.4}, Pearson={p:.4}, Spearman={r:.4}"));
    }
    if let Some(a) = e.test_accuracy {
        line.push_str(&format!("; test acc={a:.4}"));
    }
    if let (Some(l), Some(p)) = (e.test_loss, e.test_pearson) {
        line.push_str(&format!("; test MSE={l:.4}, Pearson={p:.4}"));
    }
    line
}

fn write_metrics(path: &Path, metrics: &TrainingMetrics) -> StepResult<()> {
    let text = serde_json::to_vec_pretty(metrics).map_err(|e| StepError::failed(e.to_string()))?;
    fs::write(path, text).map_err(StepError::io("writing", path))
}
