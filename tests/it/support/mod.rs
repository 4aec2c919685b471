//! Shared test support: run the real `pipe` binary in a temporary project, serve files from a
//! real HTTP server on 127.0.0.1, filter volatile text out of snapshots, and the small pipelines
//! several tests share (three fast samples; a tiny BERT and its table).
#![allow(dead_code)]

pub mod http;
pub mod mlflow;
pub mod s3;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary project directory with a cache inside.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes a file relative to the project.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// `pipe ARGS` run in the project directory with the project's cache.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .env("PIPE_CACHE_DIR", self.cache())
            .env_remove("PIPE_MIRROR")
            .env("PIPE_THREADS", "1")
            .env("NO_COLOR", "1")
            // A remote configured on this machine is not the tests' (tests/it/remote.rs sets
            // its own), and an S3 client without credentials must not look for an EC2 role.
            .env_remove("PIPE_REMOTE")
            .env_remove("PIPE_REMOTE_MODE")
            // Nor is an MLflow server or a TensorBoard folder (tests/it/tracking.rs sets its own).
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .env_remove("MLFLOW_EXPERIMENT_NAME")
            .env_remove("PIPE_TENSORBOARD")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().expect("run pipe");
        Run::from(output)
    }

    /// Where output `name` of the stored result `key` is (the manifest names its directory).
    pub fn output(&self, key: &str, name: &str) -> PathBuf {
        let entry = self.cache().join("steps").join(key);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.join("manifest.json")).expect("manifest")).expect("json");
        entry.join(manifest["dir"].as_str().expect("dir")).join(name)
    }

    /// The cache entry directories (`cache/steps/<key>`).
    pub fn entries(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.cache().join("steps"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The result of one `pipe` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    /// The `--json` document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    /// step name → status from a `--json` document.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| (s["name"].as_str().unwrap_or("").to_string(), s["status"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    pub fn status_of(&self, step: &str) -> String {
        self.statuses().into_iter().find(|(n, _)| n == step).map(|(_, s)| s).unwrap_or_else(|| panic!("no step {step}"))
    }
}

/// Insta settings that hide times, keys and temporary paths.
pub fn settings(project: Option<&Project>) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    if let Some(p) = project {
        let path = p.path().display().to_string();
        s.add_filter(&regex_escape(&path), "[PROJECT]");
    }
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[HASH]");
    s.add_filter(r"\b[0-9a-f]{12}\b", "[KEY]");
    s.add_filter(r"\d+(\.\d+)?(s|ms|m\d\ds)\b", "[TIME]");
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[DATE]");
    s
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A five-row labelled table, for the small pipelines of the runner's tests.
pub const TABLE: &str = "id\tdocument\tlabel\n1\tgood\t1\n2\tbad\t0\n3\tfine\t1\n4\tawful\t0\n5\tok\t1\n";

/// A pipeline named `name` of three fast steps: download `url`, then two samples (`head` with
/// `${params.rows}` = 3 rows, `tail` with 2), for cache and remote tests that run in milliseconds.
pub fn sample_pipeline(name: &str, url: &str) -> String {
    format!(
        "name: {name}
params:
  rows: 3
steps:
  fetch:
    kind: download
    url: {url}
  head:
    kind: sample
    inputs:
      data: fetch
    rows: ${{params.rows}}
    log_every: 1
  tail:
    kind: sample
    inputs:
      data: head
    rows: 2
"
    )
}

/// A labelled table whose two classes use different words (but for one word in five, drawn from
/// `seed`), so that a tiny BERT learns something: `rows` rows of 4 to 7 words.
pub fn tiny_bert_table(rows: usize, seed: u64) -> String {
    let words = [["good", "great", "fine", "nice", "love"], ["bad", "awful", "poor", "dull", "hate"]];
    let mut state = seed;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let mut out = String::from("id\tdocument\tlabel\n");
    for i in 0..rows {
        let label = i % 2;
        let text: Vec<&str> =
            (0..4 + next(4)).map(|_| words[if next(5) == 0 { 1 - label } else { label }][next(5)]).collect();
        out.push_str(&format!("{i}\t{}\t{label}\n", text.join(" ")));
    }
    out
}

/// What differs between the tests' tiny BERT pipelines (see [`tiny_bert_pipeline`]).
#[derive(Default)]
pub struct TinyBert<'a> {
    /// The pipeline's `name:`.
    pub name: &'a str,
    /// Lines between the name and `steps:` (an `executor:` section).
    pub header: &'a str,
    /// A `split` step holds out a fifth of the rows: pre-training reads its train part, and the
    /// fine-tune validates on its valid part and tests on every row.
    pub split: bool,
    /// The fine-tune's epochs.
    pub epochs: usize,
    /// Lines the fine-tune step ends with (`log_every`, `resources`).
    pub finetune: &'a str,
    /// An `evaluate` step of the fine-tuned model on every row, after the fine-tune.
    pub evaluate: bool,
    /// Steps after those.
    pub after: &'a str,
}

/// A tiny BERT pipeline over `data.tsv` (see [`tiny_bert_table`]): a 200-word tokenizer, rows of
/// 16 tokens, one small layer pre-trained for an epoch, fine-tuned in batches of 8 at lr 1e-3.
pub fn tiny_bert_pipeline(p: &TinyBert) -> String {
    let split = "  split:
    kind: split
    inputs: { data: encode }
    valid_fraction: 0.2
";
    let (split, pretrain_data, finetune_data) = if p.split {
        (split, "split.train", "train: split.train, valid: split.valid, test: encode")
    } else {
        ("", "encode", "train: encode")
    };
    let evaluate = if p.evaluate {
        "  evaluate:
    kind: evaluate
    inputs: { data: encode, model: finetune.model }
"
    } else {
        ""
    };
    format!(
        "name: {name}
{header}steps:
  data:
    kind: download
    url: data.tsv
  vocab:
    kind: train-tokenizer
    inputs: {{ data: data }}
    vocab_size: 200
  encode:
    kind: tokenize
    inputs: {{ data: data, tokenizer: vocab }}
    max_len: 16
{split}  pretrain:
    kind: pretrain
    inputs: {{ data: {pretrain_data} }}
    layers: 1
    hidden: 16
    heads: 2
    intermediate: 32
    epochs: 1
    log_every: 0
  finetune:
    kind: fine-tune
    inputs: {{ {finetune_data}, model: pretrain.model }}
    epochs: {epochs}
    batch_size: 8
    lr: 1e-3
{finetune}{evaluate}{after}",
        name = p.name,
        header = p.header,
        epochs = p.epochs,
        finetune = p.finetune,
        after = p.after,
    )
}
