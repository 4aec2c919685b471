//! The BERT module: parity with PyTorch on a real checkpoint, gradients that reach every
//! parameter and agree with finite differences, dynamic padding equal to fixed padding, and a
//! toy task it learns.

use candle_core::{DType, Device, Tensor, D};
use pipe_steps::bert::batch::make_batch;
use pipe_steps::bert::config::BertConfig;
use pipe_steps::bert::gradients::{Gradients, ParamGrad};
use pipe_steps::bert::model::{Batch, BertClassifier, BertModel, Pass};
use pipe_steps::bert::weights::{Checkpoint, Weights};
use pipe_steps::shared_data::shared_path;
use pipe_steps::tensor_set::{TensorSet, TensorSetMeta};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

fn tiny_config(vocab: usize, dropout: f64) -> BertConfig {
    let mut c = BertConfig::new(vocab, 2, 16, 2, 32, 32);
    c.hidden_dropout_prob = dropout;
    c.attention_probs_dropout_prob = dropout;
    c
}

fn batch(ids: &[&[u32]], dtype: DType) -> Batch {
    let len = ids.iter().map(|r| r.len()).max().unwrap();
    let mut flat = Vec::new();
    let mut mask = Vec::new();
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
        attention_mask: Tensor::from_vec(mask, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap(),
    }
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() < tol, "{what}[{i}]: got {g}, PyTorch {w}");
    }
}

#[test]
fn minilm_matches_pytorch_outputs() {
    let Some(golden) = shared_path("golden/minilm_forward.json") else { return };
    let model_dir = shared_path("models/all-MiniLM-L6-v2").unwrap();
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    let config = BertConfig::load(&model_dir.join("config.json")).unwrap();
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertModel::new(&config, &mut w, &mut StdRng::seed_from_u64(0)).unwrap();
    let checkpoint = Checkpoint::load(&model_dir.join("model.safetensors")).unwrap();
    let fresh = checkpoint.fill(&w, &["bert."], |_| false).unwrap();
    assert!(fresh.is_empty());
    let cases = golden["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let nums = |k: &str| -> Vec<f64> { case[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
        let ids: Vec<u32> = nums("input_ids").iter().map(|&v| v as u32).collect();
        let types: Vec<u32> = nums("token_type_ids").iter().map(|&v| v as u32).collect();
        let n = ids.len();
        let b = Batch {
            input_ids: Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap(),
            token_type_ids: Tensor::from_vec(types, (1, n), &Device::Cpu).unwrap(),
            attention_mask: Tensor::ones((1, n), DType::F32, &Device::Cpu).unwrap(),
        };
        for pass in [Pass::eval(), Pass::train(1)] {
            // A training pass with dropout 0 uses the differentiable kernels: they must agree too.
            let mut cfg = config.clone();
            cfg.hidden_dropout_prob = 0.0;
            cfg.attention_probs_dropout_prob = 0.0;
            let hidden = if pass.is_train() {
                let mut w2 = Weights::new(DType::F32, &Device::Cpu);
                let m2 = BertModel::new(&cfg, &mut w2, &mut StdRng::seed_from_u64(0)).unwrap();
                checkpoint.fill(&w2, &["bert."], |_| false).unwrap();
                let h = m2.forward(&b, &pass).unwrap();
                let pooled = m2.pool(&h).unwrap();
                (h, pooled)
            } else {
                let h = model.forward(&b, &pass).unwrap();
                let pooled = model.pool(&h).unwrap();
                (h, pooled)
            };
            let (h, pooled) = hidden;
            let h2 = h.squeeze(0).unwrap();
            let first8 = |t: &Tensor| t.narrow(0, 0, 8).unwrap().to_vec1::<f32>().unwrap();
            close(&first8(&h2.get(0).unwrap()), &nums("cls_hidden_first8"), 1e-4, "cls_hidden");
            close(&first8(&h2.get(n - 1).unwrap()), &nums("last_token_hidden_first8"), 1e-4, "last_token_hidden");
            close(&first8(&pooled.squeeze(0).unwrap()), &nums("pooler_output_first8"), 1e-4, "pooler_output");
            close(&first8(&h2.mean(0).unwrap()), &nums("mean_pooled_first8"), 1e-4, "mean_pooled");
            let abs_sum = h.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            let want = case["hidden_abs_sum"].as_f64().unwrap();
            assert!((f64::from(abs_sum) - want).abs() / want < 1e-4, "hidden_abs_sum: got {abs_sum}, PyTorch {want}");
        }
    }
}

#[test]
fn every_parameter_receives_a_gradient() {
    let config = tiny_config(50, 0.1);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 3, &mut w, &mut StdRng::seed_from_u64(1)).unwrap();
    let b = batch(&[&[2, 7, 9, 3], &[2, 11, 3]], DType::F32);
    let logits = model.forward(&b, &Pass::train(5)).unwrap();
    let target = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
    let grads = loss.backward().unwrap();
    let mut missing = Vec::new();
    let mut count = 0;
    for (name, var) in w.iter() {
        count += 1;
        match grads.get(var.as_tensor()) {
            Some(g) if g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0 => {}
            Some(_)
                if name.contains("word_embeddings")
                    || name.contains("position_embeddings")
                    || name.contains("token_type") => {}
            _ => missing.push(name.to_string()),
        }
    }
    assert_eq!(count, 5 + 16 * 2 + 2 + 2);
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

/// A sparse training pass (what the trainer uses on CPU) gives the word-embedding gradient as
/// rows, which add up to the dense gradient of a normal pass; every other gradient is the same.
#[test]
fn sparse_word_embedding_gradient_equals_the_dense_one() {
    let config = tiny_config(50, 0.1);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 3, &mut w, &mut StdRng::seed_from_u64(1)).unwrap();
    let b = batch(&[&[2, 7, 9, 7, 3], &[2, 11, 3]], DType::F32);
    let target = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let run = |pass: &Pass| {
        let logits = model.forward(&b, pass).unwrap();
        candle_nn::loss::cross_entropy(&logits, &target).unwrap().backward().unwrap()
    };
    let dense = run(&Pass::train(5));
    let pass = Pass::train(5).sparse();
    let sparse = Gradients::new(run(&pass), pass.take_lookups());
    assert_eq!(sparse.sparse.len(), 1);
    assert_eq!(sparse.sparse[0].ids, vec![2, 7, 9, 7, 3, 2, 11, 3, 0, 0]);
    for (name, var) in w.iter() {
        let want = dense.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = ParamGrad::collect(std::slice::from_ref(&sparse), var).unwrap().unwrap();
        let got = got.to_tensor(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (g, d)) in got.iter().zip(&want).enumerate() {
            assert!((g - d).abs() <= 1e-6 * (1.0 + d.abs()), "{name}[{i}]: sparse {g}, dense {d}");
        }
        if name.contains("word_embeddings") {
            assert!(sparse.dense.get(var.as_tensor()).is_none(), "the table got a dense gradient too");
            assert!(want.iter().any(|&d| d != 0.0));
        }
    }
}

/// Central finite differences in f64 against backprop, for the classifier head, the pooler, a
/// LayerNorm and an attention weight of a tiny model.
#[test]
fn gradients_agree_with_finite_differences() {
    let config = tiny_config(30, 0.0);
    let mut w = Weights::new(DType::F64, &Device::Cpu);
    let model = BertClassifier::new(&config, 2, &mut w, &mut StdRng::seed_from_u64(3)).unwrap();
    let b = batch(&[&[2, 5, 6, 3], &[2, 8, 3]], DType::F64);
    let target = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
    let loss_of = || -> f64 {
        let logits = model.forward(&b, &Pass::train(0)).unwrap();
        candle_nn::loss::cross_entropy(&logits, &target).unwrap().to_scalar::<f64>().unwrap()
    };
    let logits = model.forward(&b, &Pass::train(0)).unwrap();
    let grads = candle_nn::loss::cross_entropy(&logits, &target).unwrap().backward().unwrap();
    for name in [
        "classifier.weight",
        "classifier.bias",
        "bert.pooler.dense.weight",
        "bert.encoder.layer.1.output.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.0.intermediate.dense.bias",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.embeddings.word_embeddings.weight",
    ] {
        let var = w.var(name).unwrap();
        let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let original = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let shape = var.as_tensor().shape().clone();
        let eps = 1e-6;
        for i in (0..original.len()).step_by((original.len() / 7).max(1)) {
            let mut plus = original.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, shape.clone(), &Device::Cpu).unwrap()).unwrap();
            let up = loss_of();
            let mut minus = original.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, shape.clone(), &Device::Cpu).unwrap()).unwrap();
            let down = loss_of();
            var.set(&Tensor::from_vec(original.clone(), shape.clone(), &Device::Cpu).unwrap()).unwrap();
            let numeric = (up - down) / (2.0 * eps);
            let err = (numeric - analytic[i]).abs();
            assert!(err < 1e-6 + 1e-4 * numeric.abs(), "{name}[{i}]: backprop {} vs numeric {numeric}", analytic[i]);
        }
    }
}

fn toy_set(rows: &[(Vec<u32>, i64)]) -> TensorSet {
    let meta = TensorSetMeta {
        max_len: 12,
        pad_id: 0,
        cls_id: 2,
        sep_id: 3,
        mask_id: Some(4),
        unk_id: Some(1),
        vocab_size: 30,
        pair: false,
        label_values: vec![0, 1],
        label_names: vec![],
        task: pipe_steps::task::Task::SingleLabel,
    };
    let mut set = TensorSet::empty(meta);
    for (ids, label) in rows {
        set.push(ids, &vec![0; ids.len()], ids.len() as u32, *label);
    }
    set
}

#[test]
fn dynamic_padding_equals_fixed_padding() {
    let set = toy_set(&[(vec![2, 5, 6, 7, 3], 1), (vec![2, 8, 3], 0), (vec![2, 9, 10, 11, 12, 13, 3], 1)]);
    let config = tiny_config(30, 0.0);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 2, &mut w, &mut StdRng::seed_from_u64(4)).unwrap();
    let rows = [0, 1, 2];
    let target = Tensor::new(&[1u32, 0, 1], &Device::Cpu).unwrap();
    let run = |pad_to: Option<usize>| {
        let b = make_batch(&set, &rows, pad_to, DType::F32, &Device::Cpu).unwrap();
        let eval = model.forward(&b, &Pass::eval()).unwrap();
        let train = model.forward(&b, &Pass::train(9)).unwrap();
        let loss = candle_nn::loss::cross_entropy(&train, &target).unwrap();
        let grads = loss.backward().unwrap();
        let g =
            grads.get(w.var("bert.encoder.layer.0.attention.self.key.weight").unwrap().as_tensor()).unwrap().clone();
        (b.input_ids.dim(1).unwrap(), eval, loss.to_scalar::<f32>().unwrap(), g)
    };
    let (len_dyn, eval_dyn, loss_dyn, g_dyn) = run(None);
    let (len_fix, eval_fix, loss_fix, g_fix) = run(Some(12));
    assert_eq!((len_dyn, len_fix), (7, 12));
    let diff = (eval_dyn - eval_fix).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "logits differ by {diff}");
    assert!((loss_dyn - loss_fix).abs() < 1e-5);
    let gdiff = (g_dyn - g_fix).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(gdiff < 1e-5, "gradients differ by {gdiff}");
}

#[test]
fn dropout_is_active_in_training_and_seeded() {
    let config = tiny_config(30, 0.3);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 2, &mut w, &mut StdRng::seed_from_u64(4)).unwrap();
    let b = batch(&[&[2, 5, 6, 3]], DType::F32);
    let vec = |p: &Pass| model.forward(&b, p).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(vec(&Pass::eval()), vec(&Pass::eval()));
    assert_eq!(vec(&Pass::train(1)), vec(&Pass::train(1)));
    assert_ne!(vec(&Pass::train(1)), vec(&Pass::train(2)));
    assert_ne!(vec(&Pass::train(1)), vec(&Pass::eval()));
}

#[test]
fn learns_a_toy_task() {
    // Label 1 iff token 7 occurs.
    let mut rows = Vec::new();
    let mut rng = StdRng::seed_from_u64(11);
    for i in 0..64 {
        use rand::Rng;
        let mut ids = vec![2];
        for _ in 0..rng.random_range(2..8) {
            ids.push(rng.random_range(8..30));
        }
        if i % 2 == 0 {
            let at = rng.random_range(1..ids.len());
            ids.insert(at, 7);
        }
        ids.push(3);
        rows.push((ids, (i % 2 == 0) as i64));
    }
    let set = toy_set(&rows);
    let config = tiny_config(30, 0.0);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    let model = BertClassifier::new(&config, 2, &mut w, &mut StdRng::seed_from_u64(5)).unwrap();
    let vars: Vec<(String, candle_core::Var)> = w.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    let mut opt = pipe_steps::bert::optimizer::AdamW::new(vars.iter().map(|(n, v)| (n.as_str(), v)), 0.01).unwrap();
    let all: Vec<usize> = (0..set.len()).collect();
    let classes: Vec<u32> = set.labels.iter().map(|&l| l as u32).collect();
    let loss_now = || {
        let b = make_batch(&set, &all, None, DType::F32, &Device::Cpu).unwrap();
        let logits = model.forward(&b, &Pass::eval()).unwrap();
        let t = Tensor::from_vec(classes.clone(), all.len(), &Device::Cpu).unwrap();
        let acc = logits
            .argmax(D::Minus1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .zip(&classes)
            .filter(|(a, b)| a == b)
            .count();
        (candle_nn::loss::cross_entropy(&logits, &t).unwrap().to_scalar::<f32>().unwrap(), acc)
    };
    let (before, _) = loss_now();
    for step in 0..120 {
        let rows: Vec<usize> = all.iter().copied().filter(|i| (i + step) % 2 == 0 || i % 3 == 0).collect();
        let b = make_batch(&set, &rows, None, DType::F32, &Device::Cpu).unwrap();
        let logits = model.forward(&b, &Pass::train(step as u64)).unwrap();
        let t =
            Tensor::from_vec(rows.iter().map(|&i| classes[i]).collect::<Vec<_>>(), rows.len(), &Device::Cpu).unwrap();
        let grads = candle_nn::loss::cross_entropy(&logits, &t).unwrap().backward().unwrap();
        opt.step(grads, 3e-3).unwrap();
    }
    let (after, acc) = loss_now();
    assert!(after < before * 0.3, "loss {before} -> {after}");
    assert!(acc >= 60, "accuracy {acc}/64");
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let config = tiny_config(30, 0.0);
    let mut w = Weights::new(DType::F32, &Device::Cpu);
    BertModel::new(&config, &mut w, &mut StdRng::seed_from_u64(0)).unwrap();
    // Saved without the `bert.` prefix and without one tensor.
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in w.iter() {
        if name != "bert.encoder.layer.1.intermediate.dense.bias" {
            tensors.insert(name.trim_start_matches("bert.").to_string(), var.as_tensor().clone());
        }
    }
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let checkpoint = Checkpoint::load(&path).unwrap();
    let err = checkpoint.fill(&w, &["bert."], |_| false).unwrap_err().to_string();
    assert!(err.contains("bert.encoder.layer.1.intermediate.dense.bias"), "{err}");

    let mut bigger = tiny_config(30, 0.0);
    bigger.intermediate_size = 48;
    let mut w2 = Weights::new(DType::F32, &Device::Cpu);
    BertModel::new(&bigger, &mut w2, &mut StdRng::seed_from_u64(0)).unwrap();
    let err = checkpoint.fill(&w2, &["bert.encoder.layer.0.intermediate"], |_| false).unwrap_err().to_string();
    assert!(err.contains("tensor `bert.encoder.layer.0.intermediate.dense."), "{err}");
    assert!(err.contains("the model expects [48"), "{err}");
}
