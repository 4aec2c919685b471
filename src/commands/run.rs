//! `pipe run PIPELINE.yaml`: decide every step, run what is not cached, record the run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::cache::Cache;
use crate::commands::GlobalArgs;
use crate::commands::{environment, load_swept, open_remote, RemoteArgs, Swept, TrackArgs};
use crate::error::Error;
use crate::executor::job_file::JobRemote;
use crate::executor::slurm::{SlurmConfig, MAX_POLL, PATIENCE};
use crate::executor::{Executor, LocalBackend, Placement, RunOptions, SlurmBackend};
use crate::graph::PipelineGraph;
use crate::provenance::GitState;
use crate::reporter::{seconds, step_json, Reporter};
use crate::run_record::{RunRecord, RunState, StepRecord, StepStatus};
use crate::spec::{did_you_mean, ExecutorKind, OverrideArg, PipelineSpec, SweepArg};
use crate::step_key::StepKey;
use crate::step_outcome::StepOutcome;
use crate::tiered_cache::TieredCache;

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
    /// Steps in flight at once [default: the CPUs here; 16 when steps run on Slurm]. Steps that
    /// compute on every core (training, evaluation, tokenizing) run here one at a time, the
    /// light ones beside them.
    #[arg(long, short = 'j', env = "PIPE_JOBS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Where the steps that have to run run: here, or as Slurm batch jobs (`sbatch`) [default:
    /// the pipeline's `executor:`, else local]. `local` runs every step here.
    #[arg(long, env = "PIPE_EXECUTOR", value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorKind>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub track: TrackArgs,
}

/// Slurm jobs in flight at once unless `--jobs` or `executor: {jobs: N}` say otherwise.
const DEFAULT_SLURM_JOBS: usize = 16;

pub fn execute(args: &RunArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let Swept { spec, graph, variants, labels, maps } = load_swept(&args.pipeline, &args.set, &args.sweep)?;
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
    // Where each step runs; --executor local keeps every step here.
    let kind = args.executor.unwrap_or(spec.executor.kind);
    let on_slurm: Vec<bool> = graph
        .steps
        .iter()
        .map(|s| {
            if args.executor == Some(ExecutorKind::Local) {
                return false;
            }
            let own = spec.steps.iter().find(|t| t.name == s.base).and_then(|t| t.executor);
            match own {
                Some(k) => k == ExecutorKind::Slurm,
                None => {
                    kind == ExecutorKind::Slurm && !spec.executor.local_kinds.iter().any(|k| k == s.kind.spec().kind)
                }
            }
        })
        .collect();
    let slurm_used = on_slurm.iter().any(|&s| s);
    refuse_auto_device(&graph, &on_slurm, &args.pipeline)?;
    let cores = pipe_steps::runtime::default_threads();
    let jobs = args.jobs.map(|j| j as usize).or(spec.executor.jobs);
    let jobs = jobs.unwrap_or(if slurm_used { DEFAULT_SLURM_JOBS } else { cores });
    let local_jobs = if slurm_used { jobs.min(cores) } else { jobs };
    if slurm_used && !args.dry_run {
        check_slurm()?;
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
    let mode = if slurm_used { format!("{mode}, on slurm ({jobs} jobs at a time)") } else { mode };
    reporter.line(&format!(
        "pipeline {} ({} step{}{swept}), cache {}{mode}",
        graph.name,
        graph.steps.len(),
        if graph.steps.len() == 1 { "" } else { "s" },
        global.cache_dir.display()
    ));
    // Results go up while the steps after them run; the run waits for them before it ends.
    let store = TieredCache::new(&cache, remote.as_ref(), reporter).upload_in_background();
    let executor = Executor::new(&store, &graph, &env, reporter, &history);
    let started = Instant::now();
    let id = RunRecord::new_id();
    let pending = StepOutcome::new(StepStatus::Pending);
    let git = match (args.dry_run, spec.file.parent()) {
        (false, Some(dir)) => GitState::of(if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir }),
        _ => None,
    };
    let user = crate::provenance::user();
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
            host: Some(crate::provenance::host()),
            user: user.clone(),
            git: git.clone(),
            steps: map.iter().map(|&i| StepRecord::of(&graph.steps[i], &pending)).collect(),
        })
        .collect();
    // Held while this process lives: a record left `running` by a run that died is told
    // apart from a live one by its free lock (gc, status).
    let mut alive = Vec::new();
    if !args.dry_run {
        for record in &records {
            alive.push(cache.run_lock(&record.id)?);
            record.save(&cache)?;
        }
    }
    let options = RunOptions { force, dry_run: args.dry_run, jobs, local_jobs };
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
    let local = LocalBackend { compute: executor.compute() };
    let slurm = if slurm_used {
        let config = slurm_config(&spec, &graph, global, args, remote.as_ref())?;
        Some(SlurmBackend::new(executor.compute(), config))
    } else {
        None
    };
    let mut placement = Placement { backends: vec![&local], of_step: vec![0; graph.steps.len()] };
    if let Some(slurm) = &slurm {
        placement.backends.push(slurm);
        placement.of_step = on_slurm.iter().map(|&s| usize::from(s)).collect();
    }
    let outcomes = std::thread::scope(|scope| {
        let uploads = scope.spawn(|| store.upload_worker());
        let outcomes = executor.run_on(&options, &placement, &mut observe);
        store.finish_uploads();
        let _ = uploads.join();
        outcomes
    });
    let (uploaded, uploaded_bytes) = store.uploaded();
    if uploaded > 0 {
        reporter.line(&format!(
            "pushed {uploaded} result{} to the remote, {}",
            if uploaded == 1 { "" } else { "s" },
            crate::reporter::human_bytes(uploaded_bytes)
        ));
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| o.status == StepStatus::Failed).collect();
    let ok = failed.is_empty();
    if !args.dry_run {
        for (record, map) in records.iter_mut().zip(&maps) {
            let variant_ok = map.iter().all(|&i| outcomes[i].status != StepStatus::Failed);
            record.state = if variant_ok && ok { RunState::Succeeded } else { RunState::Failed };
            record.seconds = started.elapsed().as_secs_f64();
            record.save(&cache)?;
        }
        for (lock, record) in alive.into_iter().zip(&records) {
            cache.end_run(lock, &record.id);
        }
        // What this run used from the local cache that the remote lacks (a killed push, a run
        // in fallback mode or during an outage) goes up now.
        let used: Vec<(String, StepKey)> = graph
            .steps
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o.status, StepStatus::Cached | StepStatus::Ran) && o.from_remote.is_none())
            .filter_map(|(s, o)| Some((s.name.clone(), o.key.clone()?)))
            .collect();
        let caught_up = store.catch_up(&used, reporter);
        store.settle();
        if caught_up > 0 {
            reporter
                .line(&format!("pushed {caught_up} result{} the remote lacked", if caught_up == 1 { "" } else { "s" }));
        }
        // The team's runs are on the remote too, for `pipe report` elsewhere.
        store.push_runs(&records);
        args.track.tracking().after_run(&cache, &records, reporter);
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

/// `device: auto` is resolved (and keyed) where the run is decided, on the machine that
/// submits: a job on a GPU node would train on the login node's choice (its CPU) without a
/// word. Jobs name their device.
fn refuse_auto_device(graph: &PipelineGraph, on_slurm: &[bool], file: &std::path::Path) -> Result<(), Error> {
    let mut steps: Vec<&str> = graph
        .steps
        .iter()
        .zip(on_slurm)
        .filter(|(s, &slurm)| slurm && s.params.get("device").and_then(|v| v.as_str()) == Some("auto"))
        .map(|(s, _)| s.base.as_str())
        .collect();
    steps.dedup();
    match steps.as_slice() {
        [] => Ok(()),
        names => Err(Error::usage(
            format!(
                "{}: {} `{}` {} as a Slurm job with `device: auto`, which would be decided on this machine, not on \
                 the node that runs it",
                file.display(),
                if names.len() == 1 { "step" } else { "steps" },
                names.join("`, `"),
                if names.len() == 1 { "runs" } else { "run" },
            ),
            Some(
                "name the node's device: `device: cuda` (with `resources: { gpus: 1 }`) or `device: cpu`; or keep \
                 the step here with `executor: local`"
                    .into(),
            ),
        )),
    }
}

/// Fails early, as a usage error, when the Slurm commands are not there.
fn check_slurm() -> Result<(), Error> {
    match std::process::Command::new("sbatch").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(Error::usage(
            "the Slurm executor needs `sbatch` (and squeue, scontrol, scancel), which is not on PATH",
            Some("run on a Slurm login node, or `--executor local` to run every step here".into()),
        )),
    }
}

/// How this run submits jobs: resources from the pipeline, the pipe binary, the cache and
/// the remote the jobs use.
fn slurm_config(
    spec: &PipelineSpec,
    graph: &PipelineGraph,
    global: &GlobalArgs,
    args: &RunArgs,
    remote: Option<&crate::remote::Remote>,
) -> Result<SlurmConfig, Error> {
    let binary = match &spec.executor.binary {
        Some(b) => std::path::absolute(spec.base_dir.join(b)).unwrap_or_else(|_| spec.base_dir.join(b)),
        None => std::env::current_exe()
            .map_err(|e| Error::usage(format!("cannot tell where this pipe binary is: {e}"), None))?,
    };
    let cache_dir = std::path::absolute(&global.cache_dir).unwrap_or_else(|_| global.cache_dir.clone());
    let resources = graph
        .steps
        .iter()
        .map(|s| spec.steps.iter().find(|t| t.name == s.base).map(|t| t.resources.clone()).unwrap_or_default())
        .collect();
    let max_poll = std::env::var("PIPE_SLURM_POLL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(MAX_POLL);
    // The nodes' own caches only make sense with a remote that jobs push to and read from.
    let node_cache = spec.executor.node_cache.as_ref().map(|d| {
        let d = spec.base_dir.join(d);
        std::path::absolute(&d).unwrap_or(d)
    });
    if node_cache.is_some() && !remote.is_some_and(|r| r.writable()) {
        return Err(Error::usage(
            "`executor: node_cache:` needs a remote cache the jobs can write to: the nodes' results reach this \
             machine through it",
            Some("pass --remote s3://BUCKET/PREFIX (or set PIPE_REMOTE, or `remote:` in the pipeline)".into()),
        ));
    }
    let patience = std::env::var("PIPE_SLURM_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(PATIENCE);
    let mode = clap::ValueEnum::to_possible_value(&args.remote.remote_mode)
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| "read-write".into());
    Ok(SlurmConfig {
        defaults: spec.executor.resources.clone(),
        resources,
        binary,
        sbatch_args: spec.executor.sbatch_args.clone(),
        cache_dir,
        node_cache,
        remote: remote.map(|r| JobRemote { url: r.url().to_string(), mode }),
        max_poll,
        patience,
    })
}
