//! `fine-tune` with `class_weights: balanced` on an imbalanced set whose only clue is weak: the
//! minority class's recall on a held-out test set rises well beyond noise, for each of several
//! data and training seeds, and the majority pays for it (as it must: the weights move the
//! decision threshold, they add no information).
//!
//! The set is built so that the unweighted optimum ignores the minority: label 1 is 15% of the
//! rows; token 7 occurs in 70% of them and in 20% of label-0 rows, the other tokens are noise
//! from a small vocabulary (too few to memorise rows by). P(1 | 7) = 0.105 / 0.275 = 0.38, so
//! plain cross-entropy predicts 0 for every row (minority recall near 0); weighted by
//! `balanced` (each class's rows sum to the same weight), P_w(1 | 7) = 0.7 / 0.9 = 0.78, so the
//! model predicts 1 whenever 7 is present (recall near 0.7). 200 minority test rows make the
//! recall's noise about ±0.03, far below the margin asserted.

use std::path::{Path, PathBuf};

use pipe_steps::bert::{Evaluate, FineTune};
use pipe_steps::report::{EvalMetrics, TrainingMetrics};
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::{Environment, NoEvents};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::bert_steps::{params, pretrained, run, toy_tensors};

/// `rows` rows, a share of 0.15 labelled 1; token 7 in 70% of label-1 rows and 20% of label-0
/// rows; 2 to 7 noise tokens from 8..16.
fn weak_clue(rows: usize, seed: u64) -> TensorSet {
    let mut set = TensorSet::empty(toy_tensors(1, 0).meta.clone());
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..rows {
        let label = rng.random_bool(0.15);
        let mut ids = vec![2];
        for _ in 0..rng.random_range(2..8) {
            ids.push(rng.random_range(8..16));
        }
        if rng.random_bool(if label { 0.7 } else { 0.2 }) {
            let at = rng.random_range(1..ids.len());
            ids.insert(at, 7);
        }
        ids.push(3);
        set.push(&ids, &vec![0; ids.len()], ids.len() as u32, label as i64);
    }
    set
}

fn save(set: &TensorSet, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    set.save(dir).unwrap();
    dir.to_path_buf()
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Fine-tunes `model` on `train` (no validation set: the last epoch is saved, so no selection
/// rule favours either side) with `extra` parameters, then evaluates on `test`.
fn fine_tune_and_evaluate(
    root: &Path,
    name: &str,
    model: &Path,
    train: &Path,
    test: &Path,
    extra: &[(&str, Value)],
) -> (TrainingMetrics, EvalMetrics) {
    let mut all = vec![("epochs", json!(4)), ("batch_size", json!(16)), ("lr", json!(3e-3)), ("log_every", json!(0))];
    all.extend(extra.iter().cloned());
    let out = root.join(name);
    let env = Environment { threads: 2, ..Environment::default() };
    let ck = root.join(format!("{name}-ck"));
    run(&FineTune, &params(&FineTune, &all), &[("train", train), ("model", model)], &out, &ck, &env, &NoEvents)
        .unwrap();
    let eval = root.join(format!("{name}-eval"));
    let fine_tuned = out.join("model");
    let inputs = [("data", test), ("model", fine_tuned.as_path())];
    run(&Evaluate, &params(&Evaluate, &[]), &inputs, &eval, &root.join(format!("{name}-eval-ck")), &env, &NoEvents)
        .unwrap();
    (read(&out.join("metrics")), read(&eval.join("metrics")))
}

#[test]
fn balanced_class_weights_raise_the_minority_recall_on_an_imbalanced_set() {
    let root = tempfile::tempdir().unwrap();
    let model = pretrained(root.path());
    for seed in [1u64, 2] {
        let train = save(&weak_clue(800, 100 + seed), &root.path().join(format!("train{seed}")));
        let test = save(&weak_clue(1400, 200 + seed), &root.path().join(format!("test{seed}")));
        let training_seed = [("seed", json!(seed))];
        let (plain_m, plain) =
            fine_tune_and_evaluate(root.path(), &format!("plain{seed}"), &model, &train, &test, &training_seed);
        let mut weighted = training_seed.to_vec();
        weighted.push(("class_weights", json!("balanced")));
        let (balanced_m, balanced) =
            fine_tune_and_evaluate(root.path(), &format!("balanced{seed}"), &model, &train, &test, &weighted);
        assert_eq!(plain_m.class_weights, None);
        let w = balanced_m.class_weights.as_ref().expect("balanced weights recorded");
        assert!(w[1] > 2.0 * w[0], "the minority is not weighted up: {w:?}");
        let minority = plain.labels.iter().position(|l| l == "1").expect("label 1 in the test metrics");
        assert_eq!(balanced.labels, plain.labels);
        let (r_plain, r_balanced) = (plain.recall[minority], balanced.recall[minority]);
        eprintln!(
            "seed {seed}: minority recall {r_plain:.3} -> {r_balanced:.3}, majority recall {:.3} -> {:.3}, \
             macro F1 {:.3} -> {:.3}",
            plain.recall[1 - minority],
            balanced.recall[1 - minority],
            plain.macro_f1,
            balanced.macro_f1
        );
        assert!(
            r_balanced > r_plain + 0.3,
            "seed {seed}: balanced weights gave minority recall {r_balanced:.3}, unweighted {r_plain:.3}"
        );
        // The price: the weights trade majority recall for minority recall.
        assert!(balanced.recall[1 - minority] < plain.recall[1 - minority], "seed {seed}");
    }
}
