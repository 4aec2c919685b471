//! `pipe status [PIPELINE.yaml]`: per step `up-to-date`, `stale` (with the reasons),
//! `never-run`, or `failed` (with the error: its latest attempt at this key failed), decided
//! exactly as `pipe run --dry-run` would; a step that a run in progress
//! computes now is `running` (here: its compute lock is taken) or, as a Slurm job, `queued` or
//! `running` as `squeue` says, with the job's id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use crate::cache::Cache;
use crate::commands::GlobalArgs;
use crate::commands::{environment, load_pipeline, open_remote_to_read, pipeline_file, RemoteArgs};
use crate::dirty_reason::DirtyReason;
use crate::error::Error;
use crate::executor::place;
use crate::executor::slurm::{queue_rows, SlurmState};
use crate::executor::{Executor, RunOptions};
use crate::reporter::Reporter;
use crate::run_record::{JobRef, RunRecord, RunState, StepStatus};
use crate::spec::OverrideArg;
use crate::step_key::StepKey;
use crate::step_outcome::StepOutcome;
use crate::tiered_cache::TieredCache;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The pipeline file (default: the one most recently run with this cache).
    pub pipeline: Option<PathBuf>,
    /// Show the status as if run with this override: STEP.PARAM=VALUE.
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
    /// Print the status as one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// A step's state as `status` names it.
pub fn state(outcome: &StepOutcome) -> &'static str {
    match outcome.status {
        // Deciding failed (a hub that cannot be asked which commit `main` is), or it reads such
        // a step (skipped): its key is not known.
        StepStatus::Failed | StepStatus::Skipped => "unknown",
        StepStatus::WouldUseCache | StepStatus::Cached => "up-to-date",
        _ if outcome.reasons == [DirtyReason::NeverRun] => "never-run",
        _ => "stale",
    }
}

pub fn execute(args: &StatusArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let cache = Cache::at(&global.cache_dir);
    let file = pipeline_file(args.pipeline.as_deref(), global, "pipe status pipelines/nsmc-tiny.yaml")?;
    let (spec, graph) = load_pipeline(&file, &args.set)?;
    let env = environment(global);
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let quiet = Reporter::quiet();
    let remote = open_remote_to_read(&args.remote, spec.remote.as_deref(), reporter)?;
    let store = TieredCache::new(&cache, remote.as_ref(), reporter);
    let executor = Executor::new(&store, &graph, &env, &quiet, &history);
    let outcomes = executor.run(&RunOptions { dry_run: true, ..RunOptions::default() }, &mut |_, _| {});
    let last = history.first();
    let live = in_flight(&cache, &history);
    // Per step: `queued`/`running` and where, for the steps a live run computes.
    let live: Vec<Option<(&'static str, String)>> = outcomes
        .iter()
        .map(|o| o.key.as_ref().and_then(|k| live.get(k).cloned()))
        .zip(&outcomes)
        .map(|(l, o)| l.filter(|(now, _)| *now != "failed" || o.status == StepStatus::WouldRun))
        .collect();
    // Per step that is not stored: the error of its latest attempt at this key, when that failed
    // (a cancelled Slurm job, a failed download): `failed`, not `never-run`.
    let last_failure: Vec<Option<String>> = graph
        .steps
        .iter()
        .zip(&outcomes)
        .map(|(s, o)| match (&o.key, o.status) {
            (Some(key), StepStatus::WouldRun) => last_failure(&history, &s.base, key),
            _ => None,
        })
        .collect();
    // Which results the remote holds: those decided from it, and those the local cache has
    // that it has too. `None` without a remote or a key.
    let local_keys: Vec<StepKey> =
        outcomes.iter().filter(|o| o.from_remote.is_none()).filter_map(|o| o.key.clone()).collect();
    let mut asked = store.on_remote(&local_keys).into_iter();
    let on_remote: Vec<Option<bool>> = outcomes
        .iter()
        .map(|o| match (&o.key, o.from_remote.is_some()) {
            _ if store.remote().is_none() => None,
            (_, true) => Some(true),
            (Some(_), false) => asked.next().flatten(),
            (None, false) => None,
        })
        .collect();

    if args.json {
        let steps: Vec<_> = graph
            .steps
            .iter()
            .zip(&outcomes)
            .enumerate()
            .map(|(i, (s, o))| {
                json!({
                    "name": s.name,
                    "kind": s.kind.spec().kind,
                    "state": live[i].as_ref().map_or(if last_failure[i].is_some() { "failed" } else { state(o) }, |l| l.0),
                    "where": live[i].as_ref().filter(|l| l.0 != "failed").map(|l| l.1.as_str()),
                    "key": o.key.as_ref().map(|k| k.as_str()),
                    "reasons": o.reasons.iter().filter(|r| **r != DirtyReason::NeverRun).map(ToString::to_string).collect::<Vec<_>>(),
                    "error": o.failure.as_ref().map(|f| f.message.as_str()).or(last_failure[i].as_deref())
                        .or(live[i].as_ref().filter(|l| l.0 == "failed").map(|l| l.1.as_str())),
                    "remote": on_remote[i],
                    "local": o.status == StepStatus::WouldUseCache && o.from_remote.is_none(),
                })
            })
            .collect();
        reporter.document(&json!({
            "pipeline": graph.name,
            "file": file,
            "last_run": last.map(|r| json!({"id": r.id, "started": r.started, "state": r.state})),
            "steps": steps,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let last_text = match last {
        Some(r) => format!("last run {} ({})", r.started, r.state.as_str()),
        None => "never run".to_string(),
    };
    let remote_text = remote.as_ref().map(|r| format!(", remote {}", r.url())).unwrap_or_default();
    reporter.line(&format!("pipeline {} ({}), {last_text}{remote_text}", graph.name, file.display()));
    let width = graph.steps.iter().map(|s| s.name.len()).max().unwrap_or(4);
    for (i, (s, o)) in graph.steps.iter().zip(&outcomes).enumerate() {
        let mut reasons: Vec<String> =
            o.reasons.iter().filter(|r| **r != DirtyReason::NeverRun).map(ToString::to_string).collect();
        if let Some(failure) = &o.failure {
            reasons.push(failure.message.clone());
        }
        let place = match (on_remote[i], o.from_remote.is_some(), o.status == StepStatus::WouldUseCache) {
            (None, _, _) => String::new(),
            (Some(true), true, _) => format!("{:<12}  ", "remote only"),
            (Some(true), false, true) => format!("{:<12}  ", "local+remote"),
            (Some(true), false, false) => format!("{:<12}  ", "remote"),
            (Some(false), _, true) => format!("{:<12}  ", "local only"),
            (Some(false), _, false) => format!("{:<12}  ", "-"),
        };
        let (shown, reasons) = match (&live[i], &last_failure[i]) {
            (Some((now, at)), _) => (*now, vec![at.clone()]),
            (None, Some(error)) => ("failed", vec![error.clone()]),
            (None, None) => (state(o), reasons),
        };
        let line = format!("  {:<width$}  {:<10}  {place}{}", s.name, shown, reasons.join("; "));
        reporter.line(line.trim_end());
        if let Some(help) = o.failure.as_ref().and_then(|f| f.help.as_deref()) {
            reporter.line(&format!("  {:<width$}  {:<10}  help: {help}", "", ""));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The error of the latest recorded attempt at `key` of step `name` (history newest first),
/// when it failed; `None` when it never ran or last ran fine (then gone: the reasons say so).
fn last_failure(history: &[RunRecord], name: &str, key: &StepKey) -> Option<String> {
    let attempt = history.iter().filter_map(|r| r.step(name)).find(|s| {
        s.key.as_ref() == Some(key) && matches!(s.status, StepStatus::Ran | StepStatus::Cached | StepStatus::Failed)
    })?;
    (attempt.status == StepStatus::Failed).then(|| attempt.error.clone().unwrap_or_else(|| "failed".into()))
}

/// The keys that runs in progress compute now: `running` (here, its compute lock taken) or,
/// for a Slurm job, `queued`/`running` as the cluster says; with where (`slurm job 12 on
/// node1`, `run <id>`). Records of runs that were killed say `running` forever: only what the
/// lock or the cluster confirms counts, and a job of such a run that the cluster says ended
/// otherwise than completed is `failed` (`slurm job 12 cancelled`).
fn in_flight(cache: &Cache, history: &[RunRecord]) -> BTreeMap<StepKey, (&'static str, String)> {
    let mut local: Vec<(StepKey, String)> = Vec::new();
    let mut jobs: Vec<(StepKey, JobRef)> = Vec::new();
    for run in history.iter().filter(|r| r.state == RunState::Running) {
        for step in run.steps.iter().filter(|s| s.status == StepStatus::Running) {
            let Some(key) = step.key.clone() else { continue };
            match &step.job {
                Some(job) if job.executor == "slurm" => jobs.push((key, job.clone())),
                Some(_) => {}
                None => local.push((key, run.id.clone())),
            }
        }
    }
    let mut out = BTreeMap::new();
    for (key, run) in local {
        if cache.is_computing(&key) {
            out.insert(key, ("running", format!("in run {run}")));
        }
    }
    if !jobs.is_empty() {
        let ids: Vec<String> = jobs.iter().map(|(_, j)| j.id.clone()).collect();
        let rows = queue_rows(&ids).unwrap_or_default();
        for (key, mut job) in jobs {
            let Some(row) = rows.get(&job.id) else { continue };
            let now = match &row.state {
                s if s.is_queued() => "queued",
                s if s.is_running() => "running",
                // The run that watched it was killed before it ended (a second Ctrl-C): its
                // record says running, the cluster says how it ended.
                s if s.is_terminal() && *s != SlurmState::Completed => {
                    out.insert(key, ("failed", format!("slurm job {} {}", job.id, s.word())));
                    continue;
                }
                _ => continue,
            };
            job.node = if now == "running" { row.node.clone() } else { None };
            let mut at = place(&job);
            if let (Some(reason), "queued") = (&row.reason, now) {
                at.push_str(&format!(" ({reason})"));
            }
            out.insert(key, (now, at));
        }
    }
    out
}
