//! Benchmark of the `tokenize` step on all of NSMC (150,000 + 50,000 reviews): a 16,000-token
//! vocabulary trained by `train-tokenizer`, `max_len` 64, median of 3 runs.
//!
//! ```text
//! target/debug/examples/bench_tokenize [NSMC_DIR] [WORK_DIR]
//! python3 steps/benches/tokenize_python.py WORK_DIR/nsmc_all.tsv WORK_DIR/tokenizer.json
//! ```
//!
//! `NSMC_DIR` defaults to the shared test data, `WORK_DIR` to a directory under the system
//! temporary directory; the trained tokenizer and the 200,000-row table are left there for the
//! Python side. Results are in `steps/BENCHMARKS_TEXT.md`.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use pipe_steps::text::encode::Encoder;
use pipe_steps::text::{Tokenize, TrainTokenizer};
use pipe_steps::Environment;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

mod support;

use support::{median, run};

const REPEATS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nsmc = match args.first() {
        Some(d) => PathBuf::from(d),
        None => pipe_steps::shared_data::shared_path("nsmc").ok_or("no NSMC directory given or shared")?,
    };
    let work = args.get(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("pipe-bench-text"));
    fs::create_dir_all(&work)?;
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let env = Environment { threads, ..Environment::default() };

    // One table of all 200,000 reviews.
    let table = work.join("nsmc_all.tsv");
    let train_text = fs::read_to_string(nsmc.join("ratings_train.txt"))?;
    let test_text = fs::read_to_string(nsmc.join("ratings_test.txt"))?;
    let mut all = train_text.clone();
    all.push_str(test_text.split_once('\n').map_or("", |(_, body)| body));
    fs::write(&table, &all)?;

    let train_file = nsmc.join("ratings_train.txt");
    let trained = work.join("train-tokenizer");
    let train_secs = run(&TrainTokenizer, json!({"vocab_size": 16000}), &[("data", &train_file)], &trained, &env)?;
    let tokenizer = work.join("tokenizer.json");
    fs::copy(trained.join("tokenizer"), &tokenizer)?;
    println!("threads: {threads}");
    println!("train-tokenizer (150,000 reviews, vocab 16,000): {train_secs:.2} s");

    let out = work.join("tokenize");
    let mut step_secs = Vec::new();
    for i in 0..REPEATS {
        let secs = run(&Tokenize, json!({"max_len": 64}), &[("data", &table), ("tokenizer", &tokenizer)], &out, &env)?;
        println!("tokenize step, run {}: {secs:.3} s", i + 1);
        step_secs.push(secs);
    }
    let stats: Value = serde_json::from_slice(&fs::read(out.join("tensors/stats.json"))?)?;
    println!(
        "rows: {}, mean tokens {:.2}, [UNK] rate {:.5}",
        stats["rows"],
        stats["mean_tokens"].as_f64().unwrap_or(0.0),
        stats["unk_rate"].as_f64().unwrap_or(0.0)
    );

    // The encoding alone (no table reading, transform or writing), for comparison with Python.
    let docs: Vec<&str> = all.lines().skip(1).map(|l| l.split('\t').nth(1).unwrap_or("")).collect();
    let start = Instant::now();
    let read = pipe_steps::text::table::Table::read(&table, b'\t', pipe_steps::text::table::Malformed::Error)?;
    let read_docs = read.column("document", "text_column")?;
    println!("reading the table alone: {:.3} s ({} rows)", start.elapsed().as_secs_f64(), read_docs.len());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let (mut plain_secs, mut cached_secs, mut fast_secs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let load = || -> Result<Encoder, Box<dyn std::error::Error>> {
            Ok(Encoder::new(Tokenizer::from_file(&tokenizer).map_err(|e| e.to_string())?)?)
        };
        let mut encoder = load()?.without_fast_path();
        let start = Instant::now();
        let plain = pool.install(|| encoder.encode_all(&docs))?;
        plain_secs.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let cached = pool.install(|| encoder.encode_batch(&docs))?;
        cached_secs.push(start.elapsed().as_secs_f64());
        let mut encoder = load()?;
        let start = Instant::now();
        let fast = pool.install(|| encoder.encode_batch(&docs))?;
        fast_secs.push(start.elapsed().as_secs_f64());
        assert!(plain == cached && plain == fast, "the piece cache changed ids");
    }
    println!("tokenize step, median of {REPEATS}: {:.3} s", median(step_secs));
    println!("encoding only, one tokenizer call per text, median of {REPEATS}: {:.3} s", median(plain_secs));
    println!("encoding only, piece cache (cold), median of {REPEATS}: {:.3} s", median(cached_secs));
    println!("encoding only, piece cache + fast BERT path (cold), median of {REPEATS}: {:.3} s", median(fast_secs));
    Ok(())
}
