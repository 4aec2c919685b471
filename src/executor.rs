//! Walks the graph in dependency order and, for each step, decides (cached or run, and why),
//! then runs it into a scratch directory and commits the result to the cache. `--dry-run` and
//! `pipe status` take the same decisions and run nothing.
//!
//! While a step runs, its key is in the run record and its compute lock is held (so `pipe gc`
//! leaves its scratch directory and checkpoints alone), and the results it reads are held in
//! use (so neither gc nor a `--force` rerun elsewhere removes them under it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use pipe_steps::{Environment, StepContext, StepError};

use crate::cache::{Cache, CommitError, KeyLock, Lookup};
use crate::dirty_reason::DirtyReason;
use crate::fingerprint::{local_paths, Fingerprint};
use crate::graph::PipelineGraph;
use crate::manifest::Manifest;
use crate::remote::Remote;
use crate::reporter::Reporter;
use crate::run_record::{RunRecord, StepStatus};
use crate::step_key::StepKey;
use crate::step_outcome::StepOutcome;

/// What the user asked of this run beyond the pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Steps to rerun with everything that depends on them (indices into the graph).
    pub force: BTreeSet<usize>,
    pub dry_run: bool,
}

pub struct Executor<'a> {
    pub cache: &'a Cache,
    pub graph: &'a PipelineGraph,
    pub env: &'a Environment,
    pub reporter: &'a Reporter,
    /// Earlier runs of this pipeline, newest first: where the reasons come from.
    pub history: &'a [RunRecord],
    /// The remote cache: asked after a local miss, given what runs (see remote.rs).
    pub remote: Option<&'a Remote>,
}

impl Executor<'_> {
    /// Decides and (unless dry) runs every step. `observe` hears of every step when it starts
    /// running (status `running`, with its key) and when its outcome is known: the run command
    /// records the run from it.
    pub fn run(&self, options: &RunOptions, observe: &mut dyn FnMut(usize, &StepOutcome)) -> Vec<StepOutcome> {
        let n = self.graph.steps.len();
        let mut forced = BTreeSet::new();
        for &f in &options.force {
            forced.extend(self.graph.with_dependents(f));
        }
        let mut outcomes: Vec<Option<StepOutcome>> = vec![None; n];
        let mut failed: Option<usize> = None;
        for (position, &i) in self.graph.order().iter().enumerate() {
            if self.env.is_cancelled() && failed.is_none() {
                failed = Some(i);
            }
            let outcome = match failed {
                // After a failure nothing more runs; what ran before stays cached.
                Some(f) => {
                    let why = if self.env.is_cancelled() {
                        "not run: interrupted".to_string()
                    } else {
                        format!("not run: step {} failed", self.graph.steps[f].name)
                    };
                    self.reporter.step_skipped(position, n, &self.graph.steps[i].name, &why);
                    StepOutcome::new(StepStatus::Skipped)
                }
                None => self.step(i, position, &outcomes, forced.contains(&i), options.dry_run, observe),
            };
            if outcome.status == StepStatus::Failed {
                failed = Some(i);
            }
            observe(i, &outcome);
            outcomes[i] = Some(outcome);
        }
        outcomes.into_iter().map(|o| o.unwrap_or_else(|| StepOutcome::new(StepStatus::Skipped))).collect()
    }

    fn step(
        &self,
        i: usize,
        position: usize,
        done: &[Option<StepOutcome>],
        forced: bool,
        dry_run: bool,
        observe: &mut dyn FnMut(usize, &StepOutcome),
    ) -> StepOutcome {
        let step = &self.graph.steps[i];
        let total = self.graph.steps.len();
        let mut outcome = StepOutcome::new(StepStatus::Skipped);

        // Inputs: content hashes of upstream outputs, when known.
        let mut input_hashes = BTreeMap::new();
        let mut input_paths = BTreeMap::new();
        let mut input_keys = BTreeSet::new();
        for (name, r) in &step.inputs {
            let upstream = done[r.step].as_ref();
            let upstream_name = &self.graph.steps[r.step].name;
            match upstream {
                Some(u) if matches!(u.status, StepStatus::Failed | StepStatus::Skipped) => {
                    outcome.reasons.push(DirtyReason::InputPending { name: name.clone(), step: upstream_name.clone() });
                    self.reporter.step_skipped(
                        position,
                        total,
                        &step.name,
                        &format!("input {name} from {upstream_name} is not available"),
                    );
                    return outcome;
                }
                // A dry run knows the outputs of a result only the remote holds, not their path.
                Some(u) => match (u.outputs.get(r.output), &u.key, &u.artifact) {
                    (Some(hash), Some(key), dir) if dir.is_some() || dry_run => {
                        input_hashes.insert(name.clone(), hash.clone());
                        if let Some(dir) = dir {
                            input_paths.insert(name.clone(), dir.join(r.output));
                        }
                        input_keys.insert(key.clone());
                    }
                    _ => outcome
                        .reasons
                        .push(DirtyReason::InputPending { name: name.clone(), step: upstream_name.clone() }),
                },
                None => {
                    outcome.reasons.push(DirtyReason::InputPending { name: name.clone(), step: upstream_name.clone() })
                }
            }
        }
        if !outcome.reasons.is_empty() {
            // Only in a dry run: an upstream step would run, so this one's key is unknown.
            if !self.history.iter().any(|r| r.step(&step.base).is_some_and(|s| s.fingerprint.is_some())) {
                outcome.reasons = vec![DirtyReason::NeverRun];
            }
            outcome.status = StepStatus::WouldRun;
            self.reporter.step_decided(position, total, &step.name, &outcome);
            return outcome;
        }

        // What `auto` and hub ids stand for here and now: the key and the run both use it.
        let params = match step.kind.resolve(&step.params, self.env) {
            Ok(p) => p,
            Err(e) => {
                let outcome = outcome.failed(e.to_string(), e.help().map(str::to_string), e.is_bad_input());
                self.reporter.step_failed(position, total, &step.name, &outcome);
                return outcome;
            }
        };
        let mut sources = BTreeMap::new();
        for (name, path) in local_paths(step.kind, &params) {
            match Cache::hash_local(&path) {
                Ok(hash) => {
                    sources.insert(name, hash);
                }
                Err(e) => {
                    let outcome = outcome.failed(e.to_string(), None, true);
                    self.reporter.step_failed(position, total, &step.name, &outcome);
                    return outcome;
                }
            }
        }
        let fingerprint = Fingerprint::new(step.kind, &params, input_hashes, sources);
        let key = fingerprint.key();
        outcome.key = Some(key.clone());
        outcome.fingerprint = Some(fingerprint.clone());

        let lookup = self.cache.lookup(&key);
        if forced {
            outcome.reasons.push(DirtyReason::Forced);
        } else {
            match &lookup {
                Lookup::Hit(manifest) => {
                    outcome.status = if dry_run { StepStatus::WouldUseCache } else { StepStatus::Cached };
                    outcome.outputs = output_hashes(manifest);
                    outcome.artifact = Some(self.cache.out_dir(manifest));
                    outcome.seconds = 0.0;
                    self.reporter.step_decided(position, total, &step.name, &outcome);
                    return outcome;
                }
                Lookup::Corrupt(detail) => {
                    outcome.reasons.push(DirtyReason::ArtifactMissing { detail: detail.clone() })
                }
                Lookup::Missing => outcome.reasons = self.reasons(&step.base, &fingerprint, &key),
            }
        }
        if let (true, false, Some(remote)) = (dry_run, forced, self.remote) {
            match remote.peek_for_step(&key, &step_outputs(step), &step.name, self.reporter) {
                Ok(Some((manifest, note))) => {
                    outcome.status = StepStatus::WouldUseCache;
                    outcome.reasons.clear();
                    outcome.outputs = output_hashes(&manifest);
                    outcome.from_remote = Some(note);
                    self.reporter.step_decided(position, total, &step.name, &outcome);
                    return outcome;
                }
                Ok(None) => {}
                Err(e) => {
                    let outcome = outcome.failed(e.to_string(), e.help.clone(), e.config);
                    self.reporter.step_failed(position, total, &step.name, &outcome);
                    return outcome;
                }
            }
        }
        if dry_run {
            outcome.status = StepStatus::WouldRun;
            self.reporter.step_decided(position, total, &step.name, &outcome);
            return outcome;
        }
        let run = Run { params, inputs: input_paths, input_keys, forced };
        self.execute(i, position, outcome, key, fingerprint, run, observe)
    }

    /// Why a step whose key is not in the cache must run, from the latest recorded run of it.
    fn reasons(&self, name: &str, fingerprint: &Fingerprint, key: &StepKey) -> Vec<DirtyReason> {
        let previous = self.history.iter().filter_map(|r| r.step(name)).find_map(|s| {
            s.fingerprint
                .as_ref()
                .filter(|_| matches!(s.status, StepStatus::Ran | StepStatus::Cached))
                .map(|f| (f, &s.key))
        });
        match previous {
            None => vec![DirtyReason::NeverRun],
            Some((_, Some(old_key))) if old_key == key => {
                vec![DirtyReason::ArtifactMissing { detail: "removed from the cache".into() }]
            }
            Some((old, _)) => {
                let reasons = DirtyReason::diff(old, fingerprint);
                if reasons.is_empty() {
                    vec![DirtyReason::NeverRun]
                } else {
                    reasons
                }
            }
        }
    }

    fn execute(
        &self,
        i: usize,
        position: usize,
        mut outcome: StepOutcome,
        key: StepKey,
        fingerprint: Fingerprint,
        run: Run,
        observe: &mut dyn FnMut(usize, &StepOutcome),
    ) -> StepOutcome {
        let step = &self.graph.steps[i];
        let total = self.graph.steps.len();
        let report_failure = |outcome: StepOutcome| {
            self.reporter.step_failed(position, total, &step.name, &outcome);
            outcome
        };
        let _lock = match self.cache.lock(&key) {
            Ok(lock) => lock,
            Err(e) => return report_failure(outcome.failed(e.to_string(), None, false)),
        };
        // Another run may have computed the key while this one waited for the lock.
        match self.cache.lookup(&key) {
            Lookup::Hit(manifest) if !run.forced => {
                outcome.status = StepStatus::Cached;
                outcome.reasons.clear();
                outcome.outputs = output_hashes(&manifest);
                outcome.artifact = Some(self.cache.out_dir(&manifest));
                self.reporter.step_decided(position, total, &step.name, &outcome);
                return outcome;
            }
            // A forced rerun keeps the stored result until the new one commits.
            Lookup::Hit(_) | Lookup::Missing => {}
            Lookup::Corrupt(_) => {
                if let Err(e) = self.cache.discard(&key) {
                    return report_failure(outcome.failed(e.to_string(), None, false));
                }
            }
        }
        if let (false, Some(remote)) = (run.forced, self.remote) {
            match remote.fetch_for_step(self.cache, &key, &step_outputs(step), &step.name, self.reporter) {
                Ok(Some((manifest, note))) => {
                    outcome.status = StepStatus::Cached;
                    outcome.reasons.clear();
                    outcome.outputs = output_hashes(&manifest);
                    outcome.artifact = Some(self.cache.out_dir(&manifest));
                    outcome.from_remote = Some(note);
                    self.reporter.step_decided(position, total, &step.name, &outcome);
                    return outcome;
                }
                Ok(None) => {}
                Err(e) => return report_failure(outcome.failed(e.to_string(), e.help.clone(), e.config)),
            }
        }
        let mut held: Vec<KeyLock> = Vec::new();
        for input in &run.input_keys {
            match self.cache.hold(input) {
                Ok(lock) => held.push(lock),
                Err(e) => return report_failure(outcome.failed(e.to_string(), None, false)),
            }
        }
        let scratch = match self.cache.scratch(&key) {
            Ok(s) => s,
            Err(e) => return report_failure(outcome.failed(e.to_string(), None, false)),
        };
        let checkpoint_dir = self.cache.checkpoint_dir(&key);
        if run.forced {
            // Forced means from scratch: no resuming from an earlier attempt's epochs.
            self.cache.clear_checkpoints(&key);
        }
        if let Err(e) = std::fs::create_dir_all(&checkpoint_dir) {
            return report_failure(outcome.failed(format!("creating {}: {e}", checkpoint_dir.display()), None, false));
        }
        // The key is on record before the step runs, for gc and `pipe status`.
        let mut running = StepOutcome::new(StepStatus::Running);
        running.key = Some(key.clone());
        running.fingerprint = Some(fingerprint.clone());
        running.reasons = outcome.reasons.clone();
        observe(i, &running);
        self.reporter.step_started(position, total, &step.name, &outcome.reasons);
        let started = Instant::now();
        let out_dir = scratch.out_dir();
        let ctx = StepContext {
            name: &step.name,
            params: &run.params,
            inputs: &run.inputs,
            out_dir: &out_dir,
            checkpoint_dir: &checkpoint_dir,
            env: self.env,
            events: self.reporter,
        };
        let result = step.kind.run(&ctx);
        drop(held);
        outcome.seconds = started.elapsed().as_secs_f64();
        if let Err(e) = result {
            let bad_input = e.is_bad_input();
            let help = e.help().map(str::to_string);
            let message = match e {
                StepError::Cancelled => "interrupted".to_string(),
                e => e.to_string(),
            };
            return report_failure(outcome.failed(message, help, bad_input));
        }
        let outputs = step_outputs(step);
        let manifest = Manifest {
            format: 0,
            key: key.clone(),
            dir: String::new(),
            step: step.base.clone(),
            fingerprint,
            outputs: BTreeMap::new(),
            seconds: outcome.seconds,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        match self.cache.commit(scratch, manifest, &outputs) {
            Ok(mut manifest) => {
                self.cache.clear_checkpoints(&key);
                outcome.status = StepStatus::Ran;
                if let Some(remote) = self.remote {
                    // Pushed once committed; another machine's result for the key is adopted.
                    match remote.publish_for_step(self.cache, &manifest, &outputs, &step.name, self.reporter) {
                        Ok(Some(adopted)) => manifest = adopted,
                        Ok(None) => {}
                        Err(e) => {
                            let help = Some(format!(
                                "the result is in the local cache; push it with `pipe push` once the remote works{}",
                                e.help.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
                            ));
                            return report_failure(outcome.failed(format!("{e} (while pushing)"), help, e.config));
                        }
                    }
                }
                outcome.outputs = output_hashes(&manifest);
                outcome.artifact = Some(self.cache.out_dir(&manifest));
                self.reporter.step_done(position, total, &step.name, &outcome);
                outcome
            }
            Err(CommitError::MissingOutput(name)) => report_failure(outcome.failed(
                format!("step kind `{}` did not write its output `{name}`", step.kind.spec().kind),
                None,
                false,
            )),
            Err(e) => report_failure(outcome.failed(e.to_string(), None, false)),
        }
    }
}

/// What a step that has to run runs with.
struct Run {
    /// Its parameters after [`pipe_steps::Step::resolve`].
    params: pipe_steps::Params,
    /// Input name → path of the upstream output.
    inputs: BTreeMap<String, PathBuf>,
    /// The results it reads, held in use while it runs.
    input_keys: BTreeSet<StepKey>,
    forced: bool,
}

/// The outputs `step`'s kind declares.
fn step_outputs(step: &crate::graph::GraphStep) -> Vec<&'static str> {
    step.kind.spec().outputs.iter().map(|o| o.name).collect()
}

fn output_hashes(manifest: &Manifest) -> BTreeMap<String, String> {
    manifest.outputs.iter().map(|(name, o)| (name.clone(), o.hash.clone())).collect()
}
