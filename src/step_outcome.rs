//! What happened to one step in a run: decided by the [`crate::executor::Executor`], printed by
//! the [`crate::reporter::Reporter`], recorded in the [`crate::run_record::RunRecord`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use pipe_steps::Timing;

use crate::dirty_reason::DirtyReason;
use crate::fingerprint::Fingerprint;
use crate::run_record::{JobRef, StepStatus};
use crate::step_key::StepKey;

/// Why a step failed (or a worker refused to compute it): the one failure type of outcomes,
/// job result files and the worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepFailure {
    pub message: String,
    #[serde(default)]
    pub help: Option<String>,
    /// Bad input (exit code 2) rather than a failure (exit code 1).
    #[serde(default)]
    pub bad_input: bool,
}

impl StepFailure {
    pub fn new(message: impl Into<String>, help: Option<String>, bad_input: bool) -> StepFailure {
        StepFailure { message: message.into(), help, bad_input }
    }
}

/// What happened to one step.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub key: Option<StepKey>,
    pub fingerprint: Option<Fingerprint>,
    pub reasons: Vec<DirtyReason>,
    /// Output name → content hash (known once the step is cached or ran).
    pub outputs: BTreeMap<String, String>,
    /// The directory holding the outputs in the cache (known once the step is cached or ran).
    pub artifact: Option<PathBuf>,
    pub seconds: f64,
    /// What the step reported of its phases (epochs), for the run record.
    pub timings: Vec<Timing>,
    pub failure: Option<StepFailure>,
    /// Taken from the remote cache (a dry run: found there): what was transferred from where.
    pub from_remote: Option<String>,
    /// The cluster job computing (or that computed) the step, when it ran as one.
    pub job: Option<JobRef>,
}

impl StepOutcome {
    pub fn new(status: StepStatus) -> Self {
        StepOutcome {
            status,
            key: None,
            fingerprint: None,
            reasons: Vec::new(),
            outputs: BTreeMap::new(),
            artifact: None,
            seconds: 0.0,
            timings: Vec::new(),
            failure: None,
            from_remote: None,
            job: None,
        }
    }

    pub fn failed(mut self, message: String, help: Option<String>, bad_input: bool) -> Self {
        self.status = StepStatus::Failed;
        self.failure = Some(StepFailure::new(message, help, bad_input));
        self
    }
}
