//! The `ensemble` step: weights fit on the validation rows only, members checked for alignment,
//! and `evaluate`'s and `linear`'s own predictions files accepted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use pipe_steps::bert::{Evaluate, FineTune, Pretrain};
use pipe_steps::ensemble::{Ensemble, EnsembleReport};
use pipe_steps::linear::Linear;
use pipe_steps::predictions::{self, Predictions};
use pipe_steps::report::EvalMetrics;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tempfile::TempDir;

use crate::text_support::{message, run, table};

/// Integer labels as the class names the predictions files hold.
fn names(labels: &[i64]) -> Vec<String> {
    labels.iter().map(i64::to_string).collect()
}

/// A two-class predictions file: row `i` has label `i % 2` and gives its true class
/// `p_true[i]`.
fn file(dir: &Path, name: &str, p_true: &[f32]) -> PathBuf {
    let truth: Vec<i64> = (0..p_true.len() as i64).map(|i| i % 2).collect();
    let probs: Vec<Vec<f32>> =
        p_true.iter().zip(&truth).map(|(&p, &t)| if t == 1 { vec![1.0 - p, p] } else { vec![p, 1.0 - p] }).collect();
    let path = dir.join(name);
    predictions::write(&path, &names(&[0, 1]), &names(&truth), &probs).unwrap();
    path
}

fn outputs(out: &Path) -> (EvalMetrics, EnsembleReport, Predictions) {
    let m = serde_json::from_slice(&fs::read(out.join("metrics")).unwrap()).unwrap();
    let w = serde_json::from_slice(&fs::read(out.join("weights")).unwrap()).unwrap();
    let p = Predictions::read(&out.join("predictions"), "predictions").unwrap();
    (m, w, p)
}

#[test]
fn weights_are_fit_on_the_validation_rows_never_on_the_test_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // On validation a is right and b wrong; on test the other way round. Test labels would
    // prefer b's weight: choosing a proves the test rows took no part.
    let valid_a = file(d, "va", &[0.9; 100]);
    let valid_b = file(d, "vb", &[0.2; 100]);
    let test_a = file(d, "ta", &[0.2; 100]);
    let test_b = file(d, "tb", &[0.9; 100]);
    let inputs: [(&str, &Path); 4] =
        [("valid_a", &valid_a), ("test_a", &test_a), ("valid_b", &valid_b), ("test_b", &test_b)];
    let out = run(&Ensemble, json!({"names": ["bert", "linear"]}), &inputs).unwrap();
    let (m, w, p) = outputs(out.path());
    let weights: Vec<(String, f64)> = w.members.iter().map(|m| (m.name.clone(), m.weight)).collect();
    assert_eq!(weights, [("bert".to_string(), 1.0), ("linear".to_string(), 0.0)]);
    assert_eq!((m.accuracy, w.test_accuracy, w.valid_accuracy), (0.0, 0.0, 1.0), "{w:?}");
    assert_eq!((w.members[0].test_accuracy, w.members[1].test_accuracy), (0.0, 1.0));
    assert_eq!((m.rows, p.len(), w.valid_rows, w.criterion.as_str()), (100, 100, 100, "valid_log_loss"));
}

#[test]
fn complementary_members_share_the_weight_and_beat_both() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // a is sure and right on the first half, unsure and wrong on the second; b the reverse.
    let a: Vec<f32> = (0..100).map(|i| if i < 50 { 0.95 } else { 0.45 }).collect();
    let b: Vec<f32> = (0..100).map(|i| if i < 50 { 0.45 } else { 0.95 }).collect();
    let (va, vb, ta, tb) = (file(d, "va", &a), file(d, "vb", &b), file(d, "ta", &a), file(d, "tb", &b));
    let out =
        run(&Ensemble, json!({}), &[("valid_a", &va), ("test_a", &ta), ("valid_b", &vb), ("test_b", &tb)]).unwrap();
    let (m, w, _) = outputs(out.path());
    assert!((w.members[0].weight - 0.5).abs() < 1e-9 && (w.members[1].weight - 0.5).abs() < 1e-9, "{w:?}");
    assert_eq!((w.members[0].name.as_str(), w.members[1].name.as_str()), ("a", "b"));
    assert_eq!((w.members[0].valid_accuracy, w.members[1].valid_accuracy), (0.5, 0.5));
    assert_eq!((w.valid_accuracy, m.accuracy), (1.0, 1.0));
    assert!(w.valid_loss < w.members[0].valid_loss && w.valid_loss < w.members[1].valid_loss, "{w:?}");
}

#[test]
fn two_identical_members_give_the_members_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = StdRng::seed_from_u64(1);
    let valid: Vec<f32> = (0..200).map(|_| rng.random_range(0.05..0.95)).collect();
    let test: Vec<f32> = (0..300).map(|_| rng.random_range(0.05..0.95)).collect();
    let (v, t) = (file(d, "v", &valid), file(d, "t", &test));
    let member = Predictions::read(&t, "t").unwrap();
    let out = run(&Ensemble, json!({}), &[("valid_a", &v), ("test_a", &t), ("valid_b", &v), ("test_b", &t)]).unwrap();
    let (m, w, p) = outputs(out.path());
    assert_eq!(m.accuracy, member.accuracy());
    assert_eq!(p.predicted, member.predicted);
    assert!((w.members[0].weight + w.members[1].weight - 1.0).abs() < 1e-9);
}

#[test]
fn misaligned_members_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v = file(d, "v", &[0.8; 10]);
    let t = file(d, "t", &[0.8; 10]);
    let short = file(d, "short", &[0.8; 9]);
    // Row 3 has another true label.
    let other_labels = d.join("labels");
    let mut truth: Vec<i64> = (0..10).map(|i| i % 2).collect();
    truth[3] = 0;
    predictions::write(&other_labels, &names(&[0, 1]), &names(&truth), &vec![vec![0.5f32, 0.5]; 10]).unwrap();
    // Other classes.
    let classes = d.join("classes");
    predictions::write(&classes, &names(&[0, 2]), &names(&[0; 10]), &vec![vec![0.5f32, 0.5]; 10]).unwrap();

    let e = message(
        &run(&Ensemble, json!({}), &[("valid_a", &v), ("test_a", &t), ("valid_b", &v), ("test_b", &short)])
            .unwrap_err(),
    );
    assert!(e.contains("input `test_b` has 9 rows, input `test_a` has 10"), "{e}");
    assert!(e.contains("help: give every member's predictions of the same table"), "{e}");
    let e = run(&Ensemble, json!({}), &[("valid_a", &v), ("test_a", &t), ("valid_b", &other_labels), ("test_b", &t)])
        .unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("disagree on the true label of row 3 (`0` vs `1`)"), "{e}");
    let e = run(&Ensemble, json!({}), &[("valid_a", &v), ("test_a", &t), ("valid_b", &classes), ("test_b", &t)])
        .unwrap_err()
        .to_string();
    assert!(e.contains(r#"input `valid_b` has classes ["0", "2"], input `valid_a` has ["0", "1"]"#), "{e}");
}

#[test]
fn incomplete_members_and_bad_parameters_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v, t) = (file(d, "v", &[0.8; 10]), file(d, "t", &[0.8; 10]));
    let e = message(
        &run(
            &Ensemble,
            json!({}),
            &[("valid_a", &v), ("test_a", &t), ("valid_b", &v), ("test_b", &t), ("valid_c", &v)],
        )
        .unwrap_err(),
    );
    assert!(e.contains("member c: input `valid_c` is given but `test_c` is not"), "{e}");
    let e = run(
        &Ensemble,
        json!({"names": ["x", "y", "z"]}),
        &[("valid_a", &v), ("test_a", &t), ("valid_b", &v), ("test_b", &t)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("parameter `names` has 3 names for 2 members"), "{e}");
    let e = run(&Ensemble, json!({"grid_step": 0.3}), &[]).unwrap_err().to_string();
    assert!(e.contains("parameter `grid_step`"), "{e}");
    // A member without validation rows (`linear` without a validation set).
    let empty = d.join("empty");
    predictions::write::<&str>(&empty, &names(&[0, 1]), &[], &[]).unwrap();
    let e = message(
        &run(&Ensemble, json!({}), &[("valid_a", &v), ("test_a", &t), ("valid_b", &empty), ("test_b", &t)])
            .unwrap_err(),
    );
    assert!(e.contains("input `valid_b`") && e.contains("has no rows") && e.contains("valid_fraction"), "{e}");
}

#[test]
fn three_members_and_the_accuracy_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = file(d, "good", &[0.7; 20]);
    let bad = file(d, "bad", &[0.3; 20]);
    let inputs: [(&str, &Path); 6] = [
        ("valid_a", &bad),
        ("test_a", &bad),
        ("valid_b", &bad),
        ("test_b", &bad),
        ("valid_c", &good),
        ("test_c", &good),
    ];
    let out = run(&Ensemble, json!({"criterion": "accuracy", "grid_step": 0.25}), &inputs).unwrap();
    let (m, w, _) = outputs(out.path());
    let weights: Vec<f64> = w.members.iter().map(|m| m.weight).collect();
    assert_eq!(weights, [0.0, 0.0, 1.0]);
    assert_eq!((m.accuracy, w.criterion.as_str(), w.grid_step), (1.0, "valid_accuracy", 0.25));
}

use crate::bert_steps::toy_set;

#[test]
fn evaluates_own_predictions_files_are_members() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let text = toy_set(&r.join("text"), 48, 1);
    let pre = run(
        &Pretrain,
        json!({"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "max_positions": 16, "batch_size": 16, "epochs": 1}),
        &[("data", &text)],
    )
    .unwrap();
    let (train, valid, test) =
        (toy_set(&r.join("train"), 48, 2), toy_set(&r.join("valid"), 24, 3), toy_set(&r.join("test"), 20, 4));
    let ft = run(
        &FineTune,
        json!({"epochs": 2, "batch_size": 8, "lr": 3e-3}),
        &[("train", &train), ("model", &pre.path().join("model"))],
    )
    .unwrap();
    let model = ft.path().join("model");
    let ev_valid = run(&Evaluate, json!({}), &[("data", &valid), ("model", &model)]).unwrap();
    let ev_test = run(&Evaluate, json!({}), &[("data", &test), ("model", &model)]).unwrap();
    let (vp, tp) = (ev_valid.path().join("predictions"), ev_test.path().join("predictions"));
    let out =
        run(&Ensemble, json!({}), &[("valid_a", &vp), ("test_a", &tp), ("valid_b", &vp), ("test_b", &tp)]).unwrap();
    let (m, w, _) = outputs(out.path());
    let evaluated: EvalMetrics = serde_json::from_slice(&fs::read(ev_test.path().join("metrics")).unwrap()).unwrap();
    assert_eq!(m.rows, 20);
    assert_eq!(w.members[0].test_accuracy, evaluated.accuracy, "the member's accuracy is evaluate's");
    assert_eq!(m.accuracy, evaluated.accuracy, "two identical members give the member's accuracy");
}

/// A table whose label is told by a keyword (`great` 1, `awful` 0) among filler words, and
/// sometimes by its characters only (`grreat`): word and char models differ.
fn reviews(rows: usize, seed: u64) -> (TempDir, PathBuf) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut text = String::from("id\tdocument\tlabel\n");
    for i in 0..rows {
        let label = rng.random_range(0..2);
        let key = match (label, rng.random_range(0..3)) {
            (1, 0) => "grreat",
            (1, _) => "great",
            (_, 0) => "awfull",
            _ => "awful",
        };
        let noise = if rng.random_bool(0.1) { "great awful" } else { "" };
        let _ = writeln!(text, "{i}\tthe film {key} {noise} story\t{label}");
    }
    table("r.tsv", &text)
}

#[test]
fn linear_members_combine() {
    let (_d1, train) = reviews(400, 5);
    let (_d2, test) = reviews(200, 6);
    let inputs: [(&str, &Path); 2] = [("train", &train), ("test", &test)];
    let words = run(&Linear, json!({"char_max": 0, "valid_fraction": 0.25}), &inputs).unwrap();
    let chars = run(&Linear, json!({"word_ngrams": 0, "valid_fraction": 0.25}), &inputs).unwrap();
    let member = |dir: &TempDir, name: &str| dir.path().join(name);
    let given: BTreeMap<&str, PathBuf> = [
        ("valid_a", member(&words, "valid_predictions")),
        ("test_a", member(&words, "predictions")),
        ("valid_b", member(&chars, "valid_predictions")),
        ("test_b", member(&chars, "predictions")),
    ]
    .into();
    let inputs: Vec<(&str, &Path)> = given.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let out = run(&Ensemble, json!({"names": ["words", "chars"]}), &inputs).unwrap();
    let (m, w, p) = outputs(out.path());
    assert_eq!((m.rows, p.len(), w.valid_rows), (200, 200, 100));
    assert!((w.members.iter().map(|m| m.weight).sum::<f64>() - 1.0).abs() < 1e-9);
    let best_valid = w.members.iter().map(|m| m.valid_loss).fold(f64::INFINITY, f64::min);
    assert!(w.valid_loss <= best_valid + 1e-12, "the grid includes each member alone: {w:?}");
}
