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
//!
//! Multi-label (`balanced`: each label's pos_weight, negatives / positives): a rare label that
//! plain binary cross-entropy never predicts is predicted from its clue, for two data and
//! training seeds; explicit weights as a list and as a map by name are recorded as given.

use std::path::{Path, PathBuf};

use pipe_steps::bert::{Evaluate, FineTune, Pretrain};
use pipe_steps::report::{EvalMetrics, TrainingMetrics};
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::{Environment, NoEvents};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::bert_steps::{params, pretrained, run, toy_pretrain, toy_tensors};

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

/// A multi-label set of `rows` rows and two labels: `common` (half the rows; token 8 in 90% of
/// them and 10% of the others) and `rare` (10% of the rows; token 7 in all of them and in 25%
/// of the others), 2 to 7 noise tokens from 9..17. P(rare | 7) = 0.1 / 0.325 = 0.31, so plain
/// binary cross-entropy never predicts `rare` at 0.5; with `balanced` (pos_weight = 0.9 / 0.1 =
/// 9), 9 x 0.1 / (9 x 0.1 + 0.225) = 0.8, so it predicts `rare` wherever 7 is (recall near 1,
/// precision near 0.31).
fn weak_rare_label(rows: usize, seed: u64) -> TensorSet {
    let mut meta = toy_tensors(1, 0).meta.clone();
    meta.task = pipe_steps::task::Task::MultiLabel;
    meta.label_names = vec!["common".into(), "rare".into()];
    let mut set = TensorSet::empty(meta);
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..rows {
        let (common, rare) = (rng.random_bool(0.5), rng.random_bool(0.1));
        let mut ids = vec![2];
        for _ in 0..rng.random_range(2..8) {
            ids.push(rng.random_range(9..17));
        }
        for (token, p) in [(8, if common { 0.9 } else { 0.1 }), (7, if rare { 1.0 } else { 0.25 })] {
            if rng.random_bool(p) {
                let at = rng.random_range(1..ids.len());
                ids.insert(at, token);
            }
        }
        ids.push(3);
        let targets = [common as u8 as f32, rare as u8 as f32];
        set.push_row(&ids, &vec![0; ids.len()], ids.len() as u32, -1, &targets);
    }
    set
}

#[test]
fn balanced_class_weights_raise_a_rare_labels_recall_in_a_multi_label_set() {
    let root = tempfile::tempdir().unwrap();
    // A toy BERT pre-trained (masked LM) on rows of this kind: the tokens' embeddings are not
    // left as initialised.
    let text = save(&weak_rare_label(1000, 300), &root.path().join("ml-text"));
    let pretrain = params(
        &Pretrain,
        &toy_pretrain(
            2,
            &[("hidden", json!(64)), ("heads", json!(4)), ("intermediate", json!(128)), ("epochs", json!(3))],
        ),
    );
    let pretrained_dir = root.path().join("ml-pretrain");
    let env = Environment { threads: 2, ..Environment::default() };
    run(
        &Pretrain,
        &pretrain,
        &[("data", &text)],
        &pretrained_dir,
        &root.path().join("ml-pretrain-ck"),
        &env,
        &NoEvents,
    )
    .unwrap();
    let model = pretrained_dir.join("model");
    for seed in [1u64, 2] {
        let train = save(&weak_rare_label(2000, 300 + seed), &root.path().join(format!("ml-train{seed}")));
        let test = save(&weak_rare_label(2000, 400 + seed), &root.path().join(format!("ml-test{seed}")));
        let training_seed =
            [("seed", json!(seed)), ("epochs", json!(8)), ("lr", json!(2e-3)), ("batch_size", json!(32))];
        let (plain_m, plain) =
            fine_tune_and_evaluate(root.path(), &format!("ml-plain{seed}"), &model, &train, &test, &training_seed);
        let mut weighted = training_seed.to_vec();
        weighted.push(("class_weights", json!("balanced")));
        let (balanced_m, balanced) =
            fine_tune_and_evaluate(root.path(), &format!("ml-balanced{seed}"), &model, &train, &test, &weighted);
        assert_eq!(plain_m.class_weights, None);
        // pos_weight = negatives / positives of each label in the training rows.
        let set = TensorSet::load(&train).unwrap();
        let positives = |c: usize| set.targets.chunks(2).filter(|t| t[c] > 0.5).count() as f64;
        let expected: Vec<f64> = (0..2).map(|c| (set.len() as f64 - positives(c)) / positives(c)).collect();
        let got = balanced_m.class_weights.clone().expect("pos_weight recorded");
        assert!(got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-9) && got.len() == 2, "{got:?} {expected:?}");
        assert_eq!(balanced.labels, ["common", "rare"]);
        let (r_plain, r_balanced) = (plain.recall[1], balanced.recall[1]);
        eprintln!(
            "multi_label seed {seed}: pos_weight {expected:?}; rare recall {r_plain:.3} -> {r_balanced:.3}, precision \
             {:.3} -> {:.3}; common recall {:.3} -> {:.3}",
            plain.precision[1], balanced.precision[1], plain.recall[0], balanced.recall[0]
        );
        assert!(
            r_balanced > r_plain + 0.3,
            "seed {seed}: balanced weights gave the rare label recall {r_balanced:.3}, unweighted {r_plain:.3}"
        );
        // From the clue, not by predicting `rare` everywhere: its precision is well over its
        // share of the rows (0.1; predicting it exactly where 7 is gives 0.31).
        assert!(balanced.precision[1] > 0.2, "seed {seed}: rare precision {:.3}", balanced.precision[1]);
    }

    // Explicit weights, as a list in label order or a map by name (a label not named weighs 1).
    let train = save(&weak_rare_label(200, 9), &root.path().join("ml-train-small"));
    let test = save(&weak_rare_label(50, 10), &root.path().join("ml-test-small"));
    for (given, want) in [(json!([1.0, 4.0]), vec![1.0, 4.0]), (json!({"rare": 4.0}), vec![1.0, 4.0])] {
        let name = format!("ml-given-{}", want.len() + given.is_object() as usize);
        let extra = [("epochs", json!(1)), ("class_weights", given)];
        let (m, _) = fine_tune_and_evaluate(root.path(), &name, &model, &train, &test, &extra);
        assert_eq!(m.class_weights, Some(want));
    }
    // A name that is no label: named, with the labels.
    let p = params(&FineTune, &[("epochs", json!(1)), ("class_weights", json!({"rarely": 2.0}))]);
    let e = run(
        &FineTune,
        &p,
        &[("train", &train), ("model", &model)],
        &root.path().join("ml-bad"),
        &root.path().join("ml-bad-ck"),
        &Environment::default(),
        &NoEvents,
    )
    .unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(e.to_string().contains("names `rarely`, which is not a training label did you mean `rare`?"), "{e}");
}
