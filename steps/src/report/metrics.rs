//! The metrics files the report reads: `fine-tune`'s per-epoch metrics with its logged batches
//! ([`TrainingMetrics`]), and `evaluate`'s final evaluation ([`EvalMetrics`]), with the rules that
//! choose a run's epoch ([`TrainingMetrics::chosen`]) and stop it early
//! ([`TrainingMetrics::early_stop`]); `fine-tune` uses the same rules to pick the epoch whose
//! weights it saves. Fields added later have serde defaults, so files written by older versions
//! still read.

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
    /// Macro F1 on the validation and test sets; absent in files from before version 5 of
    /// `fine-tune`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_macro_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_macro_f1: Option<f64>,
}

impl EpochMetrics {
    /// The validation figure `by` chooses on.
    pub fn valid_score(&self, by: SelectBy) -> Option<f64> {
        match by {
            SelectBy::Accuracy => self.valid_accuracy,
            SelectBy::MacroF1 => self.valid_macro_f1,
        }
    }
}

/// Which validation figure chooses the epoch (`fine-tune`'s `select_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    #[default]
    Accuracy,
    MacroF1,
}

impl SelectBy {
    /// The parameter's values.
    pub const NAMES: [&'static str; 2] = ["accuracy", "macro_f1"];

    pub fn parse(name: &str) -> Option<SelectBy> {
        match name {
            "accuracy" => Some(SelectBy::Accuracy),
            "macro_f1" => Some(SelectBy::MacroF1),
            _ => None,
        }
    }

    /// How the figure is named in sentences.
    pub fn describe(self) -> &'static str {
        match self {
            SelectBy::Accuracy => "validation accuracy",
            SelectBy::MacroF1 => "validation macro F1",
        }
    }
}

/// Why a run trained fewer epochs than it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// The last epoch trained.
    pub after_epoch: usize,
    /// The epochs the run was given.
    pub of_epochs: usize,
    /// `early_stopping_patience`: epochs without improvement that stop the run.
    pub patience: usize,
    /// The epoch with the best figure (the chosen and saved one).
    pub best_epoch: usize,
}

/// `fine-tune`'s `metrics.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub epochs: Vec<EpochMetrics>,
    /// The epoch with the best validation figure (`select_by`); absent without a validation set.
    /// Reports recompute it ([`TrainingMetrics::chosen`]): files from before version 3 of
    /// `fine-tune` chose by test accuracy.
    #[serde(default)]
    pub best_epoch: Option<usize>,
    /// The validation figure that chooses the epoch (accuracy in files from before version 5).
    #[serde(default)]
    pub select_by: SelectBy,
    /// The epoch whose weights are the saved model: the chosen one. Absent in files from before
    /// version 5 of `fine-tune`, whose model is the last epoch's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_epoch: Option<usize>,
    /// Set when `early_stopping_patience` ended the run before its last epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<EarlyStop>,
    /// The weight of each class in the training loss, in label order (`class_weights`); absent:
    /// every class weighs 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<Vec<f64>>,
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
    /// The highest validation macro F1 (`select_by: macro_f1`; the earliest epoch on ties).
    ValidMacroF1,
    /// The last epoch, because no epoch has the validation figure.
    LastEpoch,
}

impl ChosenBy {
    /// How the choice is named in tables.
    pub fn describe(self) -> &'static str {
        match self {
            ChosenBy::ValidAccuracy => "valid acc",
            ChosenBy::ValidMacroF1 => "valid macro F1",
            ChosenBy::LastEpoch => "last (no valid set)",
        }
    }

    /// The name in CSV and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ChosenBy::ValidAccuracy => "valid_accuracy",
            ChosenBy::ValidMacroF1 => "valid_macro_f1",
            ChosenBy::LastEpoch => "last_epoch",
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
    /// The epoch to report (and, since version 5 of `fine-tune`, the saved one): the one with
    /// the highest validation figure of [`TrainingMetrics::select_by`] (the earliest on ties),
    /// else the last. Test figures never take part, so they stay unbiased estimates.
    pub fn chosen(&self) -> Option<(&EpochMetrics, ChosenBy)> {
        let mut best: Option<(&EpochMetrics, f64)> = None;
        for e in &self.epochs {
            if let Some(score) = e.valid_score(self.select_by) {
                // Strictly greater: ties keep the earlier epoch.
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((e, score));
                }
            }
        }
        let by = match self.select_by {
            SelectBy::Accuracy => ChosenBy::ValidAccuracy,
            SelectBy::MacroF1 => ChosenBy::ValidMacroF1,
        };
        match best {
            Some((e, _)) => Some((e, by)),
            None => self.epochs.last().map(|e| (e, ChosenBy::LastEpoch)),
        }
    }

    /// The epoch whose weights the model holds: [`TrainingMetrics::saved_epoch`], or the last
    /// in files from before it was recorded.
    pub fn saved(&self) -> Option<usize> {
        self.saved_epoch.or_else(|| self.epochs.last().map(|e| e.epoch))
    }

    /// Whether training stops after the epochs so far: the validation figure has not improved
    /// (strictly) for `patience` epochs since the chosen epoch. Never without a validation set.
    pub fn early_stop(&self, patience: usize, of_epochs: usize) -> Option<EarlyStop> {
        let (best, by) = self.chosen()?;
        let last = self.epochs.last()?.epoch;
        (by != ChosenBy::LastEpoch && patience > 0 && last - best.epoch >= patience && last < of_epochs)
            .then_some(EarlyStop { after_epoch: last, of_epochs, patience, best_epoch: best.epoch })
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
