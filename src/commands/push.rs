//! `pipe push [PIPELINE.yaml] [STEP…]`: upload the results the local cache holds for the
//! pipeline's steps (all, or the STEPs named) and the pipeline's run records to the remote
//! cache. `pipe run` pushes what it runs, and what the remote lacks of what it uses, by itself;
//! this is for results made before a remote was configured, or to replace the remote's result
//! of a step with the local one (`--force`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cache::{Cache, Lookup};
use crate::commands::{environment, load_pipeline, open_remote, GlobalArgs, RemoteArgs};
use crate::error::Error;
use crate::executor::{Executor, RunOptions};
use crate::graph::PipelineGraph;
use crate::remote::{Pushed, RemoteMode};
use crate::reporter::{human_bytes, Reporter};
use crate::run_record::{RunRecord, StepStatus};
use crate::spec::{did_you_mean, OverrideArg};
use crate::tiered_cache::TieredCache;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The pipeline file (default: the one most recently run with this cache), then the steps
    /// to push (default: all).
    #[arg(value_name = "PIPELINE.yaml] [STEP")]
    pub args: Vec<String>,
    /// Push the results of the pipeline as run with this override: STEP.PARAM=VALUE.
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
    /// Replace the remote's results of the named steps with the local ones (after a forced
    /// rerun elsewhere, say). Needs the STEPs named.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `[PIPELINE.yaml] [STEP…]`: the pipeline file (given, or the latest run's) and the step names.
pub fn pipeline_and_steps(
    args: &[String],
    cache: &Cache,
    global: &GlobalArgs,
) -> Result<(PathBuf, Vec<String>), Error> {
    let looks_like_file = |a: &String| a.ends_with(".yaml") || a.ends_with(".yml") || std::path::Path::new(a).is_file();
    match args.first() {
        Some(first) if looks_like_file(first) => Ok((PathBuf::from(first), args[1..].to_vec())),
        _ => match RunRecord::latest(cache, None) {
            Some(r) => Ok((r.file, args.to_vec())),
            None => Err(Error::usage(
                format!("no pipeline given and no run recorded in {}", global.cache_dir.display()),
                Some("name a pipeline first: `pipe push pipelines/nsmc-tiny.yaml [STEP...]`".into()),
            )),
        },
    }
}

/// The graph indices of `names` (all steps when empty), or a usage error naming the unknown one.
pub fn select(graph: &PipelineGraph, names: &[String], file: &std::path::Path) -> Result<Vec<usize>, Error> {
    if names.is_empty() {
        return Ok(graph.order().to_vec());
    }
    let mut out = Vec::new();
    for name in names {
        let found = graph.indices(name);
        if found.is_empty() {
            let help = did_you_mean(name, graph.steps.iter().map(|s| s.base.as_str()));
            return Err(Error::usage(format!("no step named `{name}` in {}", file.display()), help));
        }
        out.extend(found);
    }
    let order = graph.order();
    out.sort_by_key(|i| order.iter().position(|o| o == i));
    out.dedup();
    Ok(out)
}

pub fn execute(args: &PushArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let cache = Cache::at(&global.cache_dir);
    if !cache.runs_dir().is_dir() {
        return Err(Error::usage(format!("nothing to push: no cache at {}", global.cache_dir.display()), None));
    }
    let (file, names) = pipeline_and_steps(&args.args, &cache, global)?;
    let (spec, graph) = load_pipeline(&file, &args.set)?;
    if args.force && names.is_empty() {
        return Err(Error::usage(
            "--force replaces the remote's results: name the steps",
            Some(format!("`pipe push {} STEP --force`", file.display())),
        ));
    }
    let selected = select(&graph, &names, &file)?;
    if args.remote.remote_mode == RemoteMode::ReadOnly {
        return Err(Error::usage("pipe push writes to the remote; --remote-mode is read-only", None));
    }
    let Some(remote) = open_remote(&args.remote, spec.remote.as_deref(), reporter)? else {
        return Err(no_remote(&args.remote));
    };
    let env = environment(global);
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let quiet = Reporter::quiet();
    // What the local cache holds, decided as `pipe status` would, without asking the remote.
    let local_only = TieredCache::new(&cache, None, reporter);
    let executor = Executor::new(&local_only, &graph, &env, &quiet, &history);
    let store = TieredCache::new(&cache, Some(&remote), reporter);
    let outcomes = executor.run(&RunOptions { dry_run: true, ..RunOptions::default() }, &mut |_, _| {});
    reporter.line(&format!("pipeline {} ({}), pushing to {}", graph.name, file.display(), remote.url()));
    let width = selected.iter().map(|&i| graph.steps[i].name.len()).max().unwrap_or(4);
    let (mut pushed, mut bytes, mut missing) = (0usize, 0u64, 0usize);
    for &i in &selected {
        let step = &graph.steps[i];
        let outcome = &outcomes[i];
        let manifest = match (&outcome.key, outcome.status) {
            (Some(key), StepStatus::WouldUseCache) => match cache.lookup(key) {
                Lookup::Hit(m) => Some(m),
                _ => None,
            },
            _ => None,
        };
        let Some(manifest) = manifest else {
            missing += 1;
            reporter.line(&format!("  {:<width$}  not in the local cache", step.name));
            continue;
        };
        let events = reporter.for_step(&step.name);
        let what = match store.push(&manifest, args.force, &events)? {
            Pushed::Written { files, bytes: b } => {
                pushed += 1;
                bytes += b;
                let replaced = if args.force { ", replacing the remote's result" } else { "" };
                format!("pushed {files} file{}, {}{replaced}", if files == 1 { "" } else { "s" }, human_bytes(b))
            }
            Pushed::Present => "already on the remote".to_string(),
            Pushed::Differs { host, .. } => {
                reporter.warning(&format!(
                    "{} is not deterministic: the remote holds different bytes for key {} (pushed by {host}); kept \
                     both as they are (`--force` replaces the remote's)",
                    step.name,
                    manifest.key.short()
                ));
                "the remote holds another result".to_string()
            }
        };
        reporter.line(&format!("  {:<width$}  {what}", step.name));
    }
    store.settle();
    let runs = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect::<Vec<_>>();
    for run in &runs {
        remote.push_run(run)?;
    }
    reporter.line(&format!(
        "pushed {pushed} result{}, {}; {} run record{}",
        if pushed == 1 { "" } else { "s" },
        human_bytes(bytes),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    ));
    // Steps named on the command line that are not there are an error; "all" pushes what is.
    Ok(if missing > 0 && !names.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub fn no_remote(args: &RemoteArgs) -> Error {
    if args.remote_mode == RemoteMode::Off {
        return Error::usage("--remote-mode is off", None);
    }
    Error::usage(
        "no remote cache configured",
        Some(
            "pass --remote s3://BUCKET/PREFIX (or file:///PATH), set PIPE_REMOTE, or add `remote:` to the pipeline"
                .into(),
        ),
    )
}
