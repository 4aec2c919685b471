//! Computing one step's result into the cache, the one way it is done wherever the step runs:
//! on a thread of `pipe run` ([`super::local::LocalBackend`]) or in `pipe worker` on a cluster
//! node ([`crate::commands::worker`]).
//!
//! Under the key's compute lock: look again (another run may have stored the key, or a repeated
//! cluster job finds its own first attempt's result), take the result from the remote tier if
//! it has it, else hold the inputs in use, run the step into a scratch directory, commit it,
//! publish it ([`TieredCache`] decides what that means). The lock is an `flock` on a file of its
//! own handle, so two threads of one process exclude each other as two processes do.

use std::sync::Mutex;
use std::time::Instant;

use pipe_steps::{Environment, Events, StepContext, StepError, Timing};

use crate::cache::{CommitError, KeyLock, Lookup};
use crate::manifest::Manifest;
use crate::plan::{output_hashes, PlannedStep};
use crate::reporter::Reporter;
use crate::run_record::StepStatus;
use crate::step_outcome::StepOutcome;
use crate::tiered_cache::TieredCache;

/// What [`Compute::prepare_elsewhere`] found.
pub enum Prepared {
    /// Stored by now, or pulled from the remote: nothing to submit.
    Exists(Box<StepOutcome>),
    /// The job to submit, as it is to run.
    Submit(Box<PlannedStep>),
}

/// What computing a step needs besides the step.
#[derive(Clone, Copy)]
pub struct Compute<'a> {
    pub store: &'a TieredCache<'a>,
    pub env: &'a Environment,
    /// Where each step's transfers report (its own progress).
    pub reporter: &'a Reporter,
}

impl Compute<'_> {
    /// For a job computed elsewhere (a cluster job), under one hold of the key's lock: the
    /// result if it exists now, else the job to submit. A forced one names the result it
    /// replaces (`""`: none) and has its earlier checkpoints cleared, under the lock, so never
    /// under a job that computes the key right now and resumes from them.
    pub fn prepare_elsewhere(&self, job: &PlannedStep) -> Result<Prepared, Box<StepOutcome>> {
        let lock = self.lock(job)?;
        if let Some(outcome) = self.existing_locked(&lock, job)? {
            return Ok(Prepared::Exists(Box::new(outcome)));
        }
        let mut job = job.clone();
        if job.forced {
            // The rerun starts from scratch; a repeat of its job resumes its own checkpoints.
            job.replaces = Some(match self.store.local().lookup(&job.key) {
                Lookup::Hit(m) => m.dir,
                _ => String::new(),
            });
            self.store.local().clear_checkpoints(&job.key);
        }
        Ok(Prepared::Submit(Box::new(job)))
    }

    fn lock(&self, job: &PlannedStep) -> Result<KeyLock, Box<StepOutcome>> {
        self.store.lock(&job.key).map_err(|e| Box::new(job.outcome().failed(e.to_string(), None, false)))
    }

    fn existing_locked(&self, lock: &KeyLock, job: &PlannedStep) -> Result<Option<StepOutcome>, Box<StepOutcome>> {
        let outcome = job.outcome();
        let cache = self.store.local();
        match cache.lookup(&job.key) {
            // A forced job reruns a stored key; a repeat of it finds its own first result.
            Lookup::Hit(manifest) if !job.forced || job.replaces.as_deref().is_some_and(|r| r != manifest.dir) => {
                return Ok(Some(self.cached(outcome, &manifest, None)));
            }
            // A forced rerun keeps the stored result until the new one commits.
            Lookup::Hit(_) | Lookup::Missing => {}
            Lookup::Corrupt(_) => {
                if let Err(e) = cache.discard(&job.key) {
                    return Err(Box::new(outcome.failed(e.to_string(), None, false)));
                }
            }
        }
        if !job.forced {
            let events = self.reporter.for_step(&job.name);
            match self.store.fetch(lock, &job.key, &job.outputs(), &job.name, &events) {
                Ok(Some((manifest, note))) => return Ok(Some(self.cached(outcome, &manifest, Some(note)))),
                Ok(None) => {}
                Err(e) => return Err(Box::new(outcome.failed(e.to_string(), e.help.clone(), e.config))),
            }
        }
        Ok(None)
    }

    fn cached(&self, mut outcome: StepOutcome, manifest: &Manifest, from_remote: Option<String>) -> StepOutcome {
        outcome.status = StepStatus::Cached;
        outcome.reasons.clear();
        outcome.outputs = output_hashes(manifest);
        outcome.artifact = Some(self.store.local().out_dir(manifest));
        outcome.from_remote = from_remote;
        outcome
    }

    /// Computes the job: `Ran`, `Cached` (found stored or on the remote under the lock) or
    /// `Failed`. `started` is called once, just before the step itself runs.
    pub fn run(&self, job: &PlannedStep, events: &dyn Events, started: &mut dyn FnMut()) -> StepOutcome {
        let lock = match self.lock(job) {
            Ok(lock) => lock,
            Err(failed) => return *failed,
        };
        let cache = self.store.local();
        match self.existing_locked(&lock, job) {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(failed) => return *failed,
        }
        let mut outcome = job.outcome();
        let failed = |outcome: StepOutcome, message: String| outcome.failed(message, None, false);
        let mut held: Vec<KeyLock> = Vec::new();
        for input in job.inputs.values() {
            match cache.hold(&input.key) {
                Ok(lock) => held.push(lock),
                Err(e) => return failed(outcome, e.to_string()),
            }
        }
        let scratch = match cache.scratch(&job.key) {
            Ok(s) => s,
            Err(e) => return failed(outcome, e.to_string()),
        };
        let checkpoint_dir = cache.checkpoint_dir(&job.key);
        if job.forced && job.replaces.is_none() {
            // Forced means from scratch: no resuming from an earlier attempt's epochs. (A job
            // run elsewhere had them cleared when it was submitted, and a repeat of it resumes.)
            cache.clear_checkpoints(&job.key);
        }
        if let Err(e) = std::fs::create_dir_all(&checkpoint_dir) {
            return failed(outcome, format!("creating {}: {e}", checkpoint_dir.display()));
        }
        started();
        let began = Instant::now();
        let out_dir = scratch.out_dir();
        let inputs = job.inputs.iter().map(|(name, input)| (name.clone(), input.path.clone())).collect();
        let events = Timed { events, timings: Mutex::new(Vec::new()) };
        let ctx = StepContext {
            name: &job.name,
            params: &job.params,
            inputs: &inputs,
            sources: &job.sources,
            out_dir: &out_dir,
            checkpoint_dir: &checkpoint_dir,
            env: self.env,
            events: &events,
        };
        let result = job.kind.run(&ctx);
        drop(held);
        outcome.seconds = began.elapsed().as_secs_f64();
        outcome.timings = events.timings.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = result {
            let bad_input = e.is_bad_input();
            let help = e.help().map(str::to_string);
            let message = match e {
                StepError::Cancelled => "interrupted".to_string(),
                e => e.to_string(),
            };
            return outcome.failed(message, help, bad_input);
        }
        let outputs = job.outputs();
        let manifest = Manifest {
            format: 0,
            key: job.key.clone(),
            dir: String::new(),
            step: job.base.clone(),
            fingerprint: job.fingerprint.clone(),
            outputs: Default::default(),
            seconds: outcome.seconds,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        match cache.commit(scratch, manifest, &outputs) {
            Ok(manifest) => {
                cache.clear_checkpoints(&job.key);
                outcome.status = StepStatus::Ran;
                // Committed: whatever happens on the remote now, the step has run.
                let events = self.reporter.for_step(&job.name);
                let manifest = self.store.publish(&lock, manifest, &outputs, &job.name, job.forced, &events);
                outcome.outputs = output_hashes(&manifest);
                outcome.artifact = Some(cache.out_dir(&manifest));
                outcome
            }
            Err(CommitError::MissingOutput(name)) => {
                failed(outcome, format!("step kind `{}` did not write its output `{name}`", job.kind.spec().kind))
            }
            Err(e) => failed(outcome, e.to_string()),
        }
    }
}

/// A step's events passed on, with the timings it reports kept for its run record (they are
/// in no output: two computes of one key give the same bytes).
struct Timed<'a> {
    events: &'a dyn Events,
    timings: Mutex<Vec<Timing>>,
}

impl Events for Timed<'_> {
    fn log(&self, line: &str) {
        self.events.log(line);
    }

    fn progress_start(&self, label: &str, total: Option<u64>, unit: &str) {
        self.events.progress_start(label, total, unit);
    }

    fn progress_inc(&self, delta: u64) {
        self.events.progress_inc(delta);
    }

    fn progress_message(&self, message: &str) {
        self.events.progress_message(message);
    }

    fn progress_finish(&self) {
        self.events.progress_finish();
    }

    fn timing(&self, timing: &Timing) {
        self.events.timing(timing);
        self.timings.lock().unwrap_or_else(|e| e.into_inner()).push(timing.clone());
    }
}
