//! `pipe run PIPELINE.yaml`: decide every step, run what is not cached, record the run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::cache::Cache;
use crate::commands::GlobalArgs;
use crate::commands::{environment, load_pipeline, open_remote, RemoteArgs};
use crate::error::Error;
use crate::executor::{Executor, RunOptions};
use crate::graph::PipelineGraph;
use crate::reporter::{seconds, step_json, Reporter};
use crate::run_record::{RunRecord, RunState, StepRecord, StepStatus};
use crate::spec::{did_you_mean, variant_label, variants, OverrideArg, SweepArg};
use crate::step_outcome::StepOutcome;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Override a parameter for this run: STEP.PARAM=VALUE (VALUE is YAML: 3e-5, true, 64).
    /// `params.NAME=VALUE` overrides a shared value.
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
    /// Run the pipeline once per value: STEP.PARAM=A,B,C (repeat for a grid). Shared upstream
    /// steps run once; each variant is recorded as its own run, and `pipe report` compares them.
    #[arg(long = "sweep", value_name = "STEP.PARAM=A,B,...")]
    pub sweep: Vec<SweepArg>,
    /// Rerun STEP and every step that depends on it, even if cached.
    #[arg(long, value_name = "STEP")]
    pub force: Vec<String>,
    /// Decide exactly as a run would, run nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document on stdout at the end (step lines go to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn execute(args: &RunArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let variants = variants(&args.sweep);
    let labels: Vec<String> = variants.iter().map(|v| variant_label(v)).collect();
    let mut graphs = Vec::new();
    let mut spec = None;
    for variant in &variants {
        let overrides: Vec<OverrideArg> = args.set.iter().chain(variant).cloned().collect();
        let (s, g) = load_pipeline(&args.pipeline, &overrides)?;
        spec.get_or_insert(s);
        graphs.push(g);
    }
    let Some(spec) = spec else { return Err(Error::usage("nothing to run", None)) };
    let (graph, maps) = if args.sweep.is_empty() {
        let graph = graphs.remove(0);
        let map = (0..graph.steps.len()).collect();
        (graph, vec![map])
    } else {
        PipelineGraph::merge(graphs, &labels)
    };
    let mut force = BTreeSet::new();
    for name in &args.force {
        let found = graph.indices(name);
        if found.is_empty() {
            let help = did_you_mean(name, graph.steps.iter().map(|s| s.base.as_str()));
            return Err(Error::usage(
                format!("--force {name}: no step named `{name}` in {}", args.pipeline.display()),
                help,
            ));
        }
        force.extend(found);
    }
    let env = environment(global);
    let cache = if args.dry_run { Cache::at(&global.cache_dir) } else { Cache::open(&global.cache_dir)? };
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let remote = open_remote(&args.remote, spec.remote.as_deref(), reporter)?;

    reporter.set_names(graph.steps.iter().map(|s| s.name.as_str()));
    let mode = if args.dry_run { " (dry run)" } else { "" };
    let mode = match &remote {
        Some(r) => format!(", remote {}{}{mode}", r.url(), if r.writable() { "" } else { " (read-only)" }),
        None => mode.to_string(),
    };
    let swept = if variants.len() > 1 { format!(", {} variants", variants.len()) } else { String::new() };
    reporter.line(&format!(
        "pipeline {} ({} step{}{swept}), cache {}{mode}",
        graph.name,
        graph.steps.len(),
        if graph.steps.len() == 1 { "" } else { "s" },
        global.cache_dir.display()
    ));
    let executor =
        Executor { cache: &cache, graph: &graph, env: &env, reporter, history: &history, remote: remote.as_ref() };
    let started = Instant::now();
    let id = RunRecord::new_id();
    let pending = StepOutcome::new(StepStatus::Pending);
    let mut records: Vec<RunRecord> = variants
        .iter()
        .zip(&maps)
        .enumerate()
        .map(|(v, (variant, map))| RunRecord {
            id: if variants.len() > 1 { format!("{id}-{v:02}") } else { id.clone() },
            pipeline: graph.name.clone(),
            file: std::path::absolute(&spec.file).unwrap_or_else(|_| spec.file.clone()),
            started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            state: RunState::Running,
            seconds: 0.0,
            overrides: args.set.iter().chain(variant).map(|o| o.text.clone()).collect(),
            variant: (!args.sweep.is_empty()).then(|| labels[v].clone()),
            host: Some(crate::remote::host()),
            steps: map.iter().map(|&i| StepRecord::of(&graph.steps[i], &pending)).collect(),
        })
        .collect();
    if !args.dry_run {
        for record in &records {
            record.save(&cache)?;
        }
    }
    let options = RunOptions { force, dry_run: args.dry_run };
    let mut observe = |i: usize, outcome: &StepOutcome| {
        if args.dry_run {
            return;
        }
        for (record, map) in records.iter_mut().zip(&maps) {
            for (j, _) in map.iter().enumerate().filter(|(_, &m)| m == i) {
                record.steps[j] = StepRecord::of(&graph.steps[i], outcome);
                if let Err(e) = record.save(&cache) {
                    reporter.warning(&e.to_string());
                }
            }
        }
    };
    let outcomes = executor.run(&options, &mut observe);
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status == StepStatus::Failed).collect();
    let ok = failed.is_empty();
    if !args.dry_run {
        for (record, map) in records.iter_mut().zip(&maps) {
            let variant_ok = map.iter().all(|&i| outcomes[i].status != StepStatus::Failed);
            record.state = if variant_ok && ok { RunState::Succeeded } else { RunState::Failed };
            record.seconds = started.elapsed().as_secs_f64();
            record.save(&cache)?;
        }
        // The team's runs are on the remote too, for `pipe report` elsewhere.
        if let Some(remote) = remote.as_ref().filter(|r| r.writable()) {
            for record in &records {
                if let Err(e) = remote.push_run(record) {
                    reporter.warning(&format!("{e} (the run record stays local)"));
                }
            }
        }
    }

    if args.json {
        let steps: Vec<_> =
            graph.steps.iter().zip(&outcomes).map(|(s, o)| step_json(&s.name, s.kind.spec().kind, o)).collect();
        reporter.document(&json!({ "pipeline": graph.name, "ok": ok, "dry_run": args.dry_run, "steps": steps }));
    } else {
        let count = |status: StepStatus| outcomes.iter().filter(|o| o.status == status).count();
        let summary = if args.dry_run {
            format!(
                "dry run: {} would use the cache, {} would run",
                count(StepStatus::WouldUseCache),
                count(StepStatus::WouldRun)
            )
        } else {
            let pulled = outcomes.iter().filter(|o| o.from_remote.is_some()).count();
            let pulled = if pulled > 0 { format!(" ({pulled} from the remote)") } else { String::new() };
            format!(
                "{}: {} cached{pulled}, {} ran, {} failed, {} skipped in {}",
                if ok { "ok" } else { "failed" },
                count(StepStatus::Cached),
                count(StepStatus::Ran),
                count(StepStatus::Failed),
                count(StepStatus::Skipped),
                seconds(started.elapsed().as_secs_f64())
            )
        };
        reporter.line(&summary);
    }
    Ok(match failed.first() {
        _ if env.is_cancelled() => ExitCode::from(130),
        None => ExitCode::SUCCESS,
        Some(o) if o.failure.as_ref().is_some_and(|f| f.bad_input) => ExitCode::from(2),
        Some(_) => ExitCode::from(1),
    })
}
