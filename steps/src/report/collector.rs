//! The one way a run's results become a [`RunReport`]: `pipe report` feeds it the steps of a
//! recorded run from the cache, the `report` step the steps its `steps` parameter names, each
//! output with what it is to a report ([`Reported`], the kind's fact) — so both render the
//! same report for the same run: every fine-tune with its epochs, the first evaluation as the
//! final one, every model's scores compared (with the validation accuracy and the ensemble's
//! weights where the steps give them).
//!
//! Pure data: no file is read here (the callers load them), nothing is printed. What only a
//! cache knows (the run's label and state, who ran it, the epochs' timings) the caller adds.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{EvalMetrics, FineTune, ModelScore, RegressionMetrics, RunReport, TrainingMetrics};
use crate::step::{Reported, Timing};
use crate::task::Task;

/// Collects one run's reported outputs, step by step, in the order they are added.
#[derive(Debug, Default)]
pub struct RunCollector {
    fine_tunes: Vec<FineTune>,
    /// The first evaluation: the report's final one.
    evaluation: Option<EvalMetrics>,
    regression: Option<RegressionMetrics>,
    models: Vec<ModelScore>,
    /// Per step, its model's validation accuracy (a baseline's `valid_scores`, an ensemble's
    /// weights) and an ensemble's members: joined to its scores when the report is made.
    valid: BTreeMap<String, f64>,
    members: BTreeMap<String, Vec<(String, f64)>>,
    /// Which meanings the run has a step of (added or missing), for the "has no" notes.
    seen: Vec<Reported>,
    notes: Vec<String>,
}

impl RunCollector {
    pub fn new() -> RunCollector {
        RunCollector::default()
    }

    /// Adds step `step`'s output that is `is` to a report, read as JSON. `Err` says why it is
    /// not such a file (the caller names the file or input).
    pub fn add(&mut self, step: &str, is: Reported, value: Json) -> Result<(), String> {
        let bad = |e: serde_json::Error| format!("not {}: {e}", is.describe());
        self.seen.push(is);
        match is {
            Reported::Training => {
                let training: TrainingMetrics = serde_json::from_value(value).map_err(bad)?;
                self.fine_tunes.push(FineTune { step: step.to_string(), training });
            }
            Reported::Evaluation | Reported::Baseline | Reported::Ensemble => {
                if value.get("task") == Some(&Json::from(Task::Regression.name())) {
                    let m: RegressionMetrics = serde_json::from_value(value).map_err(bad)?;
                    // A regression model has no accuracy: the final evaluation only.
                    if is == Reported::Evaluation && self.evaluation.is_none() && self.regression.is_none() {
                        self.regression = Some(m);
                    }
                    return Ok(());
                }
                let m: EvalMetrics = serde_json::from_value(value).map_err(bad)?;
                self.models.push(ModelScore {
                    step: step.to_string(),
                    model: is,
                    rows: m.rows,
                    accuracy: m.accuracy,
                    macro_f1: m.macro_f1,
                    valid_accuracy: None,
                    members: Vec::new(),
                });
                if is == Reported::Evaluation && self.evaluation.is_none() && self.regression.is_none() {
                    self.evaluation = Some(m);
                }
            }
            Reported::ValidScores => {
                // `null`: the model had no validation rows.
                let m: Option<EvalMetrics> = serde_json::from_value(value).map_err(bad)?;
                if let Some(m) = m {
                    self.valid.insert(step.to_string(), m.accuracy);
                }
            }
            Reported::Weights => {
                let members: Vec<(String, f64)> = value["members"]
                    .as_array()
                    .ok_or_else(|| format!("not {}: no `members` list", is.describe()))?
                    .iter()
                    .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["weight"].as_f64()?)))
                    .collect();
                if let Some(v) = value["valid_accuracy"].as_f64() {
                    self.valid.insert(step.to_string(), v);
                }
                self.members.insert(step.to_string(), members);
            }
            // Nothing a report table shows.
            Reported::Pretraining | Reported::Files => {}
        }
        Ok(())
    }

    /// A step of the run whose output `is` is not available, and why (`finetune skipped`): a
    /// note of the report.
    pub fn missing(&mut self, is: Reported, why: String) {
        self.seen.push(is);
        self.notes.push(why);
    }

    /// Puts the timings the run recorded for fine-tune `step` beside its epochs (timings are in
    /// no hashed output; only a cache's run records have them).
    pub fn timings(&mut self, step: &str, timings: &[Timing]) {
        for f in self.fine_tunes.iter_mut().filter(|f| f.step == step) {
            for e in &mut f.training.epochs {
                if let Some(t) = timings.iter().find(|t| t.epoch_number() == Some(e.epoch)) {
                    e.seconds = Some(t.seconds);
                    e.samples_per_second = t.samples_per_second();
                }
            }
        }
    }

    /// The run's report, labelled `label` in state `state`; who ran it, its commit and its
    /// differing parameters are the caller's to add.
    pub fn run_report(mut self, label: String, state: String) -> RunReport {
        for (is, what) in [(Reported::Training, "fine-tune"), (Reported::Evaluation, "evaluate")] {
            if !self.seen.contains(&is) {
                self.notes.push(format!("the pipeline has no {what} step"));
            }
        }
        for m in &mut self.models {
            m.valid_accuracy = self.valid.get(&m.step).copied();
            m.members = self.members.remove(&m.step).unwrap_or_default();
        }
        RunReport {
            label,
            state,
            by: None,
            commit: None,
            params: BTreeMap::new(),
            training: self.fine_tunes.first().map(|f| f.training.clone()),
            fine_tunes: self.fine_tunes,
            evaluation: self.evaluation,
            regression: self.regression,
            note: (!self.notes.is_empty()).then(|| self.notes.join("; ")),
            models: self.models,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(accuracy: f64) -> Json {
        json!({"rows": 10, "accuracy": accuracy, "loss": 0.5, "labels": ["0", "1"], "precision": [0.5, 0.5],
               "recall": [0.5, 0.5], "f1": [0.5, 0.5], "macro_precision": 0.5, "macro_recall": 0.5,
               "macro_f1": 0.5, "confusion": [[3, 2], [2, 3]]})
    }

    #[test]
    fn every_fine_tune_and_model_is_kept_in_order_with_valid_accuracy_and_weights() {
        let mut c = RunCollector::new();
        let training = json!({"epochs": [{"epoch": 1, "train_loss": 0.6, "lr": 1e-4}]});
        c.add("finetune", Reported::Training, training.clone()).unwrap();
        c.add("evaluate", Reported::Evaluation, eval(0.8)).unwrap();
        c.add("finetune_seed2", Reported::Training, training).unwrap();
        c.add("evaluate_seed2", Reported::Evaluation, eval(0.81)).unwrap();
        // The weights before the scores: joined all the same.
        c.add(
            "ensemble",
            Reported::Weights,
            json!({"members": [{"name": "bert", "weight": 0.4}], "valid_accuracy": 0.9}),
        )
        .unwrap();
        c.add("linear", Reported::Baseline, eval(0.7)).unwrap();
        c.add("linear", Reported::ValidScores, eval(0.72)).unwrap();
        c.add("ensemble", Reported::Ensemble, eval(0.85)).unwrap();
        c.timings("finetune_seed2", &[Timing::epoch(1, 2.0, 100)]);
        let r = c.run_report("run".into(), "succeeded".into());
        let steps: Vec<&str> = r.fine_tunes.iter().map(|f| f.step.as_str()).collect();
        assert_eq!(steps, ["finetune", "finetune_seed2"]);
        assert_eq!(r.fine_tunes[0].training.epochs[0].seconds, None);
        assert_eq!(r.fine_tunes[1].training.epochs[0].seconds, Some(2.0));
        assert_eq!(r.training.as_ref(), Some(&r.fine_tunes[0].training));
        assert_eq!(r.evaluation.as_ref().map(|e| e.accuracy), Some(0.8));
        let models: Vec<(&str, Reported, Option<f64>)> =
            r.models.iter().map(|m| (m.step.as_str(), m.model, m.valid_accuracy)).collect();
        assert_eq!(
            models,
            [
                ("evaluate", Reported::Evaluation, None),
                ("evaluate_seed2", Reported::Evaluation, None),
                ("linear", Reported::Baseline, Some(0.72)),
                ("ensemble", Reported::Ensemble, Some(0.9)),
            ]
        );
        assert_eq!(r.models[3].members, [("bert".to_string(), 0.4)]);
        assert_eq!(r.note, None);
    }

    #[test]
    fn a_file_that_is_not_what_it_should_be_is_an_error_and_missing_steps_are_notes() {
        let mut c = RunCollector::new();
        let e = c.add("split", Reported::Training, json!({"rows": 3})).unwrap_err();
        assert!(e.starts_with("not a fine-tune's training metrics (epochs): "), "{e}");
        assert!(c.add("evaluate", Reported::Evaluation, json!([1, 2])).is_err());
        let mut c = RunCollector::new();
        c.missing(Reported::Training, "finetune skipped".into());
        let r = c.run_report("run".into(), "failed".into());
        assert_eq!(r.note.as_deref(), Some("finetune skipped; the pipeline has no evaluate step"));
        assert!(r.training.is_none() && r.models.is_empty());
    }
}
