//! AdamW with parameter groups, gradient clipping and the learning-rate schedule, against
//! PyTorch's numbers (`steps/tests/reference/adamw_torch.py` prints them).

use candle_core::{Device, Tensor, Var};
use pipe_steps::bert::gradients::{Gradients, SparseRows};
use pipe_steps::bert::optimizer::{clip_scale, decays, grad_norm, AdamW, LrSchedule};

#[test]
fn adamw_with_groups_and_clipping_matches_pytorch() {
    let w = Var::from_tensor(&Tensor::new(&[[0.5f64, -1.0], [2.0, 0.1]], &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[0.3f64, -0.2], &Device::Cpu).unwrap()).unwrap();
    let mut opt = AdamW::new([("layer.dense.weight", &w), ("layer.dense.bias", &b)], 0.01).unwrap();
    let lrs = [1e-2, 2e-2, 5e-3];
    let mut norms = Vec::new();
    for (i, lr) in lrs.iter().enumerate() {
        let t = (i + 1) as f64;
        // Gradients are produced through a loss so the GradStore is a real one: d(sum(p * g))/dp = g.
        let gw = Tensor::new(&[[t.sin(), t.cos()], [0.5 * t, -1.5]], &Device::Cpu).unwrap();
        let gb = Tensor::new(&[0.2 * t, -0.7], &Device::Cpu).unwrap();
        let loss = ((w.as_tensor() * &gw).unwrap().sum_all().unwrap()
            + (b.as_tensor() * &gb).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let grads = [Gradients::from(grads)];
        let norm = grad_norm(&grads, &[&w, &b]).unwrap();
        norms.push(norm);
        opt.step_scaled(&grads, *lr, clip_scale(norm, 1.0)).unwrap();
    }
    // From adamw_torch.py (the constants at the end of this file).
    let torch_norms = [TORCH_NORM_1, TORCH_NORM_2, TORCH_NORM_3];
    for (got, want) in norms.iter().zip(torch_norms) {
        assert!((got - want).abs() < 1e-11, "norm {got} vs {want}");
    }
    let got_w = w.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let got_b = b.as_tensor().to_vec1::<f64>().unwrap();
    for (g, t) in got_w.iter().chain(&got_b).zip(TORCH_W.iter().chain(&TORCH_B)) {
        assert!((g - t).abs() < 1e-11, "parameter {g} vs PyTorch {t}");
    }
    assert_eq!(opt.step, 3);
}

#[test]
fn optimizer_state_round_trips() {
    let w = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap()).unwrap();
    let mut opt = AdamW::new([("x.weight", &w)], 0.01).unwrap();
    let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
    opt.step(loss.backward().unwrap(), 0.1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    opt.save(&path).unwrap();
    let w2 = Var::from_tensor(&w.as_tensor().copy().unwrap()).unwrap();
    let mut restored = AdamW::new([("x.weight", &w2)], 0.01).unwrap();
    restored.load(&path).unwrap();
    assert_eq!(restored.step, 1);
    let l1 = w.as_tensor().sqr().unwrap().sum_all().unwrap();
    let l2 = w2.as_tensor().sqr().unwrap().sum_all().unwrap();
    opt.step(l1.backward().unwrap(), 0.1).unwrap();
    restored.step(l2.backward().unwrap(), 0.1).unwrap();
    assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), w2.as_tensor().to_vec1::<f32>().unwrap());
}

/// A batch computed as shards: the optimizer adds up the shards' dense gradients and sparse
/// embedding rows, giving the same norm and update as one gradient of the whole batch.
#[test]
fn shard_gradients_add_up_to_the_batch_gradient() {
    let init = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.1], [0.3, 0.7]], &Device::Cpu).unwrap();
    let whole = Var::from_tensor(&init).unwrap();
    let sharded = Var::from_tensor(&init).unwrap();
    let g1 = Tensor::new(&[[0.1f64, 0.2], [0.3, 0.4], [0.5, 0.6]], &Device::Cpu).unwrap();
    let g2 = Tensor::new(&[[-0.2f64, 0.9], [0.0, 0.0], [1.5, -0.1]], &Device::Cpu).unwrap();
    // Row 1 of the table looked up twice in one shard, row 0 once in another.
    let rows = Tensor::new(&[[0.25f64, -0.5], [0.75, 0.125]], &Device::Cpu).unwrap();
    let row0 = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu).unwrap();
    let grad_of = |var: &Var, g: &Tensor| (var.as_tensor() * g).unwrap().sum_all().unwrap().backward().unwrap();
    let sum = (&g1 + &g2).unwrap();
    let extra = Tensor::new(&[[1.0f64, 2.0], [1.0, -0.375], [0.0, 0.0]], &Device::Cpu).unwrap();
    let whole_grads = [Gradients::from(grad_of(&whole, &(sum + extra).unwrap()))];
    let sparse = |ids: Vec<u32>, rows: &Tensor| SparseRows { table: sharded.as_tensor().id(), ids, rows: rows.clone() };
    let shard_grads = [
        Gradients { dense: grad_of(&sharded, &g1), sparse: vec![sparse(vec![1, 1], &rows)] },
        Gradients { dense: grad_of(&sharded, &g2), sparse: vec![sparse(vec![0], &row0)] },
    ];
    let norm_whole = grad_norm(&whole_grads, &[&whole]).unwrap();
    let norm_shards = grad_norm(&shard_grads, &[&sharded]).unwrap();
    assert!((norm_whole - norm_shards).abs() < 1e-12, "{norm_whole} vs {norm_shards}");
    let mut opt_whole = AdamW::new([("t.weight", &whole)], 0.01).unwrap();
    let mut opt_shards = AdamW::new([("t.weight", &sharded)], 0.01).unwrap();
    opt_whole.step_scaled(&whole_grads, 1e-2, 0.5).unwrap();
    opt_shards.step_scaled(&shard_grads, 1e-2, 0.5).unwrap();
    let a = whole.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let b = sharded.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-14, "{a:?} vs {b:?}");
    }
    assert_ne!(a, init.flatten_all().unwrap().to_vec1::<f64>().unwrap());
}

#[test]
fn no_clipping_within_the_limit_or_when_disabled() {
    assert_eq!(clip_scale(0.5, 1.0), 1.0);
    assert_eq!(clip_scale(5.0, 0.0), 1.0);
    assert!((clip_scale(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
}

#[test]
fn weight_decay_skips_biases_and_layer_norm() {
    assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
    assert!(decays("classifier.weight"));
    assert!(!decays("classifier.bias"));
    assert!(!decays("bert.embeddings.LayerNorm.weight"));
    assert!(!decays("cls.predictions.bias"));
}

#[test]
fn schedule_warms_up_then_decays_linearly_to_zero() {
    let s = LrSchedule::new(1e-4, 0.1, 100);
    assert_eq!(s.warmup, 10);
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    close(s.lr(1), 1e-5);
    close(s.lr(5), 5e-5);
    close(s.lr(10), 1e-4);
    close(s.lr(55), 5e-5);
    close(s.lr(100), 0.0);
    let flat = LrSchedule::new(1e-3, 0.0, 4);
    close(flat.lr(1), 7.5e-4);
}

// Printed by `python steps/tests/reference/adamw_torch.py` with PyTorch 2.15.0 (float64).
const TORCH_NORM_1: f64 = 2.007485989988;
const TORCH_NORM_2: f64 = 2.213594362118;
const TORCH_NORM_3: f64 = 2.519920633671;
const TORCH_W: [f64; 4] = [0.465691240040, -1.009959563602, 1.964919358667, 0.134826600644];
const TORCH_B: [f64; 2] = [0.265615970166, -0.165134962265];
