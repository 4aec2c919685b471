//! Steps run as Slurm batch jobs. For each step that has to run:
//!
//! 1. Under the key's lock, look again (another run may have stored it) and ask the remote
//!    cache; either is a result without a job.
//! 2. Write `<cache>/jobs/<key>/job.json` ([`super::job_file`]) and a batch script `job.sh`
//!    beside it with the job's `#SBATCH` options and one command, `pipe worker job.json`.
//!    Neither holds a secret: the job inherits the submitting environment (`--export=ALL`),
//!    which is how object-store credentials reach it.
//! 3. `sbatch --parsable`; the job is `queued` in the run record with its id.
//! 4. Watch it without busy-waiting: one `squeue` for every job this run watches, at most every
//!    [`MIN_POLL`], each job's thread sleeping between looks (from [`MIN_POLL`] when it is
//!    young up to the poll limit, 2 s by default, `PIPE_SLURM_POLL` seconds). Each look forwards
//!    the new lines of the job's output file as the step's log lines.
//! 5. Map the end: COMPLETED is `ran` once the result is in the cache (the shared cache
//!    directory, or pulled from the remote); FAILED says the worker's error and the exit code;
//!    CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL and DEADLINE each say
//!    what happened and what to change.
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
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipe_steps::{Environment, Events};

use super::compute::Compute;
use super::job_file::{JobFile, JobRemote, JobResult};
use super::{Backend, JobState};
use crate::cache::{KeyLock, Lookup};
use crate::plan::{output_hashes, StepJob};
use crate::run_record::{JobRef, StepStatus};
use crate::spec::Resources;
use crate::step_outcome::StepOutcome;

/// The shortest time between two looks at the queue (and at a young job).
pub const MIN_POLL: Duration = Duration::from_millis(250);
/// The longest time between two looks at a job, unless `PIPE_SLURM_POLL` says otherwise.
pub const MAX_POLL: Duration = Duration::from_secs(2);
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
    /// PENDING, RUNNING, COMPLETED, ...
    pub state: String,
    pub node: Option<String>,
    /// Why it waits (Resources, Priority, ...), or `None`.
    pub reason: Option<String>,
}

impl<'a> SlurmBackend<'a> {
    pub fn new(compute: Compute<'a>, config: SlurmConfig) -> SlurmBackend<'a> {
        SlurmBackend { compute, config, queue: Mutex::new(QueueView::default()) }
    }

    fn env(&self) -> &Environment {
        self.compute.env
    }

    /// The job's row, from an `squeue` at most [`MIN_POLL`] old (one for all watched jobs).
    fn row(&self, id: &str) -> Option<QueueRow> {
        let mut view = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let stale = view.polled.is_none_or(|t| t.elapsed() >= MIN_POLL) || !view.rows.contains_key(id);
        if stale {
            let ids: Vec<String> = view.watching.iter().cloned().collect();
            if let Ok(rows) = queue_rows(&ids) {
                view.rows = rows;
                view.polled = Some(Instant::now());
            }
        }
        view.rows.get(id).cloned()
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
    fn prepare(&self, job: &StepJob, dir: &Path) -> Result<PathBuf, String> {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut file = JobFile::of(job, &self.config.cache_dir);
        file.remote = self.config.remote.clone();
        file.node_cache = self.config.node_cache.clone();
        file.mirror = self.env().mirror.as_ref().map(|m| std::path::absolute(m).unwrap_or_else(|_| m.clone()));
        file.hub_endpoint = self.env().hub_endpoint.clone();
        file.hub_cache = self.env().hub_cache.clone();
        let job_path = dir.join("job.json");
        file.write(&job_path).map_err(|e| format!("writing {}: {e}", job_path.display()))?;
        let resources = self.config.resources.get(job.index).cloned().unwrap_or_default().or(&self.config.defaults);
        let script = batch_script(job, &resources, &self.config, dir, &job_path);
        let script_path = dir.join("job.sh");
        fs::write(&script_path, script).map_err(|e| format!("writing {}: {e}", script_path.display()))?;
        Ok(script_path)
    }

    fn resources(&self, job: &StepJob) -> Resources {
        self.config.resources.get(job.index).cloned().unwrap_or_default().or(&self.config.defaults)
    }
}

impl Backend for SlurmBackend<'_> {
    fn local(&self) -> bool {
        false
    }

    fn execute(&self, job: &StepJob, events: &dyn Events, notify: &mut dyn FnMut(JobState)) -> StepOutcome {
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
        match self.compute.existing(job) {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(failed) => return *failed,
        }
        let mut job = job.clone();
        if job.forced {
            // The rerun starts from scratch; a repeat of its job resumes its own checkpoints.
            job.replaces = Some(match cache.lookup(&job.key) {
                Lookup::Hit(m) => m.dir,
                _ => String::new(),
            });
            cache.clear_checkpoints(&job.key);
        }
        let job = &job;
        let dir = self.config.cache_dir.join("jobs").join(job.key.as_str());
        let script = match self.prepare(job, &dir) {
            Ok(s) => s,
            Err(e) => return job.outcome().failed(e, None, false),
        };
        let id = match submit(&script) {
            Ok(id) => id,
            Err((message, help)) => return job.outcome().failed(message, help, false),
        };
        self.watch(&id, true);
        let mut job_ref = JobRef { executor: "slurm".into(), id: id.clone(), state: "queued".into(), node: None };
        notify(JobState::Queued(job_ref.clone()));

        let mut log = LogTail::new(dir.join(format!("slurm-{id}.out")));
        let mut cancelled_at: Option<Instant> = None;
        let mut running = false;
        let end_state = loop {
            let young = submitted_at.elapsed() / 10;
            let interval = young.clamp(MIN_POLL, self.config.max_poll.max(MIN_POLL));
            sleep_unless(interval, || self.env().is_cancelled() && cancelled_at.is_none());
            if self.env().is_cancelled() && cancelled_at.is_none() {
                let _ = Command::new("scancel").arg(&id).output();
                cancelled_at = Some(Instant::now());
            }
            let row = self.row(&id);
            // Lines in the log mean the job runs, whatever the last look at the queue said.
            let lines = log.read();
            let started = row.as_ref().is_some_and(|r| is_running(&r.state) || is_terminal(&r.state));
            if !running && (started || !lines.is_empty()) {
                running = true;
                job_ref.state = "running".into();
                job_ref.node = row.as_ref().and_then(|r| r.node.clone()).or_else(|| {
                    job_details(&id).and_then(|d| d.get("NodeList").cloned()).filter(|n| !n.is_empty() && n != "(null)")
                });
                notify(JobState::Running(Some(job_ref.clone())));
            }
            for line in &lines {
                events.log(line);
            }
            let state = match row {
                Some(row) => {
                    if running && !is_running(&row.state) && !is_terminal(&row.state) {
                        // Requeued (preempted, node failure): waiting again.
                        running = false;
                        job_ref.state = "queued".into();
                        job_ref.node = None;
                        notify(JobState::Queued(job_ref.clone()));
                    }
                    row.state
                }
                // Not in the queue (any more): ask for the job itself.
                None => match job_details(&id).and_then(|d| d.get("JobState").cloned()) {
                    Some(state) => state,
                    None => "UNKNOWN".to_string(),
                },
            };
            if matches!(state.as_str(), "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL") && cancelled_at.is_none() {
                // A job the cluster requeues passes through these states: look again.
                std::thread::sleep(MIN_POLL * 4);
                let again = job_details(&id).and_then(|d| d.get("JobState").cloned());
                if again.as_deref().is_some_and(|s| !is_terminal(s)) {
                    continue;
                }
            }
            if is_terminal(&state) || state == "UNKNOWN" {
                break state;
            }
            if cancelled_at.is_some_and(|t| t.elapsed() > CANCEL_WAIT) {
                break "CANCELLED".to_string();
            }
        };
        self.watch(&id, false);
        let details = job_details(&id).unwrap_or_default();
        // The last lines may reach a shared filesystem after the state does.
        std::thread::sleep(Duration::from_millis(50));
        for line in log.read().into_iter().chain(log.finish()) {
            events.log(&line);
        }
        drop(held);

        job_ref.state = end_state.to_ascii_lowercase();
        if let Some(node) = details.get("NodeList").filter(|n| !n.is_empty() && *n != "(null)") {
            job_ref.node = Some(node.clone());
        }
        let result = JobResult::read(&dir.join(format!("{id}.result.json")));
        let timings = result.as_ref().map(|r| r.timings.clone()).unwrap_or_default();
        let mut outcome = self.outcome(job, &id, &end_state, &details, result, &log, cancelled_at.is_some());
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
        job: &StepJob,
        id: &str,
        state: &str,
        details: &BTreeMap<String, String>,
        result: Option<JobResult>,
        log: &LogTail,
        we_cancelled: bool,
    ) -> StepOutcome {
        let outcome = job.outcome();
        let exit = details.get("ExitCode").cloned();
        let resources = self.resources(job);
        let worker_error = result.as_ref().filter(|r| r.status == "failed").and_then(|r| r.message.clone());
        match state {
            "COMPLETED" => self.completed(job, id, result),
            _ if we_cancelled => outcome.failed(format!("interrupted (slurm job {id} cancelled)"), None, false),
            "FAILED" => {
                let code = exit.as_deref().and_then(|e| e.split(':').next()).unwrap_or("?");
                let (message, help, bad_input) = match &result {
                    Some(r) if r.status == "failed" => {
                        (r.message.clone().unwrap_or_else(|| "failed".into()), r.help.clone(), r.bad_input)
                    }
                    _ => (
                        log.last_error().unwrap_or_else(|| "the job failed".to_string()),
                        Some(format!("the job's log: {}", log.path.display())),
                        false,
                    ),
                };
                outcome.failed(format!("{message} (slurm job {id}, exit code {code})"), help, bad_input)
            }
            "CANCELLED" => outcome.failed(
                format!("slurm job {id} was cancelled (scancel, or by the cluster)"),
                Some("run again to resubmit it: finished steps are cached".into()),
                false,
            ),
            "TIMEOUT" => outcome.failed(
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
            "OUT_OF_MEMORY" => outcome.failed(
                format!(
                    "slurm job {id} ran out of memory (mem {})",
                    resources.mem.clone().unwrap_or_else(|| "default".into())
                ),
                Some(format!("give step `{}` more memory: `resources: {{ mem: 32G }}`", job.base)),
                false,
            ),
            "NODE_FAIL" | "BOOT_FAIL" => outcome.failed(
                format!("the node of slurm job {id} failed ({state})"),
                Some("run again to resubmit it: finished steps are cached".into()),
                false,
            ),
            "PREEMPTED" => outcome.failed(
                format!("slurm job {id} was preempted"),
                Some(
                    "run again to resubmit it (it resumes from its checkpoints), or use a partition without \
                      preemption"
                        .into(),
                ),
                false,
            ),
            "DEADLINE" => outcome.failed(format!("slurm job {id} missed its deadline"), None, false),
            "UNKNOWN" => {
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
    fn completed(&self, job: &StepJob, id: &str, result: Option<JobResult>) -> StepOutcome {
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
        outcome.status = match result.as_ref().map(|r| r.status.as_str()) {
            // The worker found the key stored (another run, or a repeat of this job).
            Some("cached") => StepStatus::Cached,
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
fn batch_script(job: &StepJob, r: &Resources, config: &SlurmConfig, dir: &Path, job_path: &Path) -> String {
    let mut lines = vec!["#!/bin/sh".to_string()];
    let mut option = |o: String| lines.push(format!("#SBATCH {o}"));
    option(format!("--job-name={}", job_name(&job.name)));
    option(format!("--output={}", dir.join("slurm-%j.out").display()));
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
    lines
        .push("# No secrets here: the job gets them from the environment it was submitted with (--export=ALL).".into());
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

/// `sbatch --parsable SCRIPT`: the job id, or the error and a help.
fn submit(script: &Path) -> Result<String, (String, Option<String>)> {
    let output = Command::new("sbatch").arg("--parsable").arg("--export=ALL").arg(script).output().map_err(|e| {
        (
            format!("cannot run sbatch: {e}"),
            Some("the Slurm executor needs the Slurm client commands (sbatch, squeue, scancel) on PATH".into()),
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let message = stderr.trim().lines().last().unwrap_or("failed").trim_start_matches("sbatch: ").to_string();
        return Err((
            format!("sbatch refused the job: {message}"),
            Some(format!("the batch script is {}", script.display())),
        ));
    }
    // `--parsable`: `<id>` or `<id>;<cluster>`.
    match stdout.trim().split(';').next().filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())) {
        Some(id) => Ok(id.to_string()),
        None => Err((format!("sbatch answered `{}`, not a job id", stdout.trim()), None)),
    }
}

/// `squeue` rows of the jobs `ids` (those it still knows).
pub fn queue_rows(ids: &[String]) -> Result<BTreeMap<String, QueueRow>, String> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let output = Command::new("squeue")
        .args(["-h", "--states=all", "-o", "%i|%T|%N|%r", "-j"])
        .arg(ids.join(","))
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() && text.trim().is_empty() {
        // One id the cluster has forgotten fails the whole query: ask for each.
        if ids.len() > 1 {
            let mut rows = BTreeMap::new();
            for id in ids {
                rows.extend(queue_rows(std::slice::from_ref(id)).unwrap_or_default());
            }
            return Ok(rows);
        }
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        if let [id, state, node, reason, ..] = parts[..] {
            let state = state.split_whitespace().next().unwrap_or("").to_string();
            let node = Some(node.trim().to_string()).filter(|n| !n.is_empty() && n != "(null)");
            let reason = Some(reason.trim().to_string()).filter(|r| !r.is_empty() && r != "None" && r != "(null)");
            rows.insert(id.trim().to_string(), QueueRow { state, node, reason });
        }
    }
    Ok(rows)
}

/// `scontrol show job -o ID` as key → value (JobState, ExitCode, NodeList, TimeLimit,
/// StartTime, EndTime, ...); `None` when the cluster does not know the job.
pub fn job_details(id: &str) -> Option<BTreeMap<String, String>> {
    let output = Command::new("scontrol").args(["show", "job", "-o", id]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: BTreeMap<String, String> = text
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fields.contains_key("JobState").then_some(fields)
}

fn is_running(state: &str) -> bool {
    matches!(state, "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "STOPPED" | "SUSPENDED")
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
            | "SPECIAL_EXIT"
    )
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
    use super::*;

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

        use pipe_steps::Params;

        use crate::cache::Cache;
        use crate::fingerprint::Fingerprint;
        use crate::reporter::Reporter;

        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let env = Environment::default();
        let reporter = Reporter::quiet();
        let store = crate::tiered_cache::TieredCache::new(&cache, None, &reporter);
        let compute = Compute { store: &store, env: &env, reporter: &reporter };
        let resources = Resources { mem: Some("4G".into()), time: Some("10".into()), ..Resources::default() };
        let config = SlurmConfig {
            defaults: Resources::default(),
            resources: vec![resources],
            binary: "pipe".into(),
            sbatch_args: Vec::new(),
            cache_dir: dir.path().to_path_buf(),
            node_cache: None,
            remote: None,
            max_poll: MAX_POLL,
        };
        let backend = SlurmBackend::new(compute, config);
        let kind = pipe_steps::find("sample").unwrap();
        let params = Params::new(Map::from([("rows".to_string(), serde_json::json!(2))]));
        let fingerprint = Fingerprint::new(kind, &params, Map::new(), Map::new());
        let job = StepJob {
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
        };
        let log = LogTail::new(dir.path().join("none.out"));
        let details = Map::from([("ExitCode".to_string(), "3:0".to_string())]);
        let outcome = |state: &str, cancelled: bool| {
            let o = backend.outcome(&job, "12", state, &details, None, &log, cancelled);
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

    #[test]
    fn states_are_classified() {
        assert!(is_terminal("OUT_OF_MEMORY") && is_terminal("PREEMPTED") && !is_terminal("PENDING"));
        assert!(is_running("COMPLETING") && !is_running("PENDING"));
    }
}
