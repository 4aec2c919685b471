//! The metrics files the report reads: `fine-tune`'s per-epoch metrics with its logged batches
//! ([`TrainingMetrics`]), and `evaluate`'s final evaluation ([`EvalMetrics`]), with the rules that
//! choose a run's epoch ([`TrainingMetrics::chosen`]) and stop it early
//! ([`TrainingMetrics::early_stop`]); `fine-tune` uses the same rules to pick the epoch whose
//! weights it saves. Fields added later have serde defaults, so files written by older versions
//! still read. Multi-label runs add micro F1 ([`EvalMetrics::micro_f1`]); regression runs have
//! no accuracy: their epochs carry the validation MSE (as `valid_loss`), Pearson and Spearman,
//! and `evaluate` writes [`RegressionMetrics`].

use serde::{Deserialize, Serialize};

use crate::task::Task;

/// One epoch of `fine-tune`'s `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    /// The share of training rows predicted right (multi-label: every class right); absent for
    /// regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
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
    /// Multi-label: micro F1 on the validation and test sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_micro_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_micro_f1: Option<f64>,
    /// Regression: Pearson and Spearman correlation of predictions and targets (the MSE is
    /// `valid_loss`/`test_loss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_pearson: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_pearson: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_spearman: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_spearman: Option<f64>,
}

impl EpochMetrics {
    /// An epoch of `epoch` with only its training figures.
    pub fn new(epoch: usize, train_loss: f64, train_accuracy: Option<f64>, lr: f64) -> Self {
        EpochMetrics {
            epoch,
            train_loss,
            train_accuracy,
            valid_loss: None,
            valid_accuracy: None,
            test_loss: None,
            test_accuracy: None,
            lr,
            seconds: None,
            samples_per_second: None,
            valid_macro_f1: None,
            test_macro_f1: None,
            valid_micro_f1: None,
            test_micro_f1: None,
            valid_pearson: None,
            test_pearson: None,
            valid_spearman: None,
            test_spearman: None,
        }
    }

    /// The validation figure `by` chooses on, higher better (the MSE negated).
    pub fn valid_score(&self, by: SelectBy) -> Option<f64> {
        match by {
            SelectBy::Accuracy => self.valid_accuracy,
            SelectBy::MacroF1 => self.valid_macro_f1,
            SelectBy::MicroF1 => self.valid_micro_f1,
            SelectBy::Mse => self.valid_loss.map(|l| -l),
            SelectBy::Pearson => self.valid_pearson,
            SelectBy::Spearman => self.valid_spearman,
        }
    }

    /// The validation figure `by` chooses on, as it is reported (the MSE itself).
    pub fn valid_figure(&self, by: SelectBy) -> Option<f64> {
        match by {
            SelectBy::Mse => self.valid_loss,
            _ => self.valid_score(by),
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
    /// Multi-label.
    MicroF1,
    /// Regression: the lowest validation MSE.
    Mse,
    Pearson,
    Spearman,
}

impl SelectBy {
    /// The parameter's values.
    pub const NAMES: [&'static str; 6] = ["accuracy", "macro_f1", "micro_f1", "mse", "pearson", "spearman"];

    pub fn parse(name: &str) -> Option<SelectBy> {
        match name {
            "accuracy" => Some(SelectBy::Accuracy),
            "macro_f1" => Some(SelectBy::MacroF1),
            "micro_f1" => Some(SelectBy::MicroF1),
            "mse" => Some(SelectBy::Mse),
            "pearson" => Some(SelectBy::Pearson),
            "spearman" => Some(SelectBy::Spearman),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// How the figure is named in sentences.
    pub fn describe(self) -> &'static str {
        match self {
            SelectBy::Accuracy => "validation accuracy",
            SelectBy::MacroF1 => "validation macro F1",
            SelectBy::MicroF1 => "validation micro F1",
            SelectBy::Mse => "validation MSE",
            SelectBy::Pearson => "validation Pearson correlation",
            SelectBy::Spearman => "validation Spearman correlation",
        }
    }

    /// The figures a task can choose by (its first is what the `accuracy` default stands for
    /// on a regression set).
    pub fn of_task(task: Task) -> &'static [SelectBy] {
        match task {
            Task::SingleLabel => &[SelectBy::Accuracy, SelectBy::MacroF1],
            Task::MultiLabel => &[SelectBy::Accuracy, SelectBy::MicroF1, SelectBy::MacroF1],
            Task::Regression => &[SelectBy::Mse, SelectBy::Pearson, SelectBy::Spearman],
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
    /// What the model learned; absent (single-label) in files from before tasks existed.
    #[serde(default, skip_serializing_if = "Task::is_single_label")]
    pub task: Task,
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
    ValidMicroF1,
    /// The lowest validation MSE.
    ValidMse,
    ValidPearson,
    ValidSpearman,
    /// The last epoch, because no epoch has the validation figure.
    LastEpoch,
}

impl ChosenBy {
    /// How the choice is named in tables.
    pub fn describe(self) -> &'static str {
        match self {
            ChosenBy::ValidAccuracy => "valid acc",
            ChosenBy::ValidMacroF1 => "valid macro F1",
            ChosenBy::ValidMicroF1 => "valid micro F1",
            ChosenBy::ValidMse => "valid MSE",
            ChosenBy::ValidPearson => "valid Pearson",
            ChosenBy::ValidSpearman => "valid Spearman",
            ChosenBy::LastEpoch => "last (no valid set)",
        }
    }

    /// The name in CSV and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ChosenBy::ValidAccuracy => "valid_accuracy",
            ChosenBy::ValidMacroF1 => "valid_macro_f1",
            ChosenBy::ValidMicroF1 => "valid_micro_f1",
            ChosenBy::ValidMse => "valid_mse",
            ChosenBy::ValidPearson => "valid_pearson",
            ChosenBy::ValidSpearman => "valid_spearman",
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
            SelectBy::MicroF1 => ChosenBy::ValidMicroF1,
            SelectBy::Mse => ChosenBy::ValidMse,
            SelectBy::Pearson => ChosenBy::ValidPearson,
            SelectBy::Spearman => ChosenBy::ValidSpearman,
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

/// `evaluate`'s `metrics.json` for a classifier (single- or multi-label). For multi-label
/// models `accuracy` is subset accuracy (rows whose every class is right), the per-class
/// figures are at `threshold`, `support` counts each class's rows and `confusion` is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Absent (single-label) in files from before tasks existed.
    #[serde(default, skip_serializing_if = "Task::is_single_label")]
    pub task: Task,
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
    /// Multi-label: F1 over every (row, class) decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_f1: Option<f64>,
    /// Multi-label: the probability from which a class is predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Multi-label: the rows of each class (single-label: the confusion matrix's row sums).
    #[serde(default, rename = "support", skip_serializing_if = "Vec::is_empty")]
    pub class_rows: Vec<u64>,
}

impl EvalMetrics {
    /// The rows of each class (the confusion matrix's row sums, or multi-label's `support`).
    pub fn support(&self) -> Vec<u64> {
        if !self.class_rows.is_empty() {
            return self.class_rows.clone();
        }
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

/// `evaluate`'s `metrics.json` for a regression model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Always `regression` (how readers tell the file from [`EvalMetrics`]).
    pub task: Task,
    pub rows: usize,
    /// The mean squared error (the training loss).
    pub mse: f64,
    pub mae: f64,
    pub pearson: f64,
    pub spearman: f64,
    /// The label column's name (`id2label`'s one entry).
    pub target: String,
}

/// Pearson's correlation of `x` and `y` (0 when either is constant). Written out rather than
/// taken from a crate: it is two sums, and the crates that have it (statrs, polars' `cov`
/// feature) would cost more build than these lines.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Spearman's rank correlation: Pearson's of the ranks, ties given their mean rank (as SciPy's
/// `spearmanr`).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_match_scipy() {
        // scipy.stats.pearsonr / spearmanr of these: 0.8491918278948403, 0.8696565534786727.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0];
        let y = [2.0, 1.0, 4.0, 3.0, 7.0, 9.0];
        assert!((pearson(&x, &y) - 0.8491918278948403).abs() < 1e-12, "{}", pearson(&x, &y));
        assert!((spearman(&x, &y) - 0.8696565534786727).abs() < 1e-12, "{}", spearman(&x, &y));
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}
