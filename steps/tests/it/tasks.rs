//! The tasks beside single-label classification, and sentence pairs, through the real step
//! kinds: `tokenize` reads multi-label columns (JSON lists, a `label_separator`, a JSON Lines
//! list column) and regression columns and names bad cells; `fine-tune`, `evaluate` and `predict`
//! learn and score a multi-label and a regression task on small synthetic tables (a figure well
//! above chance asserted), `config.json` carries Hugging Face's `problem_type`, and with
//! `PIPE_PYTHON` steps/tests/reference/hf_predict.py reproduces pipe's probabilities (values)
//! from the raw text in `transformers` (with torch); `linear` and `ensemble` refuse the new
//! tasks by name; and pairs go through tokenize, fine-tune, evaluate, predict and report.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipe_steps::bert::{Evaluate, FineTune, Predict, Pretrain};
use pipe_steps::ensemble::Ensemble;
use pipe_steps::linear::Linear;
use pipe_steps::report::{EvalMetrics, RegressionMetrics, ReportStep, TrainingMetrics};
use pipe_steps::task::Task;
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::text::train_tokenizer::TrainTokenizer;
use pipe_steps::text::Tokenize;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::text_support::{message, run, table};

const TOPICS: [&str; 3] = ["politics", "sports", "tech"];
const TOPIC_WORDS: [[&str; 6]; 3] = [
    ["vote", "senate", "party", "law", "minister", "election"],
    ["goal", "match", "team", "coach", "league", "score"],
    ["chip", "software", "robot", "cloud", "code", "device"],
];
/// Words and what each adds to a row's `rating`.
const RATED: [(&str, f64); 6] =
    [("great", 2.0), ("good", 1.0), ("fine", 0.0), ("plain", 0.0), ("bad", -1.0), ("awful", -2.0)];

/// A linear congruential generator: `next(n)` in `0..n`.
fn generator(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |n| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    }
}

/// `rows` rows `id<TAB>document<TAB>tags<TAB>piped<TAB>rating`: each row is about one to three
/// topics (each with probability one half), two or three words of each, and two rated words;
/// `tags` is the JSON list of its topics, `piped` the same joined by `|`, `rating` the sum of
/// its rated words' values.
fn tagged_table(rows: usize, seed: u64) -> String {
    let mut next = generator(seed);
    let mut out = String::from("id\tdocument\ttags\tpiped\trating\n");
    for i in 0..rows {
        let mut topics: Vec<usize> = (0..3).filter(|_| next(2) == 0).collect();
        if topics.is_empty() {
            topics.push(next(3));
        }
        let mut words: Vec<&str> = Vec::new();
        for &t in &topics {
            words.extend((0..2 + next(2)).map(|_| TOPIC_WORDS[t][next(6)]));
        }
        let mut rating = 0.0;
        for _ in 0..2 {
            let (w, v) = RATED[next(6)];
            words.insert(next(words.len() + 1), w);
            rating += v;
        }
        let names: Vec<&str> = topics.iter().map(|&t| TOPICS[t]).collect();
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{rating}\n",
            100 + i,
            words.join(" "),
            serde_json::to_string(&names).unwrap(),
            names.join("|")
        ));
    }
    out
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// A tokenizer trained on `text`.
fn tokenizer(text: &Path) -> TempDir {
    run(&TrainTokenizer, json!({"vocab_size": 200, "min_frequency": 1}), &[("data", text)]).unwrap()
}

fn tokenize(params: Value, data: &Path, tokenizer: &Path) -> TempDir {
    run(&Tokenize, params, &[("data", data), ("tokenizer", tokenizer)]).unwrap_or_else(|e| panic!("{}", message(&e)))
}

#[test]
fn multi_label_and_regression_columns_are_read_in_every_form_and_bad_cells_are_named() {
    let (_d, data) = table("data.tsv", &tagged_table(30, 1));
    let vocab = tokenizer(&data);
    let tok = vocab.path().join("tokenizer");

    let json_form = tokenize(json!({"label_column": "tags", "task": "multi_label", "max_len": 24}), &data, &tok);
    let set = TensorSet::load(&json_form.path().join("tensors")).unwrap();
    assert_eq!(set.meta.task, Task::MultiLabel);
    assert_eq!(set.meta.label_names, TOPICS);
    assert_eq!(set.meta.target_width(), 3);
    assert!(set.labels.iter().all(|&l| l == -1));
    // Row 0's topics, multi-hot.
    let text = tagged_table(30, 1);
    let first: Vec<&str> = text.lines().nth(1).unwrap().split('\t').collect();
    let tags: Vec<String> = serde_json::from_str(first[2]).unwrap();
    let hot: Vec<f32> = TOPICS.iter().map(|t| if tags.contains(&t.to_string()) { 1.0 } else { 0.0 }).collect();
    assert_eq!(set.targets_of(0), hot.as_slice());
    let meta = json_file(&json_form.path().join("tensors/meta.json"));
    assert_eq!(meta["task"], "multi_label");

    // The same labels joined by a separator, and as a JSON Lines list column: the same targets.
    let piped = tokenize(
        json!({"label_column": "piped", "task": "multi_label", "label_separator": "|", "max_len": 24}),
        &data,
        &tok,
    );
    assert_eq!(TensorSet::load(&piped.path().join("tensors")).unwrap().targets, set.targets);
    let jsonl: String = text
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let tags: Value = serde_json::from_str(c[2]).unwrap();
            format!("{}\n", json!({"id": c[0], "document": c[1], "tags": tags}))
        })
        .collect();
    let (_j, jsonl_path) = table("data.jsonl", &jsonl);
    let listed = tokenize(json!({"label_column": "tags", "task": "multi_label", "max_len": 24}), &jsonl_path, &tok);
    assert_eq!(TensorSet::load(&listed.path().join("tensors")).unwrap().targets, set.targets);

    // Regression: the value as a float target.
    let rated = tokenize(json!({"label_column": "rating", "task": "regression", "max_len": 24}), &data, &tok);
    let rated = TensorSet::load(&rated.path().join("tensors")).unwrap();
    assert_eq!((rated.meta.task, rated.meta.label_names.clone()), (Task::Regression, vec!["rating".to_string()]));
    assert_eq!(rated.targets[0], first[4].parse::<f32>().unwrap());
    // `task: single_label` is the default's key (no `task` in the resolved parameters).
    let resolved = pipe_steps::Step::resolve(
        &Tokenize,
        &crate::text_support::params(&Tokenize, json!({"task": "single_label"})),
        &pipe_steps::Environment::default(),
    )
    .unwrap();
    assert!(resolved.get("task").is_none());

    // Bad cells: the file, the line and the column, with what to do.
    let (_b, bad) =
        table("bad.tsv", "document\ttags\trating\nvote law\t[\"politics\"]\t1.5\ngoal team\tsports\tlots\n");
    let e =
        run(&Tokenize, json!({"label_column": "tags", "task": "multi_label"}), &[("data", &bad), ("tokenizer", &tok)])
            .unwrap_err();
    assert!(e.is_bad_input());
    let m = message(&e);
    assert!(
        m.contains(
            "bad.tsv line 3: the label `sports` in column `tags` is not a JSON list of labels (task multi_label)"
        ),
        "{m}"
    );
    assert!(m.contains("help: write each row's labels as a JSON list") && m.contains("label_separator"), "{m}");
    let e =
        run(&Tokenize, json!({"label_column": "rating", "task": "regression"}), &[("data", &bad), ("tokenizer", &tok)])
            .unwrap_err();
    assert!(
        message(&e).contains("bad.tsv line 3: the label `lots` in column `rating` is not a number (task regression)")
    );
    let dropped = tokenize(json!({"label_column": "rating", "task": "regression", "malformed": "drop"}), &bad, &tok);
    assert_eq!(TensorSet::load(&dropped.path().join("tensors")).unwrap().targets, [1.5]);
    let e =
        run(&Tokenize, json!({"label_column": "tags", "label_separator": "|"}), &[("data", &bad), ("tokenizer", &tok)])
            .unwrap_err();
    assert!(e.to_string().contains("`label_separator` applies to `task: multi_label` only"), "{e}");

    // linear fits single-label classifiers only, and says so by the task's name.
    let e = run(&Linear, json!({"label_column": "tags", "task": "multi_label"}), &[("train", &data), ("test", &data)])
        .unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(message(&e).contains("step kind `linear` fits and combines single-label classifiers (N classes) only"));
    assert!(message(&e).contains("parameter `task` is `multi_label`, which it does not support"), "{}", message(&e));
    let e = run(&Linear, json!({"label_column": "rating", "task": "regression"}), &[("train", &data), ("test", &data)])
        .unwrap_err();
    assert!(message(&e).contains("`regression`, which it does not support"), "{}", message(&e));
}

/// A tokenizer, the train/valid/test tables tokenized with `params` and a tiny pre-trained BERT.
struct Tasks {
    _dirs: Vec<TempDir>,
    tables: [PathBuf; 3],
    sets: [PathBuf; 3],
    pretrained: PathBuf,
}

fn prepare(params: Value) -> Tasks {
    let mut dirs = Vec::new();
    let mut tables = Vec::new();
    for (name, (rows, seed)) in ["train.tsv", "valid.tsv", "test.tsv"].iter().zip([(300, 11), (80, 12), (80, 13)]) {
        let (d, p) = table(name, &tagged_table(rows, seed));
        dirs.push(d);
        tables.push(p);
    }
    let vocab = tokenizer(&tables[0]);
    let tok = vocab.path().join("tokenizer");
    let mut sets = Vec::new();
    for t in &tables {
        let out = tokenize(params.clone(), t, &tok);
        sets.push(out.path().join("tensors"));
        dirs.push(out);
    }
    let pretrain = run(
        &Pretrain,
        json!({"layers": 2, "hidden": 64, "heads": 4, "intermediate": 128, "max_positions": 32, "batch_size": 16,
               "epochs": 1, "log_every": 0}),
        &[("data", &sets[0])],
    )
    .unwrap();
    let pretrained = pretrain.path().join("model");
    dirs.push(vocab);
    dirs.push(pretrain);
    Tasks { _dirs: dirs, tables: tables.try_into().unwrap(), sets: sets.try_into().unwrap(), pretrained }
}

fn fine_tune(t: &Tasks, params: Value) -> TempDir {
    let mut given = json!({"epochs": 20, "batch_size": 8, "lr": 3e-3, "log_every": 0});
    given.as_object_mut().unwrap().extend(params.as_object().unwrap().clone());
    run(
        &FineTune,
        given,
        &[("train", &t.sets[0]), ("valid", &t.sets[1]), ("test", &t.sets[2]), ("model", &t.pretrained)],
    )
    .unwrap_or_else(|e| panic!("{}", message(&e)))
}

#[test]
fn multi_label_models_learn_export_problem_type_and_predict_the_labels_over_the_threshold() {
    let t = prepare(json!({"label_column": "tags", "task": "multi_label", "max_len": 24}));
    let tuned = fine_tune(&t, json!({"select_by": "micro_f1"}));
    let model = tuned.path().join("model");
    let config = json_file(&model.join("config.json"));
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["num_labels"], 3);
    assert_eq!(config["id2label"], json!({"0": "politics", "1": "sports", "2": "tech"}));
    let training: TrainingMetrics = serde_json::from_value(json_file(&tuned.path().join("metrics"))).unwrap();
    assert_eq!(training.task, Task::MultiLabel);
    let chosen = training.chosen().unwrap().0;
    assert!(chosen.valid_micro_f1.is_some() && chosen.valid_macro_f1.is_some(), "{chosen:?}");

    let evaluated = run(&Evaluate, json!({}), &[("data", &t.sets[2]), ("model", &model)]).unwrap();
    let m: EvalMetrics = serde_json::from_value(json_file(&evaluated.path().join("metrics"))).unwrap();
    assert_eq!(
        (m.task, m.labels.clone(), m.threshold),
        (Task::MultiLabel, TOPICS.map(String::from).to_vec(), Some(0.5))
    );
    // Predicting every topic for every row scores a micro F1 of about 0.7 here; nothing, 0.
    let micro = m.micro_f1.unwrap();
    eprintln!("multi_label test: micro F1 {micro:.4}, macro F1 {:.4}, subset accuracy {:.4}", m.macro_f1, m.accuracy);
    assert!(micro > 0.9 && m.macro_f1 > 0.85, "micro F1 {micro}, {m:?}");
    assert!(m.accuracy > 0.6, "subset accuracy {}", m.accuracy);
    assert_eq!(m.support().iter().sum::<u64>() as usize, {
        let set = TensorSet::load(&t.sets[2]).unwrap();
        set.targets.iter().filter(|&&v| v > 0.5).count()
    });
    let predictions = fs::read_to_string(evaluated.path().join("predictions")).unwrap();
    assert!(predictions.starts_with("row,labels,predicted,p_politics,p_sports,p_tech\n0,"), "{predictions}");

    // A multi-label model's predictions are no ensemble member.
    let p = evaluated.path().join("predictions");
    let e = run(&Ensemble, json!({}), &[("valid_a", &p), ("test_a", &p), ("valid_b", &p), ("test_b", &p)]).unwrap_err();
    assert!(
        e.is_bad_input() && message(&e).contains("holds the predictions of a `multi_label` model"),
        "{}",
        message(&e)
    );
    assert!(message(&e).contains("ensemble combines single-label classifiers (N classes) only"), "{}", message(&e));

    // predict: every class's probability and the classes at or over the threshold; a CSV input
    // with a quoted newline, read by `Table::open` as every table kind reads it.
    let (_n, new) = table(
        "new.csv",
        "id,document\nn1,\"senate vote\nlaw party\"\nn2,team goal match coach\nn3,robot code league coach\n",
    );
    let out = run(&Predict, json!({"output_format": "jsonl"}), &[("data", &new), ("model", &model)]).unwrap();
    let jsonl = fs::read_to_string(out.path().join("predictions")).unwrap();
    let rows: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{jsonl}");
    assert_eq!(rows[0]["document"], "senate vote\nlaw party");
    for r in &rows {
        let p = r["probabilities"].as_object().unwrap();
        let over: Vec<&str> = TOPICS.iter().copied().filter(|t| p[*t].as_f64().unwrap() >= 0.5).collect();
        assert_eq!(r["predicted"], json!(over), "{r}");
        assert!(r.get("probability").is_none(), "{r}");
    }
    let predicted: Vec<Value> = rows.iter().map(|r| r["predicted"].clone()).collect();
    assert_eq!(predicted, [json!(["politics"]), json!(["sports"]), json!(["sports", "tech"])], "{jsonl}");
    // A threshold of 0.99 leaves fewer classes.
    let strict =
        run(&Predict, json!({"output_format": "jsonl", "threshold": 0.999}), &[("data", &new), ("model", &model)])
            .unwrap();
    let strict = fs::read_to_string(strict.path().join("predictions")).unwrap();
    let strict_count: usize =
        strict.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["predicted"].as_array().unwrap().len()).sum();
    assert!(strict_count < 4, "{strict}");

    let out = run(&Predict, json!({}), &[("data", &t.tables[1]), ("model", &model)]).unwrap();
    let csv = fs::read_to_string(out.path().join("predictions")).unwrap();
    assert!(csv.starts_with("id,document,tags,piped,rating,predicted,p_politics,p_sports,p_tech\n"), "{csv}");
    round_trip(&model, &out.path().join("predictions"), "multi_label", &TOPICS.join(","), None, 80);

    // The report shows micro and macro F1, not a confusion matrix.
    let report = run(
        &ReportStep,
        json!({}),
        &[("training", &tuned.path().join("metrics")), ("evaluation", &evaluated.path().join("metrics"))],
    )
    .unwrap();
    let md = fs::read_to_string(report.path().join("report/report.md")).unwrap();
    assert!(md.contains("## Metrics per epoch") && md.contains("valid micro F1"), "{md}");
    assert!(md.contains(&format!("micro F1 {micro:.4}")) && md.contains("| label"), "{md}");
    assert!(!md.contains("true \\ predicted"), "{md}");
    let html = fs::read_to_string(report.path().join("report/report.html")).unwrap();
    assert!(html.contains("micro F1 per epoch") && html.contains(&format!("micro F1 {micro:.4}")), "{html}");
}

#[test]
fn regression_models_learn_export_num_labels_one_and_predict_the_value() {
    let t = prepare(json!({"label_column": "rating", "task": "regression", "max_len": 24}));
    let e = run(
        &FineTune,
        json!({"epochs": 1, "select_by": "macro_f1", "log_every": 0}),
        &[("train", &t.sets[0]), ("valid", &t.sets[1]), ("model", &t.pretrained)],
    )
    .unwrap_err();
    assert!(message(&e).contains("`select_by: macro_f1` does not apply to the training set's task `regression`"));
    assert!(message(&e).contains("mse, pearson, spearman"), "{}", message(&e));

    let tuned = fine_tune(&t, json!({}));
    let model = tuned.path().join("model");
    let config = json_file(&model.join("config.json"));
    assert_eq!(config["problem_type"], "regression");
    assert_eq!((config["num_labels"].clone(), config["id2label"].clone()), (json!(1), json!({"0": "rating"})));
    let training: TrainingMetrics = serde_json::from_value(json_file(&tuned.path().join("metrics"))).unwrap();
    assert_eq!(training.select_by, pipe_steps::report::SelectBy::Mse, "regression chooses by MSE by default");
    assert!(training.epochs.iter().all(|e| e.train_accuracy.is_none() && e.valid_pearson.is_some()));

    let evaluated = run(&Evaluate, json!({}), &[("data", &t.sets[2]), ("model", &model)]).unwrap();
    let m: RegressionMetrics = serde_json::from_value(json_file(&evaluated.path().join("metrics"))).unwrap();
    // Ratings are sums of two of {2, 1, 0, 0, -1, -2}: their variance is 2.67, what predicting
    // the mean scores as MSE.
    eprintln!("regression test: MSE {:.4}, Pearson {:.4}, Spearman {:.4}", m.mse, m.pearson, m.spearman);
    assert!(m.pearson > 0.9 && m.spearman > 0.85 && m.mse < 0.8, "{m:?}");
    assert_eq!((m.rows, m.target.as_str()), (80, "rating"));
    let predictions = fs::read_to_string(evaluated.path().join("predictions")).unwrap();
    assert!(predictions.starts_with("row,target,predicted\n0,"), "{predictions}");
    // A single-label model's evaluate on a regression set: named.
    let e = run(
        &Ensemble,
        json!({}),
        &[
            ("valid_a", &evaluated.path().join("predictions")),
            ("test_a", &evaluated.path().join("predictions")),
            ("valid_b", &evaluated.path().join("predictions")),
            ("test_b", &evaluated.path().join("predictions")),
        ],
    )
    .unwrap_err();
    assert!(message(&e).contains("holds the predictions of a `regression` model"), "{}", message(&e));

    // predict: the value, from a gzipped JSON Lines table.
    let lines = "{\"id\": 1, \"document\": \"great good vote\"}\n{\"id\": 2, \"document\": \"awful bad goal\"}\n";
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("new.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, lines.as_bytes()).unwrap();
    fs::write(&gz, enc.finish().unwrap()).unwrap();
    let out = run(&Predict, json!({"output_format": "jsonl"}), &[("data", &gz), ("model", &model)]).unwrap();
    let rows: Vec<Value> = fs::read_to_string(out.path().join("predictions"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (high, low) = (rows[0]["predicted"].as_f64().unwrap(), rows[1]["predicted"].as_f64().unwrap());
    assert!(high > 2.0 && low < -2.0, "{rows:?}");
    assert_eq!(rows[0]["id"], "1", "the input's columns pass through (as text)");

    let out = run(&Predict, json!({}), &[("data", &t.tables[1]), ("model", &model)]).unwrap();
    let csv = fs::read_to_string(out.path().join("predictions")).unwrap();
    assert!(csv.starts_with("id,document,tags,piped,rating,predicted\n"), "{csv}");
    round_trip(&model, &out.path().join("predictions"), "regression", "rating", None, 80);

    // The report: MSE, Pearson and Spearman instead of accuracy.
    let report = run(
        &ReportStep,
        json!({}),
        &[("training", &tuned.path().join("metrics")), ("evaluation", &evaluated.path().join("metrics"))],
    )
    .unwrap();
    let md = fs::read_to_string(report.path().join("report/report.md")).unwrap();
    assert!(md.contains("valid MSE") && md.contains("valid Pearson") && md.contains("valid Spearman"), "{md}");
    assert!(md.contains(&format!(
        "MSE {:.4}  MAE {:.4}  Pearson {:.4}  Spearman {:.4}",
        m.mse, m.mae, m.pearson, m.spearman
    )));
    assert!(md.contains("by validation MSE"), "{md}");
    assert!(!md.contains("accuracy"), "{md}");
}

/// `rows` rows `id<TAB>question<TAB>answer<TAB>match`: a question of one topic and an answer of
/// the same topic (`yes`) or another (`no`), two to four words each.
fn pair_table(rows: usize, seed: u64) -> String {
    let mut next = generator(seed);
    let mut out = String::from("id\tquestion\tanswer\tmatch\n");
    for i in 0..rows {
        let a = next(3);
        let same = next(2) == 0;
        let b = if same { a } else { (a + 1 + next(2)) % 3 };
        let words = |t: usize, next: &mut dyn FnMut(usize) -> usize| {
            (0..2 + next(3)).map(|_| TOPIC_WORDS[t][next(6)]).collect::<Vec<_>>().join(" ")
        };
        let (q, r) = (words(a, &mut next), words(b, &mut next));
        out.push_str(&format!("{i}\t{q}\t{r}\t{}\n", if same { "yes" } else { "no" }));
    }
    out
}

#[test]
fn sentence_pairs_go_through_tokenize_fine_tune_evaluate_predict_and_report() {
    let texts = [pair_table(400, 21), pair_table(80, 22), pair_table(80, 23)];
    let paths: Vec<(TempDir, PathBuf)> =
        ["train.tsv", "valid.tsv", "test.tsv"].iter().zip(&texts).map(|(n, t)| table(n, t)).collect();
    let vocab = run(
        &TrainTokenizer,
        json!({"vocab_size": 200, "min_frequency": 1, "text_column": "question"}),
        &[("data", &paths[0].1)],
    )
    .unwrap();
    let tok = vocab.path().join("tokenizer");
    let params = json!({"text_column": "question", "text_b_column": "answer", "label_column": "match", "max_len": 16});
    let sets: Vec<TempDir> = paths.iter().map(|(_, p)| tokenize(params.clone(), p, &tok)).collect();
    let train = TensorSet::load(&sets[0].path().join("tensors")).unwrap();
    assert!(train.meta.pair);
    // [CLS] a [SEP] b [SEP]: token types 0 then 1.
    assert!(train.types(0).contains(&1) && train.types(0)[0] == 0, "{:?}", train.types(0));
    let pretrain = run(
        &Pretrain,
        json!({"layers": 2, "hidden": 64, "heads": 4, "intermediate": 128, "max_positions": 16, "batch_size": 16,
               "epochs": 1, "log_every": 0}),
        &[("data", &sets[0].path().join("tensors"))],
    )
    .unwrap();
    let tuned = run(
        &FineTune,
        json!({"epochs": 30, "batch_size": 16, "lr": 1e-3, "log_every": 0}),
        &[
            ("train", &sets[0].path().join("tensors")),
            ("valid", &sets[1].path().join("tensors")),
            ("model", &pretrain.path().join("model")),
        ],
    )
    .unwrap();
    let model = tuned.path().join("model");
    let evaluated = run(&Evaluate, json!({}), &[("data", &sets[2].path().join("tensors")), ("model", &model)]).unwrap();
    let m: EvalMetrics = serde_json::from_value(json_file(&evaluated.path().join("metrics"))).unwrap();
    // Whether two texts share a topic: neither text alone tells (chance is about one half).
    eprintln!("pairs test: accuracy {:.4}, macro F1 {:.4}", m.accuracy, m.macro_f1);
    assert!(m.accuracy > 0.8, "pair accuracy {}: {m:?}", m.accuracy);

    // predict on the raw pairs: the same probabilities as evaluate's on the tokenized pairs.
    let out = run(
        &Predict,
        json!({"text_column": "question", "text_b_column": "answer"}),
        &[("data", &paths[2].1), ("model", &model)],
    )
    .unwrap();
    let predicted = fs::read_to_string(out.path().join("predictions")).unwrap();
    let evaluated_csv = fs::read_to_string(evaluated.path().join("predictions")).unwrap();
    let p_of = |line: &str, from_end: usize| -> f64 {
        let cells: Vec<&str> = line.split(',').collect();
        cells[cells.len() - from_end].parse().unwrap()
    };
    for (p, e) in predicted.lines().skip(1).zip(evaluated_csv.lines().skip(1)) {
        assert!((p_of(p, 1) - p_of(e, 1)).abs() < 1e-5, "predict {p} vs evaluate {e}");
    }
    // A pair model given single texts (no `text_b_column`) gets other inputs: not the same.
    let single =
        run(&Predict, json!({"text_column": "question"}), &[("data", &paths[2].1), ("model", &model)]).unwrap();
    assert_ne!(fs::read_to_string(single.path().join("predictions")).unwrap(), predicted);

    let report = run(
        &ReportStep,
        json!({}),
        &[("training", &tuned.path().join("metrics")), ("evaluation", &evaluated.path().join("metrics"))],
    )
    .unwrap();
    let md = fs::read_to_string(report.path().join("report/report.md")).unwrap();
    assert!(md.contains("true \\ predicted") && md.contains(&format!("accuracy {:.4}", m.accuracy)), "{md}");
    round_trip(&model, &out.path().join("predictions"), "single_label", "no,yes", Some("answer"), 80);
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

/// steps/tests/reference/hf_predict.py on a `predict` step's CSV of `rows` rows.
fn round_trip(model: &Path, predictions: &Path, task: &str, labels: &str, text_b: Option<&str>, rows: usize) {
    let Some(python) = python() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/hf_predict.py");
    let text_column = if text_b.is_some() { "question" } else { "document" };
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(model).arg(predictions).args([
        "--labels",
        labels,
        "--task",
        task,
        "--text-column",
        text_column,
    ]);
    if let Some(b) = text_b {
        cmd.args(["--text-b-column", b]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} disagrees with pipe ({task}):\n{stdout}\n{stderr}", script.display());
    assert!(stdout.contains("OK: config id2label"), "{stdout}");
    if task == "multi_label" {
        assert!(stdout.contains("OK: config.multi_label_threshold 0.5"), "{stdout}");
    }
    if !stdout.contains("SKIP torch") {
        assert!(stdout.contains(&format!("OK: {rows} rows from raw text")), "{stdout}");
        assert!(stdout.contains("OK: pipeline returns the names"), "{stdout}");
    }
    eprintln!("{task}: {stdout}");
}

/// `format` is the input table's since `predict` version 2 (`output_format` is the output's):
/// an input whose name tells no format (an upstream step's output), read as `format: jsonl`
/// and failing, gets a help line naming the rename; where the name tells the format, no help
/// of that kind is added.
#[test]
fn predict_names_the_format_rename_when_an_unnamed_input_fails_to_read() {
    let (_d, rows) = table("predictions", "id\tdocument\nn1\tvote law\n");
    let e = run(&Predict, json!({"format": "jsonl"}), &[("data", &rows)]).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    let help = e.help().unwrap_or_default();
    assert!(
        help.ends_with(
            "the output's format is `output_format` since version 2 of `predict`; `format` is the input table's \
             (leave it out to tell it from the file name)"
        ),
        "{}",
        message(&e)
    );
    let (_n, named) = table("rows.jsonl", "{\"id\": 1, \"document\": \"vote\"\n");
    let e = run(&Predict, json!({"format": "jsonl"}), &[("data", &named)]).unwrap_err();
    assert!(!message(&e).contains("output_format"), "{}", message(&e));
}
