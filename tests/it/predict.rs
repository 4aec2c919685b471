//! `pipe predict` and the `predict` step kind through the real binary, on a tiny BERT
//! fine-tuned on string labels (`topic` = politics/sports/tech): the step in a pipeline (its
//! input's columns kept, probabilities summing to 1, label names), the command with each input
//! (`--input`, `--text`, JSON lines on stdin) and format (table, csv, jsonl, json), its targets
//! (PIPELINE.yaml:STEP, a model directory) and errors; and the report naming the classes.

use std::io::Write as _;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{settings, Project, Run};

const TOPICS: [&str; 3] = ["politics", "sports", "tech"];

/// `rows` rows `id<TAB>document<TAB>topic`, each topic with its own words (one word in six from
/// another topic).
fn topic_table(rows: usize, seed: u64) -> String {
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
        let topic = i % 3;
        let text: Vec<&str> = (0..4 + next(4))
            .map(|_| {
                let from = if next(6) == 0 { next(3) } else { topic };
                words[from][next(6)]
            })
            .collect();
        out.push_str(&format!("{i}\t{}\t{}\n", text.join(" "), TOPICS[topic]));
    }
    out
}

/// New texts to predict: an `id`, the text and a column to pass through.
const NEW: &str = "id\ttext\tsource\nn1\tthe senate vote on the party law\tnews, daily\nn2\tthe team scored a goal in the match\tblog\n\
                   n3\tnew robot software\tforum\n";

const PIPELINE: &str = "name: topics
steps:
  data:
    kind: download
    url: data.tsv
  new:
    kind: download
    url: new.tsv
  vocab:
    kind: train-tokenizer
    inputs: { data: data }
    vocab_size: 200
    min_frequency: 1
  encode:
    kind: tokenize
    inputs: { data: data, tokenizer: vocab }
    label_column: topic
    max_len: 16
  pretrain:
    kind: pretrain
    inputs: { data: encode }
    layers: 1
    hidden: 32
    heads: 2
    intermediate: 64
    epochs: 1
    log_every: 0
  finetune:
    kind: fine-tune
    inputs: { train: encode, model: pretrain.model }
    epochs: 10
    batch_size: 8
    lr: 3e-3
    log_every: 0
  evaluate:
    kind: evaluate
    inputs: { data: encode, model: finetune.model }
  predict:
    kind: predict
    inputs: { data: new, model: finetune.model }
    text_column: text
    output_format: jsonl
  report:
    kind: report
    inputs: { training: finetune.metrics, evaluation: evaluate.metrics }
";

fn project() -> Project {
    let project = Project::new();
    project.write("data.tsv", &topic_table(240, 7));
    project.write("new.tsv", NEW);
    project.write("topics.yaml", PIPELINE);
    project
}

/// The JSON lines of a run's stdout.
fn lines(run: &Run) -> Vec<Value> {
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", run.stdout))).collect()
}

/// Checks one prediction object: its probabilities are the three topics' and sum to 1, and the
/// predicted label is the most probable.
fn check_prediction(r: &Value) {
    let p = r["probabilities"].as_object().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(p.keys().map(String::as_str).collect::<Vec<_>>(), TOPICS, "{r}");
    let sum: f64 = p.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "{r}");
    let best = p.iter().max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap())).unwrap();
    assert_eq!(r["predicted"].as_str(), Some(best.0.as_str()), "{r}");
    assert_eq!(&r["probability"], best.1, "{r}");
}

#[test]
fn predict_from_a_pipeline_step_with_every_input_and_format() {
    let project = project();
    // Not run yet: an error that says how to get the model.
    let not_yet = project.run(&["predict", "topics.yaml:finetune", "--text", "vote"]).expect_code(2);
    assert!(not_yet.stderr.contains("step `finetune` of topics.yaml is not cached"), "{}", not_yet.stderr);
    assert!(not_yet.stderr.contains("help: run `pipe run topics.yaml` first"), "{}", not_yet.stderr);

    let run = project.run(&["run", "topics.yaml", "--json"]).expect_code(0);
    let key_of = |step: &str| {
        let steps = run.json()["steps"].as_array().unwrap().clone();
        let s = steps.iter().find(|s| s["name"] == step).unwrap();
        s["key"].as_str().unwrap().to_string()
    };

    // The step: the input's own columns first, then the prediction.
    let step_out = std::fs::read_to_string(project.output(&key_of("predict"), "predictions")).unwrap();
    let rows: Vec<Value> = step_out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{step_out}");
    assert!(
        step_out.starts_with(
            "{\"id\":\"n1\",\"text\":\"the senate vote on the party law\",\"source\":\"news, daily\",\"predicted\":"
        ),
        "{step_out}"
    );
    for r in &rows {
        check_prediction(r);
    }
    assert_eq!(rows.iter().map(|r| r["predicted"].as_str().unwrap()).collect::<Vec<_>>(), TOPICS, "{step_out}");

    // --text, repeated; jsonl.
    let texts = project
        .run(&[
            "predict",
            "topics.yaml:finetune",
            "--text",
            "vote senate law",
            "--text",
            "goal team",
            "--format",
            "jsonl",
        ])
        .expect_code(0);
    let got = lines(&texts);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["text"], "vote senate law");
    assert_eq!((got[0]["predicted"].as_str(), got[1]["predicted"].as_str()), (Some("politics"), Some("sports")));
    got.iter().for_each(check_prediction);

    // --input: the same rows as the step, the same probabilities; csv.
    let csv = project.run(&["predict", "topics.yaml:finetune", "--input", "new.tsv", "--format", "csv"]).expect_code(0);
    let csv_lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(csv_lines[0], "id,text,source,predicted,probability,p_politics,p_sports,p_tech");
    assert!(
        csv_lines[1].starts_with("n1,the senate vote on the party law,\"news, daily\",politics,"),
        "{}",
        csv.stdout
    );
    let p_step = rows[0]["probabilities"]["politics"].as_f64().unwrap();
    let p_csv: f64 = csv_lines[1].split(',').nth(6).unwrap().parse().unwrap();
    assert!((p_step - p_csv).abs() < 1e-6, "{p_step} vs {p_csv}");

    // JSON lines on stdin, other fields (of any type) kept; json.
    let mut child = project
        .command(&["predict", "topics.yaml:finetune", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"id\": 7, \"text\": \"robot chip code\"}\n\n{\"text\": \"coach league\", \"tags\": [\"x\"]}\n")
        .unwrap();
    let stdin_run = Run::from(child.wait_with_output().unwrap()).expect_code(0);
    let doc: Value = serde_json::from_str(&stdin_run.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdin_run.stdout));
    let doc = doc.as_array().unwrap();
    assert_eq!(doc.len(), 2);
    assert_eq!((doc[0]["id"].clone(), doc[0]["predicted"].clone()), (Value::from(7), Value::from("tech")));
    assert_eq!((doc[1]["id"].clone(), doc[1]["tags"].clone()), (Value::Null, serde_json::json!(["x"])));
    doc.iter().for_each(check_prediction);

    // A model directory as the target; the table format.
    let model = project.output(&key_of("finetune"), "model");
    let table = project
        .run(&["predict", model.to_str().unwrap(), "--text", "vote senate law", "--text", "goal team match coach"])
        .expect_code(0);
    let mut s = settings(Some(&project));
    s.add_filter(r"\d\.\d{4}", "[P]");
    s.bind(|| insta::assert_snapshot!("predict_table", table.stdout));

    // The report names the classes.
    let report = project.run(&["report"]).expect_code(0);
    assert!(report.stdout.contains("true \\ predicted  politics  sports  tech"), "{}", report.stdout);
    assert!(report.stdout.contains("weighted F1"), "{}", report.stdout);
}

#[test]
fn predict_errors_name_the_problem() {
    let project = project();
    let e = project.run(&["predict", "topics.yaml:fintune", "--text", "x"]).expect_code(2);
    assert!(e.stderr.contains("topics.yaml has no step `fintune` did you mean `finetune`?"), "{}", e.stderr);
    let e = project.run(&["predict", "topics.yaml:vocab", "--text", "x"]).expect_code(2);
    assert!(e.stderr.contains("step `vocab` (train-tokenizer) has no `model` output"), "{}", e.stderr);
    assert!(e.stderr.contains("pretrain, finetune"), "{}", e.stderr);
    let e = project.run(&["predict", "no/such/dir", "--text", "x"]).expect_code(2);
    assert!(e.stderr.contains("no/such/dir"), "{}", e.stderr);
    // A directory that is a model but not a classifier: pretrain's.
    project.run(&["run", "topics.yaml"]).expect_code(0);
    let e = project.run(&["predict", "topics.yaml:pretrain", "--text", "x"]).expect_code(2);
    assert!(e.stderr.contains("not a classification model"), "{}", e.stderr);
    let e = project.run(&["predict", "topics.yaml:finetune"]).expect_code(2);
    assert!(e.stderr.contains("no texts to predict"), "{}", e.stderr);
    let e = project.run(&["predict", "topics.yaml:finetune", "--input", "data.tsv"]).expect_code(2);
    assert!(e.stderr.contains("no column `text` (--text-column)"), "{}", e.stderr);
    assert!(e.stderr.contains("did you mean `topic`?") || e.stderr.contains("`document`"), "{}", e.stderr);
}

/// A pipeline written for `predict` version 1, where `format` was the output's: the input's name
/// says another format, so the run stops before anything runs and names the rename. Where the
/// names agree, `format` is the input's as in every table kind.
#[test]
fn predicts_old_format_parameter_is_an_error_naming_the_rename() {
    let project = project();
    for old in ["format: jsonl", "format: csv"] {
        project.write("topics.yaml", &PIPELINE.replace("output_format: jsonl", old));
        let e = project.run(&["run", "topics.yaml"]).expect_code(2);
        assert!(
            e.stderr.contains(&format!("step `predict`: parameter `{old}` reads the input `data` (")),
            "{}",
            e.stderr
        );
        assert!(e.stderr.contains("and its name says tsv"), "{}", e.stderr);
        assert!(
            e.stderr.contains("help: the output's format is `output_format` since version 2 of `predict`; `format` is the input table's"),
            "{}",
            e.stderr
        );
        assert!(project.entries().is_empty(), "nothing ran");
    }
    // The input's own format, named: no error.
    project.write("new.jsonl", "{\"id\": \"n1\", \"text\": \"vote law\"}\n");
    project.write(
        "topics.yaml",
        &PIPELINE.replace("url: new.tsv", "url: new.jsonl").replace("output_format: jsonl", "format: jsonl"),
    );
    project.run(&["run", "topics.yaml", "--dry-run"]).expect_code(0);
}
