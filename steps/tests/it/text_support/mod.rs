//! Helpers shared by the `text_*` tests: running a step kind on files in a temporary directory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pipe_steps::{Environment, NoEvents, Params, Step, StepContext, StepError};
use serde_json::Value;
use tempfile::TempDir;

/// The parameters of `step` with `given` (a JSON object) over the declared defaults.
pub fn params(step: &dyn Step, given: Value) -> Params {
    let mut values = BTreeMap::new();
    for p in step.spec().params {
        if let Some(v) = p.default.to_value() {
            values.insert(p.name.to_string(), v);
        }
    }
    if let Value::Object(map) = given {
        for (k, v) in map {
            assert!(step.spec().param(&k).is_some(), "test gives unknown parameter {k}");
            values.insert(k, v);
        }
    }
    Params::new(values)
}

/// Runs `step` with `given` parameters and `inputs`; returns the output directory.
pub fn run(step: &dyn Step, given: Value, inputs: &[(&str, &Path)]) -> Result<TempDir, StepError> {
    run_env(step, given, inputs, &Environment { threads: 2, ..Environment::default() })
}

pub fn run_env(
    step: &dyn Step,
    given: Value,
    inputs: &[(&str, &Path)],
    env: &Environment,
) -> Result<TempDir, StepError> {
    let params = params(step, given);
    step.validate(&params)?;
    let inputs: BTreeMap<String, PathBuf> = inputs.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
    let out = tempfile::tempdir().expect("tempdir");
    let checkpoint = tempfile::tempdir().expect("tempdir");
    let ctx = StepContext {
        name: "test",
        params: &params,
        inputs: &inputs,
        sources: &std::collections::BTreeMap::new(),
        out_dir: out.path(),
        checkpoint_dir: checkpoint.path(),
        env,
        events: &NoEvents,
    };
    step.run(&ctx)?;
    Ok(out)
}

/// Writes `text` to `name` in a fresh temporary directory.
pub fn table(name: &str, text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    fs::write(&path, text).expect("write table");
    (dir, path)
}

/// The MiniLM checkpoint directory of the shared test data, if present.
pub fn minilm_dir() -> Option<PathBuf> {
    pipe_steps::shared_data::shared_path("models/all-MiniLM-L6-v2")
}

/// The message of an error, with its help line.
pub fn message(e: &StepError) -> String {
    match e.help() {
        Some(h) => format!("{e}\nhelp: {h}"),
        None => e.to_string(),
    }
}
