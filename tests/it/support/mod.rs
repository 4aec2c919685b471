//! Shared test support: run the real `pipe` binary in a temporary project, serve files from a
//! real HTTP server on 127.0.0.1, and filter volatile text out of snapshots.
#![allow(dead_code)]

pub mod http;
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
