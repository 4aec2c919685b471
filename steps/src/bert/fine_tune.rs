//! The `fine-tune` step kind: BERT encoder + pooler + dropout + dense classifier trained end to
//! end (the GluonNLP recipe), evaluated after every epoch, checkpointed after every epoch.

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::batch::{make_batch, Batches};
use super::checkpoint::EpochCheckpoints;
use super::classify::{check_fits, classes_of, load_classifier, predict};
use super::device;
use super::model::{BertClassifier, Pass};
use super::model_dir::{tensor_set_tokenizer, write_config, write_tokenizer, ModelDir, WEIGHTS};
use super::train::{batch_seed, count_equal, params as train, BatchOutcome, TrainConfig, Trainer};
use super::weights::Checkpoint;
use crate::error::{StepError, StepResult};
use crate::report::{ChosenBy, EpochMetrics, TrainingMetrics};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec, Timing,
};
use crate::tensor_set::TensorSet;

pub struct FineTune;

static SPEC: StepSpec = StepSpec {
    kind: "fine-tune",
    // 4: the metrics keep the logged batches (`batches`); the model's bytes are unchanged.
    // 5: no timings in the metrics (they go to the run record through `Events::timing`).
    version: 5,
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
    ],
    inputs: &[
        InputSpec::required("train", "tensor set to train on"),
        InputSpec::optional(
            "valid",
            "tensor set evaluated after every epoch; its accuracy chooses `best_epoch` (the model is the last epoch's)",
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
};

impl Step for FineTune {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        device::resolve_params(params, env)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        TrainConfig::validate(params)?;
        let dropout = params.f64("dropout")?;
        if !(0.0..1.0).contains(&dropout) {
            return Err(StepError::param("dropout", format!("must be in [0, 1), got {dropout}")));
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
        let labels = train.meta.class_names();
        if labels.len() < 2 {
            return Err(StepError::input(format!(
                "the training set has {} distinct label(s); a classifier needs at least 2",
                labels.len()
            )));
        }
        let known = "the training labels";
        let train_classes = classes_of(&train, &labels, "input `train`", known)?;
        let valid_classes = valid.as_ref().map(|s| classes_of(s, &labels, "input `valid`", known)).transpose()?;
        let test_classes = test.as_ref().map(|s| classes_of(s, &labels, "input `test`", known)).transpose()?;

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
            "model: {} layers, hidden {}, {} heads, {:.1}M parameters; {} training rows, {} classes",
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            weights.parameter_count() as f64 / 1e6,
            train.len(),
            labels.len()
        ));

        let batches_per_epoch = train.len().div_ceil(cfg.batch_size);
        let vars = weights.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let mut trainer = Trainer::new(cfg.clone(), vars, batches_per_epoch, ctx.events, ctx.env)?;
        let checkpoints = EpochCheckpoints::new(ctx.checkpoint_dir);
        let mut metrics = TrainingMetrics { epochs: Vec::new(), best_epoch: None, batches: Vec::new() };
        if let Some((epoch, state)) = checkpoints.resume(&weights, &mut trainer.optimizer, ctx.events)? {
            metrics = state;
            ctx.events.log(&format!("resuming after epoch {epoch} from its checkpoint"));
        }
        let eval_batch = params.usize("eval_batch_size")?.max(1);
        for epoch in metrics.epochs.len() + 1..=cfg.epochs {
            let order = Batches::shuffled(&train, cfg.batch_size, batch_seed(cfg.seed, epoch, usize::MAX));
            let stats = trainer.epoch(epoch, &order.batches, |rows, pass| {
                classify_batch(&model, &train, &train_classes, rows, pass, &device)
            })?;
            let mut row = EpochMetrics {
                epoch,
                train_loss: stats.loss,
                train_accuracy: stats.accuracy,
                valid_loss: None,
                valid_accuracy: None,
                test_loss: None,
                test_accuracy: None,
                lr: stats.lr,
                seconds: None,
                samples_per_second: None,
            };
            if let (Some(set), Some(classes)) = (&valid, &valid_classes) {
                let p = predict(&model, set, classes, eval_batch, cfg.precision, &device, ctx.env)?;
                (row.valid_loss, row.valid_accuracy) = (Some(p.loss), Some(p.accuracy()));
            }
            if let (Some(set), Some(classes)) = (&test, &test_classes) {
                let p = predict(&model, set, classes, eval_batch, cfg.precision, &device, ctx.env)?;
                (row.test_loss, row.test_accuracy) = (Some(p.loss), Some(p.accuracy()));
            }
            let timing = Timing::epoch(epoch, stats.seconds, stats.samples as u64);
            ctx.events.log(&format!("{}; {}", epoch_line(&row), timing.describe()));
            ctx.events.timing(&timing);
            metrics.epochs.push(row);
            metrics.batches.append(&mut trainer.logged);
            checkpoints.save(epoch, &weights, &trainer.optimizer, &metrics)?;
        }
        metrics.best_epoch = metrics.chosen_epoch().filter(|c| c.by == ChosenBy::ValidAccuracy).map(|c| c.epoch);

        let out = ctx.output("model");
        fs::create_dir_all(&out).map_err(StepError::io("creating", &out))?;
        weights.save(&out.join(WEIGHTS), &[])?;
        write_config(&out, &config, Some(&labels))?;
        let tokenizer = tensor_set_tokenizer(train_dir).or(source.tokenizer.clone());
        write_tokenizer(&out, tokenizer.as_deref(), &train.meta)?;
        write_metrics(&ctx.output("metrics"), &metrics)
    }
}

/// The summed loss and the accuracy of one shard of a training batch.
pub fn classify_batch(
    model: &BertClassifier,
    set: &TensorSet,
    classes: &[u32],
    rows: &[usize],
    pass: &Pass,
    device: &Device,
) -> candle_core::Result<BatchOutcome> {
    let batch = make_batch(set, rows, None, DType::F32, device)?;
    let logits = model.forward(&batch, pass)?;
    let wanted: Vec<u32> = rows.iter().map(|&i| classes[i]).collect();
    let target = Tensor::from_vec(wanted, rows.len(), device)?;
    let loss = (candle_nn::loss::cross_entropy(&logits, &target)? * rows.len() as f64)?;
    let correct = count_equal(&logits.argmax(1)?, &target)?;
    Ok(BatchOutcome { loss, correct, count: rows.len() })
}

fn epoch_line(e: &EpochMetrics) -> String {
    let mut line = format!("[Epoch {}] train loss={:.4}, acc={:.4}", e.epoch, e.train_loss, e.train_accuracy);
    if let Some(a) = e.valid_accuracy {
        line.push_str(&format!("; valid acc={a:.4}"));
    }
    if let Some(a) = e.test_accuracy {
        line.push_str(&format!("; test acc={a:.4}"));
    }
    line
}

fn write_metrics(path: &Path, metrics: &TrainingMetrics) -> StepResult<()> {
    let text = serde_json::to_vec_pretty(metrics).map_err(|e| StepError::failed(e.to_string()))?;
    fs::write(path, text).map_err(StepError::io("writing", path))
}
