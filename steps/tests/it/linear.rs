//! The `linear` step: TF-IDF + logistic regression on raw tables, with `evaluate`'s outputs; the
//! same validation rows as `split`; clear errors; a sane accuracy on a slice of NSMC.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use pipe_steps::linear::Linear;
use pipe_steps::predictions::Predictions;
use pipe_steps::report::EvalMetrics;
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::text::{Split, Tokenize, TrainTokenizer};
use pipe_steps::Environment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::text_support::{message, run, run_env, table};

const FILLER: [&str; 12] =
    ["the", "movie", "was", "plot", "actor", "scene", "film", "story", "really", "quite", "so", "it"];

/// A table whose label is told by a keyword among filler words: `keywords[label]`.
fn keyword_table(rows: usize, seed: u64, labels: &[i64], keywords: &[&str]) -> (TempDir, PathBuf) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut text = String::from("id\tdocument\tlabel\n");
    for i in 0..rows {
        let class = rng.random_range(0..labels.len());
        let mut words: Vec<&str> =
            (0..rng.random_range(3..9)).map(|_| FILLER[rng.random_range(0..FILLER.len())]).collect();
        let at = rng.random_range(0..=words.len());
        words.insert(at, keywords[class]);
        let _ = writeln!(text, "{i}\t{}\t{}", words.join(" "), labels[class]);
    }
    table("t.tsv", &text)
}

fn metrics(out: &Path, name: &str) -> EvalMetrics {
    serde_json::from_slice(&fs::read(out.join(name)).unwrap()).unwrap()
}

#[test]
fn a_separable_table_is_learnt_with_evaluates_outputs() {
    let (_d1, train) = keyword_table(300, 1, &[0, 1], &["great", "awful"]);
    let (_d2, test) = keyword_table(100, 2, &[0, 1], &["great", "awful"]);
    let out = run(&Linear, json!({}), &[("train", &train), ("test", &test)]).unwrap();
    let m = metrics(out.path(), "metrics");
    assert_eq!((m.rows, m.labels.clone()), (100, vec!["0".to_string(), "1".to_string()]));
    assert_eq!(m.accuracy, 1.0, "{m:?}");
    assert_eq!(m.confusion.iter().flatten().sum::<u64>(), 100);
    let text = fs::read_to_string(out.path().join("predictions")).unwrap();
    assert!(text.starts_with("row,label,predicted,p_0,p_1\n0,"), "{text}");
    let p = Predictions::read(&out.path().join("predictions"), "predictions").unwrap();
    assert_eq!(p.len(), 100);
    assert!(p.probs.iter().all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 2e-6));
    // Without validation rows: `null` metrics and a header-only predictions file.
    assert_eq!(fs::read_to_string(out.path().join("valid_metrics")).unwrap(), "null");
    assert_eq!(fs::read_to_string(out.path().join("valid_predictions")).unwrap(), "row,label,predicted,p_0,p_1\n");
}

#[test]
fn more_than_two_classes_are_learnt_in_label_order() {
    let labels = [7, 3, 5];
    let keywords = ["great", "awful", "meh"];
    let (_d1, train) = keyword_table(400, 3, &labels, &keywords);
    let (_d2, test) = keyword_table(150, 4, &labels, &keywords);
    let (_d3, valid) = keyword_table(60, 5, &labels, &keywords);
    let out = run(&Linear, json!({"char_max": 0}), &[("train", &train), ("valid", &valid), ("test", &test)]).unwrap();
    let m = metrics(out.path(), "metrics");
    assert_eq!(m.labels, ["3", "5", "7"], "labels sorted, as `tokenize` orders them");
    assert!(m.accuracy >= 0.99, "{m:?}");
    let p = Predictions::read(&out.path().join("predictions"), "predictions").unwrap();
    assert_eq!(p.labels, ["3", "5", "7"]);
    // The probability of the true class is the highest: the columns name the right labels.
    for (row, probs) in p.probs.iter().enumerate() {
        let truth = p.labels.iter().position(|l| *l == p.truth[row]).unwrap();
        assert!(probs.iter().all(|&q| q <= probs[truth]), "row {row}: {probs:?}");
    }
    let v = metrics(out.path(), "valid_metrics");
    assert_eq!(v.rows, 60);
    assert!(v.accuracy >= 0.98, "{v:?}");
    assert_eq!(Predictions::read(&out.path().join("valid_predictions"), "valid").unwrap().len(), 60);
}

#[test]
fn held_out_rows_are_the_rows_split_holds_out_of_the_tokenized_table() {
    let (_d1, train) = keyword_table(240, 6, &[0, 1, 2], &["great", "awful", "meh"]);
    let (_d2, test) = keyword_table(30, 7, &[0, 1, 2], &["great", "awful", "meh"]);
    let tok = run(&TrainTokenizer, json!({"vocab_size": 200}), &[("data", &train)]).unwrap();
    let encoded = run(&Tokenize, json!({}), &[("data", &train), ("tokenizer", &tok.path().join("tokenizer"))]).unwrap();
    let split =
        run(&Split, json!({"valid_fraction": 0.2, "seed": 11}), &[("data", &encoded.path().join("tensors"))]).unwrap();
    let bert_valid = TensorSet::load(&split.path().join("valid")).unwrap();

    let out = run(&Linear, json!({"valid_fraction": 0.2, "seed": 11}), &[("train", &train), ("test", &test)]).unwrap();
    let valid = Predictions::read(&out.path().join("valid_predictions"), "valid").unwrap();
    assert_eq!(valid.len(), bert_valid.len());
    let bert_truth: Vec<String> = bert_valid.label_names().into_iter().map(Option::unwrap).collect();
    assert_eq!(valid.truth, bert_truth, "the same rows in the same order");
    // Another seed holds out other rows.
    let other =
        run(&Linear, json!({"valid_fraction": 0.2, "seed": 12}), &[("train", &train), ("test", &test)]).unwrap();
    let other = Predictions::read(&other.path().join("valid_predictions"), "valid").unwrap();
    assert_ne!(other.truth, valid.truth);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (_d1, train) = keyword_table(3000, 8, &[0, 1], &["great", "awful"]);
    let (_d2, test) = keyword_table(2500, 9, &[0, 1], &["great", "awful"]);
    let params = json!({"valid_fraction": 0.1});
    let inputs: [(&str, &Path); 2] = [("train", &train), ("test", &test)];
    let one = run_env(&Linear, params.clone(), &inputs, &Environment { threads: 1, ..Environment::default() }).unwrap();
    let two = run_env(&Linear, params, &inputs, &Environment { threads: 2, ..Environment::default() }).unwrap();
    for name in ["metrics", "predictions", "valid_metrics", "valid_predictions"] {
        assert_eq!(fs::read(one.path().join(name)).unwrap(), fs::read(two.path().join(name)).unwrap(), "{name}");
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let (_d1, train) = keyword_table(50, 10, &[0, 1], &["great", "awful"]);
    let (_d2, test) = keyword_table(20, 11, &[0, 1], &["great", "awful"]);
    let inputs: [(&str, &Path); 2] = [("train", &train), ("test", &test)];

    let e = message(&run(&Linear, json!({"text_column": "text"}), &inputs).unwrap_err());
    assert!(e.contains("has no column `text` (parameter `text_column`)"), "{e}");
    assert!(e.contains("help: set `text_column` to one of the columns"), "{e}");
    let e = message(&run(&Linear, json!({"label_column": "rating"}), &inputs).unwrap_err());
    assert!(e.contains("(parameter `label_column`)"), "{e}");

    let e = run(&Linear, json!({"valid_fraction": 0.2}), &[("train", &train), ("valid", &test), ("test", &test)])
        .unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("parameter `valid_fraction`"), "{e}");

    let (_d3, unknown) = table("u.tsv", "id\tdocument\tlabel\n1\tgreat film\t0\n2\tnew label\t9\n");
    let e = run(&Linear, json!({}), &[("train", &train), ("test", &unknown)]).unwrap_err().to_string();
    assert!(e.contains("input `test`: label `9` (row 1) is not among the training labels (`0`, `1`)"), "{e}");

    let (_d4, bad_label) = table("b.tsv", "id\tdocument\tlabel\n1\tgreat film\t0\n2\tbad film\t\n");
    let e = message(&run(&Linear, json!({}), &[("train", &train), ("test", &bad_label)]).unwrap_err());
    assert!(e.contains("line 3: the label `` in column `label` is empty") && e.contains("malformed: drop"), "{e}");

    let (_d5, one_label) = table("o.tsv", "id\tdocument\tlabel\n1\tgreat film\t1\n2\tbad film\t1\n");
    let e = run(&Linear, json!({}), &[("train", &one_label), ("test", &test)]).unwrap_err().to_string();
    assert!(e.contains("one label (1)"), "{e}");

    for (given, name) in [
        (json!({"C": 0.0}), "`C`"),
        (json!({"char_min": 4}), "`char_min`"),
        (json!({"word_ngrams": 0, "char_max": 0}), "`word_ngrams`"),
        (json!({"valid_fraction": 1.0}), "`valid_fraction`"),
    ] {
        let e = run(&Linear, given.clone(), &inputs).unwrap_err();
        assert!(e.is_bad_input() && e.to_string().contains(name), "{given}: {e}");
    }
}

/// The first `rows` data lines of a shared NSMC file, in a temporary table.
fn nsmc_slice(file: &str, rows: usize) -> Option<(TempDir, PathBuf)> {
    let path = pipe_steps::shared_data::shared_path(&format!("nsmc/{file}"))?;
    let text = fs::read_to_string(path).unwrap();
    let kept: Vec<&str> = text.lines().take(rows + 1).collect();
    Some(table(file, &(kept.join("\n") + "\n")))
}

#[test]
fn a_slice_of_nsmc_reaches_a_sane_accuracy() {
    let Some((_d1, train)) = nsmc_slice("ratings_train.txt", 20_000) else { return };
    let Some((_d2, test)) = nsmc_slice("ratings_test.txt", 5_000) else { return };
    let out = run(&Linear, json!({"valid_fraction": 0.05}), &[("train", &train), ("test", &test)]).unwrap();
    let m = metrics(out.path(), "metrics");
    assert_eq!(m.rows, 5_000);
    assert!(m.accuracy > 0.8, "{m:?}");
    let v: Value = serde_json::from_slice(&fs::read(out.path().join("valid_metrics")).unwrap()).unwrap();
    assert_eq!(v["rows"], 1_000);
    assert!(v["accuracy"].as_f64().unwrap() > 0.8, "{v}");
}

#[test]
fn nb_scaling_reweighs_features_for_two_labels_only() {
    // Filler words sit in both classes; the keywords decide. Naive-Bayes ratios shrink the
    // filler's weights, so the probabilities change while the (separable) answers stay right.
    let (_d1, train) = keyword_table(400, 12, &[0, 1], &["great", "awful"]);
    let (_d2, test) = keyword_table(100, 13, &[0, 1], &["great", "awful"]);
    let inputs: [(&str, &Path); 2] = [("train", &train), ("test", &test)];
    let plain = run(&Linear, json!({}), &inputs).unwrap();
    let nb = run(&Linear, json!({"nb_scaling": true}), &inputs).unwrap();
    assert_eq!(metrics(nb.path(), "metrics").accuracy, 1.0);
    let (p, q) =
        (fs::read(plain.path().join("predictions")).unwrap(), fs::read(nb.path().join("predictions")).unwrap());
    assert_ne!(p, q, "nb_scaling must change the model");
    // `false` is the plain model.
    let off = run(&Linear, json!({"nb_scaling": false}), &inputs).unwrap();
    assert_eq!(fs::read(off.path().join("predictions")).unwrap(), p);

    let (_d3, three) = keyword_table(60, 14, &[0, 1, 2], &["great", "awful", "meh"]);
    let e = run(&Linear, json!({"nb_scaling": true}), &[("train", &three), ("test", &three)]).unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("`nb_scaling`") && e.to_string().contains("two labels"), "{e}");
}
