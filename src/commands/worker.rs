//! `pipe worker JOBFILE` (hidden): computes one step as a cluster job. The Slurm executor
//! submits jobs that run it on a node ([`crate::executor::slurm`]).
//!
//! It reads the job file ([`crate::executor::job_file`]), and:
//! - exits 0 at once when the key is already committed (a requeued or repeated job, or another
//!   run that got there first);
//! - finds every input in the cache by key (pulling it from the remote cache when the node's
//!   cache lacks it), and computes the step's key again from what it found; a different key
//!   (other input bytes, another local file, another pipe) is refused, exit 2;
//! - computes the step the way a local run does ([`crate::executor::Compute`]: compute lock,
//!   scratch directory, commit, push to the remote);
//! - prints the step's log lines on stdout (the job's output file, which `pipe run` follows),
//!   its own lines prefixed `pipe worker: `, and the error on stderr; writes
//!   `<job id>.result.json` beside the job file; exits 0, 1 (failed), 2 (bad input) or 130
//!   (cancelled: `scancel` sends SIGTERM, which stops the step at its next check).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use pipe_steps::command::{self, Command};
use pipe_steps::Params;

use crate::cache::{Cache, Lookup};
use crate::commands::{environment_for, GlobalArgs};
use crate::dirty_reason::DirtyReason;
use crate::error::Error;
use crate::executor::job_file::{JobFile, JobResult};
use crate::executor::slurm::WORKER_PREFIX;
use crate::executor::Compute;
use crate::fingerprint::{local_paths, Fingerprint};
use crate::plan::{PlannedInput, PlannedStep};
use crate::remote::{Remote, RemoteMode};
use crate::reporter::{seconds, Interrupted, Reporter};
use crate::run_record::StepStatus;
use crate::step_outcome::StepFailure;
use crate::tiered_cache::TieredCache;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The job file (`<cache>/jobs/<key>/job.json`).
    pub job: PathBuf,
}

pub fn execute(args: &WorkerArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let file = JobFile::read(&args.job).map_err(|e| Error::usage(e, None))?;
    // The cores Slurm gave the job, else --threads, else every CPU this process may use.
    let threads = std::env::var("SLURM_CPUS_PER_TASK").ok().and_then(|t| t.parse::<usize>().ok()).or(global.threads);
    let mut env = environment_for(file.mirror.clone(), threads, Interrupted::Worker);
    env.hub_endpoint = file.hub_endpoint.clone();
    env.hub_cache = file.hub_cache.clone();
    let host = crate::provenance::host();
    let job_id = std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty());
    let result_path = args
        .job
        .parent()
        .map(|d| d.join(format!("{}.result.json", job_id.as_deref().unwrap_or("manual"))))
        .unwrap_or_else(|| PathBuf::from("result.json"));
    reporter.line(&format!(
        "{WORKER_PREFIX}step {} ({}), key {}, on {host}{}, {} threads",
        file.step,
        file.kind,
        file.key.short(),
        job_id.as_deref().map(|j| format!(" (slurm job {j})")).unwrap_or_default(),
        env.threads
    ));
    let finish = |result: JobResult| -> ExitCode {
        let code = match result.status {
            StepStatus::Ran | StepStatus::Cached => 0,
            _ if env.is_cancelled() => 130,
            _ if result.failure.as_ref().is_some_and(|f| f.bad_input) => 2,
            _ => 1,
        };
        match result.status {
            StepStatus::Ran => reporter.line(&format!("{WORKER_PREFIX}done in {}, committed", seconds(result.seconds))),
            StepStatus::Cached => {
                reporter.line(&format!("{WORKER_PREFIX}the result is committed already; nothing to do"))
            }
            _ => {
                let failure = result.failure.as_ref();
                reporter.note(&format!("{WORKER_PREFIX}error: {}", failure.map_or("failed", |f| f.message.as_str())));
                if let Some(help) = failure.and_then(|f| f.help.as_ref()) {
                    reporter.note(&format!("{WORKER_PREFIX}help: {help}"));
                }
            }
        }
        if let Err(e) = result.write(&result_path) {
            reporter.note(&format!("{WORKER_PREFIX}error: writing {}: {e}", result_path.display()));
        }
        ExitCode::from(code)
    };
    let refuse = |r: StepFailure| JobResult {
        status: StepStatus::Failed,
        failure: Some(r),
        seconds: 0.0,
        timings: Vec::new(),
        host: host.clone(),
    };

    // The node's own cache when the pipeline names one (results then move through the remote),
    // else the submitting run's, shared with the node.
    let results_dir = file.node_cache.as_ref().unwrap_or(&file.cache_dir);
    let cache = match Cache::open(results_dir) {
        Ok(c) => c,
        Err(e) => {
            let help = if file.node_cache.is_some() {
                "`executor: node_cache:` must be a directory the job can create on its node"
            } else {
                "the job's cache directory must be reachable from the node (a shared filesystem)"
            };
            return Ok(finish(refuse(StepFailure::new(e.to_string(), Some(help.into()), false))));
        }
    };
    // A repeated job (requeued, resubmitted) or another run may have committed the key.
    if let Lookup::Hit(manifest) = cache.lookup(&file.key) {
        if !file.forced || file.replaces.as_deref().is_some_and(|r| r != manifest.dir) {
            let result =
                JobResult { status: StepStatus::Cached, failure: None, seconds: 0.0, timings: Vec::new(), host };
            return Ok(finish(result));
        }
    }
    let remote = match &file.remote {
        None => None,
        Some(r) => {
            // A mode this pipe does not know (a newer submitter) is refused, never read-write.
            let mode = match RemoteMode::from_str(&r.mode, true) {
                Ok(mode) => mode,
                Err(_) => {
                    let message = format!("the job file's remote mode `{}` is not one this pipe knows", r.mode);
                    let help = "the node must run the same pipe version as the submitting machine";
                    return Ok(finish(refuse(StepFailure::new(message, Some(help.into()), true))));
                }
            };
            match Remote::open(&r.url, mode).and_then(|remote| remote.check().map(|()| remote)) {
                Ok(remote) => Some(remote),
                Err(e) if mode == RemoteMode::Fallback => {
                    reporter.note(&format!("{WORKER_PREFIX}warning: {e}; working without the remote"));
                    None
                }
                Err(e) => return Ok(finish(refuse(StepFailure::new(e.to_string(), e.help.clone(), e.config)))),
            }
        }
    };
    let store = TieredCache::new(&cache, remote.as_ref(), reporter);
    let job = match job(&file, &store, reporter) {
        Ok(job) => job,
        Err(r) => return Ok(finish(refuse(r))),
    };
    let compute = Compute { store: &store, env: &env, reporter };
    let events = reporter.for_step(&job.name);
    let outcome = compute.run(&job, &events, &mut || {});
    store.settle();
    let failure = outcome.failure.as_ref();
    let result = JobResult {
        status: match outcome.status {
            StepStatus::Ran | StepStatus::Cached => outcome.status,
            _ => StepStatus::Failed,
        },
        failure: failure.cloned(),
        seconds: outcome.seconds,
        timings: outcome.timings.clone(),
        host,
    };
    Ok(finish(result))
}

/// The job as this node sees it: its inputs found in the cache (or pulled), its key computed
/// again and compared.
fn job(file: &JobFile, store: &TieredCache<'_>, reporter: &Reporter) -> Result<PlannedStep, StepFailure> {
    let cache = store.local();
    let params = Params::new(file.params.clone());
    // A command step's kind is made from its declaration, which its parameters carry.
    let kind = match file.kind.as_str() {
        command::KIND => {
            let inputs: Vec<String> = file.inputs.keys().cloned().collect();
            Command::declare(&inputs, &params).map_err(|e| StepFailure::new(e.to_string(), None, true))?
        }
        other => pipe_steps::find(other).ok_or_else(|| {
            StepFailure::new(format!("unknown step kind `{other}`: the node runs another pipe version"), None, true)
        })?,
    };
    let mut inputs = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for (name, input) in &file.inputs {
        let mut manifest = match cache.lookup(&input.key) {
            Lookup::Hit(m) => Some(m),
            _ => None,
        };
        if manifest.is_none() && store.remote().is_some() {
            let outputs: Vec<&str> = input.upstream_outputs.iter().map(String::as_str).collect();
            let lock = store.lock(&input.key).map_err(|e| StepFailure::new(e.to_string(), None, false))?;
            let events = reporter.for_step(&file.step);
            manifest = match store.fetch(&lock, &input.key, &outputs, &file.step, &events) {
                Ok(found) => found.map(|(m, _)| m),
                Err(e) => return Err(StepFailure::new(e.to_string(), e.help.clone(), e.config)),
            };
        }
        let Some(manifest) = manifest else {
            return Err(StepFailure::new(
                format!("input `{name}` (key {}) is not in the cache at {}", input.key.short(), cache_dir(file)),
                Some("the nodes must share the cache directory, or the run needs a remote cache (`--remote`)".into()),
                false,
            ));
        };
        let hash = manifest.outputs.get(&input.output).map(|o| o.hash.clone()).unwrap_or_default();
        hashes.insert(name.clone(), hash.clone());
        inputs.insert(
            name.clone(),
            PlannedInput {
                key: input.key.clone(),
                output: input.output.clone(),
                hash,
                path: cache.output_path(&manifest, &input.output),
                upstream_outputs: Vec::new(),
            },
        );
    }
    let mut sources = BTreeMap::new();
    for (name, path) in local_paths(kind, &params) {
        let hash = Cache::hash_local(&path).map_err(|e| StepFailure::new(e.to_string(), None, true))?;
        sources.insert(name, hash);
    }
    let fingerprint = Fingerprint::new(kind, &params, hashes, sources);
    let key = fingerprint.key();
    if key != file.key {
        let what: Vec<String> =
            DirtyReason::diff(&file.fingerprint, &fingerprint).iter().map(ToString::to_string).collect();
        return Err(StepFailure::new(
            format!(
                "the step's key on this node is {}, not {} as submitted ({}); refusing to run",
                key.short(),
                file.key.short(),
                if what.is_empty() { "the pipe versions differ".to_string() } else { what.join("; ") }
            ),
            Some("the node must see the same files as the submitting machine (a shared filesystem) and run the same pipe".into()),
            true,
        ));
    }
    Ok(PlannedStep {
        index: 0,
        position: 0,
        name: file.step.clone(),
        base: file.base.clone(),
        kind,
        params,
        inputs,
        sources: file.sources.clone(),
        key,
        fingerprint,
        reasons: Vec::new(),
        forced: file.forced,
        replaces: file.replaces.clone(),
    })
}

fn cache_dir(file: &JobFile) -> String {
    file.node_cache.as_ref().unwrap_or(&file.cache_dir).display().to_string()
}
