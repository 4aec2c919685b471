//! The record of one `pipe run`: pipeline, effective parameters, per-step key and outcome,
//! timings, and who ran it (host, user, the pipeline's git commit). Written when the run starts and after every step, so a killed run still shows as
//! incomplete. `status` and `report` read these.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pipe_steps::Timing;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::cache::{write_synced, Cache, CacheError};
use crate::fingerprint::Fingerprint;
use crate::graph::GraphStep;
use crate::provenance::GitState;
use crate::step_key::StepKey;
use crate::step_outcome::StepOutcome;

/// How a step ended in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Cached,
    Ran,
    Failed,
    Skipped,
    WouldRun,
    WouldUseCache,
    /// Not reached yet (the run is in progress or was killed).
    Pending,
    /// Running now (or the run was killed while it ran).
    Running,
}

impl StepStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepStatus::Cached => "cached",
            StepStatus::Ran => "ran",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::WouldRun => "would-run",
            StepStatus::WouldUseCache => "would-use-cache",
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub kind: String,
    pub status: StepStatus,
    pub key: Option<StepKey>,
    pub fingerprint: Option<Fingerprint>,
    /// Every parameter's effective value (including those not in the key).
    pub params: BTreeMap<String, Json>,
    /// Output name → content hash.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    pub seconds: f64,
    /// What the step reported of its phases (`epoch 1`...) when it ran: timings live here,
    /// never in a hashed output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<Timing>,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The result was taken from the remote cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// The cluster job of the step (`pipe status` asks the cluster about a running one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRef>,
}

/// A step's job on a cluster, as the run record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// `slurm`.
    pub executor: String,
    /// The cluster's job id.
    pub id: String,
    /// `queued`, `running`, or how it ended (`completed`, `failed`, `cancelled`, ...).
    pub state: String,
    /// The node it runs or ran on, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
}

impl RunState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunState::Running => "running or interrupted",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `<unix millis>-<pid>`: sorts by start time.
    pub id: String,
    pub pipeline: String,
    /// Absolute path of the pipeline file.
    pub file: PathBuf,
    pub started: String,
    pub state: RunState,
    pub seconds: f64,
    /// The `--set` arguments as typed, then the variant's sweep values as `--set`s.
    pub overrides: Vec<String>,
    /// The variant of a `--sweep` this record is (`lr=3e-5`); one record per variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The machine it ran on (`PIPE_HOST`, else the hostname): runs are shared through the
    /// remote cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Who ran it ([`crate::provenance::user`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The commit of the git work tree the pipeline file is in, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitState>,
    pub steps: Vec<StepRecord>,
}

impl StepRecord {
    /// What the record says of `step` given its outcome so far.
    pub fn of(step: &GraphStep, outcome: &StepOutcome) -> StepRecord {
        StepRecord {
            name: step.base.clone(),
            kind: step.kind.spec().kind.to_string(),
            status: outcome.status,
            key: outcome.key.clone(),
            fingerprint: outcome.fingerprint.clone(),
            params: step.params.values().clone(),
            outputs: outcome.outputs.clone(),
            seconds: outcome.seconds,
            timings: outcome.timings.clone(),
            reasons: outcome.reasons.iter().map(ToString::to_string).collect(),
            error: outcome.failure.as_ref().map(|f| f.message.clone()),
            remote: outcome.from_remote.is_some(),
            job: outcome.job.clone(),
        }
    }
}

impl RunRecord {
    pub fn new_id() -> String {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        format!("{millis:015}-{}", std::process::id())
    }

    fn path(cache: &Cache, id: &str) -> PathBuf {
        cache.runs_dir().join(format!("{id}.json"))
    }

    /// Writes the record (temp file + rename, so readers never see half a record).
    pub fn save(&self, cache: &Cache) -> Result<(), CacheError> {
        let path = Self::path(cache, &self.id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_synced(&tmp, &bytes).map_err(|source| CacheError::new("writing", tmp.clone(), source))?;
        fs::rename(&tmp, &path).map_err(|source| CacheError::new("renaming", path, source))
    }

    /// Every readable record, oldest first.
    pub fn all(cache: &Cache) -> Vec<RunRecord> {
        let dir = cache.runs_dir();
        let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect())
            .unwrap_or_default();
        paths.sort();
        paths.iter().filter_map(|p| Self::read(p)).collect()
    }

    fn read(path: &Path) -> Option<RunRecord> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    /// The most recent record, of pipeline `name` when given.
    pub fn latest(cache: &Cache, name: Option<&str>) -> Option<RunRecord> {
        Self::all(cache).into_iter().rev().find(|r| name.is_none_or(|n| r.pipeline == n))
    }

    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }
}
