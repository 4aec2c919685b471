//! The metrics files the report reads: `fine-tune`'s per-epoch metrics with its logged batches
//! ([`TrainingMetrics`]), and `evaluate`'s final evaluation ([`EvalMetrics`]), with the rule that
//! chooses a run's reported epoch ([`TrainingMetrics::chosen`]). Fields added later have serde
//! defaults, so files written by older versions still read.

use serde::{Deserialize, Serialize};

/// One epoch of `fine-tune`'s `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    #[serde(default)]
    pub valid_loss: Option<f64>,
    #[serde(default)]
    pub valid_accuracy: Option<f64>,
    #[serde(default)]
    pub test_loss: Option<f64>,
    #[serde(default)]
    pub test_accuracy: Option<f64>,
    pub lr: f64,
    /// The epoch's time. Never written by `fine-tune` since version 6 (a hashed output holds no
    /// timings): `pipe report` fills it in from the run record ([`crate::Timing`]); files of
    /// older versions have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_second: Option<f64>,
}

/// `fine-tune`'s `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub epochs: Vec<EpochMetrics>,
    /// The epoch with the highest validation accuracy; absent without a validation set. Reports
    /// recompute it ([`TrainingMetrics::chosen`]): files from before version 3 of `fine-tune`
    /// chose by test accuracy.
    #[serde(default)]
    pub best_epoch: Option<usize>,
    /// The training loss, accuracy and learning rate at each log interval (`log_every`), in
    /// order; empty in files from before version 4 of `fine-tune` and with `log_every: 0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchLog>,
}

/// One log interval of training: the means over the batches since the previous log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLog {
    /// 1-based.
    pub epoch: usize,
    /// The interval's last batch within its epoch (1-based): `update - batch` updates came
    /// before the epoch.
    pub batch: usize,
    /// The global update count (over all epochs) after the interval's last batch.
    pub update: u64,
    /// The mean training loss over the interval's batches.
    pub loss: f64,
    pub accuracy: f64,
    /// The learning rate of the interval's last update.
    pub lr: f64,
}

/// How a run's reported epoch was chosen. Never by test accuracy: the test set only measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBy {
    /// The highest validation accuracy (the earliest epoch on ties).
    ValidAccuracy,
    /// The last epoch, because no epoch has a validation accuracy.
    LastEpoch,
}

impl ChosenBy {
    /// How the choice is named in tables.
    pub fn describe(self) -> &'static str {
        match self {
            ChosenBy::ValidAccuracy => "valid acc",
            ChosenBy::LastEpoch => "last (no valid set)",
        }
    }
}

/// The reported epoch of a run and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenEpoch {
    pub epoch: usize,
    pub by: ChosenBy,
}

impl TrainingMetrics {
    /// The epoch to report: the one with the highest validation accuracy (the earliest on ties),
    /// else the last. Test accuracy never takes part, so it stays an unbiased estimate.
    pub fn chosen(&self) -> Option<(&EpochMetrics, ChosenBy)> {
        let mut best: Option<(&EpochMetrics, f64)> = None;
        for e in &self.epochs {
            if let Some(acc) = e.valid_accuracy {
                // Strictly greater: ties keep the earlier epoch.
                if best.is_none_or(|(_, b)| acc > b) {
                    best = Some((e, acc));
                }
            }
        }
        match best {
            Some((e, _)) => Some((e, ChosenBy::ValidAccuracy)),
            None => self.epochs.last().map(|e| (e, ChosenBy::LastEpoch)),
        }
    }

    /// [`TrainingMetrics::chosen`] without the metrics.
    pub fn chosen_epoch(&self) -> Option<ChosenEpoch> {
        self.chosen().map(|(e, by)| ChosenEpoch { epoch: e.epoch, by })
    }
}

/// `evaluate`'s `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub rows: usize,
    pub accuracy: f64,
    pub loss: f64,
    /// The class names in class order; integer labels are written as numbers
    /// ([`crate::labels::as_json`]), as before string labels existed.
    #[serde(with = "crate::labels::as_json")]
    pub labels: Vec<String>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub confusion: Vec<Vec<u64>>,
}

impl EvalMetrics {
    /// The rows of each class (the confusion matrix's row sums).
    pub fn support(&self) -> Vec<u64> {
        self.confusion.iter().map(|row| row.iter().sum()).collect()
    }

    /// The F1 of each class weighted by its rows (scikit-learn's `average="weighted"`); derived
    /// from the confusion matrix, so files written before it existed have it too.
    pub fn weighted_f1(&self) -> f64 {
        let support = self.support();
        let total: u64 = support.iter().sum();
        if total == 0 {
            return 0.0;
        }
        self.f1.iter().zip(&support).map(|(f, &n)| f * n as f64).sum::<f64>() / total as f64
    }
}
