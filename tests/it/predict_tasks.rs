//! `pipe predict` on the tasks beside single-label classification, through the real binary:
//! tiny BERTs fine-tuned in one pipeline on a multi-label column (JSON lists of topics), a
//! regression column (a rating) and sentence pairs (`text_b_column`). The command's output
//! columns and values in each `--format` (csv, jsonl, json, table; snapshots with the figures
//! filtered, since the last digits of a trained model's outputs are not the same on every
//! machine), `--text-b-column` reading the second text, and `--threshold` choosing which
//! multi-label classes are predicted.

use std::io::Write as _;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{settings, Project, Run};

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

/// `rows` rows `id<TAB>document<TAB>tags<TAB>rating`: each row is about one to three topics
/// (each with probability one half), two or three words of each, and two rated words; `tags` is
/// the JSON list of its topics, `rating` the sum of its rated words' values.
fn tagged_table(rows: usize, seed: u64) -> String {
    let mut next = generator(seed);
    let mut out = String::from("id\tdocument\ttags\trating\n");
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
        out.push_str(&format!("{i}\t{}\t{}\t{rating}\n", words.join(" "), serde_json::to_string(&names).unwrap()));
    }
    out
}

/// `rows` rows `id<TAB>question<TAB>answer<TAB>topic`: two to four words of a random topic in
/// `question`, and of the row's `topic` in `answer`; only the second text tells the label.
fn pair_table(rows: usize, seed: u64) -> String {
    let mut next = generator(seed);
    let mut out = String::from("id\tquestion\tanswer\ttopic\n");
    for i in 0..rows {
        let (a, b) = (next(3), i % 3);
        let mut words = |t: usize| (0..2 + next(3)).map(|_| TOPIC_WORDS[t][next(6)]).collect::<Vec<_>>().join(" ");
        let (q, r) = (words(a), words(b));
        out.push_str(&format!("{i}\t{q}\t{r}\t{}\n", TOPICS[b]));
    }
    out
}

/// A tokenizer on the tagged rows, one pre-trained tiny BERT, and three fine-tunes of it:
/// `multi` (the tags, `multi_label`), `rating` (`regression`) and `pair` (question + answer →
/// topic). `multi_extra` ends the `multi` step (e.g. a `threshold`).
fn pipeline(multi_extra: &str) -> String {
    format!(
        "name: tasks
steps:
  data:
    kind: download
    url: data.tsv
  pairs:
    kind: download
    url: pairs.tsv
  new:
    kind: download
    url: new.tsv
  vocab:
    kind: train-tokenizer
    inputs: {{ data: data }}
    text_column: document
    vocab_size: 200
    min_frequency: 1
  tags:
    kind: tokenize
    inputs: {{ data: data, tokenizer: vocab }}
    label_column: tags
    task: multi_label
    max_len: 24
  rated:
    kind: tokenize
    inputs: {{ data: data, tokenizer: vocab }}
    label_column: rating
    task: regression
    max_len: 24
  paired:
    kind: tokenize
    inputs: {{ data: pairs, tokenizer: vocab }}
    text_column: question
    text_b_column: answer
    label_column: topic
    max_len: 24
  pretrain:
    kind: pretrain
    inputs: {{ data: tags }}
    layers: 2
    hidden: 64
    heads: 4
    intermediate: 128
    max_positions: 24
    epochs: 1
    log_every: 0
  multi:
    kind: fine-tune
    inputs: {{ train: tags, model: pretrain.model }}
    epochs: 20
    batch_size: 8
    lr: 3e-3
    log_every: 0
{multi_extra}  rating:
    kind: fine-tune
    inputs: {{ train: rated, model: pretrain.model }}
    epochs: 20
    batch_size: 8
    lr: 3e-3
    log_every: 0
  pair:
    kind: fine-tune
    inputs: {{ train: paired, model: pretrain.model }}
    epochs: 20
    batch_size: 8
    lr: 3e-3
    log_every: 0
"
    )
}

/// New rows: one topic, two topics, and a rating word each.
const NEW: &str =
    "id\ttext\tsource\nn1\tgreat vote senate party law\tnews\nn2\tawful goal team match robot code chip\tblog\n";
/// New pairs: the answer's topic is the label; the question's is another.
const NEW_PAIRS: &str = "id\tquestion\tanswer\nq1\trobot code chip\tsenate vote party law\n\
                         q2\tvote senate law\tteam goal match coach\nq3\tgoal team coach\trobot software code\n";

fn project(multi_extra: &str) -> Project {
    let project = Project::new();
    project.write("data.tsv", &tagged_table(300, 3));
    project.write("pairs.tsv", &pair_table(300, 4));
    project.write("new.tsv", NEW);
    project.write("new_pairs.tsv", NEW_PAIRS);
    project.write("tasks.yaml", &pipeline(multi_extra));
    project.run(&["run", "tasks.yaml"]).expect_code(0);
    project
}

fn predict(project: &Project, args: &[&str]) -> Run {
    let mut all = vec!["predict"];
    all.extend_from_slice(args);
    project.run(&all).expect_code(0)
}

/// The JSON lines of a run's stdout.
fn lines(run: &Run) -> Vec<Value> {
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", run.stdout))).collect()
}

/// The classes whose probability in `row` (a jsonl object) is at least `t`, in class order.
fn over(row: &Value, t: f64) -> Vec<String> {
    let p = row["probabilities"].as_object().unwrap_or_else(|| panic!("{row}"));
    assert_eq!(p.keys().map(String::as_str).collect::<Vec<_>>(), TOPICS, "{row}");
    TOPICS.iter().filter(|c| p[**c].as_f64().unwrap() >= t).map(|c| c.to_string()).collect()
}

fn predicted(row: &Value) -> Vec<String> {
    serde_json::from_value(row["predicted"].clone()).unwrap_or_else(|e| panic!("{e}: {row}"))
}

/// Insta settings that also hide the figures (`0.1234`, `-1.5`, `3.2e-5`).
fn figures(project: &Project) -> insta::Settings {
    let mut s = settings(Some(project));
    s.add_filter(r"-?\b\d+\.\d+(e-?\d+)?", "[F]");
    s
}

#[test]
fn predict_command_on_multi_label_regression_and_pair_models_in_every_format() {
    let project = project("");

    // Multi-label: `predicted` is the list of classes at or over 0.5, then each probability.
    let jsonl = predict(&project, &["tasks.yaml:multi", "--input", "new.tsv", "--format", "jsonl"]);
    let rows = lines(&jsonl);
    assert_eq!(rows.len(), 2, "{}", jsonl.stdout);
    for r in &rows {
        assert_eq!(predicted(r), over(r, 0.5), "{r}");
        assert!(r.get("probability").is_none(), "{r}");
    }
    assert_eq!(predicted(&rows[0]), ["politics"], "{}", jsonl.stdout);
    assert_eq!(predicted(&rows[1]), ["sports", "tech"], "{}", jsonl.stdout);
    figures(&project).bind(|| insta::assert_snapshot!("multi_label_jsonl", jsonl.stdout));
    let csv = predict(&project, &["tasks.yaml:multi", "--input", "new.tsv", "--format", "csv"]);
    assert!(csv.stdout.starts_with("id,text,source,predicted,p_politics,p_sports,p_tech\n"), "{}", csv.stdout);
    figures(&project).bind(|| insta::assert_snapshot!("multi_label_csv", csv.stdout));
    let json = predict(&project, &["tasks.yaml:multi", "--input", "new.tsv", "--format", "json"]);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", json.stdout));
    assert_eq!(doc.as_array().unwrap(), &rows, "json holds the jsonl rows");
    figures(&project).bind(|| insta::assert_snapshot!("multi_label_json", json.stdout));
    let table = predict(&project, &["tasks.yaml:multi", "--input", "new.tsv"]);
    figures(&project).bind(|| insta::assert_snapshot!("multi_label_table", table.stdout));

    // --threshold chooses the classes, each time exactly those at or over it: at the smallest
    // probability every class; between the smallest predicted one and the next above it, one
    // class fewer than at 0.5.
    let mut all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()))
        .collect();
    all.sort_by(f64::total_cmp);
    let least_predicted = all.iter().position(|&p| p >= 0.5).expect("a class predicted at 0.5");
    let (low_t, high_t) = (all[0], (all[least_predicted] + all[least_predicted + 1]) / 2.0);
    let at = |t: f64| {
        let rows = lines(&predict(
            &project,
            &["tasks.yaml:multi", "--input", "new.tsv", "--format", "jsonl", "--threshold", &t.to_string()],
        ));
        for r in &rows {
            assert_eq!(predicted(r), over(r, t), "threshold {t}: {r}");
        }
        rows.iter().map(|r| predicted(r).len()).sum::<usize>()
    };
    let at_half = rows.iter().map(|r| predicted(r).len()).sum::<usize>();
    assert_eq!(at(low_t), 3 * rows.len(), "threshold {low_t}");
    assert_eq!(at(high_t), at_half - 1, "threshold {high_t}");
    let e = project.run(&["predict", "tasks.yaml:multi", "--text", "vote", "--threshold", "1.5"]).expect_code(2);
    assert!(e.stderr.contains("--threshold must be in (0, 1), got 1.5"), "{}", e.stderr);

    // Regression: one `predicted` column, the value; a high rating for "great", a low one for
    // "awful".
    let jsonl = predict(&project, &["tasks.yaml:rating", "--input", "new.tsv", "--format", "jsonl"]);
    let rows = lines(&jsonl);
    assert!(jsonl
        .stdout
        .starts_with("{\"id\":\"n1\",\"text\":\"great vote senate party law\",\"source\":\"news\",\"predicted\":"));
    assert_eq!(rows[0].as_object().unwrap().len(), 4, "the input's columns and `predicted`: {}", jsonl.stdout);
    let (high, low) = (rows[0]["predicted"].as_f64().unwrap(), rows[1]["predicted"].as_f64().unwrap());
    assert!(high > 0.5 && low < -0.5, "ratings {high} {low}");
    figures(&project).bind(|| insta::assert_snapshot!("regression_jsonl", jsonl.stdout));
    let csv = predict(&project, &["tasks.yaml:rating", "--input", "new.tsv", "--format", "csv"]);
    assert_eq!(csv.stdout.lines().next(), Some("id,text,source,predicted"), "{}", csv.stdout);
    let csv_value: f64 = csv.stdout.lines().nth(1).unwrap().rsplit(',').next().unwrap().parse().unwrap();
    assert!((csv_value - high).abs() < 1e-5, "{csv_value} vs {high}");
    figures(&project).bind(|| insta::assert_snapshot!("regression_csv", csv.stdout));
    let json = predict(&project, &["tasks.yaml:rating", "--text", "great good", "--format", "json"]);
    figures(&project).bind(|| insta::assert_snapshot!("regression_json", json.stdout));
    let table = predict(&project, &["tasks.yaml:rating", "--input", "new.tsv"]);
    figures(&project).bind(|| insta::assert_snapshot!("regression_table", table.stdout));

    // Pairs: --text-b-column reads the answer, which alone tells the topic.
    let args =
        ["tasks.yaml:pair", "--input", "new_pairs.tsv", "--text-column", "question", "--text-b-column", "answer"];
    let jsonl = predict(&project, &[&args[..], &["--format", "jsonl"]].concat());
    let rows = lines(&jsonl);
    let got: Vec<&str> = rows.iter().map(|r| r["predicted"].as_str().unwrap()).collect();
    assert_eq!(got, TOPICS, "{}", jsonl.stdout);
    figures(&project).bind(|| insta::assert_snapshot!("pair_jsonl", jsonl.stdout));
    let csv = predict(&project, &[&args[..], &["--format", "csv"]].concat());
    assert!(
        csv.stdout.starts_with("id,question,answer,predicted,probability,p_politics,p_sports,p_tech\nq1,"),
        "{}",
        csv.stdout
    );
    figures(&project).bind(|| insta::assert_snapshot!("pair_csv", csv.stdout));
    let table = predict(&project, &args);
    figures(&project).bind(|| insta::assert_snapshot!("pair_table", table.stdout));
    // Without --text-b-column the model reads the question alone (of another topic): other
    // probabilities, other labels.
    let single = lines(&predict(
        &project,
        &["tasks.yaml:pair", "--input", "new_pairs.tsv", "--text-column", "question", "--format", "jsonl"],
    ));
    assert_ne!(single[0]["probabilities"], rows[0]["probabilities"]);
    assert_ne!(single.iter().map(|r| r["predicted"].as_str().unwrap()).collect::<Vec<_>>(), TOPICS);
    // JSON lines on stdin with the second text: the same probabilities.
    let mut child = project
        .command(&[
            "predict",
            "tasks.yaml:pair",
            "--text-column",
            "question",
            "--text-b-column",
            "answer",
            "--format",
            "jsonl",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = serde_json::json!({"question": "robot code chip", "answer": "senate vote party law"});
    child.stdin.take().unwrap().write_all(format!("{first}\n").as_bytes()).unwrap();
    let stdin_run = Run::from(child.wait_with_output().unwrap()).expect_code(0);
    assert_eq!(lines(&stdin_run)[0]["probabilities"], rows[0]["probabilities"], "{}", stdin_run.stdout);
    // A second-text column that is not there: named, with the flag.
    let e = project
        .run(&[
            "predict",
            "tasks.yaml:pair",
            "--input",
            "new_pairs.tsv",
            "--text-column",
            "question",
            "--text-b-column",
            "reply",
        ])
        .expect_code(2);
    assert!(e.stderr.contains("no column `reply` (--text-b-column)"), "{}", e.stderr);
}

/// The threshold a multi-label model was trained at is stored in its config.json
/// (`multi_label_threshold`, read by Python as `model.config.multi_label_threshold`), and is what
/// `pipe predict`, the `predict` step and `evaluate` score at unless told otherwise; and
/// `class_weights` given as a YAML map by label name.
#[test]
fn a_multi_label_model_keeps_its_threshold_and_predict_uses_it() {
    let steps = "    threshold: 0.002
  scored:
    kind: predict
    inputs: { data: new, model: multi.model }
    text_column: text
    output_format: jsonl
  scored_half:
    kind: predict
    inputs: { data: new, model: multi.model }
    text_column: text
    output_format: jsonl
    threshold: 0.5
  evaluated:
    kind: evaluate
    inputs: { data: tags, model: multi.model }
  weighted:
    kind: fine-tune
    inputs: { train: tags, model: pretrain.model }
    epochs: 1
    log_every: 0
    class_weights: { sports: 2.5 }
";
    let project = project(steps);
    let run = project.run(&["run", "tasks.yaml", "--json"]).expect_code(0);
    let output = |step: &str, name: &str| {
        let steps = run.json()["steps"].as_array().unwrap().clone();
        let key = steps.iter().find(|s| s["name"] == step).unwrap()["key"].as_str().unwrap().to_string();
        project.output(&key, name)
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}: {path:?}"));
    let config: Value = serde_json::from_str(&read(output("multi", "model").join("config.json"))).unwrap();
    assert_eq!(config["multi_label_threshold"], 0.002, "{config}");
    let rating: Value = serde_json::from_str(&read(output("rating", "model").join("config.json"))).unwrap();
    assert!(rating.get("multi_label_threshold").is_none(), "a regression model has none: {rating}");

    // pipe predict: the stored threshold by default, --threshold over it.
    let stored = lines(&predict(&project, &["tasks.yaml:multi", "--input", "new.tsv", "--format", "jsonl"]));
    let half = lines(&predict(
        &project,
        &["tasks.yaml:multi", "--input", "new.tsv", "--format", "jsonl", "--threshold", "0.5"],
    ));
    for (s, h) in stored.iter().zip(&half) {
        assert_eq!(predicted(s), over(s, 0.002), "{s}");
        assert_eq!(predicted(h), over(h, 0.5), "{h}");
    }
    assert_ne!(
        stored.iter().map(predicted).collect::<Vec<_>>(),
        half.iter().map(predicted).collect::<Vec<_>>(),
        "the two thresholds choose the same classes here, so this test shows nothing"
    );
    // The step: the same, by default and with `threshold`.
    let step: Vec<Value> =
        read(output("scored", "predictions")).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let step_half: Vec<Value> =
        read(output("scored_half", "predictions")).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(step.iter().map(predicted).collect::<Vec<_>>(), stored.iter().map(predicted).collect::<Vec<_>>());
    assert_eq!(step_half.iter().map(predicted).collect::<Vec<_>>(), half.iter().map(predicted).collect::<Vec<_>>());
    // class_weights as a YAML map by label name: the labels it does not name weigh 1.
    let weighted: Value = serde_json::from_str(&read(output("weighted", "metrics"))).unwrap();
    assert_eq!(weighted["class_weights"], serde_json::json!([1.0, 2.5, 1.0]));
    // evaluate scores at it too.
    let metrics: Value = serde_json::from_str(&read(output("evaluated", "metrics"))).unwrap();
    assert_eq!(metrics["threshold"].as_f64().map(|t| (t - 0.002).abs() < 1e-6), Some(true), "{metrics}");
}
