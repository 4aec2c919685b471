//! Benchmark of `fine-tune` training throughput on NSMC: a 16,000-token WordPiece vocabulary,
//! `max_len` 64, batch 32, dynamic padding, for the configs `tiny` (2 layers, hidden 128,
//! 2 heads, intermediate 512) and `mini` (4/256/4/1024), randomly initialised. One epoch over
//! the first `ROWS` training reviews (default 4096), median of 3 runs; `CONFIGS` picks configs
//! (`tiny,mini` by default). The figure is the step's own samples per second, as it reports
//! its epoch's timing (forward, backward, clipping and AdamW; no evaluation).
//!
//! ```text
//! cargo run -p pipe-steps --example bench_train -- [NSMC_DIR] [WORK_DIR] [ROWS] [CONFIGS]
//! /work/pyvenv/bin/python steps/benches/train_python.py WORK_DIR
//! ```
//!
//! The Rust side leaves the rows (`WORK_DIR/subset`) and the batch order it trained on
//! (`WORK_DIR/batches-<config>.json`) for the Python side, which trains the same
//! `BertForSequenceClassification` configs in PyTorch over the same batches. Threads follow
//! `PIPE_THREADS` (default: all cores). Results are in `steps/BENCHMARKS_BERT.md`.
//!
//! With `PRETRAIN_OBJECTIVES` set (e.g. `mlm,electra`), it measures `pretrain` instead: one epoch
//! per objective on the same rows, config and batches, the objectives interleaved run by run
//! (so a change of machine load hits both), the median of 3 each and their ratio to the first
//! objective. ELECTRA's generator takes its defaults (a quarter of the width). Results are in
//! `steps/BENCHMARKS_ELECTRA.md`.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use pipe_steps::bert::batch::Batches;
use pipe_steps::bert::config::BertConfig;
use pipe_steps::bert::model::BertClassifier;
use pipe_steps::bert::model_dir::{write_config, Head, WEIGHTS};
use pipe_steps::bert::train::batch_seed;
use pipe_steps::bert::weights::Weights;
use pipe_steps::bert::{FineTune, Pretrain};
use pipe_steps::tensor_set::{TensorSet, TOKENIZER_FILE};
use pipe_steps::text::{Tokenize, TrainTokenizer};
use pipe_steps::{runtime, Environment};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

mod support;

use support::{median, run, run_timed};

const REPEATS: usize = 3;
const BATCH: usize = 32;
const SEED: u64 = 42;

/// A randomly initialised classifier of `config` written as a model directory.
fn random_model(config: &BertConfig, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    fs::create_dir_all(dir)?;
    let mut weights = Weights::new(DType::F32, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(SEED);
    BertClassifier::new(config, 2, &mut weights, &mut rng)?;
    weights.save(&dir.join(WEIGHTS), &[])?;
    write_config(
        dir,
        config,
        Head::Classifier { labels: &["0".to_string(), "1".to_string()], task: Default::default() },
    )?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nsmc = match args.first() {
        Some(d) => PathBuf::from(d),
        None => pipe_steps::shared_data::shared_path("nsmc").ok_or("no NSMC directory given or shared")?,
    };
    let work = args.get(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("pipe-bench-train"));
    let rows: usize = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(4096);
    let only: Vec<&str> = args.get(3).map(|c| c.split(',').collect()).unwrap_or_else(|| vec!["tiny", "mini"]);
    fs::create_dir_all(&work)?;
    let threads =
        std::env::var("PIPE_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or_else(runtime::default_threads);
    runtime::configure(threads);
    let env = Environment { threads, ..Environment::default() };
    println!("threads: {threads}, rows: {rows}, batch {BATCH}, max_len 64, dynamic padding");

    let train_file = nsmc.join("ratings_train.txt");
    let vocab = work.join("train-tokenizer");
    if !vocab.join("tokenizer").is_file() {
        run(&TrainTokenizer, json!({"vocab_size": 16000}), &[("data", &train_file)], &vocab, &env)?;
    }
    let encoded = work.join("tokenize");
    if !encoded.join("tensors/meta.json").is_file() {
        let tokenizer = vocab.join("tokenizer");
        run(&Tokenize, json!({"max_len": 64}), &[("data", &train_file), ("tokenizer", &tokenizer)], &encoded, &env)?;
    }
    let all = TensorSet::load(&encoded.join("tensors"))?;
    let subset_dir = work.join("subset");
    fs::create_dir_all(&subset_dir)?;
    let subset = all.select(&(0..rows.min(all.len())).collect::<Vec<_>>());
    subset.save(&subset_dir)?;
    fs::copy(encoded.join("tensors").join(TOKENIZER_FILE), subset_dir.join(TOKENIZER_FILE))?;
    let tokens: usize = subset.valid_length.iter().map(|&v| v as usize).sum();
    println!("mean tokens per row: {:.2}", tokens as f64 / subset.len() as f64);

    let configs = [("tiny", 2, 128, 2, 512), ("mini", 4, 256, 4, 1024)];
    if let Ok(objectives) = std::env::var("PRETRAIN_OBJECTIVES") {
        let objectives: Vec<&str> = objectives.split(',').collect();
        for (name, layers, hidden, heads, intermediate) in configs.into_iter().filter(|c| only.contains(&c.0)) {
            let mut rates: Vec<Vec<f64>> = vec![Vec::new(); objectives.len()];
            for i in 0..REPEATS {
                for (k, objective) in objectives.iter().enumerate() {
                    let out = work.join(format!("pretrain-{name}-{objective}"));
                    let given = json!({
                        "objective": objective, "layers": layers, "hidden": hidden, "heads": heads,
                        "intermediate": intermediate, "max_positions": 128, "epochs": 1, "batch_size": BATCH,
                        "seed": SEED, "log_every": 0,
                    });
                    let timings = run_timed(&Pretrain, given, &[("data", &subset_dir)], &out, &env)?;
                    let rate = timings.first().and_then(|t| t.samples_per_second()).ok_or("no timing")?;
                    println!("{name} {objective}: run {}: {rate:.1} samples/s", i + 1);
                    rates[k].push(rate);
                }
            }
            // Also the median of the ratios within each round: the runs of a round are adjacent,
            // so they share the machine's load more closely than the medians do.
            let pairwise: Vec<f64> =
                rates.iter().map(|r| median(r.iter().zip(&rates[0]).map(|(x, first)| x / first).collect())).collect();
            let medians: Vec<f64> = rates.into_iter().map(median).collect();
            for ((objective, m), p) in objectives.iter().zip(&medians).zip(&pairwise) {
                println!(
                    "{name} {objective}: median of {REPEATS}: {m:.1} samples/s ({:.2} × {first}; per round {p:.2} ×)",
                    m / medians[0],
                    first = objectives[0]
                );
            }
        }
        return Ok(());
    }
    for (name, layers, hidden, heads, intermediate) in configs.into_iter().filter(|c| only.contains(&c.0)) {
        let config = BertConfig::new(subset.meta.vocab_size, layers, hidden, heads, intermediate, 128);
        let model = work.join(format!("model-{name}"));
        random_model(&config, &model)?;
        let order = Batches::shuffled(&subset, BATCH, batch_seed(SEED, 1, usize::MAX));
        fs::write(
            work.join(format!("batches-{name}.json")),
            serde_json::to_vec(&json!({"config": config, "batches": order.batches}))?,
        )?;
        let mut rates = Vec::new();
        for i in 0..REPEATS {
            let out = work.join(format!("fine-tune-{name}"));
            let given = json!({"epochs": 1, "batch_size": BATCH, "lr": 5e-5, "seed": SEED, "log_every": 0});
            let timings = run_timed(&FineTune, given, &[("train", &subset_dir), ("model", &model)], &out, &env)?;
            let rate = timings.first().and_then(|t| t.samples_per_second()).ok_or("no timing")?;
            println!("{name}: run {}: {rate:.1} samples/s", i + 1);
            rates.push(rate);
        }
        println!("{name}: median of {REPEATS}: {:.1} samples/s", median(rates));
    }
    Ok(())
}
