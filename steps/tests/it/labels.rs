//! Labels by name: a table with string labels (`topic` = politics/sports/tech) through
//! `train-tokenizer`, `tokenize`, a tiny `pretrain` and `fine-tune`, `evaluate`, `predict`,
//! `linear` and `ensemble`: the names reach the tensor set, `config.json`'s `id2label`, the
//! metrics and the predictions; a label unseen in training is an error naming it and its rows;
//! with `PIPE_PYTHON`, steps/tests/reference/hf_predict.py loads the model in `transformers` and
//! (with torch) reproduces `predict`'s probabilities from the raw text.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipe_steps::bert::{Evaluate, FineTune, Predict, Pretrain};
use pipe_steps::ensemble::Ensemble;
use pipe_steps::linear::Linear;
use pipe_steps::report::EvalMetrics;
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::text::train_tokenizer::TrainTokenizer;
use pipe_steps::text::Tokenize;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::text_support::{message, run, table};

const TOPICS: [&str; 3] = ["politics", "sports", "tech"];

/// `rows` rows `id<TAB>document<TAB>topic` whose topics use their own words (one word in six
/// from another topic), topics in turn unless `only` limits them.
fn topic_table(rows: usize, seed: u64, only: &[usize]) -> String {
    let words = [
        ["vote", "senate", "party", "law", "minister", "election"],
        ["goal", "match", "team", "coach", "league", "score"],
        ["chip", "software", "robot", "cloud", "code", "device"],
    ];
    let mut state = seed;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let mut out = String::from("id\tdocument\ttopic\n");
    for i in 0..rows {
        let topic = only[i % only.len()];
        let text: Vec<&str> = (0..4 + next(4))
            .map(|_| {
                let from = if next(6) == 0 { next(3) } else { topic };
                words[from][next(6)]
            })
            .collect();
        out.push_str(&format!("{}\t{}\t{}\n", 1000 + i, text.join(" "), TOPICS[topic]));
    }
    out
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// A trained tokenizer, the tokenized train/valid/test tables and a tiny pre-trained BERT.
struct Topics {
    _dirs: Vec<TempDir>,
    tables: [PathBuf; 3],
    sets: [PathBuf; 3],
    pretrained: PathBuf,
}

fn topics() -> Topics {
    let mut dirs = Vec::new();
    // The test set lacks `tech`: classes are matched by name, not by id.
    let texts = [topic_table(240, 1, &[0, 1, 2]), topic_table(60, 2, &[0, 1, 2]), topic_table(40, 3, &[0, 1])];
    let mut tables = Vec::new();
    for (name, text) in ["train.tsv", "valid.tsv", "test.tsv"].iter().zip(&texts) {
        let (d, p) = table(name, text);
        dirs.push(d);
        tables.push(p);
    }
    let vocab = run(&TrainTokenizer, json!({"vocab_size": 200, "min_frequency": 1}), &[("data", &tables[0])]).unwrap();
    let tokenizer = vocab.path().join("tokenizer");
    let mut sets = Vec::new();
    for t in &tables {
        let out =
            run(&Tokenize, json!({"label_column": "topic", "max_len": 16}), &[("data", t), ("tokenizer", &tokenizer)])
                .unwrap();
        sets.push(out.path().join("tensors"));
        dirs.push(out);
    }
    let pretrain = run(
        &Pretrain,
        json!({"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "max_positions": 16, "batch_size": 16,
               "epochs": 1, "log_every": 0}),
        &[("data", &sets[0])],
    )
    .unwrap();
    let pretrained = pretrain.path().join("model");
    dirs.push(vocab);
    dirs.push(pretrain);
    Topics { _dirs: dirs, tables: tables.try_into().unwrap(), sets: sets.try_into().unwrap(), pretrained }
}

fn fine_tune(t: &Topics) -> TempDir {
    run(
        &FineTune,
        json!({"epochs": 6, "batch_size": 8, "lr": 1e-3, "log_every": 0}),
        &[("train", &t.sets[0]), ("valid", &t.sets[1]), ("test", &t.sets[2]), ("model", &t.pretrained)],
    )
    .unwrap()
}

#[test]
fn string_labels_get_sorted_ids_names_in_the_model_metrics_and_predictions() {
    let t = topics();
    let train = TensorSet::load(&t.sets[0]).unwrap();
    assert_eq!(train.meta.label_names, TOPICS);
    assert_eq!(train.meta.label_values, [0, 1, 2]);
    assert_eq!(&train.labels[..4], [0, 1, 2, 0], "ids in sorted order of the names");
    let meta = json_file(&t.sets[0].join("meta.json"));
    assert_eq!(meta["label_names"], json!(TOPICS));
    // The test table has two topics: its own ids, the same names.
    assert_eq!(TensorSet::load(&t.sets[2]).unwrap().meta.label_names, ["politics", "sports"]);

    let tuned = fine_tune(&t);
    let model = tuned.path().join("model");
    let config = json_file(&model.join("config.json"));
    assert_eq!(config["id2label"], json!({"0": "politics", "1": "sports", "2": "tech"}));
    assert_eq!(config["label2id"], json!({"politics": 0, "sports": 1, "tech": 2}));
    assert_eq!(config["num_labels"], json!(3));
    let training = json_file(&tuned.path().join("metrics"));
    let last = training["epochs"].as_array().unwrap().last().unwrap().clone();
    assert!(last["valid_accuracy"].as_f64().unwrap() > 0.6, "{last}");

    let evaluated = run(&Evaluate, json!({}), &[("data", &t.sets[2]), ("model", &model)]).unwrap();
    let metrics: EvalMetrics = serde_json::from_value(json_file(&evaluated.path().join("metrics"))).unwrap();
    assert_eq!(metrics.labels, TOPICS);
    assert_eq!(metrics.confusion.len(), 3);
    assert_eq!(metrics.support(), [20, 20, 0]);
    assert!(metrics.weighted_f1() > 0.0 && metrics.weighted_f1() <= 1.0);
    let predictions = fs::read_to_string(evaluated.path().join("predictions")).unwrap();
    assert!(predictions.starts_with("row,label,predicted,p_politics,p_sports,p_tech\n0,politics,"), "{predictions}");

    // A label the model does not know: named, with its rows.
    let (_d, odd) =
        table("odd.tsv", "id\tdocument\ttopic\n1\tvote law\tpolitics\n2\tgoal team\tweather\n3\tcode\tweather\n");
    let vocab = model.join("tokenizer.json");
    let odd_set =
        run(&Tokenize, json!({"label_column": "topic", "max_len": 16}), &[("data", &odd), ("tokenizer", &vocab)])
            .unwrap();
    let odd_set = odd_set.path().join("tensors");
    let e = run(&Evaluate, json!({}), &[("data", &odd_set), ("model", &model)]).unwrap_err();
    assert!(e.is_bad_input());
    assert!(
        message(&e).contains(
            "input `data`: label `weather` (rows 1, 2) is not among the model's labels (`politics`, `sports`, `tech`)"
        ),
        "{}",
        message(&e)
    );
    let e = run(
        &FineTune,
        json!({"epochs": 1, "log_every": 0}),
        &[("train", &t.sets[0]), ("valid", &odd_set), ("model", &t.pretrained)],
    )
    .unwrap_err();
    assert!(
        message(&e).contains("input `valid`: label `weather` (rows 1, 2) is not among the training labels"),
        "{}",
        message(&e)
    );
    assert!(message(&e).contains("help: train, valid and test must share one label set"), "{}", message(&e));

    // predict: an unlabelled table with its own columns.
    let (_u, unlabelled) = table(
        "new.tsv",
        "id\tdocument\tsource\nn1\tthe senate passed the law\tnews, daily\nn2\tthe team scored a goal\tblog\nn3\tnew robot software\t\"quoted\"\n",
    );
    let out = run(&Predict, json!({}), &[("data", &unlabelled), ("model", &model)]).unwrap();
    let csv = fs::read_to_string(out.path().join("predictions")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,document,source,predicted,probability,p_politics,p_sports,p_tech");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].starts_with("n1,the senate passed the law,\"news, daily\","), "{csv}");
    assert!(lines[3].starts_with("n3,new robot software,\"\"\"quoted\"\"\","), "{csv}");
    let out = run(&Predict, json!({"output_format": "jsonl"}), &[("data", &unlabelled), ("model", &model)]).unwrap();
    let jsonl = fs::read_to_string(out.path().join("predictions")).unwrap();
    let rows: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    assert!(
        jsonl.starts_with(
            "{\"id\":\"n1\",\"document\":\"the senate passed the law\",\"source\":\"news, daily\",\"predicted\":"
        ),
        "{jsonl}"
    );
    for r in &rows {
        let p = r["probabilities"].as_object().unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), TOPICS.iter().collect::<Vec<_>>());
        let sum: f64 = p.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{r}");
        let best = p.iter().max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap())).unwrap();
        assert_eq!(r["predicted"].as_str(), Some(best.0.as_str()), "{r}");
        assert_eq!(r["probability"], *best.1);
    }
    // The three texts are clear cases of their topics.
    let predicted: Vec<&str> = rows.iter().map(|r| r["predicted"].as_str().unwrap()).collect();
    assert_eq!(predicted, TOPICS, "{jsonl}");

    // An input column named like an output column is an error.
    let (_c, clash) = table("clash.tsv", "document\tpredicted\nvote\tx\n");
    let e = run(&Predict, json!({}), &[("data", &clash), ("model", &model)]).unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("column `predicted`"), "{e}");

    // The validation table's 60 texts, for Python to predict too.
    let out = run(&Predict, json!({}), &[("data", &t.tables[1]), ("model", &model)]).unwrap();
    round_trip_in_transformers(&model, &out.path().join("predictions"));
}

/// The Python interpreter with `transformers`, or `None` (with a notice) outside CI.
fn python() -> Option<String> {
    let python = std::env::var("PIPE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python).args(["-c", "import transformers, tokenizers, numpy"]).output();
    let why = match probe {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string(),
        Err(e) => e.to_string(),
    };
    let message = format!("`{python}` cannot import transformers, tokenizers and numpy ({why}); set PIPE_PYTHON");
    if std::env::var_os("CI").is_some() {
        panic!("{message} (CI is set, so this is an error)");
    }
    eprintln!("notice: skipping: {message}");
    None
}

fn round_trip_in_transformers(model: &Path, predictions: &Path) {
    let Some(python) = python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/hf_predict.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(model)
        .arg(predictions)
        .args(["--labels", &TOPICS.join(","), "--text-column", "document"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} disagrees with pipe:\n{stdout}\n{stderr}", script.display());
    assert!(stdout.contains("OK: config id2label ['politics', 'sports', 'tech']"), "{stdout}");
    if !stdout.contains("SKIP torch") {
        assert!(stdout.contains("OK: 60 rows from raw text"), "{stdout}");
        assert!(stdout.contains("OK: pipeline returns the names"), "{stdout}");
    }
    eprintln!("{stdout}");
}

#[test]
fn linear_and_ensemble_take_string_labels_and_three_classes() {
    let texts = [topic_table(240, 1, &[0, 1, 2]), topic_table(60, 2, &[0, 1, 2]), topic_table(40, 3, &[0, 1])];
    let paths: Vec<(TempDir, PathBuf)> =
        ["train.tsv", "valid.tsv", "test.tsv"].iter().zip(&texts).map(|(n, t)| table(n, t)).collect();
    let inputs = [("train", paths[0].1.as_path()), ("valid", paths[1].1.as_path()), ("test", paths[2].1.as_path())];
    let a = run(&Linear, json!({"label_column": "topic"}), &inputs).unwrap();
    let metrics: EvalMetrics = serde_json::from_value(json_file(&a.path().join("metrics"))).unwrap();
    assert_eq!(metrics.labels, TOPICS);
    assert!(metrics.accuracy > 0.8, "{metrics:?}");
    let valid = fs::read_to_string(a.path().join("valid_predictions")).unwrap();
    assert!(valid.starts_with("row,label,predicted,p_politics,p_sports,p_tech\n"), "{valid}");

    let e = run(&Linear, json!({"label_column": "topic", "nb_scaling": true}), &inputs).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(e.to_string().contains("needs exactly two labels") && e.to_string().contains("`tech`"), "{e}");

    // A test label the training rows lack.
    let (_w, weather) = table("w.tsv", "id\tdocument\ttopic\n1\tvote\tpolitics\n2\tsunny\tweather\n");
    let e = run(&Linear, json!({"label_column": "topic"}), &[inputs[0], ("test", &weather)]).unwrap_err();
    assert!(e.to_string().contains("input `test`: label `weather` (row 1) is not among the training labels"), "{e}");

    // Two linear members (different n-grams) in an ensemble: names carried through.
    let b = run(&Linear, json!({"label_column": "topic", "char_max": 0}), &inputs).unwrap();
    let (va, ta) = (a.path().join("valid_predictions"), a.path().join("predictions"));
    let (vb, tb) = (b.path().join("valid_predictions"), b.path().join("predictions"));
    let e = run(&Ensemble, json!({}), &[("valid_a", &va), ("test_a", &ta), ("valid_b", &vb), ("test_b", &tb)]).unwrap();
    let metrics: EvalMetrics = serde_json::from_value(json_file(&e.path().join("metrics"))).unwrap();
    assert_eq!(metrics.labels, TOPICS);
    let predictions = fs::read_to_string(e.path().join("predictions")).unwrap();
    assert!(predictions.starts_with("row,label,predicted,p_politics,p_sports,p_tech\n0,politics,"), "{predictions}");
}
