//! The code path GPUs run, checked on the CPU: candle's composite kernels ([`Kernels::Composite`])
//! against our fused ones, the trainer's device path (losses read back once per interval,
//! gradient norm, clipping and AdamW as device tensors) against the CPU path, and mixed
//! precision (`precision: bf16`) against f32. What these cannot check is CUDA itself (its
//! kernels' numerics, cuRAND's masks): `scripts/gpu-check.sh` does, on a GPU.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use pipe_steps::bert::batch::Batches;
use pipe_steps::bert::classify_batch;
use pipe_steps::bert::config::BertConfig;
use pipe_steps::bert::gradients::Gradients;
use pipe_steps::bert::model::{device_mask, Batch, BertClassifier, BertMaskedLm, Kernels, Pass, Precision};
use pipe_steps::bert::optimizer::{clip_scale, clip_scale_tensor, grad_norm, grad_norm_tensor, AdamW};
use pipe_steps::bert::train::{batch_seed, EpochStats, TrainConfig, Trainer};
use pipe_steps::bert::weights::Weights;
use pipe_steps::bert::{Evaluate, FineTune, Pretrain};
use pipe_steps::report::BatchLog;
use pipe_steps::{Environment, Events, NoEvents, Params, Step, StepContext};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn config(vocab: usize, dropout: f64) -> BertConfig {
    let mut c = BertConfig::new(vocab, 2, 16, 2, 32, 32);
    c.hidden_dropout_prob = dropout;
    c.attention_probs_dropout_prob = dropout;
    c
}

fn batch(ids: &[&[u32]]) -> Batch {
    let len = ids.iter().map(|r| r.len()).max().unwrap();
    let (mut flat, mut mask) = (Vec::new(), Vec::new());
    for row in ids {
        for j in 0..len {
            flat.push(row.get(j).copied().unwrap_or(0));
            mask.push(if j < row.len() { 1.0f32 } else { 0.0 });
        }
    }
    let shape = (ids.len(), len);
    Batch {
        input_ids: Tensor::from_vec(flat, shape, &Device::Cpu).unwrap(),
        token_type_ids: Tensor::zeros(shape, DType::U32, &Device::Cpu).unwrap(),
        attention_mask: Tensor::from_vec(mask, shape, &Device::Cpu).unwrap(),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The largest `|a - b| / (1 + |b|)`.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

const IDS: [&[u32]; 3] = [&[2, 7, 9, 7, 3], &[2, 11, 3], &[2, 5, 6, 8, 12, 13, 3]];

/// A classifier's loss and every parameter's gradient for one pass.
fn loss_and_grads(model: &BertClassifier, w: &Weights, pass: &Pass) -> (f32, Vec<(String, Vec<f32>)>) {
    let logits = model.forward(&batch(&IDS), pass).unwrap();
    assert_eq!(logits.dtype(), DType::F32, "logits are f32 in every precision");
    let target = Tensor::new(&[0u32, 2, 1], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
    let grads = loss.backward().unwrap();
    let per_param = w
        .iter()
        .map(|(name, var)| {
            let g = grads.get(var.as_tensor()).map(values).unwrap_or_default();
            (name.to_string(), g)
        })
        .collect();
    (loss.to_scalar::<f32>().unwrap(), per_param)
}

#[test]
fn composite_kernels_match_the_fused_ones() {
    let config = config(50, 0.1);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 3, &mut w, &mut StdRng::seed_from_u64(1)).unwrap();
    // The same seed draws the same dropout masks on both paths (CPU masks come from the pass).
    let (fused_loss, fused) = loss_and_grads(&model, &w, &Pass::train(5));
    let (plain_loss, plain) = loss_and_grads(&model, &w, &Pass::train(5).with_kernels(Kernels::Composite));
    assert!((fused_loss - plain_loss).abs() < 1e-5, "loss {fused_loss} vs {plain_loss}");
    for ((name, f), (_, p)) in fused.iter().zip(&plain) {
        assert!(!f.is_empty() && !p.is_empty(), "{name}: no gradient");
        assert!(worst(p, f) < 1e-4, "{name}: composite gradient differs by {}", worst(p, f));
    }
    // Inference too.
    let b = batch(&IDS);
    let eval = values(&model.forward(&b, &Pass::eval()).unwrap());
    let eval_plain = values(&model.forward(&b, &Pass::eval().with_kernels(Kernels::Composite)).unwrap());
    assert!(worst(&eval_plain, &eval) < 1e-5);

    // The masked-language model's head.
    let mut w2 = Weights::new(DType::F32, &Device::Cpu);
    let mlm = BertMaskedLm::new(&config, &mut w2, &mut StdRng::seed_from_u64(2)).unwrap();
    let positions = Tensor::new(&[1u32, 3, 6, 9], &Device::Cpu).unwrap();
    let targets = Tensor::new(&[7u32, 7, 11, 6], &Device::Cpu).unwrap();
    let run = |pass: &Pass| {
        let logits = mlm.forward(&b, &positions, pass).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &targets).unwrap();
        let grads = loss.backward().unwrap();
        let table = grads.get(w2.var("bert.embeddings.word_embeddings.weight").unwrap().as_tensor()).map(values);
        (loss.to_scalar::<f32>().unwrap(), table.unwrap())
    };
    let (l1, g1) = run(&Pass::train(3));
    let (l2, g2) = run(&Pass::train(3).with_kernels(Kernels::Composite));
    assert!((l1 - l2).abs() < 1e-5, "MLM loss {l1} vs {l2}");
    assert!(worst(&g2, &g1) < 1e-4);
}

#[test]
fn every_parameter_receives_a_gradient_on_the_gpu_path_and_in_bf16() {
    let config = config(50, 0.1);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 3, &mut w, &mut StdRng::seed_from_u64(1)).unwrap();
    for pass in [
        Pass::train(5).with_kernels(Kernels::Composite),
        Pass::train(5).with_precision(Precision::Bf16),
        Pass::train(5).with_kernels(Kernels::Composite).with_precision(Precision::Bf16),
    ] {
        let (_, grads) = loss_and_grads(&model, &w, &pass);
        assert_eq!(grads.len(), 5 + 16 * 2 + 2 + 2);
        for (name, g) in grads {
            assert!(!g.is_empty(), "{name}: no gradient");
            let embedding = name.contains("embeddings.") && !name.contains("LayerNorm");
            assert!(embedding || g.iter().any(|&v| v != 0.0), "{name}: a zero gradient");
            assert!(g.iter().all(|v| v.is_finite()), "{name}: a non-finite gradient");
        }
        // The parameters stay f32: their gradients come back in f32.
        assert!(w.iter().all(|(_, v)| v.dtype() == DType::F32));
    }
}

#[test]
fn bf16_is_close_to_f32() {
    let config = config(50, 0.0);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 3, &mut w, &mut StdRng::seed_from_u64(1)).unwrap();
    let b = batch(&IDS);
    let f32s = values(&model.forward(&b, &Pass::eval()).unwrap());
    let bf16 = values(&model.forward(&b, &Pass::eval().with_precision(Precision::Bf16)).unwrap());
    // bf16 keeps 8 bits of mantissa: about 4e-3 relative per rounding.
    assert!(worst(&bf16, &f32s) < 3e-2, "bf16 logits differ by {}", worst(&bf16, &f32s));
    assert_ne!(bf16, f32s, "bf16 computed exactly what f32 did: it did not run in bf16");
    let (l32, g32) = loss_and_grads(&model, &w, &Pass::train(1));
    let (l16, g16) = loss_and_grads(&model, &w, &Pass::train(1).with_precision(Precision::Bf16));
    assert!((l32 - l16).abs() < 2e-2 * l32.abs(), "loss {l32} vs {l16}");
    // At initialisation many gradients are small sums that nearly cancel (a bias of the
    // classifier is Σ(p - y) over the batch), so bf16's rounding moves them by percents: per
    // tensor the direction holds to a cosine of 0.85, over all of them to 0.95 (measured: 0.886
    // and 0.978); a key bias, whose gradient is 0 up to rounding, says nothing.
    let cosine = |x: &[f32], y: &[f32]| {
        x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>()
            / (x.iter().map(|a| a * a).sum::<f32>().sqrt() * y.iter().map(|b| b * b).sum::<f32>().sqrt())
    };
    for ((name, x), (_, y)) in g32.iter().zip(&g16) {
        if x.iter().map(|a| a * a).sum::<f32>().sqrt() > 1e-9 {
            assert!(cosine(x, y) > 0.85, "{name}: bf16 gradient points elsewhere: cosine {}", cosine(x, y));
        }
    }
    let (a, b): (Vec<f32>, Vec<f32>) = g32.iter().zip(&g16).flat_map(|((_, x), (_, y))| x.iter().zip(y)).unzip();
    assert!(cosine(&a, &b) > 0.95, "bf16 gradient points elsewhere: cosine {}", cosine(&a, &b));
}

#[test]
fn device_masks_drop_at_the_rate_with_the_inverted_scale() {
    let x = Tensor::zeros((200, 500), DType::F32, &Device::Cpu).unwrap();
    let mask = values(&device_mask(&x, 0.1).unwrap());
    let scale = 1.0 / 0.9f32;
    assert!(mask.iter().all(|&m| m == 0.0 || (m - scale).abs() < 1e-6), "a mask value other than 0 or 1/(1-p)");
    let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64;
    assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
}

use crate::bert_steps::{defaults_with, toy_pretrain, toy_tensors as toy_set};

/// Log lines, for comparing what the two paths report.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Events for Lines {
    fn log(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
    fn progress_start(&self, _: &str, _: Option<u64>, _: &str) {}
    fn progress_inc(&self, _: u64) {}
    fn progress_message(&self, _: &str) {}
    fn progress_finish(&self) {}
}

struct Trained {
    stats: Vec<EpochStats>,
    weights: Vec<(String, Vec<f32>)>,
    lines: Vec<String>,
    logged: Vec<BatchLog>,
}

/// Two epochs of fine-tuning a tiny classifier on the toy set (batches of 20 rows: two shards on
/// the CPU), on the path `kernels` picks, in `precision`.
fn train(kernels: Kernels, precision: Precision, log_every: usize, poison: bool) -> Result<Trained, String> {
    train_weighted(kernels, precision, log_every, poison, None)
}

/// [`train`] with `class_weights` in the loss.
fn train_weighted(
    kernels: Kernels,
    precision: Precision,
    log_every: usize,
    poison: bool,
    class_weights: Option<&[f32]>,
) -> Result<Trained, String> {
    let set = toy_set(60, 3);
    let classes: Vec<u32> = set.labels.iter().map(|&l| l as u32).collect();
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config(40, 0.1), 2, &mut w, &mut StdRng::seed_from_u64(4)).unwrap();
    if poison {
        let var = w.var("bert.embeddings.LayerNorm.bias").unwrap();
        var.set(&Tensor::full(f32::NAN, 16, &Device::Cpu).unwrap()).unwrap();
    }
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 20,
        lr: 3e-3,
        warmup_ratio: 0.1,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        seed: 42,
        log_every,
        precision,
    };
    let vars = w.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    let (events, env) = (Lines::default(), Environment::default());
    let mut trainer = Trainer::new(cfg.clone(), vars, 3, &events, &env).unwrap();
    trainer.kernels = kernels;
    let mut stats = Vec::new();
    for epoch in 1..=2 {
        let order = Batches::shuffled(&set, cfg.batch_size, batch_seed(cfg.seed, epoch, usize::MAX));
        let s = trainer
            .epoch(epoch, &order.batches, |rows, pass| {
                // What fine-tune's batches compute.
                classify_batch(&model, &set, &classes, rows, pass, &Device::Cpu, class_weights)
            })
            .map_err(|e| e.to_string())?;
        stats.push(s);
    }
    let weights = w.iter().map(|(n, v)| (n.to_string(), values(v.as_tensor()))).collect();
    let logged = std::mem::take(&mut trainer.logged);
    drop(trainer);
    let lines = events.0.into_inner().unwrap();
    Ok(Trained { stats, weights, lines, logged })
}

/// The numbers of a log line (`[Epoch 1 Batch 2/3] loss=0.6931, lr=0.0030000, acc=0.500`).
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .filter_map(|s| s.parse::<f64>().ok())
        .collect()
}

#[test]
fn the_device_path_of_the_trainer_trains_as_the_cpu_path_does() {
    let cpu = train(Kernels::Auto, Precision::F32, 1, false).unwrap();
    let gpu = train(Kernels::Composite, Precision::F32, 1, false).unwrap();
    for (c, g) in cpu.stats.iter().zip(&gpu.stats) {
        assert!((c.loss - g.loss).abs() < 1e-4, "epoch loss {} vs {}", c.loss, g.loss);
        assert_eq!((c.accuracy, c.samples), (g.accuracy, g.samples));
    }
    assert_eq!(cpu.lines.len(), 6, "{:?}", cpu.lines);
    assert_eq!(cpu.lines.len(), gpu.lines.len());
    for (c, g) in cpu.lines.iter().zip(&gpu.lines) {
        let (nc, ng) = (numbers(c), numbers(g));
        assert_eq!(nc.len(), ng.len(), "{c} / {g}");
        for (a, b) in nc.iter().zip(&ng) {
            assert!((a - b).abs() <= 2e-4, "{c} / {g}");
        }
    }
    // What the trainer keeps of each log line (fine-tune's batch log): the same on both paths.
    assert_eq!((cpu.logged.len(), gpu.logged.len()), (6, 6));
    for (c, g) in cpu.logged.iter().zip(&gpu.logged) {
        assert_eq!((c.epoch, c.batch, c.update, c.accuracy, c.lr), (g.epoch, g.batch, g.update, g.accuracy, g.lr));
        assert!((c.loss - g.loss).abs() < 1e-4, "{c:?} / {g:?}");
    }
    assert_eq!(cpu.logged.iter().map(|l| l.update).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    for ((name, c), (_, g)) in cpu.weights.iter().zip(&gpu.weights) {
        assert!(worst(g, c) < 1e-4, "{name}: device-path weights differ by {}", worst(g, c));
    }
    // Without logging the losses are read back at the end of the epoch: the same totals.
    let quiet = train(Kernels::Composite, Precision::F32, 0, false).unwrap();
    assert!(quiet.lines.is_empty());
    for (q, g) in quiet.stats.iter().zip(&gpu.stats) {
        assert_eq!((q.loss, q.accuracy), (g.loss, g.accuracy));
    }
}

#[test]
fn class_weights_train_alike_on_the_device_path_and_the_cpu_path() {
    let weights: &[f32] = &[0.4, 2.5];
    let cpu = train_weighted(Kernels::Auto, Precision::F32, 1, false, Some(weights)).unwrap();
    let gpu = train_weighted(Kernels::Composite, Precision::F32, 1, false, Some(weights)).unwrap();
    let plain = train(Kernels::Auto, Precision::F32, 1, false).unwrap();
    for ((c, g), p) in cpu.stats.iter().zip(&gpu.stats).zip(&plain.stats) {
        assert!((c.loss - g.loss).abs() < 1e-4, "epoch loss {} vs {}", c.loss, g.loss);
        assert_eq!((c.accuracy, c.samples), (g.accuracy, g.samples));
        assert!((c.loss - p.loss).abs() > 1e-3, "the weights changed nothing: {} vs {}", c.loss, p.loss);
    }
    for (c, g) in cpu.logged.iter().zip(&gpu.logged) {
        assert!((c.loss - g.loss).abs() < 1e-4, "{c:?} / {g:?}");
    }
    for (((name, c), (_, g)), (_, p)) in cpu.weights.iter().zip(&gpu.weights).zip(&plain.weights) {
        assert!(worst(g, c) < 1e-4, "{name}: device-path weights differ by {}", worst(g, c));
        assert_ne!(c, p, "{name}: trained as without class weights");
    }
}

#[test]
fn bf16_trains_on_the_cpu_close_to_f32() {
    let f32s = train(Kernels::Auto, Precision::F32, 0, false).unwrap();
    for kernels in [Kernels::Auto, Kernels::Composite] {
        let bf16 = train(kernels, Precision::Bf16, 0, false).unwrap();
        for (a, b) in f32s.stats.iter().zip(&bf16.stats) {
            assert!(
                (a.loss - b.loss).abs() < 0.02 * a.loss,
                "{kernels:?}: epoch loss f32 {} vs bf16 {}",
                a.loss,
                b.loss
            );
        }
        let moved = bf16.weights.iter().zip(&f32s.weights).filter(|((_, b), (_, a))| b != a).count();
        assert_eq!(moved, bf16.weights.len(), "bf16 left {} tensors as f32 trained them", bf16.weights.len() - moved);
    }
}

#[test]
fn the_device_path_stops_on_a_non_finite_loss_naming_its_batch() {
    let err = train(Kernels::Composite, Precision::F32, 0, true).err().expect("a NaN loss trained on");
    assert!(err.contains("the loss became NaN at epoch 1 batch 1"), "{err}");
}

fn shard_grads(vars: &[&Var], seeds: [u64; 2]) -> Vec<Gradients> {
    seeds
        .iter()
        .map(|&s| {
            let mut rng = StdRng::seed_from_u64(s);
            let mut loss = Tensor::new(0f64, &Device::Cpu).unwrap();
            for v in vars {
                let g: Vec<f64> = (0..v.elem_count()).map(|_| rng.random_range(-2.0..2.0)).collect();
                let g = Tensor::from_vec(g, v.shape(), &Device::Cpu).unwrap();
                loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
            }
            Gradients::from(loss.backward().unwrap())
        })
        .collect()
}

#[test]
fn adamw_on_device_tensors_matches_the_fused_update() {
    let init = |seed: u64, shape: &[usize]| {
        let mut rng = StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f64>>(), shape, &Device::Cpu)
            .unwrap()
    };
    let make = || {
        let w = Var::from_tensor(&init(1, &[3, 4])).unwrap();
        let b = Var::from_tensor(&init(2, &[4])).unwrap();
        (w, b)
    };
    let (w1, b1) = make();
    let (w2, b2) = make();
    let mut fused = AdamW::new([("l.weight", &w1), ("l.bias", &b1)], 0.01).unwrap();
    let mut device = AdamW::new([("l.weight", &w2), ("l.bias", &b2)], 0.01).unwrap();
    for step in 0..4u64 {
        let lr = 1e-2 * (step + 1) as f64;
        let g1 = shard_grads(&[&w1, &b1], [step, step + 10]);
        let g2 = shard_grads(&[&w2, &b2], [step, step + 10]);
        let norm = grad_norm(&g1, &[&w1, &b1]).unwrap();
        let norm_t = grad_norm_tensor(&g2, &[&w2, &b2]).unwrap().unwrap();
        let got = norm_t.to_scalar::<f32>().unwrap() as f64;
        assert!((got - norm).abs() < 1e-5 * norm, "norm {got} vs {norm}");
        for max in [0.0, 1.0, 1e9] {
            let want = clip_scale(norm, max);
            let t = clip_scale_tensor(&Tensor::new(norm as f32, &Device::Cpu).unwrap(), max).unwrap();
            assert!((t.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-6, "clip at {max}");
        }
        fused.step_scaled(&g1, lr, clip_scale(norm, 1.0) * 0.5).unwrap();
        let scale = (clip_scale_tensor(&norm_t, 1.0).unwrap() * 0.5).unwrap();
        device.step_device(&g2, lr, &scale).unwrap();
    }
    assert_eq!((fused.step, device.step), (4, 4));
    for (a, b) in [(&w1, &w2), (&b1, &b2)] {
        let (a, b) = (values(a.as_tensor()), values(b.as_tensor()));
        assert!(worst(&b, &a) < 1e-5, "{a:?} vs {b:?}");
    }

    // Device moments survive a checkpoint: save, restore, and both continue alike.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    device.save(&path).unwrap();
    let (w3, b3) = (
        Var::from_tensor(&w2.as_tensor().copy().unwrap()).unwrap(),
        Var::from_tensor(&b2.as_tensor().copy().unwrap()).unwrap(),
    );
    let mut restored = AdamW::new([("l.weight", &w3), ("l.bias", &b3)], 0.01).unwrap();
    restored.load(&path).unwrap();
    let one = Tensor::new(1f32, &Device::Cpu).unwrap();
    device.step_device(&shard_grads(&[&w2, &b2], [7, 8]), 1e-2, &one).unwrap();
    restored.step_device(&shard_grads(&[&w3, &b3], [7, 8]), 1e-2, &one).unwrap();
    assert_eq!(values(w2.as_tensor()), values(w3.as_tensor()));
    assert_eq!(values(b2.as_tensor()), values(b3.as_tensor()));
}

fn run_step(step: &dyn Step, params: &Params, inputs: &[(&str, &Path)], out: &Path) {
    step.validate(params).unwrap();
    let params = step.resolve(params, &Environment::default()).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let ck = out.join(".ck");
    std::fs::create_dir_all(&ck).unwrap();
    let inputs = inputs.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
    let env = Environment::default();
    let ctx = StepContext {
        name: "test",
        params: &params,
        inputs: &inputs,
        sources: &std::collections::BTreeMap::new(),
        out_dir: out,
        checkpoint_dir: &ck,
        env: &env,
        events: &NoEvents,
    };
    step.run(&ctx).unwrap();
}

#[test]
fn precision_is_a_parameter_of_the_bert_steps_keyed_only_when_bf16() {
    for step in [&FineTune as &dyn Step, &Pretrain, &Evaluate] {
        let bad = defaults_with(step, &[("precision", json!("fp16"))]);
        let err = step.validate(&bad).unwrap_err().to_string();
        assert!(err.contains("precision") && err.contains("f32, bf16"), "{err}");
        let env = Environment::default();
        // f32 is keyed as the parameter's absence, so keys from before it existed still hold.
        let f32s = step.resolve(&defaults_with(step, &[("precision", json!("f32"))]), &env).unwrap();
        assert_eq!(f32s.values(), step.resolve(&defaults_with(step, &[]), &env).unwrap().values());
        assert!(f32s.get("precision").is_none());
        let bf16 = step.resolve(&defaults_with(step, &[("precision", json!("bf16"))]), &env).unwrap();
        assert_eq!(bf16.get("precision"), Some(&json!("bf16")));
    }
}

#[test]
fn bf16_pretrains_fine_tunes_and_evaluates_through_the_steps() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    toy_set(64, 1).save(&data).unwrap();
    let pretrain = root.path().join("pretrain");
    let p = defaults_with(&Pretrain, &toy_pretrain(1, &[("precision", json!("bf16")), ("dropout", json!(0.0))]));
    run_step(&Pretrain, &p, &[("data", &data)], &pretrain);
    let config: Value = serde_json::from_slice(&std::fs::read(pretrain.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["hidden_dropout_prob"].as_f64(), config["attention_probs_dropout_prob"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    let finetune = root.path().join("finetune");
    let f = defaults_with(
        &FineTune,
        &[("epochs", json!(2)), ("batch_size", json!(8)), ("lr", json!(3e-3)), ("precision", json!("bf16"))],
    );
    let model = pretrain.join("model");
    run_step(&FineTune, &f, &[("train", &data), ("valid", &data), ("model", &model)], &finetune);
    let metrics: Value = serde_json::from_slice(&std::fs::read(finetune.join("metrics")).unwrap()).unwrap();
    let epochs = metrics["epochs"].as_array().unwrap();
    assert!(epochs.iter().all(|e| e["train_loss"].as_f64().is_some_and(f64::is_finite)));
    let evaluate = root.path().join("evaluate");
    let e = defaults_with(&Evaluate, &[("precision", json!("bf16"))]);
    let tuned = finetune.join("model");
    run_step(&Evaluate, &e, &[("data", &data), ("model", &tuned)], &evaluate);
    let m: Value = serde_json::from_slice(&std::fs::read(evaluate.join("metrics")).unwrap()).unwrap();
    let (bf16_acc, valid_acc) = (m["accuracy"].as_f64().unwrap(), epochs[1]["valid_accuracy"].as_f64().unwrap());
    assert!((bf16_acc - valid_acc).abs() < 0.05, "evaluate {bf16_acc} vs fine-tune's last valid {valid_acc}");
    // The same model evaluated in f32 agrees closely with bf16.
    let f32_dir = root.path().join("evaluate-f32");
    run_step(&Evaluate, &defaults_with(&Evaluate, &[]), &[("data", &data), ("model", &tuned)], &f32_dir);
    let m32: Value = serde_json::from_slice(&std::fs::read(f32_dir.join("metrics")).unwrap()).unwrap();
    assert!((m32["loss"].as_f64().unwrap() - m["loss"].as_f64().unwrap()).abs() < 0.05);
}
