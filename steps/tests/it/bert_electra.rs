//! ELECTRA pre-training (`pretrain` with `objective: electra`): the model's gradients reach
//! every parameter and agree with finite differences, the draws follow the generator's softmax,
//! and through the step: an encoder `fine-tune` accepts, resuming to the same bytes, seeds,
//! keys that leave MLM results alone, and clear errors.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pipe_steps::bert::config::BertConfig;
use pipe_steps::bert::electra::{rtd_loss_sum, sample, sample_gumbel, Electra, MaskedInput};
use pipe_steps::bert::gradients::{Gradients, ParamGrad};
use pipe_steps::bert::model::{Batch, Kernels, Pass, Precision};
use pipe_steps::bert::weights::Weights;
use pipe_steps::bert::{FineTune, Pretrain};
use pipe_steps::report::TrainingMetrics;
use pipe_steps::{Default, Environment, NoEvents, Params, Step, StepError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::bert_steps::{defaults_with, params, run, toy_pretrain, toy_set, toy_tensors, Record};

const MASK: u32 = 4;

fn configs(dropout: f64) -> (BertConfig, BertConfig) {
    let mut d = BertConfig::new(40, 2, 16, 2, 32, 16);
    d.hidden_dropout_prob = dropout;
    d.attention_probs_dropout_prob = dropout;
    let mut g = d.clone();
    (g.hidden_size, g.num_attention_heads, g.intermediate_size) = (8, 1, 16);
    (d, g)
}

/// Two rows (one padded), three masked positions; the generator sees `[MASK]` there.
fn input(dtype: DType) -> MaskedInput {
    let rows: [&[u32]; 2] = [&[2, 9, 17, 23, 3], &[2, 11, 3]];
    let len = 5;
    let mut original = Vec::new();
    let mut mask = Vec::new();
    for row in rows {
        for j in 0..len {
            original.push(row.get(j).copied().unwrap_or(0));
            mask.push(if j < row.len() { 1.0f32 } else { 0.0 });
        }
    }
    let positions = vec![1u32, 3, 6];
    let targets: Vec<u32> = positions.iter().map(|&p| original[p as usize]).collect();
    let mut masked = original.clone();
    for &p in &positions {
        masked[p as usize] = MASK;
    }
    let cpu = &Device::Cpu;
    MaskedInput {
        generator: Batch {
            input_ids: Tensor::from_vec(masked, (2, len), cpu).unwrap(),
            token_type_ids: Tensor::zeros((2, len), DType::U32, cpu).unwrap(),
            attention_mask: Tensor::from_vec(mask, (2, len), cpu).unwrap().to_dtype(dtype).unwrap(),
        },
        original: Tensor::from_vec(original, (2, len), cpu).unwrap(),
        positions: Tensor::from_vec(positions, 3, cpu).unwrap(),
        targets: Tensor::from_vec(targets, 3, cpu).unwrap(),
        masked: 3,
        tokens: 8,
    }
}

/// The batch loss as the step forms it: mean MLM + 50 · mean RTD.
fn combined(model: &Electra, input: &MaskedInput, draws: Option<&Tensor>, pass: &Pass) -> Tensor {
    let losses = match draws {
        Some(draws) => {
            let logits = model.generator_logits(&input.generator, &input.positions, pass).unwrap();
            model.losses_given(input, Some((&logits, draws)), pass).unwrap()
        }
        None => model.losses(input, 7, pass).unwrap(),
    };
    ((losses.mlm / input.masked as f64).unwrap() + (losses.rtd * (50.0 / input.tokens as f64)).unwrap()).unwrap()
}

fn grad_sum(g: &Tensor) -> f64 {
    g.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn every_parameter_receives_a_gradient_and_the_sparse_pass_agrees() {
    let (d, g) = configs(0.1);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = Electra::new(&d, &g, &mut w, &mut StdRng::seed_from_u64(1)).unwrap();
    let names: Vec<&str> = w.names().collect();
    // Embeddings 5; per layer 16 (discriminator and generator, 2 each); projection 2; generator
    // head 5 (dense, LayerNorm, bias); discriminator head 4. No pooler.
    assert_eq!(names.len(), 5 + 16 * 2 + 2 + 16 * 2 + 5 + 4, "{names:?}");
    for name in [
        "generator.embeddings_project.weight",
        "generator.encoder.layer.1.output.LayerNorm.bias",
        "generator_predictions.LayerNorm.weight",
        "generator_lm_head.bias",
        "discriminator_predictions.dense.weight",
        "discriminator_predictions.dense_prediction.bias",
        "bert.encoder.layer.1.attention.self.key.weight",
    ] {
        assert!(names.contains(&name), "no {name}: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("pooler")), "{names:?}");
    assert_eq!(w.var("generator.encoder.layer.0.attention.self.query.weight").unwrap().dims(), [8, 8]);
    assert_eq!(w.var("generator_predictions.dense.weight").unwrap().dims(), [16, 8]);

    let x = input(DType::F32);
    let dense = combined(&model, &x, None, &Pass::train(5)).backward().unwrap();
    for (name, var) in w.iter() {
        let g = dense.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(grad_sum(g) > 0.0, "{name}: a zero gradient");
    }
    // The trainer's CPU pass: word-embedding rows of both lookups (generator and
    // discriminator) come back sparse and add up, with the tied decoder's dense part, to the
    // dense gradient. Same seed: same dropout masks and draws.
    let pass = Pass::train(5).sparse();
    let sparse = Gradients::new(combined(&model, &x, None, &pass).backward().unwrap(), pass.take_lookups());
    assert_eq!(sparse.sparse.len(), 2, "one lookup per encoder");
    for (name, var) in w.iter() {
        let want = dense.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = ParamGrad::collect(std::slice::from_ref(&sparse), var).unwrap().unwrap();
        let got = got.to_tensor(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{name}[{i}]: sparse {a}, dense {b}");
        }
    }
}

/// Central differences of `loss` wrt entries `at` of parameter `name`, against backprop.
fn check_entries(w: &Weights, name: &str, at: &[usize], loss: &dyn Fn() -> Tensor) {
    let var = w.var(name).unwrap();
    let grads = loss().backward().unwrap();
    let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let original = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let shape = var.as_tensor().shape().clone();
    let value = |values: Vec<f64>| {
        var.set(&Tensor::from_vec(values, shape.clone(), &Device::Cpu).unwrap()).unwrap();
        loss().to_scalar::<f64>().unwrap()
    };
    let eps = 1e-6;
    for &i in at {
        let (mut plus, mut minus) = (original.clone(), original.clone());
        plus[i] += eps;
        minus[i] -= eps;
        let numeric = (value(plus) - value(minus)) / (2.0 * eps);
        var.set(&Tensor::from_vec(original.clone(), shape.clone(), &Device::Cpu).unwrap()).unwrap();
        let err = (numeric - analytic[i]).abs();
        assert!(err < 1e-6 + 1e-4 * numeric.abs(), "{name}[{i}]: backprop {} vs numeric {numeric}", analytic[i]);
    }
}

fn spread(len: usize) -> Vec<usize> {
    (0..len).step_by((len / 7).max(1)).collect()
}

#[test]
fn gradients_agree_with_finite_differences() {
    let (d, g) = configs(0.0);
    let mut w = Weights::new(DType::F64, &Device::Cpu);
    let model = Electra::new(&d, &g, &mut w, &mut StdRng::seed_from_u64(3)).unwrap();
    let x = input(DType::F64);
    // Fixed draws, one equal to its original (position 3 holds 23): it counts as original.
    let draws = Tensor::new(&[30u32, 23, 12], &Device::Cpu).unwrap();
    let losses = {
        let logits = model.generator_logits(&x.generator, &x.positions, &Pass::train(0)).unwrap();
        model.losses_given(&x, Some((&logits, &draws)), &Pass::train(0)).unwrap()
    };
    assert_eq!(losses.replaced.to_scalar::<f32>().unwrap(), 2.0);

    // The discriminator and its head, on the RTD loss alone.
    let rtd = || {
        let logits = model.generator_logits(&x.generator, &x.positions, &Pass::train(0)).unwrap();
        model.losses_given(&x, Some((&logits, &draws)), &Pass::train(0)).unwrap().rtd
    };
    for name in [
        "discriminator_predictions.dense_prediction.weight",
        "discriminator_predictions.dense_prediction.bias",
        "discriminator_predictions.dense.weight",
        "discriminator_predictions.dense.bias",
        "bert.encoder.layer.1.output.LayerNorm.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
    ] {
        let len = w.var(name).unwrap().elem_count();
        check_entries(&w, name, &spread(len), &rtd);
    }
    // The combined loss wrt the shared embeddings (both encoders read them, the generator's
    // decoder is tied to the word table) and the generator's own parameters.
    let total = || combined(&model, &x, Some(&draws), &Pass::train(0));
    let h = 16;
    // Word rows: 17 (in both inputs), 30 (a draw: in the discriminator's input only), 9 (masked:
    // the generator's target alone), 5 (in no input: the decoder's softmax alone).
    let words: Vec<usize> = [9usize, 17, 30, 5].iter().flat_map(|&r| [r * h, r * h + 7]).collect();
    check_entries(&w, "bert.embeddings.word_embeddings.weight", &words, &total);
    check_entries(&w, "bert.embeddings.position_embeddings.weight", &[0, 3, h + 2, 4 * h + 15], &total);
    check_entries(&w, "bert.embeddings.LayerNorm.weight", &[0, 5, 11], &total);
    check_entries(&w, "bert.embeddings.token_type_embeddings.weight", &[1, 9], &total);
    for name in [
        "generator.embeddings_project.weight",
        "generator.encoder.layer.1.intermediate.dense.weight",
        "generator_predictions.dense.weight",
        "generator_predictions.LayerNorm.bias",
        "generator_lm_head.bias",
    ] {
        let len = w.var(name).unwrap().elem_count();
        check_entries(&w, name, &spread(len), &total);
    }
}

#[test]
fn the_rtd_loss_is_stable_for_confident_logits() {
    let logits = Tensor::new(&[-50.0f64, 0.0, 3.0, 50.0, 80.0], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[1.0f64, 0.0, 1.0, 0.0, 1.0], &Device::Cpu).unwrap();
    let real = Tensor::new(&[1.0f64, 1.0, 1.0, 1.0, 0.0], &Device::Cpu).unwrap();
    let got = rtd_loss_sum(&logits, &labels, &real).unwrap().to_scalar::<f64>().unwrap();
    // -ln σ(-50)... : 50, ln 2, ln(1 + e^-3), 50; the padding entry counts nothing.
    let want = 50.0 + 2f64.ln() + (1.0 + (-3f64).exp()).ln() + 50.0;
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

#[test]
fn draws_follow_the_generators_softmax() {
    let rows = 6000;
    let probs = [0.6f64, 0.3, 0.1];
    let row: Vec<f32> = probs.iter().map(|p| p.ln() as f32 + 2.0).collect();
    let logits = Tensor::from_vec(row.repeat(rows), (rows, 3), &Device::Cpu).unwrap();
    let freq = |draws: Tensor| {
        let mut counts = [0usize; 3];
        for d in draws.to_vec1::<u32>().unwrap() {
            counts[d as usize] += 1;
        }
        counts.map(|c| c as f64 / rows as f64)
    };
    let cpu = sample(&logits, 11).unwrap();
    assert_eq!(cpu.to_vec1::<u32>().unwrap(), sample(&logits, 11).unwrap().to_vec1::<u32>().unwrap(), "seeded");
    assert_ne!(cpu.to_vec1::<u32>().unwrap(), sample(&logits, 12).unwrap().to_vec1::<u32>().unwrap());
    // The GPU's way (Gumbel-max), run here on CPU tensors.
    for (how, f) in [("inverse CDF", freq(cpu)), ("Gumbel-max", freq(sample_gumbel(&logits).unwrap()))] {
        for (got, want) in f.iter().zip(probs) {
            assert!((got - want).abs() < 0.025, "{how}: frequencies {f:?}, softmax {probs:?}");
        }
    }
}

#[test]
fn the_gpu_kernels_and_bf16_give_the_losses_and_gradients_of_the_fused_f32_ones() {
    let (d, g) = configs(0.1);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = Electra::new(&d, &g, &mut w, &mut StdRng::seed_from_u64(2)).unwrap();
    let x = input(DType::F32);
    let run = |pass: &Pass| {
        let loss = combined(&model, &x, None, pass);
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<f32>> = w
            .iter()
            .map(|(_, v)| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect();
        (loss.to_scalar::<f32>().unwrap(), g)
    };
    let (fused, fused_grads) = run(&Pass::train(9));
    let (plain, plain_grads) = run(&Pass::train(9).with_kernels(Kernels::Composite));
    assert!((fused - plain).abs() < 1e-4 * fused.abs(), "loss {fused} vs {plain}");
    for ((name, _), (a, b)) in w.iter().zip(fused_grads.iter().zip(&plain_grads)) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max);
        assert!(worst < 1e-4, "{name}: composite gradient differs by {worst}");
    }
    // Mixed precision, with fixed draws (bf16 logits could draw otherwise): close to f32, and
    // every gradient finite and in f32.
    let draws = Tensor::new(&[30u32, 23, 12], &Device::Cpu).unwrap();
    let f32s = combined(&model, &x, Some(&draws), &Pass::train(9)).to_scalar::<f32>().unwrap();
    let bf16 = combined(&model, &x, Some(&draws), &Pass::train(9).with_precision(Precision::Bf16));
    let grads = bf16.backward().unwrap();
    let bf16 = bf16.to_scalar::<f32>().unwrap();
    assert!((bf16 - f32s).abs() < 2e-2 * f32s.abs(), "loss f32 {f32s} vs bf16 {bf16}");
    for (name, var) in w.iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no bf16 gradient"));
        assert_eq!(g.dtype(), DType::F32, "{name}");
        assert!(g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()), "{name}");
    }
}

// ---- through the step ----

/// ELECTRA on the toy set with a discriminator of 2 layers, hidden 16.
fn electra(extra: &[(&str, Value)]) -> Params {
    let mut set = toy_pretrain(
        2,
        &[
            ("objective", json!("electra")),
            ("batch_size", json!(20)),
            ("epochs", json!(3)),
            ("lr", json!(2e-3)),
            ("log_every", json!(1)),
        ],
    );
    set.extend(extra.iter().cloned());
    params(&Pretrain, &set)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Metrics without the timings, which differ from run to run.
fn untimed(dir: &Path) -> Value {
    let mut v = read_json(&dir.join("metrics"));
    for e in v.as_array_mut().unwrap() {
        e["seconds"] = json!(0);
        e["samples_per_second"] = json!(0);
    }
    v
}

fn weights_of(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model/model.safetensors")).unwrap()
}

#[test]
fn electra_writes_an_encoder_that_fine_tune_accepts_and_trains() {
    let root = tempfile::tempdir().unwrap();
    let data = toy_set(&root.path().join("text"), 64, 1);
    let out = root.path().join("pretrain");
    let record = Record::new(None);
    run(&Pretrain, &electra(&[]), &[("data", &data)], &out, &root.path().join("ck"), &record.env, &record).unwrap();
    let lines = record.lines();
    // The defaults: generator hidden 16/4 = 4, heads max(1, 2/4) = 1, layers as the
    // discriminator's, intermediate 4 × 4.
    assert!(
        lines.iter().any(|l| l.starts_with("model: ELECTRA discriminator 2 layers, hidden 16, 2 heads; generator 2 layers, hidden 4, 1 heads, intermediate 16;")
            && l.contains("RTD weight 50")),
        "{lines:?}"
    );
    let epoch_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("[Epoch ") && !l.contains("Batch")).collect();
    assert_eq!(epoch_lines.len(), 3, "{lines:?}");
    assert!(epoch_lines.iter().all(|l| l.contains("MLM loss=") && l.contains("RTD loss=") && l.contains("replaced=")));

    let model = out.join("model");
    let config = read_json(&model.join("config.json"));
    assert_eq!(config["architectures"][0], "BertModel");
    assert_eq!((config["hidden_size"].as_u64(), config["num_hidden_layers"].as_u64()), (Some(16), Some(2)));
    let tensors = candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(tensors.keys().all(|n| n.starts_with("bert.") && !n.contains("pooler")), "{:?}", tensors.keys());
    assert_eq!(tensors.len(), 5 + 16 * 2, "the discriminator's embeddings and layers");
    assert_eq!(tensors["bert.embeddings.word_embeddings.weight"].dims(), [40, 16]);

    let metrics = read_json(&out.join("metrics"));
    let epochs = metrics.as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    for e in epochs {
        for k in ["mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_fraction"] {
            assert!(e[k].as_f64().is_some_and(f64::is_finite), "{k}: {e}");
        }
        let replaced = e["replaced_fraction"].as_f64().unwrap();
        // 15% of the non-special tokens are masked; most draws of an untrained generator differ.
        assert!(replaced > 0.03 && replaced < 0.2, "{e}");
    }
    let rtd = |i: usize| epochs[i]["rtd_loss"].as_f64().unwrap();
    assert!(rtd(2) < rtd(0), "the discriminator learns: {metrics}");
    // It ends up better than answering "original" everywhere.
    let last = &epochs[2];
    assert!(
        last["rtd_accuracy"].as_f64().unwrap() > 1.0 - last["replaced_fraction"].as_f64().unwrap() - 0.02,
        "{last}"
    );

    let train = toy_set(&root.path().join("train"), 96, 2);
    let valid = toy_set(&root.path().join("valid"), 32, 3);
    let tuned = root.path().join("ft");
    let record = Record::new(None);
    let p = params(
        &FineTune,
        &[("epochs", json!(12)), ("batch_size", json!(8)), ("lr", json!(3e-3)), ("dropout", json!(0.1))],
    );
    run(
        &FineTune,
        &p,
        &[("train", &train), ("valid", &valid), ("model", &model)],
        &tuned,
        &root.path().join("ft-ck"),
        &record.env,
        &record,
    )
    .unwrap();
    assert!(
        record
            .lines()
            .iter()
            .any(|l| l == "the checkpoint has no pooler weights: the pooler starts freshly initialised"),
        "{:?}",
        record.lines()
    );
    let metrics: TrainingMetrics = serde_json::from_slice(&std::fs::read(tuned.join("metrics")).unwrap()).unwrap();
    let last = metrics.epochs.last().unwrap();
    assert!(last.valid_accuracy.unwrap() > 0.9, "{metrics:?}");
    assert!(last.train_loss < metrics.epochs[0].train_loss);
}

#[test]
fn an_interrupted_electra_run_resumes_at_the_epoch_and_matches_an_uninterrupted_one() {
    let root = tempfile::tempdir().unwrap();
    let data = toy_set(&root.path().join("text"), 48, 1);
    let p = electra(&[]);
    let inputs = [("data", data.as_path())];
    let whole = root.path().join("whole");
    let env = Environment::default();
    run(&Pretrain, &p, &inputs, &whole, &root.path().join("ck-whole"), &env, &NoEvents).unwrap();

    let ck = root.path().join("ck");
    let cut = Record::new(Some("[Epoch 2 Batch 2/"));
    let err = run(&Pretrain, &p, &inputs, &root.path().join("cut"), &ck, &cut.env, &cut).unwrap_err();
    assert!(matches!(err, StepError::Cancelled), "{err}");
    assert!(ck.join("epoch-1").is_dir());

    let resumed = root.path().join("resumed");
    let record = Record::new(None);
    run(&Pretrain, &p, &inputs, &resumed, &ck, &record.env, &record).unwrap();
    let lines = record.lines();
    assert!(lines.iter().any(|l| l == "resuming after epoch 1 from its checkpoint"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("[Epoch 1 ")), "epoch 1 was trained again: {lines:?}");
    assert!(weights_of(&whole) == weights_of(&resumed), "the resumed run trained different weights");
    assert_eq!(untimed(&whole), untimed(&resumed));
}

#[test]
fn same_seed_same_bytes_at_any_thread_count_and_another_seed_differs() {
    let root = tempfile::tempdir().unwrap();
    let data = toy_set(&root.path().join("text"), 40, 1);
    // Batches of 20 rows run as two shards of 10: bytes must not depend on the threads.
    let go = |name: &str, seed: u64, threads: usize| {
        let out = root.path().join(name);
        let p = electra(&[("seed", json!(seed)), ("epochs", json!(1))]);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            run(
                &Pretrain,
                &p,
                &[("data", &data)],
                &out,
                &root.path().join(format!("ck-{name}")),
                &Environment::default(),
                &NoEvents,
            )
        })
        .unwrap();
        (weights_of(&out), untimed(&out))
    };
    let a = go("a", 42, 1);
    let b = go("b", 42, 1);
    assert!(a.0 == b.0, "the same seed trained different weights");
    assert_eq!(a.1, b.1);
    let c = go("c", 42, 3);
    assert!(a.0 == c.0, "1 and 3 threads trained different weights");
    assert_eq!(a.1, c.1);
    let d = go("d", 43, 1);
    assert!(a.0 != d.0, "another seed trained the same weights");
    assert_ne!(a.1, d.1);
}

#[test]
fn the_objective_leaves_mlm_keys_and_metrics_as_they_were() {
    let env = Environment::default();
    let base = defaults_with(&Pretrain, &[]);
    // `objective: mlm` is keyed as the parameter's absence, as before it existed.
    let mlm = Pretrain.resolve(&defaults_with(&Pretrain, &[("objective", json!("mlm"))]), &env).unwrap();
    assert_eq!(mlm.values(), Pretrain.resolve(&base, &env).unwrap().values());
    assert!(mlm.get("objective").is_none());
    let electra = Pretrain.resolve(&defaults_with(&Pretrain, &[("objective", json!("electra"))]), &env).unwrap();
    assert_eq!(electra.get("objective"), Some(&json!("electra")));
    // No new parameter has a default value (a default would enter every MLM key), and the
    // version is the one MLM results were keyed with (4: timings left the metrics, for both objectives).
    for name in
        ["objective", "generator_hidden", "generator_layers", "generator_heads", "generator_intermediate", "rtd_weight"]
    {
        let spec = Pretrain.spec().param(name).unwrap();
        assert!(matches!(spec.default, Default::Absent) && spec.in_key, "{name}");
    }
    assert_eq!(Pretrain.spec().version, 4);

    // An MLM run writes no ELECTRA fields.
    let root = tempfile::tempdir().unwrap();
    let data = toy_set(&root.path().join("text"), 16, 1);
    let p = params(&Pretrain, &toy_pretrain(1, &[]));
    let out = root.path().join("mlm");
    run(&Pretrain, &p, &[("data", &data)], &out, &root.path().join("ck"), &env, &NoEvents).unwrap();
    let text = std::fs::read_to_string(out.join("metrics")).unwrap();
    assert!(text.contains("mlm_loss") && !text.contains("rtd") && !text.contains("replaced"), "{text}");
    assert_eq!(read_json(&out.join("model/config.json"))["architectures"][0], "BertForMaskedLM");
}

#[test]
fn bad_electra_parameters_are_named() {
    let err_of = |set: &[(&str, Value)]| Pretrain.validate(&defaults_with(&Pretrain, set)).unwrap_err().to_string();
    let err = err_of(&[("objective", json!("bert"))]);
    assert!(
        err.contains("parameter `objective`") && err.contains("`bert` is not an objective (mlm, electra)"),
        "{err}"
    );
    let err = err_of(&[("objective", json!("electra")), ("generator_hidden", json!(8)), ("generator_heads", json!(3))]);
    assert!(err.contains("parameter `generator_heads` must divide `generator_hidden` (8), got 3"), "{err}");
    let err = err_of(&[("objective", json!("electra")), ("generator_layers", json!(0))]);
    assert!(err.contains("parameter `generator_layers` must be at least 1"), "{err}");
    let err = err_of(&[("objective", json!("electra")), ("rtd_weight", json!(0.0))]);
    assert!(err.contains("parameter `rtd_weight` must be a positive number"), "{err}");
    // ELECTRA's parameters on an MLM run would silently do nothing.
    let err = err_of(&[("generator_hidden", json!(64))]);
    assert!(err.contains("parameter `generator_hidden` applies only with `objective: electra`"), "{err}");
    // Given heads, the default width is rounded up to a multiple of them: 256/4 = 64 → 66.
    let ok = defaults_with(&Pretrain, &[("objective", json!("electra")), ("generator_heads", json!(3))]);
    Pretrain.validate(&ok).unwrap();
}

#[test]
fn a_shard_without_masked_tokens_trains_the_discriminator_alone() {
    let (d, g) = configs(0.0);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = Electra::new(&d, &g, &mut w, &mut StdRng::seed_from_u64(4)).unwrap();
    let mut x = input(DType::F32);
    x.generator.input_ids = x.original.clone();
    x.positions = Tensor::from_vec(Vec::<u32>::new(), 0, &Device::Cpu).unwrap();
    x.targets = x.positions.clone();
    x.masked = 0;
    let losses = model.losses(&x, 1, &Pass::train(1)).unwrap();
    assert_eq!(losses.mlm.to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(losses.replaced.to_scalar::<f32>().unwrap(), 0.0);
    let rtd = losses.rtd.to_scalar::<f32>().unwrap();
    assert!(rtd.is_finite() && rtd > 0.0, "{rtd}");
    let grads = (losses.mlm + losses.rtd).unwrap().backward().unwrap();
    assert!(grads.get(w.var("discriminator_predictions.dense.weight").unwrap().as_tensor()).is_some());
    assert!(grads.get(w.var("generator_lm_head.bias").unwrap().as_tensor()).is_none());
}

/// The loss a batch trains on is its mean MLM loss plus 50 times its mean RTD loss, whatever
/// its shards. One batch of 20 rows cut into two shards of 10 that differ in both their share
/// of masked tokens and how predictable those are: short rows of a random token, and long rows
/// of token 7 that the generator soon predicts. Weighting each shard's mean MLM loss by its
/// tokens instead would log a loss far from the batch's means.
#[test]
fn the_batch_loss_is_the_batch_means_combined_across_shards() {
    let root = tempfile::tempdir().unwrap();
    let mut set = toy_tensors(0, 1);
    let mut rng = StdRng::seed_from_u64(5);
    for i in 0..20 {
        let ids: Vec<u32> =
            if i % 2 == 0 { vec![2, rng.random_range(8..40), 3] } else { [vec![2], vec![7; 8], vec![3]].concat() };
        set.push(&ids, &vec![0; ids.len()], ids.len() as u32, 0);
    }
    let data = root.path().join("text");
    std::fs::create_dir_all(&data).unwrap();
    set.save(&data).unwrap();
    let record = Record::new(None);
    let p =
        electra(&[("epochs", json!(12)), ("mask_prob", json!(0.3)), ("lr", json!(5e-3)), ("warmup_ratio", json!(0.0))]);
    let out = root.path().join("out");
    run(&Pretrain, &p, &[("data", &data)], &out, &root.path().join("ck"), &record.env, &record).unwrap();
    let lines = record.lines();
    let metrics = read_json(&out.join("metrics"));
    for (e, epoch) in metrics.as_array().unwrap().iter().enumerate() {
        let start = format!("[Epoch {} Batch 1/1] loss=", e + 1);
        let line = lines.iter().find(|l| l.starts_with(&start)).expect("a batch line");
        let logged: f64 = line[start.len()..].split(',').next().unwrap().parse().unwrap();
        let want = epoch["mlm_loss"].as_f64().unwrap() + 50.0 * epoch["rtd_loss"].as_f64().unwrap();
        assert!((logged - want).abs() < 1e-3, "logged {logged}, means combined {want}: {line}");
        let acc: f64 = line.rsplit("acc=").next().unwrap().parse().unwrap();
        assert!((acc - epoch["rtd_accuracy"].as_f64().unwrap()).abs() < 1e-3, "{line} / {epoch}");
    }
    // The generator did learn the long rows (else the shards' MLM losses would not differ).
    assert!(metrics[11]["mlm_accuracy"].as_f64().unwrap() > 0.5, "{metrics}");
}
