//! Tracking: a finished run sent where people look at runs — MLflow ([`mlflow`], through its
//! REST API) and TensorBoard event files ([`tensorboard`]). Both read the run record and the
//! results it names from the cache after the run; neither is called unless asked for, neither
//! changes a step, a key or the run's outcome (a failure to track is a warning).
//!
//! This module gathers what a run measured ([`RunResults`]): per step, its per-epoch and
//! per-logged-batch training metrics and its final evaluation, read from the steps' `metrics`
//! outputs as JSON numbers (so fields the steps add later are tracked without change here),
//! the ensemble's weights, and the files of the run's `report` step.

pub mod mlflow;
pub mod tensorboard;

use std::path::PathBuf;

use pipe_steps::Reported;
use serde_json::Value as Json;

use crate::cache::{Cache, Lookup};
use crate::reporter::Reporter;
use crate::run_record::{RunRecord, StepRecord, StepStatus};

/// Where a run is tracked (nothing by default).
#[derive(Debug, Clone, Default)]
pub struct Tracking {
    /// The MLflow tracking server, and the experiment (default: the pipeline's name).
    pub mlflow: Option<(String, Option<String>)>,
    /// The folder of TensorBoard event files.
    pub tensorboard: Option<PathBuf>,
}

impl Tracking {
    pub fn is_off(&self) -> bool {
        self.mlflow.is_none() && self.tensorboard.is_none()
    }

    /// Tracks the finished runs `runs` (one per sweep variant); problems are warnings.
    pub fn after_run(&self, cache: &Cache, runs: &[RunRecord], reporter: &Reporter) {
        if self.is_off() {
            return;
        }
        let results: Vec<RunResults> = runs.iter().map(|r| RunResults::read(cache, r)).collect();
        if let Some(dir) = &self.tensorboard {
            for (run, results) in runs.iter().zip(&results) {
                match tensorboard::write(dir, run, results) {
                    Ok(files) if files.is_empty() => {}
                    Ok(files) => reporter.note(&format!(
                        "tensorboard: {} event file{} in {}",
                        files.len(),
                        if files.len() == 1 { "" } else { "s" },
                        dir.join(tensorboard::run_folder(run)).display()
                    )),
                    Err(e) => reporter.warning(&format!("tensorboard: {e} (the run itself is unaffected)")),
                }
            }
        }
        let Some((uri, experiment)) = &self.mlflow else { return };
        let server = match mlflow::Mlflow::new(uri) {
            Ok(s) => s,
            Err(e) => return reporter.warning(&format!("{e}; the run is not tracked")),
        };
        for (run, results) in runs.iter().zip(&results) {
            let experiment = experiment.clone().unwrap_or_else(|| run.pipeline.clone());
            match server.track(&experiment, run, results) {
                Ok(tracked) => {
                    reporter
                        .note(&format!("mlflow: run {} in experiment `{experiment}`: {}", tracked.run_id, tracked.url));
                    if let Some(why) = tracked.not_uploaded {
                        reporter.warning(&format!("mlflow: {why}"));
                    }
                }
                Err(e) => {
                    reporter.warning(&format!("mlflow: {e}; the run is not tracked (the run itself is unaffected)"));
                    if e.unreachable {
                        return;
                    }
                }
            }
        }
    }
}

/// Why a run could not be tracked (printed as a warning; the run's outcome stays as it is).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TrackingError {
    pub message: String,
    /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`), when it answered with one.
    pub code: Option<String>,
    /// The server could not be reached at all: the other runs are not tried.
    pub unreachable: bool,
}

impl TrackingError {
    pub fn new(message: impl Into<String>) -> TrackingError {
        TrackingError { message: message.into(), code: None, unreachable: false }
    }

    fn unreachable(mut self) -> TrackingError {
        self.unreachable = true;
        self
    }
}

/// Which series a scalar belongs to, and what its step number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// Once per epoch; the step number is the epoch (1-based).
    Epoch,
    /// Once per logged batch interval (`log_every`); the step number is the update count.
    Batch,
    /// A final evaluation; step number 0.
    Final,
}

/// One measured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub series: Series,
    /// The metrics file's field (`train_loss`, `valid_accuracy`, `loss`, `macro_f1`).
    pub name: String,
    pub step: u64,
    pub value: f64,
    /// Seconds since the step started (reconstructed from the epochs' durations), when known.
    pub offset: Option<f64>,
}

/// What one step of the run measured.
#[derive(Debug, Clone)]
pub struct StepResults {
    /// The pipeline's step name.
    pub step: String,
    pub scalars: Vec<Scalar>,
    /// An ensemble's members and their weights.
    pub weights: Vec<(String, f64)>,
    /// A `report` step's files (report.html first).
    pub files: Vec<PathBuf>,
}

/// What a run measured, step by step (steps without results are left out).
#[derive(Debug, Clone)]
pub struct RunResults {
    pub steps: Vec<StepResults>,
}

impl RunResults {
    /// Reads the results of every step of `run` that ran or was cached and is still in `cache`.
    pub fn read(cache: &Cache, run: &RunRecord) -> RunResults {
        let mut steps = Vec::new();
        for step in &run.steps {
            let Some(dir) = output_dir(cache, step) else { continue };
            let json = |name: &str| -> Option<Json> { serde_json::from_slice(&std::fs::read(dir(name)).ok()?).ok() };
            let mut results =
                StepResults { step: step.name.clone(), scalars: Vec::new(), weights: Vec::new(), files: Vec::new() };
            // What each output is, by the kind's facts; a kind without them (your commands)
            // has its `metrics` output's numbers tracked.
            let facts = pipe_steps::find(&step.kind).map_or(&[][..], |k| k.spec().reported);
            let output = |is: Reported| facts.iter().find(|f| f.is == is).map(|f| f.output);
            let history = output(Reported::Training).or(output(Reported::Pretraining));
            let scores = facts.iter().find(|f| f.is.is_model()).map(|f| f.output);
            let plain = if facts.is_empty() { Some("metrics") } else { None };
            if let Some(m) = history.and_then(json) {
                results.scalars = training_scalars(&m);
            } else if let Some(m) = scores.or(plain).and_then(json) {
                results.scalars = numbers(&m, Series::Final, 0, None);
            }
            if let Some(weights) = output(Reported::Weights).and_then(json) {
                results.weights = weights["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["weight"].as_f64()?)))
                    .collect();
            }
            if let Some(files) = output(Reported::Files) {
                let report = dir(files);
                let mut files: Vec<PathBuf> = std::fs::read_dir(&report)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                files.sort_by_key(|p| (p.extension().is_none_or(|e| e != "html"), p.clone()));
                results.files = files;
            }
            if !results.scalars.is_empty() || !results.weights.is_empty() || !results.files.is_empty() {
                steps.push(results);
            }
        }
        RunResults { steps }
    }
}

/// Where the outputs of a finished step are in the cache (`None`: it did not finish, or its
/// result is gone).
fn output_dir<'a>(cache: &'a Cache, step: &StepRecord) -> Option<impl Fn(&str) -> PathBuf + 'a> {
    if !matches!(step.status, StepStatus::Ran | StepStatus::Cached) {
        return None;
    }
    match cache.lookup(step.key.as_ref()?) {
        Lookup::Hit(manifest) => Some(move |name: &str| cache.output_path(&manifest, name)),
        _ => None,
    }
}

/// The numeric fields of a JSON object as scalars (arrays and nested objects are not scalars).
fn numbers(object: &Json, series: Series, step: u64, offset: Option<f64>) -> Vec<Scalar> {
    let Some(map) = object.as_object() else { return Vec::new() };
    map.iter()
        .filter_map(|(name, v)| {
            let value = v.as_f64().filter(|x| x.is_finite())?;
            Some(Scalar { series, name: name.clone(), step, value, offset })
        })
        .collect()
}

/// A training history: per epoch (numbered by `epoch`; `seconds` gives the time line) and per
/// logged batch (numbered by `update`, placed in its epoch by `batch`).
fn training_scalars(metrics: &Json) -> Vec<Scalar> {
    // fine-tune: {"epochs": [...], "batches": [...]}; pretrain: [...].
    let epochs: &[Json] = match metrics {
        Json::Array(list) => list,
        other => other["epochs"].as_array().map_or(&[], Vec::as_slice),
    };
    let batches: &[Json] = metrics.get("batches").and_then(Json::as_array).map_or(&[], Vec::as_slice);
    let mut out = Vec::new();
    // Each epoch's start, in seconds from the step's start.
    let mut starts: Vec<(u64, f64, f64)> = Vec::new(); // (epoch, start, seconds)
    let mut elapsed = 0.0;
    for e in epochs {
        let Some(epoch) = e["epoch"].as_u64() else { continue };
        let seconds = e["seconds"].as_f64().unwrap_or(0.0);
        starts.push((epoch, elapsed, seconds));
        elapsed += seconds;
        let mut scalars = numbers(e, Series::Epoch, epoch, Some(elapsed));
        scalars.retain(|s| s.name != "epoch");
        out.extend(scalars);
    }
    for b in batches {
        let (Some(epoch), Some(update)) = (b["epoch"].as_u64(), b["update"].as_u64()) else { continue };
        let batch = b["batch"].as_f64().unwrap_or(0.0);
        // The epoch's last logged batch stands for its end.
        let last = batches
            .iter()
            .filter(|x| x["epoch"].as_u64() == Some(epoch))
            .filter_map(|x| x["batch"].as_f64())
            .fold(0.0, f64::max);
        let offset = starts
            .iter()
            .find(|(e, _, _)| *e == epoch)
            .map(|(_, start, seconds)| start + if last > 0.0 { seconds * batch / last } else { 0.0 });
        let mut scalars = numbers(b, Series::Batch, update, offset);
        scalars.retain(|s| !matches!(s.name.as_str(), "epoch" | "batch" | "update"));
        out.extend(scalars);
    }
    out
}

/// Milliseconds since the epoch at which a run started (its id begins with them).
pub fn started_millis(run: &RunRecord) -> Option<u64> {
    run.id.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn training_histories_become_epoch_and_batch_scalars() {
        let metrics = json!({
            "epochs": [
                {"epoch": 1, "train_loss": 0.7, "valid_accuracy": 0.5, "test_accuracy": null, "lr": 1e-3, "seconds": 2.0},
                {"epoch": 2, "train_loss": 0.5, "valid_accuracy": 0.6, "lr": 0.0, "seconds": 4.0}
            ],
            "batches": [
                {"epoch": 1, "batch": 2, "update": 2, "loss": 0.8, "accuracy": 0.4, "lr": 1e-3},
                {"epoch": 1, "batch": 4, "update": 4, "loss": 0.7, "accuracy": 0.5, "lr": 9e-4},
                {"epoch": 2, "batch": 4, "update": 8, "loss": 0.5, "accuracy": 0.7, "lr": 0.0}
            ],
            "best_epoch": 2
        });
        let s = training_scalars(&metrics);
        let find = |series, name: &str, step| s.iter().find(|x| x.series == series && x.name == name && x.step == step);
        assert_eq!(find(Series::Epoch, "train_loss", 2).map(|x| (x.value, x.offset)), Some((0.5, Some(6.0))));
        // A missing (null) value is no scalar; the epoch number is not one either.
        assert!(find(Series::Epoch, "test_accuracy", 1).is_none());
        assert!(s.iter().all(|x| x.name != "epoch" && x.name != "update"));
        assert_eq!(find(Series::Batch, "loss", 2).map(|x| (x.value, x.offset)), Some((0.8, Some(1.0))));
        assert_eq!(find(Series::Batch, "accuracy", 8).and_then(|x| x.offset), Some(6.0));
        assert_eq!(s.iter().filter(|x| x.series == Series::Batch).count(), 9);
        // pretrain: a plain list of epochs.
        let pretrain = training_scalars(&json!([{"epoch": 1, "mlm_loss": 5.0, "seconds": 1.0}]));
        assert_eq!(pretrain.len(), 2);
        assert!(pretrain.iter().any(|x| x.name == "mlm_loss" && x.step == 1));
    }
}
