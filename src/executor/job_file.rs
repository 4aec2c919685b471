//! The job file: what `pipe worker` on a cluster node needs to compute one step, written by the
//! submitting `pipe run` into `<cache>/jobs/<key>/job.json` (temp file + rename), and the
//! result file the worker leaves beside it (`<job id>.result.json`).
//!
//! In it: the step (name, kind, resolved parameters), its inputs by key, output and content
//! hash, the key it must produce, the cache directory, the remote cache's URL and mode, and
//! the run's mirror and hub settings. Not in it: credentials, or anything from the
//! environment. A job gets secrets (the object store's, when the run has a remote) only from
//! the variables it is submitted with ([`super::slurm::exported`]); neither this file nor the
//! batch script carries them (Slurm keeps the script, and users can read it back with
//! `scontrol write batch_script`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use pipe_steps::InputSource;
use pipe_steps::Timing;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::cache::write_synced;
use crate::fingerprint::Fingerprint;
use crate::plan::PlannedStep;
use crate::run_record::StepStatus;
use crate::step_key::StepKey;
use crate::step_outcome::StepFailure;

/// The version of the job file's format; a worker refuses others (a node with another pipe).
pub const JOB_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFile {
    pub format: u32,
    /// The step's name in the run (`finetune[lr=3e-4]`) and in the pipeline file.
    pub step: String,
    pub base: String,
    pub kind: String,
    /// After resolving `auto` and hub ids: the worker runs with exactly these.
    pub params: BTreeMap<String, Json>,
    pub inputs: BTreeMap<String, JobFileInput>,
    /// Where each input comes from, as the user knows it: for the step's messages.
    #[serde(default)]
    pub sources: BTreeMap<String, InputSource>,
    /// The key pipe computed; the worker computes it again from what it finds and refuses to
    /// run if it differs.
    pub key: StepKey,
    /// What the key was computed from, so that a worker can say what differs.
    pub fingerprint: Fingerprint,
    #[serde(default)]
    pub forced: bool,
    /// For a forced job: the output directory stored under the key at submission (`""`: none).
    #[serde(default)]
    pub replaces: Option<String>,
    /// Absolute: the submitting run's cache, where this job's directory (job file, log, result
    /// file) is, and, unless `node_cache` is set, where the worker keeps results.
    pub cache_dir: PathBuf,
    /// The node's own cache for results (`executor: node_cache:`), not shared with the
    /// submitting machine: inputs are pulled from the remote into it, the result is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cache: Option<PathBuf>,
    #[serde(default)]
    pub remote: Option<JobRemote>,
    #[serde(default)]
    pub mirror: Option<PathBuf>,
    #[serde(default)]
    pub hub_endpoint: Option<String>,
    #[serde(default)]
    pub hub_cache: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFileInput {
    pub key: StepKey,
    pub output: String,
    /// The output's content hash, as the key covers it.
    pub hash: String,
    /// The outputs the upstream kind declares (to pull it from the remote).
    pub upstream_outputs: Vec<String>,
}

/// The remote cache, without credentials: the URL as shown (one with credentials is refused
/// anyway) and the mode's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRemote {
    pub url: String,
    pub mode: String,
}

/// How the worker ended, for the submitting run (the job's exit code says less).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// `Ran`, `Cached` or `Failed` (`ran`, `cached`, `failed` in the file).
    pub status: StepStatus,
    /// Why it failed (`message`, `help`, `bad_input` in the file).
    #[serde(flatten, default)]
    pub failure: Option<StepFailure>,
    /// The step's own time, without the job's start-up.
    #[serde(default)]
    pub seconds: f64,
    /// What the step reported of its phases, for the run record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<Timing>,
    #[serde(default)]
    pub host: String,
}

impl JobFile {
    pub fn of(job: &PlannedStep, cache_dir: &Path) -> JobFile {
        JobFile {
            format: JOB_FORMAT,
            step: job.name.clone(),
            base: job.base.clone(),
            kind: job.kind.spec().kind.to_string(),
            params: job.params.values().clone(),
            inputs: job
                .inputs
                .iter()
                .map(|(name, i)| {
                    let input = JobFileInput {
                        key: i.key.clone(),
                        output: i.output.clone(),
                        hash: i.hash.clone(),
                        upstream_outputs: i.upstream_outputs.iter().map(|s| s.to_string()).collect(),
                    };
                    (name.clone(), input)
                })
                .collect(),
            sources: job.sources.clone(),
            key: job.key.clone(),
            fingerprint: job.fingerprint.clone(),
            forced: job.forced,
            replaces: job.replaces.clone(),
            cache_dir: cache_dir.to_path_buf(),
            node_cache: None,
            remote: None,
            mirror: None,
            hub_endpoint: None,
            hub_cache: None,
        }
    }

    pub fn read(path: &Path) -> Result<JobFile, String> {
        let bytes = fs::read(path).map_err(|e| format!("reading job file {}: {e}", path.display()))?;
        let job: JobFile =
            serde_json::from_slice(&bytes).map_err(|e| format!("job file {}: not a pipe job: {e}", path.display()))?;
        if job.format != JOB_FORMAT {
            return Err(format!(
                "job file {} has format {} (this pipe reads {JOB_FORMAT}): the node runs another pipe version",
                path.display(),
                job.format
            ));
        }
        Ok(job)
    }

    /// Writes the file at `path` (temp file + rename, so a job never reads half of one).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_json(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

impl JobResult {
    pub fn read(path: &Path) -> Option<JobResult> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_json(path, &serde_json::to_vec_pretty(self).unwrap_or_default())
    }
}

fn write_json(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
