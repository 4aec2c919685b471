//! Runs a pipeline's graph: decides each step once its inputs are known ([`crate::plan`]),
//! starts the steps that have to run on their backend, up to `--jobs` at a time, and reports
//! and records what happens. `--dry-run` and `pipe status` take the same decisions and start
//! nothing.
//!
//! Deciding and executing are apart: a [`Backend`] gets a [`PlannedStep`] (the step, its resolved
//! parameters, its inputs by key and path, its key) and returns its outcome; it knows nothing
//! of the graph, and the executor nothing of how a backend runs a job. Two exist:
//! [`LocalBackend`] (a thread of this process) and [`SlurmBackend`] (an `sbatch` job running
//! `pipe worker`). Another (Kubernetes Jobs, Ray) is one more implementation of the trait;
//! keys, the cache and the decisions stay as they are.
//!
//! Scheduling (its state and rules: [`scheduler::Scheduler`]): the steps are walked in the
//! graph's order; a step is decided when its inputs
//! have outcomes and a slot is free, so with one job at a time the run is exactly sequential,
//! in file order. Each job runs on a thread of a scope; the threads report back over a channel
//! and only this thread calls the observer (the run record) and decides. Locally, steps that
//! use every core ([`pipe_steps::StepSpec::uses_all_cores`]) go one at a time, the light
//! ones beside them. After a failure nothing new starts, what runs finishes, and the rest is
//! skipped (a dry run goes on deciding every step that does not read an undecidable one);
//! Ctrl-C sets [`Environment::cancelled`], which every backend watches (a local step stops at
//! its next check, a Slurm job is cancelled with `scancel`).
//!
//! While a step runs, its key is in the run record and its compute lock is held (so `pipe gc`
//! leaves its scratch directory and checkpoints alone), and the results it reads are held in
//! use (so neither gc nor a `--force` rerun elsewhere removes them under it).

pub mod compute;
pub mod job_file;
pub mod local;
mod scheduler;
pub mod slurm;
pub mod slurm_error;
pub mod slurm_state;

use std::collections::BTreeSet;
use std::sync::mpsc;

use pipe_steps::{Environment, Events};

pub use compute::Compute;
pub use local::LocalBackend;
use scheduler::Scheduler;
pub use slurm::SlurmBackend;

use crate::graph::PipelineGraph;
use crate::plan::{Decision, PlannedStep, Planner};
use crate::reporter::Reporter;
use crate::run_record::{JobRef, RunRecord, StepStatus};
use crate::step_outcome::StepOutcome;
use crate::tiered_cache::TieredCache;

/// What the user asked of this run beyond the pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Steps to rerun with everything that depends on them (indices into the graph).
    pub force: BTreeSet<usize>,
    pub dry_run: bool,
    /// Steps in flight at once (0: one).
    pub jobs: usize,
    /// Of those, steps running on this machine at once (0: `jobs`).
    pub local_jobs: usize,
}

/// A step's state changing while it runs, as a backend tells the executor (a step is not a
/// job: a cluster job is where a step may run).
#[derive(Debug, Clone)]
pub enum StepUpdate {
    /// Submitted to a cluster and waiting there.
    Queued(JobRef),
    /// The step itself is running (on the cluster job, when there is one).
    Running(Option<JobRef>),
}

/// Runs steps that have to run. Implementations are called from the executor's threads, one
/// thread per job in flight.
pub trait Backend: Sync {
    /// Whether its jobs compute on this machine's cores (the executor then limits them).
    fn local(&self) -> bool;
    /// Runs `job` to its outcome (`Ran`, `Cached`: found stored or on the remote by then, or
    /// `Failed`), blocking. `notify` hears of state changes; `events` takes the step's logs.
    /// It watches the environment's cancellation flag.
    fn execute(&self, job: &PlannedStep, events: &dyn Events, notify: &mut dyn FnMut(StepUpdate)) -> StepOutcome;
}

/// Which backend runs each step.
pub struct Placement<'a> {
    pub backends: Vec<&'a dyn Backend>,
    /// Per graph step, an index into `backends`.
    pub of_step: Vec<usize>,
}

pub struct Executor<'a> {
    /// The cache's two tiers, graph, environment, reporter and history: what deciding needs is
    /// what running needs too.
    plan: Planner<'a>,
}

/// What a job's thread tells the executor.
enum Message {
    State(usize, StepUpdate),
    Finished(usize, Box<StepOutcome>),
}

impl<'a> Executor<'a> {
    /// `history`: earlier runs of this pipeline, newest first (the reasons).
    pub fn new(
        store: &'a TieredCache<'a>,
        graph: &'a PipelineGraph,
        env: &'a Environment,
        reporter: &'a Reporter,
        history: &'a [RunRecord],
    ) -> Executor<'a> {
        Executor { plan: Planner { store, graph, env, reporter, history } }
    }

    /// The shared compute path, with this executor's cache and environment.
    pub fn compute(&self) -> Compute<'a> {
        Compute { store: self.plan.store, env: self.plan.env, reporter: self.plan.reporter }
    }

    /// Decides and (unless dry) runs every step here, in this process.
    pub fn run(&self, options: &RunOptions, observe: &mut dyn FnMut(usize, &StepOutcome)) -> Vec<StepOutcome> {
        let local = LocalBackend { compute: self.compute() };
        let placement = Placement { backends: vec![&local], of_step: vec![0; self.plan.graph.steps.len()] };
        self.run_on(options, &placement, observe)
    }

    /// Decides and (unless dry) runs every step on its backend. `observe` hears of every step
    /// when its state changes (queued, running, with its key and job) and when its outcome is
    /// known: the run command records the run from it.
    pub fn run_on(
        &self,
        options: &RunOptions,
        placement: &Placement<'_>,
        observe: &mut dyn FnMut(usize, &StepOutcome),
    ) -> Vec<StepOutcome> {
        let n = self.plan.graph.steps.len();
        let mut forced = BTreeSet::new();
        for &f in &options.force {
            forced.extend(self.plan.graph.with_dependents(f));
        }
        let jobs = options.jobs.max(1);
        let local_jobs = if options.local_jobs == 0 { jobs } else { options.local_jobs.min(jobs) };
        self.plan.reporter.set_parallel(jobs > 1 && n > 1);
        let planner = &self.plan;
        let graph = self.plan.graph;
        let reporter = self.plan.reporter;
        let mut queue = Scheduler::new(graph.order(), options.dry_run, jobs, local_jobs);
        let is_local = |job: &PlannedStep| placement.backends[placement.of_step[job.index]].local();
        let inputs_of = |i: usize| graph.steps[i].inputs.values().map(|r| r.step).collect::<Vec<_>>();

        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<Message>();
            loop {
                while queue.accepting(self.plan.env.is_cancelled()) {
                    let mut progress = false;
                    // Start what may start, in the order the steps became ready.
                    while let Some(job) = queue.start_next(is_local) {
                        progress = true;
                        reporter.set_in_flight(queue.in_flight());
                        let backend = placement.backends[placement.of_step[job.index]];
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let events = reporter.for_step(&job.name);
                            let mut notify = |state: StepUpdate| {
                                match &state {
                                    StepUpdate::Queued(job_ref) => {
                                        reporter.step_queued(job.position, n, &job.name, &place(job_ref))
                                    }
                                    StepUpdate::Running(job_ref) => reporter.step_started(
                                        job.position,
                                        n,
                                        &job.name,
                                        &job.reasons,
                                        job_ref.as_ref().map(place).as_deref(),
                                    ),
                                }
                                let _ = tx.send(Message::State(job.index, state));
                            };
                            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                backend.execute(&job, &events, &mut notify)
                            }))
                            .unwrap_or_else(|panic| {
                                let what = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                job.outcome().failed(format!("the step panicked: {what}"), None, false)
                            });
                            let _ = tx.send(Message::Finished(job.index, Box::new(outcome)));
                        });
                    }
                    // Decide the next step whose inputs are known, while a slot is free.
                    if let Some(i) = queue.decide_next(inputs_of) {
                        progress = true;
                        let p = queue.position(i);
                        match planner.decide(i, p, queue.outcomes(), forced.contains(&i), options.dry_run) {
                            Decision::Skip { why, outcome } => {
                                reporter.step_skipped(p, n, &graph.steps[i].name, &why);
                                observe(i, &outcome);
                                queue.known(i, outcome);
                            }
                            Decision::Known(outcome) => {
                                self.report(p, i, &outcome);
                                observe(i, &outcome);
                                queue.known(i, outcome);
                            }
                            Decision::Run(job) => queue.ready(job),
                        }
                    }
                    if !progress {
                        break;
                    }
                }
                if queue.is_idle() {
                    break;
                }
                let Ok(message) = rx.recv() else { break };
                match message {
                    Message::State(i, state) => {
                        let Some(outcome) = queue.running_state(i) else { continue };
                        match state {
                            StepUpdate::Queued(job) => outcome.job = Some(job),
                            StepUpdate::Running(job) => {
                                if job.is_some() {
                                    outcome.job = job;
                                }
                            }
                        }
                        observe(i, outcome);
                    }
                    Message::Finished(i, outcome) => {
                        let outcome = *outcome;
                        self.report(queue.position(i), i, &outcome);
                        observe(i, &outcome);
                        queue.finished(i, outcome);
                        reporter.set_in_flight(queue.in_flight());
                    }
                }
            }
        });
        reporter.set_in_flight(0);

        // After a failure or an interruption nothing more runs; what ran before stays cached.
        let failed = queue.failed();
        queue.finish(|p, i| {
            let why = match failed {
                _ if self.plan.env.is_cancelled() => "not run: interrupted".to_string(),
                Some(f) => format!("not run: step {} failed", graph.steps[f].name),
                None => "not run".to_string(),
            };
            reporter.step_skipped(p, n, &graph.steps[i].name, &why);
            let outcome = StepOutcome::new(StepStatus::Skipped);
            observe(i, &outcome);
            outcome
        })
    }

    /// The line of a step whose outcome is known.
    fn report(&self, position: usize, i: usize, outcome: &StepOutcome) {
        let name = &self.plan.graph.steps[i].name;
        let total = self.plan.graph.steps.len();
        match outcome.status {
            StepStatus::Failed => self.plan.reporter.step_failed(position, total, name, outcome),
            StepStatus::Ran => self.plan.reporter.step_done(position, total, name, outcome),
            _ => self.plan.reporter.step_decided(position, total, name, outcome),
        }
    }
}

/// `slurm job 12` or `slurm job 12 on node1`.
pub fn place(job: &JobRef) -> String {
    match &job.node {
        Some(node) => format!("{} job {} on {node}", job.executor, job.id),
        None => format!("{} job {}", job.executor, job.id),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::spec::PipelineSpec;

    /// Runs nothing: counts steps in flight (all, and those that use every core) and says the
    /// step ran with one output. Barriers instead of sleeps make steps overlap: each step waits
    /// until `together` steps (one using every core: until `heavy_together` of those) have been
    /// in flight at once, so the counts do not depend on how fast threads start; a wait that is
    /// never met ends after `GIVE_UP`, and the count assertions then fail. Then each waits
    /// `PROBE` for one more than that, which a correct executor never starts: that wait only
    /// gives a wrong executor the chance to show itself, it cannot fail a correct one.
    struct Counting {
        local: bool,
        together: usize,
        heavy_together: usize,
        counts: Mutex<Counts>,
        changed: Condvar,
        dir: std::path::PathBuf,
    }

    #[derive(Default)]
    struct Counts {
        now: usize,
        heavy_now: usize,
        most: usize,
        most_heavy: usize,
    }

    const GIVE_UP: Duration = Duration::from_secs(30);
    const PROBE: Duration = Duration::from_millis(200);

    impl Counting {
        fn most(&self) -> (usize, usize) {
            let c = self.counts.lock().unwrap();
            (c.most, c.most_heavy)
        }
    }

    impl Backend for Counting {
        fn local(&self) -> bool {
            self.local
        }

        fn execute(&self, job: &PlannedStep, _events: &dyn Events, notify: &mut dyn FnMut(StepUpdate)) -> StepOutcome {
            let heavy = job.kind.spec().uses_all_cores();
            notify(StepUpdate::Running(None));
            {
                let mut c = self.counts.lock().unwrap();
                c.now += 1;
                c.most = c.most.max(c.now);
                if heavy {
                    c.heavy_now += 1;
                    c.most_heavy = c.most_heavy.max(c.heavy_now);
                }
                self.changed.notify_all();
                let target = if heavy { self.heavy_together } else { self.together };
                let reached = |c: &Counts, n: usize| if heavy { c.most_heavy >= n } else { c.most >= n };
                let (c, _) = self.changed.wait_timeout_while(c, GIVE_UP, |c| !reached(c, target)).unwrap();
                let (mut c, _) = self.changed.wait_timeout_while(c, PROBE, |c| !reached(c, target + 1)).unwrap();
                c.now -= 1;
                if heavy {
                    c.heavy_now -= 1;
                }
            }
            let mut outcome = job.outcome();
            outcome.status = StepStatus::Ran;
            for output in job.outputs() {
                outcome.outputs.insert(output.to_string(), format!("{}-{output}", job.name));
            }
            outcome.artifact = Some(self.dir.clone());
            outcome
        }
    }

    /// Four downloads (light), then two linear models (every core) on them.
    const PIPELINE: &str = "name: t
steps:
  a: { kind: download, url: http://127.0.0.1:9/a }
  b: { kind: download, url: http://127.0.0.1:9/b }
  c: { kind: download, url: http://127.0.0.1:9/c }
  d: { kind: download, url: http://127.0.0.1:9/d }
  one:
    kind: linear
    inputs: { train: a, test: b }
  two:
    kind: linear
    inputs: { train: c, test: d }
";

    /// Runs [`PIPELINE`] with `jobs` in flight, its steps waiting for `together` (those using
    /// every core for `heavy_together`) to be in flight at once.
    fn run(
        local: bool,
        jobs: usize,
        together: usize,
        heavy_together: usize,
    ) -> (Counting, Vec<StepOutcome>, Vec<(usize, StepStatus)>) {
        let dir = tempfile::tempdir().unwrap();
        let spec = PipelineSpec::parse(std::path::Path::new("t.yaml"), PIPELINE, &[]).unwrap();
        let graph = PipelineGraph::build(&spec).unwrap();
        let cache = crate::cache::Cache::open(dir.path()).unwrap();
        let env = Environment::default();
        let reporter = Reporter::quiet();
        let store = TieredCache::new(&cache, None, &reporter);
        let executor = Executor::new(&store, &graph, &env, &reporter, &[]);
        let backend = Counting {
            local,
            together,
            heavy_together,
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
            dir: dir.path().to_path_buf(),
        };
        let placement = Placement { backends: vec![&backend], of_step: vec![0; graph.steps.len()] };
        let options = RunOptions { jobs, local_jobs: jobs, ..RunOptions::default() };
        let mut seen = Vec::new();
        let outcomes = executor.run_on(&options, &placement, &mut |i, o| seen.push((i, o.status)));
        (backend, outcomes, seen)
    }

    #[test]
    fn light_steps_run_together_and_steps_using_every_core_one_at_a_time_here() {
        let (backend, outcomes, seen) = run(true, 4, 4, 1);
        assert!(outcomes.iter().all(|o| o.status == StepStatus::Ran));
        assert_eq!(backend.most(), (4, 1), "the four downloads at once, one linear model at a time");
        // The observer heard each step start, then end.
        for i in 0..6 {
            let of: Vec<StepStatus> = seen.iter().filter(|(j, _)| *j == i).map(|(_, s)| *s).collect();
            assert_eq!(of, [StepStatus::Running, StepStatus::Ran], "step {i}");
        }
    }

    #[test]
    fn jobs_bound_what_is_in_flight_and_cluster_jobs_may_all_use_every_core() {
        let (backend, _, _) = run(true, 2, 2, 1);
        assert_eq!(backend.most().0, 2);
        let (backend, _, _) = run(false, 8, 4, 2);
        assert_eq!(backend.most().1, 2, "both linear models at once on a cluster");
        let (backend, _, _) = run(true, 1, 1, 1);
        assert_eq!(backend.most().0, 1);
    }
}
