//! Deciding, for one step whose inputs are known: is its result cached here, on the remote
//! (dry runs and `pipe status` only peek), or must it run, and why. `pipe run`, `--dry-run`,
//! `pipe status`, `push` and `pull` all decide through [`Planner::decide`]; running what must
//! run is the executor's ([`crate::executor`]), behind its backends.
//!
//! Deciding reads the cache (a lookup verifies the stored files), hashes local files named by
//! parameters, resolves `auto` and hub ids ([`pipe_steps::Step::resolve`]), and in a dry run
//! peeks at the remote tier ([`TieredCache::peek`]). It takes no lock and writes nothing: a
//! decision to run is checked again under the key's lock before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pipe_steps::{Environment, InputSource, Params, Step};

use crate::cache::{Cache, Lookup};
use crate::dirty_reason::DirtyReason;
use crate::fingerprint::{local_paths, Fingerprint};
use crate::graph::PipelineGraph;
use crate::manifest::Manifest;
use crate::reporter::Reporter;
use crate::run_record::{RunRecord, StepStatus};
use crate::step_key::StepKey;
use crate::step_outcome::StepOutcome;
use crate::tiered_cache::TieredCache;

/// One input of a step that has to run: which stored result and output it reads.
#[derive(Debug, Clone)]
pub struct PlannedInput {
    /// The upstream result's key.
    pub key: StepKey,
    /// Which output of it.
    pub output: String,
    /// The output's content hash (what the step's key covers).
    pub hash: String,
    /// Where it is in this machine's cache.
    pub path: PathBuf,
    /// The outputs the upstream kind declares (to fetch it from a remote cache).
    pub upstream_outputs: Vec<&'static str>,
}

/// A step that has to run, with everything needed to run it anywhere: what a backend gets.
#[derive(Clone)]
pub struct PlannedStep {
    /// Index in the graph.
    pub index: usize,
    /// Position in the run order (the `[3/9]` of its lines).
    pub position: usize,
    /// Name in the graph (`finetune[lr=3e-4]` in a sweep).
    pub name: String,
    /// Name in the pipeline file.
    pub base: String,
    pub kind: &'static dyn Step,
    /// After [`Step::resolve`]: what the key covers and what the step runs with.
    pub params: Params,
    pub inputs: BTreeMap<String, PlannedInput>,
    /// Where each input comes from, as the user knows it (not in the key).
    pub sources: BTreeMap<String, InputSource>,
    pub key: StepKey,
    pub fingerprint: Fingerprint,
    /// Why it runs.
    pub reasons: Vec<DirtyReason>,
    /// `--force`: run even if the key is stored.
    pub forced: bool,
    /// For a forced job that runs elsewhere: the output directory stored under the key when it
    /// was submitted (`""`: none). A repeated job that finds another one committed knows its
    /// own first attempt made it and stops.
    pub replaces: Option<String>,
}

impl PlannedStep {
    /// The outcome so far: key, fingerprint and reasons; status `running`.
    pub fn outcome(&self) -> StepOutcome {
        let mut outcome = StepOutcome::new(StepStatus::Running);
        outcome.key = Some(self.key.clone());
        outcome.fingerprint = Some(self.fingerprint.clone());
        outcome.reasons = self.reasons.clone();
        outcome
    }

    /// The outputs the step's kind declares.
    pub fn outputs(&self) -> Vec<&'static str> {
        self.kind.spec().outputs.iter().map(|o| o.name).collect()
    }
}

/// What to do with a step.
pub enum Decision {
    /// An input is not available (its step failed or was skipped): why, for the skipped line.
    Skip { why: String, outcome: StepOutcome },
    /// Known without running: cached, would-use-cache, would-run, or failed to decide.
    Known(StepOutcome),
    /// Must run (unless, under its lock, the key turns out stored by now, or on the remote).
    Run(Box<PlannedStep>),
}

/// Decides steps; shared by every command that looks at a pipeline's steps (through
/// [`crate::executor::Executor`]).
pub struct Planner<'a> {
    /// Both tiers: the local one decides; in dry runs the remote is peeked at (a real run asks
    /// it after a local miss, under the key's lock, when it executes).
    pub store: &'a TieredCache<'a>,
    pub graph: &'a PipelineGraph,
    pub env: &'a Environment,
    /// Where the executor reports steps.
    pub reporter: &'a Reporter,
    /// Earlier runs of this pipeline, newest first: where the reasons come from.
    pub history: &'a [RunRecord],
}

impl Planner<'_> {
    /// Decides step `i` given the outcomes of the steps before it (`done`, by graph index).
    pub fn decide(
        &self,
        i: usize,
        position: usize,
        done: &[Option<StepOutcome>],
        forced: bool,
        dry_run: bool,
    ) -> Decision {
        let step = &self.graph.steps[i];
        let mut outcome = StepOutcome::new(StepStatus::Skipped);

        // Inputs: content hashes of upstream outputs, when known.
        let mut input_hashes = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        for (name, r) in &step.inputs {
            let upstream = done[r.step].as_ref();
            let upstream_name = &self.graph.steps[r.step].name;
            match upstream {
                Some(u) if matches!(u.status, StepStatus::Failed | StepStatus::Skipped) => {
                    outcome.reasons.push(DirtyReason::InputPending { name: name.clone(), step: upstream_name.clone() });
                    let why = format!("input {name} from {upstream_name} is not available");
                    return Decision::Skip { why, outcome };
                }
                // A dry run knows the outputs of a result only the remote holds, not their path.
                Some(u) => match (u.outputs.get(r.output), &u.key, &u.artifact) {
                    (Some(hash), Some(key), dir) if dir.is_some() || dry_run => {
                        input_hashes.insert(name.clone(), hash.clone());
                        if let Some(dir) = dir {
                            inputs.insert(
                                name.clone(),
                                PlannedInput {
                                    key: key.clone(),
                                    output: r.output.to_string(),
                                    hash: hash.clone(),
                                    path: dir.join(r.output),
                                    upstream_outputs: self.graph.steps[r.step]
                                        .kind
                                        .spec()
                                        .outputs
                                        .iter()
                                        .map(|o| o.name)
                                        .collect(),
                                },
                            );
                        }
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
            return Decision::Known(outcome);
        }

        // What `auto` and hub ids stand for here and now, and what the inputs' names say (a
        // table's format): the key and the run both use it.
        let input_sources = self.graph.sources(i);
        let params = match step
            .kind
            .resolve(&step.params, self.env)
            .and_then(|p| step.kind.resolve_inputs(&p, &input_sources))
        {
            Ok(p) => p,
            Err(e) => {
                return Decision::Known(outcome.failed(e.to_string(), e.help().map(str::to_string), e.is_bad_input()))
            }
        };
        let mut sources = BTreeMap::new();
        for (name, path) in local_paths(step.kind, &params) {
            match Cache::hash_local(&path) {
                Ok(hash) => {
                    sources.insert(name, hash);
                }
                Err(e) => return Decision::Known(outcome.failed(e.to_string(), None, true)),
            }
        }
        let fingerprint = Fingerprint::new(step.kind, &params, input_hashes, sources);
        let key = fingerprint.key();
        outcome.key = Some(key.clone());
        outcome.fingerprint = Some(fingerprint.clone());

        if forced {
            outcome.reasons.push(DirtyReason::Forced);
        } else {
            match self.store.local().lookup(&key) {
                Lookup::Hit(manifest) => {
                    if !dry_run {
                        self.store.local_hit(&key);
                    }
                    outcome.status = if dry_run { StepStatus::WouldUseCache } else { StepStatus::Cached };
                    outcome.outputs = output_hashes(&manifest);
                    outcome.artifact = Some(self.store.local().out_dir(&manifest));
                    outcome.seconds = 0.0;
                    return Decision::Known(outcome);
                }
                Lookup::Corrupt(detail) => outcome.reasons.push(DirtyReason::ArtifactMissing { detail }),
                Lookup::Missing => outcome.reasons = self.reasons(&step.base, &fingerprint, &key),
            }
        }
        if dry_run {
            if !forced {
                let outputs: Vec<&str> = step.kind.spec().outputs.iter().map(|o| o.name).collect();
                match self.store.peek(&key, &outputs, &step.name) {
                    Ok(Some((manifest, note))) => {
                        outcome.status = StepStatus::WouldUseCache;
                        outcome.reasons.clear();
                        outcome.outputs = output_hashes(&manifest);
                        outcome.from_remote = Some(note);
                        return Decision::Known(outcome);
                    }
                    Ok(None) => {}
                    Err(e) => return Decision::Known(outcome.failed(e.to_string(), e.help.clone(), e.config)),
                }
            }
            outcome.status = StepStatus::WouldRun;
            return Decision::Known(outcome);
        }
        Decision::Run(Box::new(PlannedStep {
            index: i,
            position,
            name: step.name.clone(),
            base: step.base.clone(),
            kind: step.kind,
            params,
            inputs,
            sources: input_sources,
            key,
            fingerprint,
            reasons: outcome.reasons,
            forced,
            replaces: None,
        }))
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
}

/// Output name → content hash of a stored result.
pub fn output_hashes(manifest: &Manifest) -> BTreeMap<String, String> {
    manifest.outputs.iter().map(|(name, o)| (name.clone(), o.hash.clone())).collect()
}
