//! The state of one run's scheduling, kept as cargo's job queue keeps it: which steps are
//! decided, ready, running and done, what may start now, and the failure policy. Pure data:
//! no threads, no I/O, no printing; [`super::Executor::run_on`] drives it.
//!
//! The rules:
//! - Steps are decided in run order, once their inputs have outcomes, while a slot is free.
//! - A ready step starts when a slot is free (`--jobs`), no running step computes the same key
//!   (the second then finds the first's result), and, on this machine, fewer than `local_jobs`
//!   run here and it is not a second step that uses every core.
//! - After a failure nothing new starts; a dry run instead goes on deciding every step that
//!   does not read an undecidable one (its failures are outcomes, not stops).

use std::collections::BTreeMap;

use crate::plan::PlannedStep;
use crate::run_record::StepStatus;
use crate::step_key::StepKey;
use crate::step_outcome::StepOutcome;

/// A step that has started.
struct Running {
    /// Computes on this machine's cores.
    local: bool,
    /// Uses every core of the machine it runs on.
    heavy: bool,
    key: StepKey,
    /// Its state so far (queued, running, with its job), for the observer.
    outcome: StepOutcome,
}

pub struct Scheduler {
    /// Graph indices in run order.
    order: Vec<usize>,
    /// Graph index → position in the run order.
    position: BTreeMap<usize, usize>,
    outcomes: Vec<Option<StepOutcome>>,
    decided: Vec<bool>,
    /// Decided to run, not started.
    ready: Vec<PlannedStep>,
    running: BTreeMap<usize, Running>,
    /// The first step that failed (a real run stops starting steps after it).
    failed: Option<usize>,
    dry_run: bool,
    jobs: usize,
    local_jobs: usize,
}

impl Scheduler {
    /// `jobs`: steps in flight at once; `local_jobs`: of those, on this machine.
    pub fn new(order: &[usize], dry_run: bool, jobs: usize, local_jobs: usize) -> Scheduler {
        let n = order.len();
        Scheduler {
            order: order.to_vec(),
            position: order.iter().enumerate().map(|(p, &i)| (i, p)).collect(),
            outcomes: vec![None; n],
            decided: vec![false; n],
            ready: Vec::new(),
            running: BTreeMap::new(),
            failed: None,
            dry_run,
            jobs: jobs.max(1),
            local_jobs: local_jobs.clamp(1, jobs.max(1)),
        }
    }

    /// The outcomes known so far, by graph index.
    pub fn outcomes(&self) -> &[Option<StepOutcome>] {
        &self.outcomes
    }

    /// Position of graph step `i` in the run order.
    pub fn position(&self, i: usize) -> usize {
        self.position[&i]
    }

    /// The step that failed first, if one did.
    pub fn failed(&self) -> Option<usize> {
        self.failed
    }

    /// Whether new steps may still be decided and started.
    pub fn accepting(&self, cancelled: bool) -> bool {
        self.failed.is_none() && !cancelled
    }

    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// The first ready job (in run order of readiness) that may start now, taken off the
    /// ready list and counted as running. `local`: whether a job would run on this machine.
    pub fn start_next(&mut self, local: impl Fn(&PlannedStep) -> bool) -> Option<Box<PlannedStep>> {
        let here = self.running.values().filter(|r| r.local).count();
        let heavy_here = self.running.values().any(|r| r.local && r.heavy);
        let k = self.ready.iter().position(|job| {
            let same_key = self.running.values().any(|r| r.key == job.key);
            let heavy = job.kind.spec().uses_all_cores();
            self.running.len() < self.jobs
                && !same_key
                && (!local(job) || (here < self.local_jobs && !(heavy && heavy_here)))
        })?;
        let job = Box::new(self.ready.remove(k));
        let running = Running {
            local: local(&job),
            heavy: job.kind.spec().uses_all_cores(),
            key: job.key.clone(),
            outcome: job.outcome(),
        };
        self.running.insert(job.index, running);
        Some(job)
    }

    /// The next step to decide: the first undecided one in run order whose inputs all have
    /// outcomes, while a slot is free. Marked decided.
    pub fn decide_next(&mut self, inputs: impl Fn(usize) -> Vec<usize>) -> Option<usize> {
        if self.running.len() >= self.jobs {
            return None;
        }
        let outcomes = &self.outcomes;
        let next = self
            .order
            .iter()
            .copied()
            .find(|&i| !self.decided[i] && inputs(i).iter().all(|&u| outcomes[u].is_some()))?;
        self.decided[next] = true;
        Some(next)
    }

    /// A step decided without running (cached, skipped, would run, failed to decide).
    pub fn known(&mut self, i: usize, outcome: StepOutcome) {
        if outcome.status == StepStatus::Failed && !self.dry_run {
            self.failed.get_or_insert(i);
        }
        self.outcomes[i] = Some(outcome);
    }

    /// A step decided to run: it waits for a slot.
    pub fn ready(&mut self, job: Box<PlannedStep>) {
        self.ready.push(*job);
    }

    /// The state so far of running step `i`, to update as its backend reports.
    pub fn running_state(&mut self, i: usize) -> Option<&mut StepOutcome> {
        self.running.get_mut(&i).map(|r| &mut r.outcome)
    }

    /// A running step ended.
    pub fn finished(&mut self, i: usize, outcome: StepOutcome) {
        self.running.remove(&i);
        if outcome.status == StepStatus::Failed {
            self.failed.get_or_insert(i);
        }
        self.outcomes[i] = Some(outcome);
    }

    /// Every outcome, in graph order, after the run: what never got one is skipped, with the
    /// reason (`why` says it for each such step, by graph index and position).
    pub fn finish(mut self, mut skipped: impl FnMut(usize, usize) -> StepOutcome) -> Vec<StepOutcome> {
        for (p, &i) in self.order.iter().enumerate() {
            if self.outcomes[i].is_none() {
                self.outcomes[i] = Some(skipped(p, i));
            }
        }
        self.outcomes.into_iter().map(|o| o.unwrap_or_else(|| StepOutcome::new(StepStatus::Skipped))).collect()
    }
}
