//! Steps run as Slurm batch jobs. For each step that has to run:
//!
//! 1. If an earlier run (killed, or another process) submitted a job for the key and the
//!    cluster still has it queued or running, **reattach** to it: say which job it is and how to
//!    cancel it, and watch it as if this run had submitted it (its log is forwarded).
//! 2. Else, under the key's lock, look again (another run may have stored it) and ask the remote
//!    cache; either is a result without a job. A forced job's old checkpoints are cleared under
//!    that same lock.
//! 3. Write `<cache>/jobs/<key>/job.json` ([`super::job_file`]) and a batch script `job.sh`
//!    beside it with the job's `#SBATCH` options and one command, `pipe worker job.json`.
//!    Neither holds a secret.
//! 4. `sbatch --parsable --export=NAMES`: the job gets only the variables it needs from the
//!    submitting environment ([`exported`]), because slurmctld stores a job's environment in its
//!    state directory for as long as it keeps the job. The job is `queued` in the run record.
//! 5. Watch it without busy-waiting: one `squeue` for every job this run watches, at most every
//!    [`MIN_POLL`], each job's thread sleeping between looks (from [`MIN_POLL`] when it is
//!    young up to the poll limit, 2 s by default, `PIPE_SLURM_POLL` seconds). Each look forwards
//!    the new lines of the job's output file as the step's log lines. A failed `squeue` or
//!    `scontrol` (the controller restarting, overloaded) is not an end: pipe asks again with
//!    backoff, and only when the cluster has not answered for the patience (5 min,
//!    `PIPE_SLURM_PATIENCE` seconds) does it `scancel` the job and fail the step, so no job is
//!    left running unwatched. A job the cluster does not know ("Invalid job id") is another
//!    matter: it ended and was purged.
//! 6. Map the end ([`SlurmState`]): COMPLETED is `ran` once the result is in the cache (the
//!    shared cache directory, or pulled from the remote); FAILED says the worker's error and the
//!    exit code; CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL and DEADLINE
//!    each say what happened and what to change.
//!
//! Ctrl-C sets the environment's cancellation flag; every job's thread sees it within
//! [`SLICE`] and runs `scancel` on its job, then waits for the job to end. A second Ctrl-C
//! exits at once, cancelling every job this process submitted first ([`cancel_submitted`]).
//!
//! The worker takes the key's compute lock on the node and commits as a local run does; while
//! the job waits, this process holds its inputs in use, so gc leaves them alone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipe_steps::{Environment, Events};

use super::compute::{Compute, Prepared};
use super::job_file::{JobFile, JobRemote, JobResult};
pub use super::slurm_error::SlurmError;
pub use super::slurm_state::SlurmState;
use super::{Backend, StepUpdate};
use crate::cache::{KeyLock, Lookup};
use crate::plan::{output_hashes, PlannedStep};
use crate::run_record::{JobRef, RunRecord, RunState, StepStatus};
use crate::spec::Resources;
use crate::step_outcome::{StepFailure, StepOutcome};

/// The shortest time between two looks at the queue (and at a young job).
pub const MIN_POLL: Duration = Duration::from_millis(250);
/// The longest time between two looks at a job, unless `PIPE_SLURM_POLL` says otherwise.
pub const MAX_POLL: Duration = Duration::from_secs(2);
/// How long the cluster may fail to answer about a job before pipe cancels it and fails the
/// step, unless `PIPE_SLURM_PATIENCE` says otherwise: a slurmctld restart or failover takes
/// a minute or two.
pub const PATIENCE: Duration = Duration::from_secs(300);
/// The longest wait between two asks while the cluster does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a sleeping job thread checks for Ctrl-C.
const SLICE: Duration = Duration::from_millis(100);
/// How long to wait for a cancelled job to end before giving up on it.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// Job ids this process submitted and has not seen end: cancelled on a second Ctrl-C.
static SUBMITTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `scancel`s every job this process submitted that has not ended (for the second Ctrl-C,
/// which exits without waiting). Best effort.
pub fn cancel_submitted() {
    let ids: Vec<String> = SUBMITTED.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("scancel").args(&ids).output();
    }
}

/// How jobs are submitted.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// The `executor:` section's resources (with its partition).
    pub defaults: Resources,
    /// Each graph step's own `resources:`.
    pub resources: Vec<Resources>,
    /// The `pipe` the jobs run.
    pub binary: PathBuf,
    /// More `#SBATCH` options.
    pub sbatch_args: Vec<String>,
    /// Absolute: the job file names it.
    pub cache_dir: PathBuf,
    /// The nodes' own cache for results (`executor: node_cache:`), when they do not share
    /// `cache_dir`'s results: jobs then move them through the remote.
    pub node_cache: Option<PathBuf>,
    pub remote: Option<JobRemote>,
    /// The longest sleep between two looks at a job.
    pub max_poll: Duration,
    /// How long the cluster may not answer before a job is cancelled and its step failed.
    pub patience: Duration,
}

pub struct SlurmBackend<'a> {
    compute: Compute<'a>,
    config: SlurmConfig,
    queue: Mutex<QueueView>,
}

/// The last `squeue` answer for the jobs being watched.
#[derive(Default)]
struct QueueView {
    polled: Option<Instant>,
    watching: BTreeSet<String>,
    rows: BTreeMap<String, QueueRow>,
}

/// One job as `squeue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub state: SlurmState,
    pub node: Option<String>,
    /// Why it waits (Resources, Priority, ...), or `None`.
    pub reason: Option<String>,
}

/// A job an earlier run submitted that the cluster still has queued or running.
struct Orphan {
    id: String,
    /// The run that submitted it.
    run: String,
}

/// Calls to the cluster failing in a row, while a job is watched.
struct Trouble {
    since: Instant,
    attempts: u32,
    last: SlurmError,
}

impl<'a> SlurmBackend<'a> {
    pub fn new(compute: Compute<'a>, config: SlurmConfig) -> SlurmBackend<'a> {
        SlurmBackend { compute, config, queue: Mutex::new(QueueView::default()) }
    }

    fn env(&self) -> &Environment {
        self.compute.env
    }

    /// The job's row, from an `squeue` at most [`MIN_POLL`] old (one for all watched jobs);
    /// `None` when the queue does not show it.
    fn row(&self, id: &str) -> Result<Option<QueueRow>, SlurmError> {
        let mut view = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let stale = view.polled.is_none_or(|t| t.elapsed() >= MIN_POLL) || !view.rows.contains_key(id);
        if stale {
            let ids: Vec<String> = view.watching.iter().cloned().collect();
            view.rows = queue_rows(&ids)?;
            view.polled = Some(Instant::now());
        }
        Ok(view.rows.get(id).cloned())
    }

    /// Where the job stands: its state and node, from the queue or, once it has left the
    /// queue, from `scontrol` (`Unknown`: the cluster no longer knows it).
    fn look(&self, id: &str) -> Result<(SlurmState, Option<String>), SlurmError> {
        if let Some(row) = self.row(id)? {
            return Ok((row.state, row.node));
        }
        Ok(match job_details(id)? {
            Some(d) => (SlurmState::parse(d.get("JobState").map(String::as_str).unwrap_or("")), node_of(&d)),
            None => (SlurmState::Unknown, None),
        })
    }

    fn watch(&self, id: &str, on: bool) {
        let mut view = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut submitted = SUBMITTED.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            view.watching.insert(id.to_string());
            submitted.insert(id.to_string());
        } else {
            view.watching.remove(id);
            view.rows.remove(id);
            submitted.remove(id);
        }
    }

    /// Writes the job file and batch script; returns the script's path.
    fn prepare(&self, job: &PlannedStep, dir: &Path) -> Result<PathBuf, String> {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut file = JobFile::of(job, &self.config.cache_dir);
        file.remote = self.config.remote.clone();
        file.node_cache = self.config.node_cache.clone();
        file.mirror = self.env().mirror.as_ref().map(|m| std::path::absolute(m).unwrap_or_else(|_| m.clone()));
        file.hub_endpoint = self.env().hub_endpoint.clone();
        file.hub_cache = self.env().hub_cache.clone();
        let job_path = dir.join("job.json");
        file.write(&job_path).map_err(|e| format!("writing {}: {e}", job_path.display()))?;
        let script = batch_script(job, &self.resources(job), &self.config, dir, &job_path);
        let script_path = dir.join("job.sh");
        fs::write(&script_path, script).map_err(|e| format!("writing {}: {e}", script_path.display()))?;
        Ok(script_path)
    }

    fn resources(&self, job: &PlannedStep) -> Resources {
        self.config.resources.get(job.index).cloned().unwrap_or_default().or(&self.config.defaults)
    }

    /// A job that an earlier run submitted for this key and did not see end (the run was
    /// killed, or another process runs it), which the cluster has queued or running now.
    fn orphan(&self, job: &PlannedStep) -> Option<Orphan> {
        let mut candidates: Vec<Orphan> = Vec::new();
        for run in RunRecord::all(self.compute.store.local()).into_iter().rev().filter(|r| r.state == RunState::Running)
        {
            for step in run.steps.iter().filter(|s| s.key.as_ref() == Some(&job.key)) {
                if let Some(j) = step.job.as_ref().filter(|j| j.executor == "slurm") {
                    candidates.push(Orphan { id: j.id.clone(), run: run.id.clone() });
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let ids: Vec<String> = candidates.iter().map(|c| c.id.clone()).collect();
        let rows = queue_rows(&ids).ok()?;
        candidates.into_iter().find(|c| rows.get(&c.id).is_some_and(|r| r.state.is_queued() || r.state.is_running()))
    }

    /// `scontrol show job` after the end, asked a few times (the controller may be busy).
    fn details(&self, id: &str) -> BTreeMap<String, String> {
        for attempt in 0..3 {
            match job_details(id) {
                Ok(d) => return d.unwrap_or_default(),
                Err(_) if attempt < 2 => std::thread::sleep(MIN_POLL * 2),
                Err(_) => {}
            }
        }
        BTreeMap::new()
    }
}

impl Backend for SlurmBackend<'_> {
    fn local(&self) -> bool {
        false
    }

    fn execute(&self, job: &PlannedStep, events: &dyn Events, notify: &mut dyn FnMut(StepUpdate)) -> StepOutcome {
        let cache = self.compute.store.local();
        let submitted_at = Instant::now();
        // The inputs stay in use while the job waits and runs.
        let mut held: Vec<KeyLock> = Vec::new();
        for input in job.inputs.values() {
            match cache.hold(&input.key) {
                Ok(lock) => held.push(lock),
                Err(e) => return job.outcome().failed(e.to_string(), None, false),
            }
        }
        // A job with a cache of its node's own reads its inputs from the remote: what this run
        // computed must be there before it starts.
        if self.config.node_cache.is_some() {
            self.compute.store.wait_uploaded(&job.inputs.values().map(|i| &i.key).collect::<Vec<_>>());
        }
        let dir = self.config.cache_dir.join("jobs").join(job.key.as_str());
        // A forced rerun wants its own job; any other adopts one that computes its key now.
        let orphan = if job.forced { None } else { self.orphan(job) };
        let mut prepared = None;
        let id = match orphan {
            Some(orphan) => {
                events.log(&format!(
                    "reattached to slurm job {} (submitted by run {}, which ended without seeing it end); \
                     `scancel {}` cancels it",
                    orphan.id, orphan.run, orphan.id
                ));
                orphan.id
            }
            None => {
                if cache.is_computing(&job.key) {
                    events.log(&format!(
                        "waiting: another run computes key {} now (its compute lock is taken)",
                        job.key.short()
                    ));
                }
                let job = match self.compute.prepare_elsewhere(job) {
                    Ok(Prepared::Exists(outcome)) => return *outcome,
                    Ok(Prepared::Submit(job)) => job,
                    Err(failed) => return *failed,
                };
                let script = match self.prepare(&job, &dir) {
                    Ok(s) => s,
                    Err(e) => return job.outcome().failed(e, None, false),
                };
                let id = match submit(&script, &exported(&job, &self.config)) {
                    Ok(id) => id,
                    Err(e) => return job.outcome().failed(e.to_string(), e.help(), false),
                };
                prepared = Some(job);
                id
            }
        };
        let job = prepared.as_deref().unwrap_or(job);
        self.watch(&id, true);
        let mut job_ref = JobRef { executor: "slurm".into(), id: id.clone(), state: "queued".into(), node: None };
        notify(StepUpdate::Queued(job_ref.clone()));

        let mut log = LogTail::new(dir.join(format!("slurm-{id}.out")));
        let mut cancelled_at: Option<Instant> = None;
        let mut cancel_sent = false;
        let mut running = false;
        let mut trouble: Option<Trouble> = None;
        let end: Result<SlurmState, SlurmError> = loop {
            let interval = match &trouble {
                // Backing off while the cluster does not answer: 0.25 s, 0.5 s, 1 s, ... 30 s.
                Some(t) => (MIN_POLL * 2u32.saturating_pow(t.attempts.min(8))).min(MAX_BACKOFF),
                None => (submitted_at.elapsed() / 10).clamp(MIN_POLL, self.config.max_poll.max(MIN_POLL)),
            };
            sleep_unless(interval, || self.env().is_cancelled() && cancelled_at.is_none());
            if self.env().is_cancelled() && !cancel_sent {
                cancel_sent = scancel(&id).is_ok();
                cancelled_at.get_or_insert_with(Instant::now);
            }
            // Lines in the log mean the job runs, whatever the last look at the queue said.
            let lines = log.read();
            let seen = self.look(&id);
            let (state, node) = match seen {
                Ok(seen) => {
                    trouble = None;
                    seen
                }
                Err(e) => {
                    for line in &lines {
                        events.log(line);
                    }
                    let t = match trouble.take() {
                        Some(t) => Trouble { attempts: t.attempts + 1, last: e, ..t },
                        None => Trouble { since: Instant::now(), attempts: 1, last: e },
                    };
                    if !t.last.is_transient() || t.since.elapsed() >= self.config.patience {
                        // Not left running unwatched: cancelled, if the cluster lets us.
                        let cancelled = (0..3).any(|_| scancel(&id).is_ok());
                        break Err(SlurmError::Unreachable {
                            id: id.clone(),
                            waited: t.since.elapsed(),
                            attempts: t.attempts,
                            last: Box::new(t.last),
                            cancelled,
                        });
                    }
                    trouble = Some(t);
                    if cancelled_at.is_some_and(|t| t.elapsed() > CANCEL_WAIT) {
                        break Ok(SlurmState::Cancelled);
                    }
                    continue;
                }
            };
            let started = state.is_running() || state.is_terminal();
            if !running && (started || !lines.is_empty()) {
                running = true;
                job_ref.state = "running".into();
                job_ref.node = node.clone().or_else(|| job_details(&id).ok().flatten().and_then(|d| node_of(&d)));
                notify(StepUpdate::Running(Some(job_ref.clone())));
            }
            for line in &lines {
                events.log(line);
            }
            if running && state.is_queued() {
                // Requeued (preempted, node failure): waiting again.
                running = false;
                job_ref.state = "queued".into();
                job_ref.node = None;
                notify(StepUpdate::Queued(job_ref.clone()));
            }
            if state.may_requeue() && cancelled_at.is_none() {
                // A job the cluster requeues passes through these states: look again.
                std::thread::sleep(MIN_POLL * 4);
                let again =
                    job_details(&id).ok().flatten().and_then(|d| d.get("JobState").map(|s| SlurmState::parse(s)));
                if again.is_some_and(|s| !s.is_terminal()) {
                    continue;
                }
            }
            if state.is_terminal() || state == SlurmState::Unknown {
                break Ok(state);
            }
            if cancelled_at.is_some_and(|t| t.elapsed() > CANCEL_WAIT) {
                break Ok(SlurmState::Cancelled);
            }
        };
        self.watch(&id, false);
        let details = if end.is_ok() { self.details(&id) } else { BTreeMap::new() };
        // The last lines may reach a shared filesystem after the state does.
        std::thread::sleep(Duration::from_millis(50));
        for line in log.read().into_iter().chain(log.finish()) {
            events.log(&line);
        }
        drop(held);

        if let Some(node) = node_of(&details) {
            job_ref.node = Some(node);
        }
        let state = match end {
            Ok(state) => state,
            Err(e) => {
                job_ref.state = match &e {
                    SlurmError::Unreachable { cancelled: true, .. } => "cancelled".into(),
                    _ => "unknown".into(),
                };
                let mut outcome = job.outcome().failed(e.to_string(), e.help(), false);
                outcome.job = Some(job_ref);
                return outcome;
            }
        };
        job_ref.state = state.word();
        let result = JobResult::read(&dir.join(format!("{id}.result.json")));
        let timings = result.as_ref().map(|r| r.timings.clone()).unwrap_or_default();
        let mut outcome = self.outcome(job, &id, &state, &details, result, &log, cancelled_at.is_some());
        outcome.timings = timings;
        outcome.job = Some(job_ref);
        if matches!(outcome.status, StepStatus::Ran | StepStatus::Cached) {
            outcome.seconds = submitted_at.elapsed().as_secs_f64();
        }
        outcome
    }
}

impl SlurmBackend<'_> {
    /// The step's outcome from how its job ended.
    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &self,
        job: &PlannedStep,
        id: &str,
        state: &SlurmState,
        details: &BTreeMap<String, String>,
        result: Option<JobResult>,
        log: &LogTail,
        we_cancelled: bool,
    ) -> StepOutcome {
        let outcome = job.outcome();
        let exit = details.get("ExitCode").cloned();
        let resources = self.resources(job);
        let worker_error = result
            .as_ref()
            .filter(|r| r.status == StepStatus::Failed)
            .and_then(|r| r.failure.as_ref().map(|f| f.message.clone()));
        match state {
            SlurmState::Completed => self.completed(job, id, result),
            _ if we_cancelled => outcome.failed(format!("interrupted (slurm job {id} cancelled)"), None, false),
            SlurmState::Failed => {
                let code = exit.as_deref().and_then(|e| e.split(':').next()).unwrap_or("?");
                let failure = match result.and_then(|r| r.failure.filter(|_| r.status == StepStatus::Failed)) {
                    Some(f) => f,
                    None => StepFailure::new(
                        log.last_error().unwrap_or_else(|| "the job failed".to_string()),
                        Some(format!("the job's log: {}", log.path.display())),
                        false,
                    ),
                };
                outcome.failed(
                    format!("{} (slurm job {id}, exit code {code})", failure.message),
                    failure.help,
                    failure.bad_input,
                )
            }
            SlurmState::Cancelled => outcome.failed(
                format!("slurm job {id} was cancelled (scancel, or by the cluster)"),
                Some("run again to resubmit it: finished steps are cached".into()),
                false,
            ),
            SlurmState::Timeout => outcome.failed(
                format!(
                    "slurm job {id} reached its time limit ({})",
                    details.get("TimeLimit").cloned().or(resources.time.clone()).unwrap_or_else(|| "default".into())
                ),
                Some(format!(
                    "give step `{}` more time: `resources: {{ time: \"HH:MM:SS\" }}`; a step that saves \
                     checkpoints resumes from its last one",
                    job.base
                )),
                false,
            ),
            SlurmState::OutOfMemory => outcome.failed(
                format!(
                    "slurm job {id} ran out of memory (mem {})",
                    resources.mem.clone().unwrap_or_else(|| "default".into())
                ),
                Some(format!("give step `{}` more memory: `resources: {{ mem: 32G }}`", job.base)),
                false,
            ),
            SlurmState::NodeFail | SlurmState::BootFail => outcome.failed(
                format!("the node of slurm job {id} failed ({state})"),
                Some("run again to resubmit it: finished steps are cached".into()),
                false,
            ),
            SlurmState::Preempted => outcome.failed(
                format!("slurm job {id} was preempted"),
                Some(
                    "run again to resubmit it (it resumes from its checkpoints), or use a partition without \
                      preemption"
                        .into(),
                ),
                false,
            ),
            SlurmState::Deadline => outcome.failed(format!("slurm job {id} missed its deadline"), None, false),
            SlurmState::Unknown => {
                // The cluster forgot the job; the cache still knows whether it finished.
                match (self.compute.store.local().lookup(&job.key), worker_error) {
                    (Lookup::Hit(_), None) => self.completed(job, id, result),
                    (_, error) => outcome.failed(
                        format!(
                            "slurm job {id} is no longer known to the cluster and left no result{}",
                            error.map(|e| format!(": {e}")).unwrap_or_default()
                        ),
                        Some(format!("the job's log: {}", log.path.display())),
                        false,
                    ),
                }
            }
            other => outcome.failed(format!("slurm job {id} ended in state {other}"), None, false),
        }
    }

    /// A job that completed: its result, from the cache or (not shared with the nodes) the
    /// remote.
    fn completed(&self, job: &PlannedStep, id: &str, result: Option<JobResult>) -> StepOutcome {
        let cache = self.compute.store.local();
        let mut outcome = job.outcome();
        let found = match cache.lookup(&job.key) {
            Lookup::Hit(manifest) => Some((manifest, None)),
            _ => match self.compute.store.lock(&job.key) {
                Ok(lock) => {
                    let events = self.compute.reporter.for_step(&job.name);
                    match self.compute.store.fetch(&lock, &job.key, &job.outputs(), &job.name, &events) {
                        Ok(Some((manifest, note))) => Some((manifest, Some(note))),
                        _ => None,
                    }
                }
                Err(_) => None,
            },
        };
        let Some((manifest, _)) = found else {
            return outcome.failed(
                format!(
                    "slurm job {id} completed, but key {} is not in the cache at {}",
                    job.key.short(),
                    self.config.cache_dir.display()
                ),
                Some(
                    "the nodes must share the cache directory (`--cache-dir` on a shared filesystem), or the \
                     run needs a remote cache (`--remote`) the jobs push to"
                        .into(),
                ),
                false,
            );
        };
        // The worker found the key stored (another run, or a repeat of this job).
        outcome.status = match result.map(|r| r.status) {
            Some(StepStatus::Cached) => StepStatus::Cached,
            _ => StepStatus::Ran,
        };
        if outcome.status == StepStatus::Cached {
            outcome.reasons.clear();
        }
        outcome.outputs = output_hashes(&manifest);
        outcome.artifact = Some(cache.out_dir(&manifest));
        outcome
    }
}

/// The batch script of a job: `#SBATCH` options and the worker command, nothing secret.
/// Paths are quoted (sbatch reads `"..."` in `#SBATCH` lines; a cache path with a space is
/// otherwise an invalid directive).
fn batch_script(job: &PlannedStep, r: &Resources, config: &SlurmConfig, dir: &Path, job_path: &Path) -> String {
    let mut lines = vec!["#!/bin/sh".to_string()];
    let mut option = |o: String| lines.push(format!("#SBATCH {o}"));
    option(format!("--job-name={}", job_name(&job.name)));
    option(format!("--output={}", sbatch_quote(&dir.join("slurm-%j.out").display().to_string())));
    if let Some(p) = &r.partition {
        option(format!("--partition={p}"));
    }
    if let Some(c) = r.cpus {
        option(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &r.mem {
        option(format!("--mem={m}"));
    }
    if let Some(t) = &r.time {
        option(format!("--time={t}"));
    }
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        option(format!("--gres=gpu:{g}"));
    }
    for a in &config.sbatch_args {
        option(a.clone());
    }
    lines.push(format!("# pipe: step `{}`, key {}.", job.name, job.key));
    lines.push(
        "# No secrets here: the job gets the variables it needs from the submitting environment (--export).".into(),
    );
    lines.push(format!(
        "exec {} worker {}",
        shell_quote(&config.binary.display().to_string()),
        shell_quote(&job_path.display().to_string())
    ));
    lines.join("\n") + "\n"
}

/// `pipe-<step>`, with characters Slurm or a shell might mind replaced.
fn job_name(step: &str) -> String {
    let clean: String =
        step.chars().map(|c| if c.is_ascii_alphanumeric() || "._=-[]".contains(c) { c } else { '_' }).collect();
    format!("pipe-{clean}")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A value in an `#SBATCH` line: in double quotes, which sbatch strips (it has no escapes: a
/// path with `"` in it cannot be written there).
fn sbatch_quote(s: &str) -> String {
    format!("\"{s}\"")
}

/// Variables every job may need: to find programs and libraries, the user's locale and home,
/// certificates and proxies, pipe's and the hub's settings. Nothing secret (but a proxy URL
/// with a password in it).
const EXPORTED: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_NUMERIC",
    "TZ",
    "TMPDIR",
    "NO_COLOR",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    // Downloads from a node behind a proxy.
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "PIPE_PYTHON",
    "PIPE_USER",
    "PIPE_SHARED_DIR",
];

/// The names of the variables of this environment that `job` gets (`sbatch --export=`): the
/// [`EXPORTED`] ones, a command step's `unkeyed_env`, the hub token for a step that names a
/// model, and the object store's variables (`AWS_*`, credentials included) only when the run
/// has a remote cache the job must read and write. slurmctld stores what is exported with the
/// job, so the rest (other secrets, the AWS ones of a run without a remote) stays here.
pub fn exported(job: &PlannedStep, config: &SlurmConfig) -> Vec<String> {
    let mut names: BTreeSet<String> = EXPORTED.iter().map(|n| n.to_string()).collect();
    if job.kind.spec().kind == pipe_steps::command::KIND {
        names.extend(job.params.str_list("unkeyed_env").unwrap_or_default());
    }
    if job.params.get("model").is_some() {
        names.extend(["HF_TOKEN".to_string(), "HUGGING_FACE_HUB_TOKEN".to_string()]);
    }
    if config.remote.is_some() {
        names.extend(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).filter(|k| k.starts_with("AWS_")));
    }
    names
        .into_iter()
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .filter(|n| std::env::var_os(n).is_some())
        .collect()
}

/// The last line of a failed command's stderr, without the program's `name: ` prefix.
fn complaint(program: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.trim().lines().last().unwrap_or("").trim();
    let line = line.strip_prefix(&format!("{program}: ")).unwrap_or(line);
    let line = line.strip_prefix("error: ").unwrap_or(line);
    if line.is_empty() {
        format!("exit status {}", output.status)
    } else {
        line.to_string()
    }
}

/// Whether a failed query says the job id is not the cluster's (ended and purged, or never).
fn unknown_job(output: &Output) -> bool {
    String::from_utf8_lossy(&output.stderr).contains("Invalid job id")
}

/// `sbatch --parsable --export=NAMES SCRIPT`: the job id. `--export` is left to the user
/// when `sbatch_args` set it (an `#SBATCH` line gives way to the command line).
fn submit(script: &Path, export: &[String]) -> Result<String, SlurmError> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    let script_text = fs::read_to_string(script).unwrap_or_default();
    cmd.args(export_arg(&script_text, export));
    let output = cmd.arg(script).output().map_err(|source| SlurmError::NotFound { program: "sbatch", source })?;
    if !output.status.success() {
        return Err(SlurmError::Refused { message: complaint("sbatch", &output), script: script.to_path_buf() });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `--parsable`: `<id>` or `<id>;<cluster>`.
    match stdout.trim().split(';').next().filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())) {
        Some(id) => Ok(id.to_string()),
        None => Err(SlurmError::BadAnswer { answer: stdout.trim().to_string() }),
    }
}

/// The `--export=` option for a job with `script`: the names (`NIL`, only Slurm's own, for
/// none), or nothing when the script sets `--export` itself (from `sbatch_args`).
fn export_arg(script: &str, names: &[String]) -> Option<String> {
    if script.lines().any(|l| l.trim_start().starts_with("#SBATCH --export")) {
        return None;
    }
    Some(format!("--export={}", if names.is_empty() { "NIL".to_string() } else { names.join(",") }))
}

/// `scancel ID`.
fn scancel(id: &str) -> Result<(), SlurmError> {
    let output = Command::new("scancel")
        .arg(id)
        .output()
        .map_err(|source| SlurmError::NotFound { program: "scancel", source })?;
    if output.status.success() || unknown_job(&output) {
        Ok(())
    } else {
        Err(SlurmError::Failed { program: "scancel", detail: complaint("scancel", &output) })
    }
}

/// `squeue` rows of the jobs `ids` (those it still knows). `Err` when `squeue` itself fails
/// (not when a job is unknown: that job has no row).
pub fn queue_rows(ids: &[String]) -> Result<BTreeMap<String, QueueRow>, SlurmError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let output = Command::new("squeue")
        .args(["-h", "--states=all", "-o", "%i|%T|%N|%r", "-j"])
        .arg(ids.join(","))
        .output()
        .map_err(|source| SlurmError::NotFound { program: "squeue", source })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() && text.trim().is_empty() {
        if !unknown_job(&output) {
            return Err(SlurmError::Failed { program: "squeue", detail: complaint("squeue", &output) });
        }
        // One id the cluster has forgotten fails the whole query: ask for each.
        let mut rows = BTreeMap::new();
        if ids.len() > 1 {
            for id in ids {
                rows.extend(queue_rows(std::slice::from_ref(id))?);
            }
        }
        return Ok(rows);
    }
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        if let [id, state, node, reason, ..] = parts[..] {
            let node = Some(node.trim().to_string()).filter(|n| !n.is_empty() && n != "(null)");
            let reason = Some(reason.trim().to_string()).filter(|r| !r.is_empty() && r != "None" && r != "(null)");
            rows.insert(id.trim().to_string(), QueueRow { state: SlurmState::parse(state), node, reason });
        }
    }
    Ok(rows)
}

/// `scontrol show job -o ID` as key → value (JobState, ExitCode, NodeList, TimeLimit,
/// StartTime, EndTime, ...); `None` when the cluster does not know the job, `Err` when
/// `scontrol` fails otherwise.
pub fn job_details(id: &str) -> Result<Option<BTreeMap<String, String>>, SlurmError> {
    let output = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .map_err(|source| SlurmError::NotFound { program: "scontrol", source })?;
    if !output.status.success() {
        if unknown_job(&output) {
            return Ok(None);
        }
        return Err(SlurmError::Failed { program: "scontrol", detail: complaint("scontrol", &output) });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: BTreeMap<String, String> = text
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if fields.contains_key("JobState") {
        Ok(Some(fields))
    } else {
        Err(SlurmError::Failed { program: "scontrol", detail: format!("no JobState in `{}`", text.trim()) })
    }
}

/// The node a job record names, if any.
fn node_of(details: &BTreeMap<String, String>) -> Option<String> {
    details.get("NodeList").filter(|n| !n.is_empty() && *n != "(null)").cloned()
}

/// Sleeps `total` in slices, ending early once `wake()` is true.
fn sleep_unless(total: Duration, wake: impl Fn() -> bool) {
    let end = Instant::now() + total;
    loop {
        let now = Instant::now();
        if now >= end || wake() {
            return;
        }
        std::thread::sleep(SLICE.min(end - now));
    }
}

/// Follows a job's output file: new complete lines go to the step's log. The worker's own
/// lines (`pipe worker: ...`) are kept for messages, not forwarded.
pub struct LogTail {
    pub path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    last: VecDeque<String>,
}

/// The prefix of the lines `pipe worker` writes about itself.
pub const WORKER_PREFIX: &str = "pipe worker: ";

impl LogTail {
    pub fn new(path: PathBuf) -> LogTail {
        LogTail { path, offset: 0, partial: Vec::new(), last: VecDeque::new() }
    }

    /// The complete lines written since the last call, without the worker's own.
    pub fn read(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(mut file) = fs::File::open(&self.path) else { return out };
        // A requeued job starts its output file again.
        if file.metadata().is_ok_and(|m| m.len() < self.offset) {
            self.offset = 0;
            self.partial.clear();
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return out;
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.read_to_end(&mut bytes) else { return out };
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string();
            out.extend(self.keep(line));
        }
        out
    }

    /// The last line, even without its newline.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).trim_end().to_string();
        self.keep(line)
    }

    /// Remembers a line; it is for the step's log unless it is the worker's.
    fn keep(&mut self, line: String) -> Option<String> {
        self.last.push_back(line.clone());
        if self.last.len() > 50 {
            self.last.pop_front();
        }
        (!line.starts_with(WORKER_PREFIX)).then_some(line)
    }

    /// The last error the log shows (the worker's, else Slurm's or the shell's).
    pub fn last_error(&self) -> Option<String> {
        let worker = format!("{WORKER_PREFIX}error: ");
        self.last
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(&worker).map(str::to_string))
            .or_else(|| self.last.iter().rev().find(|l| l.contains("error")).cloned())
            .or_else(|| self.last.back().cloned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use pipe_steps::Params;

    use super::*;
    use crate::cache::Cache;
    use crate::fingerprint::Fingerprint;
    use crate::reporter::Reporter;

    /// A `sample` step of 2 rows, with no inputs.
    fn rows_job() -> PlannedStep {
        let kind = pipe_steps::find("sample").unwrap();
        let params = Params::new(Map::from([("rows".to_string(), serde_json::json!(2))]));
        let fingerprint = Fingerprint::new(kind, &params, Map::new(), Map::new());
        PlannedStep {
            index: 0,
            position: 0,
            name: "rows".into(),
            base: "rows".into(),
            kind,
            params,
            inputs: Map::new(),
            sources: Map::new(),
            key: fingerprint.key(),
            fingerprint,
            reasons: Vec::new(),
            forced: false,
            replaces: None,
        }
    }

    fn config(dir: &Path, resources: Resources) -> SlurmConfig {
        SlurmConfig {
            defaults: Resources::default(),
            resources: vec![resources],
            binary: "/opt/my pipe/pipe".into(),
            sbatch_args: Vec::new(),
            cache_dir: dir.to_path_buf(),
            node_cache: None,
            remote: None,
            max_poll: MAX_POLL,
            patience: PATIENCE,
        }
    }

    /// A forced job clears the key's old checkpoints only under the key's lock: never while
    /// another process (a job on a node) computes the key and resumes from them. (What this
    /// fixed was a window between looking under the lock and clearing without it, which a
    /// test cannot open on purpose; the look and the clear are now one hold of the lock, and
    /// this checks that a holder is waited for.)
    #[test]
    fn a_forced_job_clears_checkpoints_only_under_the_key_lock() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let env = Environment::default();
        let reporter = Reporter::quiet();
        let store = crate::tiered_cache::TieredCache::new(&cache, None, &reporter);
        let compute = Compute { store: &store, env: &env, reporter: &reporter };
        let mut job = rows_job();
        job.forced = true;
        let epoch = cache.checkpoint_dir(&job.key).join("epoch-1");
        fs::create_dir_all(&epoch).unwrap();
        // Another computes the key: its lock is taken.
        let other = cache.lock(&job.key).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let prepared = scope.spawn(|| {
                started_tx.send(()).unwrap();
                compute.prepare_elsewhere(&job)
            });
            started_rx.recv().unwrap();
            // Time for an unlocked clear to happen; the locked one waits however long this is.
            std::thread::sleep(Duration::from_millis(300));
            assert!(epoch.is_dir(), "checkpoints cleared while another held the key's lock");
            assert!(!prepared.is_finished(), "prepared without waiting for the key's lock");
            drop(other);
            match prepared.join().unwrap() {
                Ok(Prepared::Submit(job)) => assert_eq!(job.replaces.as_deref(), Some("")),
                _ => panic!("expected a job to submit"),
            }
        });
        assert!(!epoch.exists(), "the forced job kept the old checkpoints");
    }

    /// Only the variables a job needs, and only those set here, are exported; the object
    /// store's only with a remote; `sbatch_args` with `--export` replace the list.
    #[test]
    fn jobs_export_what_they_need() {
        let dir = Path::new("/c");
        let mut config = config(dir, Resources::default());
        let job = rows_job();
        // This process's environment: PATH is set, an AWS variable may or may not be.
        let names = exported(&job, &config);
        assert!(names.contains(&"PATH".to_string()), "{names:?}");
        assert!(names.iter().all(|n| std::env::var_os(n).is_some()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("AWS_")), "{names:?}");
        config.remote = Some(JobRemote { url: "s3://b/p".into(), mode: "read-write".into() });
        let with_remote = exported(&job, &config);
        let aws_here = std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("AWS_")).count();
        assert_eq!(with_remote.iter().filter(|n| n.starts_with("AWS_")).count(), aws_here);
        let script = batch_script(&job, &Resources::default(), &config, dir, &dir.join("job.json"));
        assert_eq!(export_arg(&script, &names), Some(format!("--export={}", names.join(","))));
        config.sbatch_args = vec!["--export=ALL".into()];
        let script = batch_script(&job, &Resources::default(), &config, dir, &dir.join("job.json"));
        assert_eq!(export_arg(&script, &names), None, "{script}");
        assert_eq!(export_arg("#!/bin/sh\n", &[]), Some("--export=NIL".into()));
    }

    /// `#SBATCH --output` takes a path with spaces (quoted), and the worker line is quoted
    /// for the shell.
    #[test]
    fn batch_scripts_quote_paths() {
        let dir = Path::new("/shared/my cache/jobs/k");
        let config = config(Path::new("/shared/my cache"), Resources::default());
        let script = batch_script(&rows_job(), &Resources::default(), &config, dir, &dir.join("job.json"));
        assert!(script.contains("#SBATCH --output=\"/shared/my cache/jobs/k/slurm-%j.out\"\n"), "{script}");
        assert!(script.contains("exec '/opt/my pipe/pipe' worker '/shared/my cache/jobs/k/job.json'"), "{script}");
    }

    #[test]
    fn job_names_and_quoting_are_safe_for_a_shell() {
        assert_eq!(job_name("finetune[lr=3e-4]"), "pipe-finetune[lr=3e-4]");
        assert_eq!(job_name("a b;c"), "pipe-a_b_c");
        assert_eq!(shell_quote("/x/it's"), "'/x/it'\\''s'");
    }

    /// The end states the test cluster cannot produce quickly (or at all: no cgroups, one
    /// node) map to outcomes that say what happened and what to change.
    #[test]
    fn end_states_map_to_clear_outcomes() {
        use std::collections::BTreeMap as Map;

        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let env = Environment::default();
        let reporter = Reporter::quiet();
        let store = crate::tiered_cache::TieredCache::new(&cache, None, &reporter);
        let compute = Compute { store: &store, env: &env, reporter: &reporter };
        let resources = Resources { mem: Some("4G".into()), time: Some("10".into()), ..Resources::default() };
        let backend = SlurmBackend::new(compute, config(dir.path(), resources));
        let job = rows_job();
        let log = LogTail::new(dir.path().join("none.out"));
        let details = Map::from([("ExitCode".to_string(), "3:0".to_string())]);
        let outcome = |state: &str, cancelled: bool| {
            let o = backend.outcome(&job, "12", &SlurmState::parse(state), &details, None, &log, cancelled);
            assert_eq!(o.status, StepStatus::Failed, "{state}");
            let f = o.failure.unwrap();
            (f.message, f.help.unwrap_or_default())
        };
        let (m, h) = outcome("TIMEOUT", false);
        assert!(
            m.contains("slurm job 12 reached its time limit (10)") && h.contains("resources: { time:"),
            "{m} / {h}"
        );
        let (m, h) = outcome("OUT_OF_MEMORY", false);
        assert!(m.contains("ran out of memory (mem 4G)") && h.contains("mem: 32G"), "{m} / {h}");
        let (m, _) = outcome("NODE_FAIL", false);
        assert!(m.contains("the node of slurm job 12 failed"), "{m}");
        let (m, h) = outcome("PREEMPTED", false);
        assert!(m.contains("was preempted") && h.contains("checkpoints"), "{m} / {h}");
        let (m, _) = outcome("FAILED", false);
        assert!(m.ends_with("(slurm job 12, exit code 3)"), "{m}");
        let (m, _) = outcome("CANCELLED", true);
        assert_eq!(m, "interrupted (slurm job 12 cancelled)");
        let (m, _) = outcome("CANCELLED", false);
        assert!(m.contains("was cancelled"), "{m}");
        // Forgotten by the cluster and nothing committed: failed, not done.
        let (m, _) = outcome("UNKNOWN", false);
        assert!(m.contains("no longer known to the cluster"), "{m}");
        // Completed without a result in the cache: the cache is not shared.
        let (m, h) = outcome("COMPLETED", false);
        assert!(m.contains("completed, but key") && h.contains("share the cache directory"), "{m} / {h}");
    }
}
