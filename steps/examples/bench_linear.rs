//! Benchmark of the `linear` step on all of NSMC: TF-IDF of word 1-2-grams and character
//! 1-3-grams (sublinear tf) and logistic regression on the 150,000 training reviews, evaluated
//! on the 50,000 test reviews. One run; the step's log lines are printed with their time.
//!
//! ```text
//! target/debug/examples/bench_linear [NSMC_DIR] [WORK_DIR] [PARAMS_JSON]
//! /work/venv/bin/python steps/benches/linear_python.py NSMC_DIR [--C 1.0]
//! ```
//!
//! `NSMC_DIR` defaults to the shared test data, `WORK_DIR` to a directory under the system
//! temporary directory (the step's outputs are left there), `PARAMS_JSON` (e.g.
//! `'{"C": 2.0, "valid_fraction": 0.05}'`) overrides the step's defaults. Results are in
//! `steps/BENCHMARKS_LINEAR.md`.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use pipe_steps::linear::Linear;
use pipe_steps::report::EvalMetrics;
use pipe_steps::{Environment, Events, Step, StepContext};
use serde_json::Value;

#[allow(dead_code)] // only `params` is used here
mod support;

/// Prints every log line with the seconds since the start.
struct Print(Instant);

impl Events for Print {
    fn log(&self, line: &str) {
        println!("[{:7.2}s] {line}", self.0.elapsed().as_secs_f64());
    }
    fn progress_start(&self, _: &str, _: Option<u64>, _: &str) {}
    fn progress_inc(&self, _: u64) {}
    fn progress_message(&self, _: &str) {}
    fn progress_finish(&self) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nsmc = match args.first() {
        Some(d) => PathBuf::from(d),
        None => pipe_steps::shared_data::shared_path("nsmc").ok_or("no NSMC directory given or shared")?,
    };
    let work = args.get(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("pipe-bench-linear"));
    let given: Value = match args.get(2) {
        Some(json) => serde_json::from_str(json)?,
        None => Value::Object(Default::default()),
    };
    let out = work.join("linear");
    if out.exists() {
        fs::remove_dir_all(&out)?;
    }
    fs::create_dir_all(&out)?;
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let env = Environment { threads, ..Environment::default() };
    let params = support::params(&Linear, given);
    Linear.validate(&params)?;
    let inputs: BTreeMap<String, PathBuf> =
        [("train".to_string(), nsmc.join("ratings_train.txt")), ("test".to_string(), nsmc.join("ratings_test.txt"))]
            .into();
    println!("threads: {threads}; parameters: {}", serde_json::to_string(params.values())?);
    let start = Instant::now();
    let ctx = StepContext {
        name: "bench",
        params: &params,
        inputs: &inputs,
        sources: &std::collections::BTreeMap::new(),
        out_dir: &out,
        checkpoint_dir: &work.join("checkpoint"),
        env: &env,
        events: &Print(start),
    };
    Linear.run(&ctx)?;
    let secs = start.elapsed().as_secs_f64();
    let metrics: EvalMetrics = serde_json::from_slice(&fs::read(out.join("metrics"))?)?;
    println!("test accuracy: {:.4} ({} rows), macro F1 {:.4}", metrics.accuracy, metrics.rows, metrics.macro_f1);
    let valid: Option<EvalMetrics> = serde_json::from_slice(&fs::read(out.join("valid_metrics"))?)?;
    if let Some(v) = valid {
        println!("valid accuracy: {:.4} ({} rows)", v.accuracy, v.rows);
    }
    println!("linear step: {secs:.1} s");
    Ok(())
}
