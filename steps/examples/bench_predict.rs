//! Benchmark of `predict` (the code behind the `predict` step and `pipe predict`): a
//! classification model directory on the first ROWS texts of a table, several runs, the median
//! rows per second; beside `transformers.pipeline("text-classification")` on the same model and
//! rows (`steps/benches/predict_python.py`).
//!
//! ```text
//! cargo run -p pipe-steps --example bench_predict -- MODEL_DIR TABLE [ROWS] [RUNS] [BATCH] [COLUMN] [OUT_CSV]
//! /work/venv/bin/python steps/benches/predict_python.py MODEL_DIR TABLE --rows ROWS --runs RUNS --batch-size BATCH \
//!     [--column document] [--compare OUT_CSV]
//! ```
//!
//! ROWS defaults to 2,000, RUNS to 5, BATCH to 64, COLUMN to `document`; every run scores the
//! same rows (tokenizing included, loading the model not: it is timed once, apart). With
//! OUT_CSV, the probabilities of the last run are written as `predict`'s CSV, for the Python
//! side to compare. Threads: every core (`std::thread::available_parallelism`). Results are in
//! `steps/BENCHMARKS_PREDICT.md`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use pipe_steps::bert::device;
use pipe_steps::bert::model_dir::ModelDir;
use pipe_steps::bert::predict::{render, InputRows, OutputFormat, Scored};
use pipe_steps::bert::predictor::{PredictOptions, Predictor};
use pipe_steps::runtime;
use pipe_steps::text::table::{Malformed, Table};
use pipe_steps::Environment;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(model), Some(table)) = (args.first(), args.get(1)) else {
        return Err("usage: bench_predict MODEL_DIR TABLE [ROWS] [RUNS] [BATCH] [COLUMN] [OUT_CSV]".into());
    };
    let rows: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let batch: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let column = args.get(5).map(String::as_str).unwrap_or("document");
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    runtime::configure(threads);
    let env = Environment { threads, ..Environment::default() };

    let table = PathBuf::from(table);
    let separator = if table.extension().is_some_and(|e| e == "csv") { b',' } else { b'\t' };
    let read = Table::read(&table, separator, Malformed::Error)?;
    let mut input = InputRows::from_table(&read, column, None)?;
    input.a.truncate(rows);
    input.values.truncate(rows);
    let n = input.a.len();

    let started = Instant::now();
    let source = ModelDir::local(&PathBuf::from(model))?;
    let options = PredictOptions { batch_size: batch, ..PredictOptions::default() };
    let mut predictor = Predictor::load(&source, &device::open("cpu")?, options)?;
    let load = started.elapsed().as_secs_f64();
    println!(
        "model {model}: {} classes, max_len {}; load {load:.2}s; {n} rows, batch {batch}, {threads} threads",
        predictor.labels.len(),
        predictor.max_len()
    );
    let mut rates = Vec::with_capacity(runs);
    let mut probs = Vec::new();
    for run in 1..=runs {
        let started = Instant::now();
        probs = predictor.outputs(&input.a, None, &env)?;
        let seconds = started.elapsed().as_secs_f64();
        rates.push(n as f64 / seconds);
        println!("run {run}: {seconds:.2}s, {:.1} rows/s", n as f64 / seconds);
    }
    rates.sort_by(f64::total_cmp);
    println!("pipe predict: median {:.1} rows/s over {runs} runs", rates[rates.len() / 2]);
    if let Some(out) = args.get(6) {
        let scored = Scored { task: predictor.task, labels: &predictor.labels, threshold: 0.5, values: &probs };
        std::fs::write(out, render(&input, &scored, OutputFormat::Csv))?;
        println!("probabilities written to {out}");
    }
    Ok(())
}
