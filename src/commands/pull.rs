//! `pipe pull [PIPELINE.yaml] [STEP…]`: download from the remote cache the results of the
//! pipeline's steps (all, or only the STEPs named) that the local cache lacks; nothing runs.
//! Keys are decided as `pipe status` decides them, with the remote's manifests standing in for
//! upstream results that are not local, so `pipe pull P.yaml tokenize` fetches only the
//! tokenized tensors (a GPU node that only fine-tunes needs nothing upstream of them).

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use crate::cache::Cache;
use crate::commands::push::{no_remote, pipeline_and_steps, select};
use crate::commands::{environment, load_pipeline, open_remote, GlobalArgs, RemoteArgs};
use crate::error::Error;
use crate::executor::{Executor, RunOptions};
use crate::remote::Pulled;
use crate::reporter::{human_bytes, Reporter};
use crate::run_record::{RunRecord, StepStatus};
use crate::spec::OverrideArg;
use crate::tiered_cache::TieredCache;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The pipeline file (default: the one most recently run with this cache), then the steps
    /// to pull (default: all).
    #[arg(value_name = "PIPELINE.yaml] [STEP")]
    pub args: Vec<String>,
    /// Pull the results of the pipeline as run with this override: STEP.PARAM=VALUE.
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
    /// Print one JSON document on stdout at the end.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn execute(args: &PullArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let cache = Cache::open(&global.cache_dir)?;
    let (file, names) = pipeline_and_steps(&args.args, &cache, global)?;
    let (spec, graph) = load_pipeline(&file, &args.set)?;
    let selected = select(&graph, &names, &file)?;
    let Some(remote) = open_remote(&args.remote, spec.remote.as_deref(), reporter)? else {
        return Err(no_remote(&args.remote));
    };
    let env = environment(global);
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let quiet = Reporter::quiet();
    let store = TieredCache::new(&cache, Some(&remote), reporter);
    let executor = Executor::new(&store, &graph, &env, &quiet, &history);
    let outcomes = executor.run(&RunOptions { dry_run: true, ..RunOptions::default() }, &mut |_, _| {});
    reporter.line(&format!("pipeline {} ({}), pulling from {}", graph.name, file.display(), remote.url()));
    let width = selected.iter().map(|&i| graph.steps[i].name.len()).max().unwrap_or(4);
    let (mut pulled, mut bytes, mut failed, mut absent) = (0usize, 0u64, 0usize, 0usize);
    let mut docs = Vec::new();
    for &i in &selected {
        let step = &graph.steps[i];
        let outcome = &outcomes[i];
        let outputs: Vec<&str> = step.kind.spec().outputs.iter().map(|o| o.name).collect();
        let (state, what) = match (&outcome.key, outcome.status, &outcome.from_remote) {
            (Some(_), StepStatus::WouldUseCache, None) => ("local", "already in the local cache".to_string()),
            (Some(key), StepStatus::WouldUseCache, Some(_)) => {
                let events = reporter.for_step(&step.name);
                match store.pull(key, &outputs, &step.name, &events)? {
                    None => ("local", "already in the local cache".to_string()),
                    Some(pulled_now) => match pulled_now {
                        Pulled::Hit { bytes: b, host, .. } => {
                            pulled += 1;
                            bytes += b;
                            ("pulled", format!("pulled {} from {host}", human_bytes(b)))
                        }
                        Pulled::Missing => {
                            failed += 1;
                            ("failed", "gone from the remote".to_string())
                        }
                        Pulled::Unusable(reason) => {
                            failed += 1;
                            reporter.warning(&format!(
                                "{}: the remote's result for key {} is not used: {reason}",
                                step.name,
                                key.short()
                            ));
                            ("failed", "not pulled: the remote's result is unusable".to_string())
                        }
                    },
                }
            }
            (_, StepStatus::Failed, _) => {
                failed += 1;
                let message = outcome.failure.as_ref().map(|f| f.message.clone()).unwrap_or_default();
                ("failed", message)
            }
            _ => {
                absent += 1;
                ("absent", "not on the remote (it has to run)".to_string())
            }
        };
        reporter.line(&format!("  {:<width$}  {what}", step.name));
        docs.push(json!({
            "name": step.name,
            "key": outcome.key.as_ref().map(|k| k.as_str()),
            "state": state,
        }));
    }
    if args.json {
        reporter.document(&json!({ "pipeline": graph.name, "remote": remote.url(), "steps": docs }));
    }
    reporter.line(&format!(
        "pulled {pulled} result{}, {}{}",
        if pulled == 1 { "" } else { "s" },
        human_bytes(bytes),
        if absent > 0 { format!("; {absent} not on the remote") } else { String::new() }
    ));
    // Everything asked for is local, or the remote lacks it: success; a result the remote
    // has but could not give, or a step named on the command line that it lacks: failure.
    Ok(if failed > 0 || (absent > 0 && !names.is_empty()) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
