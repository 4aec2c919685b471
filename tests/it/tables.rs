//! Tables as users have them, through the real binary: `pipelines/text-classification.yaml` on
//! a user's CSV (given with `--set params.train=...`, relative to the working directory), the
//! same rows as JSON Lines giving byte-identical tensors (so everything from `split` on is a
//! cache hit), `sample` keeping a table's format, errors that name the user's file, and the
//! renamed `text_column` of `train-tokenizer`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::support::{settings, Project};

/// `rows` reviews written as Python's `csv` module writes them (QUOTE_MINIMAL, `\r\n`): texts
/// with commas, doubled quotes and newlines; `stars` is 1 or 5, told apart by the words.
fn reviews(rows: usize, seed: u64) -> Vec<(usize, String, u32)> {
    let words = [["dull", "awful", "poor", "boring", "hated"], ["great", "lovely", "superb", "fun", "loved"]];
    let mut state = seed;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    (0..rows)
        .map(|i| {
            let class = i % 2;
            let mut text: Vec<String> =
                (0..4 + next(4)).map(|_| words[if next(6) == 0 { 1 - class } else { class }][next(5)].into()).collect();
            match next(4) {
                0 => text.push("well, \"really\"".into()),
                1 => text.push("see:\nthe second line".into()),
                _ => {}
            }
            (i, text.join(" "), if class == 1 { 5 } else { 1 })
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn to_csv(rows: &[(usize, String, u32)]) -> String {
    let mut out = String::from("id,text,stars\r\n");
    for (id, text, stars) in rows {
        out.push_str(&format!("{id},{},{stars}\r\n", csv_field(text)));
    }
    out
}

fn to_jsonl(rows: &[(usize, String, u32)]) -> String {
    rows.iter()
        .map(|(id, text, stars)| serde_json::json!({"id": id, "text": text, "stars": stars}).to_string() + "\n")
        .collect()
}

fn key_of(run: &crate::support::Run, step: &str) -> String {
    run.json()["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pipeline() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/text-classification.yaml").display().to_string()
}

/// The README's command, with sizes small enough to run in seconds.
fn run_text_classification(project: &Project, train: &str, test: &str) -> crate::support::Run {
    let sets = [
        format!("params.train={train}"),
        format!("params.test={test}"),
        "params.label_column=stars".into(),
        "params.max_len=24".into(),
        "params.vocab_size=200".into(),
        "params.layers=1".into(),
        "params.hidden=16".into(),
        "params.heads=2".into(),
        "params.intermediate=32".into(),
        "params.pretrain_epochs=1".into(),
        "params.epochs=2".into(),
        "params.batch_size=16".into(),
        "params.lr=2e-3".into(),
    ];
    let file = pipeline();
    let mut args = vec!["run", file.as_str(), "--json"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    project.run(&args)
}

#[test]
fn text_classification_runs_on_a_users_csv_and_the_same_rows_as_jsonl_hit_the_cache() {
    let project = Project::new();
    let rows = reviews(400, 7);
    let (train, test) = rows.split_at(300);
    project.write("reviews.csv", &to_csv(train));
    project.write("reviews_test.csv", &to_csv(test));

    let first = run_text_classification(&project, "reviews.csv", "reviews_test.csv").expect_code(0);
    for (name, status) in first.statuses() {
        assert_eq!(status, "ran", "first run: step {name}");
    }
    let report = project.run(&["report", "--format", "json"]).expect_code(0).json();
    assert_eq!(report["pipeline"], "text-classification");
    let evaluation = &report["latest"]["evaluation"];
    assert_eq!(evaluation["rows"], 100, "every test row is scored: {evaluation}");
    assert!(evaluation["accuracy"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{evaluation}");
    // The linear model reads the same CSV: the words tell the classes apart.
    let linear: serde_json::Value =
        serde_json::from_slice(&fs::read(project.output(&key_of(&first, "linear"), "metrics")).unwrap()).unwrap();
    let accuracy = linear["accuracy"].as_f64().expect("linear accuracy");
    assert!(accuracy > 0.8, "linear accuracy {accuracy} on separable classes");

    // The same rows as JSON Lines: the tables are read into the same text, so the tokenizer and
    // the tensors are the same bytes, and everything from `split` on is reused.
    project.write("reviews.jsonl", &to_jsonl(train));
    project.write("reviews_test.jsonl", &to_jsonl(test));
    let second = run_text_classification(&project, "reviews.jsonl", "reviews_test.jsonl").expect_code(0);
    for step in ["train_raw", "test_raw", "vocab", "encode_train", "encode_test", "linear"] {
        assert_eq!(second.status_of(step), "ran", "{step} reads the new files");
    }
    for step in ["split", "pretrain", "finetune", "evaluate", "evaluate_valid", "ensemble", "report"] {
        assert_eq!(second.status_of(step), "cached", "{step}: its inputs are byte-identical to the CSV run's");
    }
}

#[test]
fn sample_keeps_the_tables_format_for_downstream_steps() {
    let project = Project::new();
    let rows = reviews(60, 3);
    project.write("reviews.csv", &to_csv(&rows));
    project.write("reviews.jsonl", &to_jsonl(&rows));
    let mut steps = String::new();
    for (name, file) in [("csv", "reviews.csv"), ("jsonl", "reviews.jsonl")] {
        steps.push_str(&format!(
            "  {name}_raw:
    kind: download
    url: {file}
  {name}_rows:
    kind: sample
    inputs: {{ data: {name}_raw }}
    rows: 40
    seed: 1
  {name}_encode:
    kind: tokenize
    inputs: {{ data: {name}_rows, tokenizer: vocab }}
    text_column: text
    label_column: stars
    max_len: 24
"
        ));
    }
    project.write(
        "p.yaml",
        &format!(
            "name: sampled
steps:
  vocab:
    kind: train-tokenizer
    inputs: {{ data: csv_raw }}
    text_column: text
    vocab_size: 200
{steps}"
        ),
    );
    let run = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    let key = |step: &str| {
        run.json()["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let csv_sample = fs::read_to_string(project.output(&key("csv_rows"), "file")).unwrap();
    assert!(csv_sample.starts_with("id,text,stars\n"), "a CSV sample is a CSV:\n{csv_sample}");
    assert!(csv_sample.contains(" see:\nthe second line\","), "quoted newlines stay quoted:\n{csv_sample}");
    let jsonl_sample = fs::read_to_string(project.output(&key("jsonl_rows"), "file")).unwrap();
    assert_eq!(jsonl_sample.lines().count(), 40, "a JSON Lines sample is JSON Lines:\n{jsonl_sample}");
    let tensors = |step: &str| fs::read(project.output(&key(step), "tensors").join("tensors.safetensors")).unwrap();
    assert!(tensors("csv_encode") == tensors("jsonl_encode"), "the same 40 rows, whatever the format");
}

#[test]
fn a_missing_column_names_the_users_file_and_offers_the_header() {
    let project = Project::new();
    project.write("reviews.csv", &to_csv(&reviews(10, 1)));
    project.write(
        "p.yaml",
        "name: errors
steps:
  raw:
    kind: download
    url: reviews.csv
  vocab:
    kind: train-tokenizer
    inputs: { data: raw }
    text_column: txet
",
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("/cache/"), "the message names the user's file, not the cache:\n{all}");
    let line = all.lines().filter(|l| l.contains("no column")).collect::<Vec<_>>().join("\n");
    settings(Some(&project)).bind(|| insta::assert_snapshot!("missing_column", line));
}

#[test]
fn the_old_column_parameter_of_train_tokenizer_says_its_new_name() {
    let project = Project::new();
    project.write("reviews.csv", &to_csv(&reviews(10, 1)));
    project.write(
        "p.yaml",
        "name: renamed
steps:
  raw:
    kind: download
    url: reviews.csv
  vocab:
    kind: train-tokenizer
    inputs: { data: raw }
    column: text
",
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(!project.cache().exists(), "bad input must not create the cache");
    settings(None).bind(|| insta::assert_snapshot!("renamed_column", run.stderr));
}

#[test]
fn a_table_of_unknown_format_is_refused_before_anything_runs() {
    let project = Project::new();
    project.write("reviews.xlsx", "not a table");
    project.write(
        "p.yaml",
        "name: unknown
steps:
  raw:
    kind: download
    url: reviews.xlsx
  vocab:
    kind: train-tokenizer
    inputs: { data: raw }
",
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(!project.cache().exists(), "nothing runs: {}", run.stdout);
    assert!(run.stderr.contains("cannot tell the table format of a `.xlsx` file"), "{}", run.stderr);
    assert!(run.stderr.contains("help: set `format:`"), "{}", run.stderr);
}

#[test]
fn parquet_written_by_pyarrow_reads_as_the_csv() {
    let Ok(python) = std::env::var("PIPE_PYTHON") else {
        assert!(std::env::var_os("CI").is_none(), "PIPE_PYTHON is not set (CI is set, so this is an error)");
        eprintln!("notice: skipping: set PIPE_PYTHON to a Python with pyarrow");
        return;
    };
    let project = Project::new();
    let csv = project.write("reviews.csv", &to_csv(&reviews(50, 5)));
    let script = "import sys, pyarrow.csv as c, pyarrow.parquet as pq; \
                  pq.write_table(c.read_csv(sys.argv[1]), sys.argv[2])";
    let parquet = project.path().join("reviews.parquet");
    let status = Command::new(&python).args(["-c", script]).arg(&csv).arg(&parquet).status().unwrap();
    assert!(status.success(), "{python} could not write Parquet");
    project.write(
        "p.yaml",
        "name: parquet
steps:
  csv:
    kind: download
    url: reviews.csv
  parquet:
    kind: download
    url: reviews.parquet
  vocab:
    kind: train-tokenizer
    inputs: { data: csv }
    text_column: text
    vocab_size: 200
  from_csv:
    kind: tokenize
    inputs: { data: csv, tokenizer: vocab }
    text_column: text
    label_column: stars
  from_parquet:
    kind: tokenize
    inputs: { data: parquet, tokenizer: vocab }
    text_column: text
    label_column: stars
",
    );
    let run = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    let key = |step: &str| {
        run.json()["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let tensors = |step: &str| fs::read(project.output(&key(step), "tensors").join("tensors.safetensors")).unwrap();
    assert!(tensors("from_csv") == tensors("from_parquet"), "pyarrow's Parquet of the CSV gives the same tensors");
}

/// The steps of `pipelines/nsmc-tiny.yaml` that read tables, as there (keys depend on kinds,
/// parameters and input contents only, not on step names or the rest of the pipeline).
const NSMC_TABLE_STEPS: &str = "name: nsmc-tables
steps:
  train_raw:
    kind: download
    url: https://raw.githubusercontent.com/e9t/nsmc/master/ratings_train.txt
    sha256: e03b7d14e9e41be8d464a28057cd25d7396c53e67aa7fd5f7e552c59b0ee2940
  test_raw:
    kind: download
    url: https://raw.githubusercontent.com/e9t/nsmc/master/ratings_test.txt
    sha256: 8ac9f64052f11dbf6ae0acb5e038f03d90a76f0eda7820cfb3a92d02edfcebda
  train_rows:
    kind: sample
    inputs:
      data: train_raw
    rows: 4000
    seed: 1
  test_rows:
    kind: sample
    inputs:
      data: test_raw
    rows: 1000
    seed: 1
  vocab:
    kind: train-tokenizer
    inputs:
      data: train_rows
    vocab_size: 4000
  encode_train:
    kind: tokenize
    inputs:
      data: train_rows
      tokenizer: vocab
    max_len: 64
  encode_test:
    kind: tokenize
    inputs:
      data: test_rows
      tokenizer: vocab
    max_len: 64
  linear:
    kind: linear
    inputs:
      train: train_rows
      test: test_rows
    valid_fraction: 0.1
";

/// NSMC's keys as the build before table formats computed them: a `.txt` table is keyed as it
/// always was (no `format`, the default quoting left out, `text_column` keyed by its old name).
#[test]
fn nsmc_keys_are_those_from_before_table_formats() {
    let Some(mirror) = pipe_steps::shared_data::shared_path("nsmc") else { return };
    let project = Project::new();
    project.write("p.yaml", NSMC_TABLE_STEPS);
    let run = project.run(&["run", "p.yaml", "--mirror", &mirror.display().to_string(), "--json"]).expect_code(0);
    let keys: Vec<(String, String)> = run.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["key"].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        ("train_rows", "04a1a78db3a1fe16383b9377619daa913dd276b7fc23277e5e9b26aedd4ba99f"),
        ("test_rows", "b978847967865ce8d295695d8f2ab84757d68f9d6bcd2ea32c3b6c945fbe482a"),
        ("vocab", "229e3391d60de9d793eedcadc3c7413bb10f2922cf041a1636638fc48b949aaa"),
        ("encode_train", "385896a46eb59b3ecd5fd528a866a8c9cd91d8f586d4a14508160641048231e0"),
        ("encode_test", "76d46a81311a5a011658c881ab1d42a8baa25464a6b49aa02d96f03fd9e490ad"),
        ("linear", "171acafb968abe57db7937e087418c41a5ad476b8ed07322be8ef2352079e2d4"),
    ];
    for (step, key) in expected {
        let got = &keys.iter().find(|(n, _)| n == step).unwrap().1;
        assert_eq!(got, key, "step {step}: NSMC's key changed");
    }
}
