//! `pipe report [PIPELINE.yaml]`: the accuracy-per-epoch table of the latest run (or, when it
//! failed, the latest good one with its parameters), its final evaluation, and every run with
//! a result of its own compared, with who ran it (the HTML form charts them:
//! `pipe_steps::report`). This module gathers the runs and their metrics from the cache (and
//! the remote, when it answers), and the epochs' timings from the run records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use pipe_steps::report::{Format, Report, RunCollector, RunReport};
use pipe_steps::{Reported, Timing};
use serde_json::Value as Json;

use crate::cache::Cache;
use crate::commands::GlobalArgs;
use crate::commands::{load_pipeline, open_remote_to_read, RemoteArgs};
use crate::error::Error;
use crate::provenance::GitState;
use crate::reporter::Reporter;
use crate::run_record::{RunRecord, RunState, StepRecord, StepStatus};
use crate::step_key::StepKey;
use crate::tiered_cache::TieredCache;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The pipeline file (default: the one most recently run with this cache).
    pub pipeline: Option<PathBuf>,
    /// table, markdown, csv, json or html (one self-contained file with charts).
    #[arg(long, default_value = "table", value_parser = ["table", "markdown", "md", "csv", "json", "html"])]
    pub format: String,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// With a remote cache, the runs recorded there (by every machine) are compared too.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Where runs' results are read from: the local cache, then the remote.
struct Results<'a> {
    store: &'a TieredCache<'a>,
    /// Label runs with the machine they ran on (runs of more than one machine are compared).
    hosts: bool,
    /// Per key, the timings of the step that computed it (the latest run that did).
    timings: BTreeMap<StepKey, Vec<Timing>>,
}

/// Per key, the timings recorded by the latest run that computed it.
fn timings(runs: &[RunRecord]) -> BTreeMap<StepKey, Vec<Timing>> {
    let mut out = BTreeMap::new();
    for step in runs.iter().flat_map(|r| &r.steps) {
        if let (Some(key), StepStatus::Ran, false) = (&step.key, step.status, step.timings.is_empty()) {
            out.insert(key.clone(), step.timings.clone());
        }
    }
    out
}

pub fn execute(args: &ReportArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let cache = Cache::at(&global.cache_dir);
    let (name, configured) = match &args.pipeline {
        Some(file) => {
            let (spec, graph) = load_pipeline(file, &[])?;
            (graph.name, spec.remote)
        }
        None => match RunRecord::latest(&cache, None) {
            Some(r) => (r.pipeline, None),
            None if args.remote.remote.is_some() => {
                return Err(Error::usage(
                    "name the pipeline to report on: no run is recorded locally",
                    Some("`pipe report PIPELINE.yaml --remote URL`".into()),
                ))
            }
            None => return Err(no_runs(global, None)),
        },
    };
    let mut runs: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == name).collect();
    let mut remote = open_remote_to_read(&args.remote, configured.as_deref(), reporter)?;
    if let Some(r) = &remote {
        match r.runs(&name) {
            Ok(theirs) => {
                for run in theirs {
                    if !runs.iter().any(|r| r.id == run.id && r.host == run.host) {
                        runs.push(run);
                    }
                }
                runs.sort_by(|a, b| a.id.cmp(&b.id));
            }
            // Reading only: what the local cache holds is still worth showing.
            Err(e) => {
                reporter.warning(&format!("{e}; showing the local cache only"));
                remote = None;
            }
        }
    }
    // Runs recorded before hosts were (no host) do not make a second machine.
    let hosts = runs.iter().filter_map(|r| r.host.as_ref()).collect::<BTreeSet<_>>().len() > 1;
    let store = TieredCache::new(&cache, remote.as_ref(), reporter);
    let results = Results { store: &store, hosts, timings: timings(&runs) };
    let Some(latest) = headline(&runs) else { return Err(no_runs(global, Some(&name))) };
    let (comparison, differing) = compare(&results, &runs);
    let report = Report { pipeline: name.clone(), latest: run_report(&results, latest, &differing), comparison };
    let format = Format::parse(&args.format).unwrap_or(Format::Table);
    let text = report.render(format);
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|source| Error::Write { path: path.clone(), source })?;
            reporter.note(&format!("wrote {}", path.display()));
        }
        None => reporter.line(text.trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}

fn no_runs(global: &GlobalArgs, pipeline: Option<&str>) -> Error {
    let what = pipeline.map(|p| format!("no run of pipeline `{p}`")).unwrap_or_else(|| "no runs".into());
    Error::usage(
        format!("{what} recorded in {}", global.cache_dir.display()),
        Some("start one: `pipe run pipelines/nsmc-tiny.yaml --mirror ../shared/nsmc`".into()),
    )
}

/// `step.param` → value text, for every parameter of every step of the run.
fn flat_params(run: &RunRecord) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in &run.steps {
        for (k, v) in &s.params {
            let text = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(format!("{}.{k}", s.name), text);
        }
    }
    out
}

/// The run the report is about: the latest one, unless it failed or did not finish and an
/// earlier run with the same parameters succeeded (a failed `--force` rerun does not hide a
/// good result).
fn headline(runs: &[RunRecord]) -> Option<&RunRecord> {
    let latest = runs.last()?;
    if latest.state == RunState::Succeeded {
        return Some(latest);
    }
    let params = flat_params(latest);
    runs.iter().rev().find(|r| r.state == RunState::Succeeded && flat_params(r) == params).or(Some(latest))
}

/// Every run with a result of its own — runs that repeat another's parameters, outcome and
/// keys (a rerun that found everything cached) are the first of them, the one that computed
/// it — the succeeded ones first, each group oldest first; with the parameters that differ as
/// columns, and those parameters. Empty unless at least two rows.
fn compare(results: &Results, runs: &[RunRecord]) -> (Vec<RunReport>, BTreeSet<String>) {
    type Identity = (BTreeMap<String, String>, &'static str, Vec<Option<StepKey>>);
    let mut seen: BTreeSet<Identity> = BTreeSet::new();
    let mut chosen: Vec<&RunRecord> = Vec::new();
    for r in runs {
        let identity = (flat_params(r), r.state.as_str(), r.steps.iter().map(|s| s.key.clone()).collect());
        if seen.insert(identity) {
            chosen.push(r);
        }
    }
    if chosen.len() < 2 {
        return (Vec::new(), BTreeSet::new());
    }
    let params: Vec<BTreeMap<String, String>> = chosen.iter().map(|r| flat_params(r)).collect();
    let mut differing = BTreeSet::new();
    let sets: Vec<&BTreeMap<String, String>> = params.iter().collect();
    // A step that only some runs have (added to the pipeline later) is not a parameter change.
    let has_step = |set: &BTreeMap<String, String>, key: &str| {
        let step = key.split_once('.').map_or(key, |(s, _)| s);
        set.keys().any(|k| k.split_once('.').is_some_and(|(s, _)| s == step))
    };
    for key in sets.iter().flat_map(|s| s.keys()) {
        let first = sets[0].get(key);
        if sets.iter().all(|s| has_step(s, key)) && sets.iter().any(|s| s.get(key) != first) {
            differing.insert(key.clone());
        }
    }
    chosen.sort_by_key(|r| (r.state != RunState::Succeeded, r.id.clone()));
    (chosen.into_iter().map(|r| run_report(results, r, &differing)).collect(), differing)
}

fn run_report(results: &Results, run: &RunRecord, differing: &BTreeSet<String>) -> RunReport {
    let params = flat_params(run).into_iter().filter(|(k, _)| differing.contains(k)).collect();
    // Every step's outputs that mean something to a report, by its kind's facts.
    let mut collector = RunCollector::new();
    for step in &run.steps {
        let Some(kind) = pipe_steps::find(&step.kind) else { continue };
        for fact in kind.spec().reported {
            match step_output::<Json>(results, step, fact.output) {
                Ok(value) => {
                    // A file that is not what the kind says is left out, as a missing one is.
                    if let Err(e) = collector.add(&step.name, fact.is, value) {
                        collector.missing(fact.is, format!("{}'s {}: {e}", step.name, fact.output));
                    }
                }
                // Why the training or the evaluation is missing is said; another model is left out.
                Err(why) if matches!(fact.is, Reported::Training | Reported::Evaluation) => {
                    collector.missing(fact.is, why)
                }
                Err(_) => {}
            }
        }
        // Timings are in no hashed output: the epochs' come from the run that computed the result.
        if let Some(timings) = step.key.as_ref().and_then(|k| results.timings.get(k)) {
            collector.timings(&step.name, timings);
        }
    }
    let label = match (&run.host, results.hosts) {
        (Some(host), true) => format!("{} on {host}", run.started),
        (None, true) => format!("{} on (unknown)", run.started),
        _ => run.started.clone(),
    } + &run.variant.as_ref().map(|v| format!(" [{v}]")).unwrap_or_default();
    let state = match run.state {
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Running => "incomplete",
    };
    RunReport {
        by: match (&run.user, &run.host) {
            (Some(user), Some(host)) => Some(format!("{user}@{host}")),
            (None, Some(host)) => Some(host.clone()),
            (Some(user), None) => Some(user.clone()),
            (None, None) => None,
        },
        commit: run.git.as_ref().map(GitState::describe),
        params,
        ..collector.run_report(label, state.into())
    }
}

/// Output `output` (a JSON file) of a step of the run, from the cache or the remote; `Err`
/// says why it is not available.
fn step_output<T: for<'de> serde::Deserialize<'de>>(
    results: &Results,
    step: &StepRecord,
    output: &str,
) -> Result<T, String> {
    let key = match (&step.key, step.status) {
        (Some(key), StepStatus::Ran | StepStatus::Cached) => key,
        (_, status) => {
            let what = if matches!(status, StepStatus::Pending | StepStatus::Running) {
                "did not finish"
            } else {
                status.as_str()
            };
            return Err(format!("{} {what}", step.name));
        }
    };
    // A run made elsewhere: its output from the remote, checked against its hash.
    let Some((bytes, path)) = results.store.read_output(key, output, &step.name) else {
        return Err(format!("{}'s result is no longer in the cache", step.name));
    };
    bytes.and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| format!("{path} is not a {output} file"))
}
