//! The `pretrain`, `fine-tune` and `evaluate` step kinds on a toy data set: outputs in Hugging
//! Face layout, resuming after an interruption to the same result, clear errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use pipe_steps::bert::{Evaluate, FineTune, Pretrain};
use pipe_steps::report::{EvalMetrics, TrainingMetrics};
use pipe_steps::tensor_set::{TensorSet, TensorSetMeta};
use pipe_steps::{Environment, Events, NoEvents, Params, Step, StepContext, StepError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The step's defaults with `set` over them, not validated (for tests of bad parameters).
pub(crate) fn defaults_with(step: &dyn Step, set: &[(&str, Value)]) -> Params {
    let mut values = BTreeMap::new();
    for p in step.spec().params {
        if let Some(v) = p.default.to_value() {
            values.insert(p.name.to_string(), v);
        }
    }
    for (k, v) in set {
        assert!(step.spec().param(k).is_some(), "no parameter {k}");
        values.insert(k.to_string(), v.clone());
    }
    Params::new(values)
}

/// [`defaults_with`], validated.
pub(crate) fn params(step: &dyn Step, set: &[(&str, Value)]) -> Params {
    let params = defaults_with(step, set);
    step.validate(&params).unwrap();
    params
}

/// Runs `step` as the runner would, in `out` with checkpoints in `ck`.
pub(crate) fn run(
    step: &dyn Step,
    params: &Params,
    inputs: &[(&str, &Path)],
    out: &Path,
    ck: &Path,
    env: &Environment,
    events: &dyn Events,
) -> Result<(), StepError> {
    std::fs::create_dir_all(out).unwrap();
    let inputs: BTreeMap<String, PathBuf> = inputs.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
    let ctx = StepContext {
        name: "test",
        params,
        inputs: &inputs,
        sources: &std::collections::BTreeMap::new(),
        out_dir: out,
        checkpoint_dir: ck,
        env,
        events,
    };
    step.run(&ctx)
}

/// Label 1 iff token 7 occurs; ids 8..40 are filler.
pub(crate) fn toy_tensors(rows: usize, seed: u64) -> TensorSet {
    let meta = TensorSetMeta {
        max_len: 16,
        pad_id: 0,
        cls_id: 2,
        sep_id: 3,
        mask_id: Some(4),
        unk_id: Some(1),
        vocab_size: 40,
        pair: false,
        label_values: vec![0, 1],
        label_names: vec![],
        task: pipe_steps::task::Task::SingleLabel,
    };
    let mut set = TensorSet::empty(meta);
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..rows {
        let mut ids = vec![2];
        for _ in 0..rng.random_range(2..10) {
            ids.push(rng.random_range(8..40));
        }
        if i % 2 == 0 {
            let at = rng.random_range(1..ids.len());
            ids.insert(at, 7);
        }
        ids.push(3);
        set.push(&ids, &vec![0; ids.len()], ids.len() as u32, (i % 2 == 0) as i64);
    }
    set
}

/// [`toy_tensors`] saved as a tensor set in `dir`.
pub(crate) fn toy_set(dir: &Path, rows: usize, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    toy_tensors(rows, seed).save(dir).unwrap();
    dir.to_path_buf()
}

/// `pretrain` parameters of a BERT for the toy set: `layers` layers of hidden 16, 2 heads and
/// intermediate 32 over 16 positions, batches of 16; then `extra` (which may override those).
pub(crate) fn toy_pretrain<'a>(layers: usize, extra: &[(&'a str, Value)]) -> Vec<(&'a str, Value)> {
    let mut set = vec![
        ("layers", json!(layers)),
        ("hidden", json!(16)),
        ("heads", json!(2)),
        ("intermediate", json!(32)),
        ("max_positions", json!(16)),
        ("batch_size", json!(16)),
    ];
    set.extend(extra.iter().cloned());
    set
}

pub(crate) fn pretrained(root: &Path) -> PathBuf {
    let data = toy_set(&root.join("text"), 64, 1);
    let p = params(&Pretrain, &toy_pretrain(2, &[("epochs", json!(2))]));
    let out = root.join("pretrain-out");
    run(&Pretrain, &p, &[("data", &data)], &out, &root.join("pretrain-ck"), &Environment::default(), &NoEvents)
        .unwrap();
    out.join("model")
}

fn fine_tune_params(epochs: usize) -> Params {
    params(
        &FineTune,
        &[
            ("epochs", json!(epochs)),
            ("batch_size", json!(8)),
            ("lr", json!(3e-3)),
            ("log_every", json!(1)),
            ("dropout", json!(0.1)),
        ],
    )
}

#[test]
fn pretrain_writes_a_masked_lm_that_fine_tune_accepts_and_evaluate_reads() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    let config: Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForMaskedLM");
    let names = candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert!(names.contains_key("cls.predictions.decoder.weight"));
    assert!(names.contains_key("bert.encoder.layer.1.output.LayerNorm.weight"));

    let train = toy_set(&root.path().join("train"), 96, 2);
    let valid = toy_set(&root.path().join("valid"), 32, 3);
    let out = root.path().join("ft");
    run(
        &FineTune,
        &fine_tune_params(12),
        &[("train", &train), ("valid", &valid), ("test", &valid), ("model", &model)],
        &out,
        &root.path().join("ck"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap();
    let metrics: TrainingMetrics = serde_json::from_slice(&std::fs::read(out.join("metrics")).unwrap()).unwrap();
    assert_eq!(metrics.epochs.len(), 12);
    let last = metrics.epochs.last().unwrap();
    assert!(last.valid_accuracy.unwrap() > 0.9, "{metrics:?}");
    assert!(last.train_loss < metrics.epochs[0].train_loss);
    let config: Value = serde_json::from_slice(&std::fs::read(out.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["num_labels"], 2);
    assert_eq!(config["id2label"]["1"], "1");
    let names = candle_core::safetensors::load(out.join("model/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert!(names.contains_key("classifier.weight") && names.contains_key("bert.pooler.dense.weight"));

    let eval_out = root.path().join("eval");
    let p = params(&Evaluate, &[]);
    run(
        &Evaluate,
        &p,
        &[("data", &valid), ("model", &out.join("model"))],
        &eval_out,
        &root.path().join("eck"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap();
    let eval: EvalMetrics = serde_json::from_slice(&std::fs::read(eval_out.join("metrics")).unwrap()).unwrap();
    assert_eq!(eval.rows, 32);
    // The saved model is the epoch chosen on validation (here the test set is the valid set).
    let chosen = &metrics.epochs[metrics.saved_epoch.unwrap() - 1];
    assert_eq!(metrics.chosen_epoch().map(|c| c.epoch), metrics.saved_epoch);
    assert!(
        (eval.accuracy - chosen.test_accuracy.unwrap()).abs() < 1e-9,
        "evaluate {} vs fine-tune {:?}",
        eval.accuracy,
        chosen.test_accuracy
    );
    assert_eq!(eval.confusion.iter().flatten().sum::<u64>(), 32);
    let predictions = std::fs::read_to_string(eval_out.join("predictions")).unwrap();
    assert_eq!(predictions.lines().count(), 33);
    assert!(predictions.starts_with("row,label,predicted,p_0,p_1\n"));
}

/// Keeps every log line; with `stop_at`, sets the cancel flag of `env` on the line that starts
/// so, as a Ctrl-C or a kill would.
pub(crate) struct Record {
    pub(crate) env: Environment,
    stop_at: Option<&'static str>,
    lines: Mutex<Vec<String>>,
}

/// Where the interruption tests stop: the second batch of epoch 2.
const IN_EPOCH_2: &str = "[Epoch 2 Batch 2/";

impl Record {
    pub(crate) fn new(stop_at: Option<&'static str>) -> Self {
        Record { env: Environment::default(), stop_at, lines: Mutex::new(Vec::new()) }
    }
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Events for Record {
    fn log(&self, line: &str) {
        if self.stop_at.is_some_and(|s| line.starts_with(s)) {
            self.env.cancelled.store(true, Ordering::SeqCst);
        }
        self.lines.lock().unwrap().push(line.to_string());
    }
    fn progress_start(&self, _: &str, _: Option<u64>, _: &str) {}
    fn progress_inc(&self, _: u64) {}
    fn progress_message(&self, _: &str) {}
    fn progress_finish(&self) {}
}

/// Metrics without the timings, which differ from run to run.
fn untimed(dir: &Path) -> Value {
    let mut v: Value = serde_json::from_slice(&std::fs::read(dir.join("metrics")).unwrap()).unwrap();
    for e in v["epochs"].as_array_mut().unwrap() {
        e["seconds"] = json!(0);
        e["samples_per_second"] = json!(0);
    }
    v
}

#[test]
fn an_interrupted_fine_tune_resumes_at_the_epoch_and_matches_an_uninterrupted_run() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    let train = toy_set(&root.path().join("train"), 48, 2);
    let valid = toy_set(&root.path().join("valid"), 16, 3);
    let inputs = [("train", train.as_path()), ("valid", valid.as_path()), ("model", model.as_path())];

    let whole = root.path().join("whole");
    run(
        &FineTune,
        &fine_tune_params(3),
        &inputs,
        &whole,
        &root.path().join("ck-whole"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap();

    let ck = root.path().join("ck");
    let events = Record::new(Some(IN_EPOCH_2));
    let err =
        run(&FineTune, &fine_tune_params(3), &inputs, &root.path().join("cut"), &ck, &events.env, &events).unwrap_err();
    assert!(matches!(err, StepError::Cancelled), "{err}");
    assert!(ck.join("epoch-1").is_dir());

    let resumed_events = Record::new(Some(IN_EPOCH_2));
    resumed_events.env.cancelled.store(false, Ordering::SeqCst);
    let resumed = root.path().join("resumed");
    let never = Environment::default();
    let record = Record::new(None);
    run(&FineTune, &fine_tune_params(3), &inputs, &resumed, &ck, &never, &record).unwrap();
    let lines = record.lines();
    assert!(lines.iter().any(|l| l == "resuming after epoch 1 from its checkpoint"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("[Epoch 1 ")), "epoch 1 was trained again: {lines:?}");

    let read = |dir: &Path| -> TrainingMetrics {
        serde_json::from_slice(&std::fs::read(dir.join("metrics")).unwrap()).unwrap()
    };
    let (a, b) = (read(&whole), read(&resumed));
    assert_eq!(a.epochs.len(), 3);
    // The batch log (log_every 1: 6 batches of 8 rows an epoch) survives the resume too.
    let updates: Vec<(usize, usize, u64)> = a.batches.iter().map(|l| (l.epoch, l.batch, l.update)).collect();
    let expected: Vec<(usize, usize, u64)> = (0..18).map(|i| (i / 6 + 1, i % 6 + 1, i as u64 + 1)).collect();
    assert_eq!(updates, expected);
    assert_eq!(a.batches, b.batches);
    for (x, y) in a.epochs.iter().zip(&b.epochs) {
        assert_eq!(
            (x.train_loss, x.train_accuracy, x.valid_accuracy, x.valid_loss),
            (y.train_loss, y.train_accuracy, y.valid_accuracy, y.valid_loss)
        );
    }
    assert_eq!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        std::fs::read(resumed.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn a_damaged_checkpoint_is_set_aside_and_the_rerun_matches_an_uninterrupted_run() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    let train = toy_set(&root.path().join("train"), 48, 2);
    let valid = toy_set(&root.path().join("valid"), 16, 3);
    let inputs = [("train", train.as_path()), ("valid", valid.as_path()), ("model", model.as_path())];
    let whole = root.path().join("whole");
    let env = Environment::default();
    run(&FineTune, &fine_tune_params(3), &inputs, &whole, &root.path().join("ck-whole"), &env, &NoEvents).unwrap();

    let ck = root.path().join("ck");
    let events = Record::new(Some(IN_EPOCH_2));
    let err =
        run(&FineTune, &fine_tune_params(3), &inputs, &root.path().join("cut"), &ck, &events.env, &events).unwrap_err();
    assert!(matches!(err, StepError::Cancelled), "{err}");
    // A disk error or a stray write: the weights are cut short.
    let weights = ck.join("epoch-1/weights.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();

    let rerun = root.path().join("rerun");
    let record = Record::new(None);
    run(&FineTune, &fine_tune_params(3), &inputs, &rerun, &ck, &env, &record).unwrap();
    let lines = record.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("warning: the checkpoint of epoch 1 cannot be restored")
            && l.contains("epoch-1.corrupt-1")
            && l.contains("training starts from the beginning")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("resuming")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("[Epoch 1 ")), "epoch 1 was not trained again: {lines:?}");
    assert!(ck.join("epoch-1.corrupt-1").is_dir() && ck.join("epoch-3").is_dir());
    // A fresh start with the same seed: the bytes of an uninterrupted run.
    assert!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap()
            == std::fs::read(rerun.join("model/model.safetensors")).unwrap(),
        "the rerun trained different weights"
    );
    assert_eq!(untimed(&whole), untimed(&rerun));
}

#[test]
fn batch_sizes_of_evaluation_are_in_the_key() {
    // A row's logits differ in their last bits with the number of rows computed beside it, so
    // the evaluation batch size changes the metrics' bytes: it must be in the key (which the
    // runner computes from the parameters marked `in_key`).
    assert!(FineTune.spec().param("eval_batch_size").unwrap().in_key);
    assert!(Evaluate.spec().param("batch_size").unwrap().in_key);
    assert!(!FineTune.spec().param("log_every").unwrap().in_key);
}

#[test]
fn a_partial_checkpoint_is_ignored() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    let train = toy_set(&root.path().join("train"), 32, 2);
    let ck = root.path().join("ck");
    std::fs::create_dir_all(ck.join("epoch-1.partial")).unwrap();
    std::fs::write(ck.join("epoch-1.partial/weights.safetensors"), b"half").unwrap();
    std::fs::create_dir_all(ck.join("epoch-1")).unwrap();
    std::fs::write(ck.join("epoch-1/weights.safetensors"), b"no optimizer or state beside it").unwrap();
    run(
        &FineTune,
        &fine_tune_params(1),
        &[("train", &train), ("model", &model)],
        &root.path().join("out"),
        &ck,
        &Environment::default(),
        &NoEvents,
    )
    .unwrap();
    assert!(!ck.join("epoch-1.partial").exists());
}

#[test]
fn same_seed_same_result_and_nan_stops_with_an_error() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    let train = toy_set(&root.path().join("train"), 32, 2);
    // Batches of 20 rows run as two shards of 10; the bytes must not depend on how many
    // threads compute the shards.
    let sharded = params(
        &FineTune,
        &[("epochs", json!(1)), ("batch_size", json!(20)), ("lr", json!(3e-3)), ("dropout", json!(0.1))],
    );
    let go = |name: &str, threads: usize| {
        let out = root.path().join(name);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            run(
                &FineTune,
                &sharded,
                &[("train", &train), ("valid", &train), ("model", &model)],
                &out,
                &root.path().join(format!("ck-{name}")),
                &Environment::default(),
                &NoEvents,
            )
        })
        .unwrap();
        (std::fs::read(out.join("model/model.safetensors")).unwrap(), std::fs::read(out.join("metrics")).unwrap())
    };
    let strip = |m: &[u8]| {
        let mut v: Value = serde_json::from_slice(m).unwrap();
        for e in v["epochs"].as_array_mut().unwrap() {
            e["seconds"] = json!(0);
            e["samples_per_second"] = json!(0);
        }
        v
    };
    let (one_model, one_metrics) = go("a", 1);
    let (again_model, again_metrics) = go("b", 1);
    assert!(one_model == again_model, "the same seed trained different weights");
    assert_eq!(strip(&one_metrics), strip(&again_metrics));
    let (three_model, three_metrics) = go("c", 3);
    assert!(one_model == three_model, "1 and 3 threads trained different weights");
    assert_eq!(strip(&one_metrics), strip(&three_metrics));

    // A checkpoint with a NaN weight makes the loss NaN.
    let broken = root.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(model.join("config.json"), broken.join("config.json")).unwrap();
    let mut tensors =
        candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let name = "bert.embeddings.LayerNorm.bias";
    let t = tensors[name].clone();
    let n = t.elem_count();
    tensors
        .insert(name.into(), candle_core::Tensor::from_vec(vec![f32::NAN; n], n, &candle_core::Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, broken.join("model.safetensors")).unwrap();
    let out = root.path().join("nan");
    let err = run(
        &FineTune,
        &fine_tune_params(1),
        &[("train", &train), ("model", &broken)],
        &out,
        &root.path().join("ck-nan"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap_err();
    assert!(err.to_string().contains("the loss became NaN at epoch 1 batch 1"), "{err}");
    assert!(!out.join("model").exists() && !out.join("metrics").exists());
}

#[test]
fn model_errors_are_clear() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    let train = toy_set(&root.path().join("train"), 16, 2);
    // A vocabulary larger than the embedding table.
    let mut set = TensorSet::load(&train).unwrap();
    set.meta.vocab_size = 41;
    let big = root.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    set.save(&big).unwrap();
    let err = run(
        &FineTune,
        &fine_tune_params(1),
        &[("train", &big), ("model", &model)],
        &root.path().join("o1"),
        &root.path().join("c1"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap_err();
    assert!(
        err.is_bad_input()
            && err.to_string().contains("vocabulary of 41 tokens, larger than the model's embedding table (40 rows)"),
        "{err}"
    );

    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let p = params(&FineTune, &[("model", json!(empty.to_str().unwrap()))]);
    let err = run(
        &FineTune,
        &p,
        &[("train", &train)],
        &root.path().join("o2"),
        &root.path().join("c2"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap_err();
    assert!(err.is_bad_input() && err.to_string().contains("has no config.json"), "{err}");

    // evaluate needs a classifier, not a masked LM.
    let err = run(
        &Evaluate,
        &params(&Evaluate, &[]),
        &[("data", &train), ("model", &model)],
        &root.path().join("o3"),
        &root.path().join("c3"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap_err();
    assert!(err.is_bad_input() && err.to_string().contains("not a classification model"), "{err}");

    let mut bad = BTreeMap::new();
    for p in FineTune.spec().params {
        if let Some(v) = p.default.to_value() {
            bad.insert(p.name.to_string(), v);
        }
    }
    bad.insert("device".into(), json!("tpu"));
    let err = FineTune.validate(&Params::new(bad)).unwrap_err();
    assert!(err.to_string().contains("`tpu` is not a device"), "{err}");
}
