//! Training and evaluation reports: the accuracy-per-epoch table, the final evaluation and a
//! comparison of runs, rendered as a terminal table, Markdown, CSV, JSON or one self-contained
//! HTML file with inline SVG charts ([`html`]). The `report` step kind writes them for one run;
//! `pipe report` renders the same for the runs recorded in the cache.
//!
//! A run is summarised by one epoch, chosen by validation accuracy or macro F1 (`fine-tune`'s
//! `select_by`; the last epoch without a validation set; [`TrainingMetrics::chosen`]), never by
//! test accuracy: test accuracy is shown for every epoch and for the chosen one, but choosing on
//! it would overstate it. The report says which epoch's weights the saved model holds (the
//! chosen one since version 5 of `fine-tune`, the last before), whether training stopped early
//! and the class weights of the loss.
//!
//! Where accuracy does not apply, the report shows the task's figures ([`crate::task`]):
//! micro and macro F1 for multi-label runs (with a per-class table instead of a confusion
//! matrix), MSE, Pearson and Spearman for regression runs ([`RunReport::regression`]); the
//! charts and the runs compared headline micro F1 and Pearson there ([`headline`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::step::Reported;
use crate::task::Task;

mod collector;
mod html;
mod metrics;
mod step;
mod svg;

pub use collector::RunCollector;
pub use metrics::{
    pearson, spearman, BatchLog, ChosenBy, ChosenEpoch, EarlyStop, EpochMetrics, EvalMetrics, RegressionMetrics,
    SelectBy, TrainingMetrics,
};
pub use step::ReportStep;

/// One run in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// How the run is named (its start time, or the step name).
    pub label: String,
    /// `succeeded`, `failed`, `running or interrupted`.
    pub state: String,
    /// Who ran it: `user@host` (or the host alone), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The pipeline's git commit when it ran (`0123456789ab`, `... (dirty)`), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Parameter (`step.param`) → value as text: the parameters that differ between runs.
    pub params: BTreeMap<String, String>,
    /// The first fine-tune's metrics ([`RunReport::fine_tunes`]): what charts and the runs
    /// compared show.
    pub training: Option<TrainingMetrics>,
    /// Every fine-tune of the run, in pipeline order, each with its epochs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fine_tunes: Vec<FineTune>,
    pub evaluation: Option<EvalMetrics>,
    /// A regression model's evaluation (such runs have no [`RunReport::evaluation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionMetrics>,
    /// Why metrics are missing, when they are.
    pub note: Option<String>,
    /// Every evaluated model of the run (evaluations, baselines, ensembles).
    #[serde(default)]
    pub models: Vec<ModelScore>,
}

/// One fine-tune of a run and its training metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTune {
    pub step: String,
    pub training: TrainingMetrics,
}

/// One evaluated model of a run, for the models-compared table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    /// The step that evaluated it.
    pub step: String,
    /// What the model is: an evaluation (of a fine-tuned network), a baseline or an ensemble.
    pub model: Reported,
    pub rows: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Validation accuracy, where the step measured one (linear, ensemble).
    pub valid_accuracy: Option<f64>,
    /// An ensemble's members and their weights (fit on validation rows only).
    pub members: Vec<(String, f64)>,
}

const MODELS_HEADER: [&str; 6] = ["step", "model", "rows", "accuracy", "macro F1", "valid acc"];

fn model_rows(models: &[ModelScore]) -> Vec<Vec<String>> {
    models
        .iter()
        .map(|m| {
            vec![
                m.step.clone(),
                m.model.name().to_string(),
                m.rows.to_string(),
                format!("{:.4}", m.accuracy),
                format!("{:.4}", m.macro_f1),
                m.valid_accuracy.map(|v| format!("{v:.4}")).unwrap_or_default(),
            ]
        })
        .collect()
}

/// `ensemble weights: bert 0.35, linear 0.65 (fit on validation rows only)`, per ensemble.
fn weight_lines(models: &[ModelScore]) -> Vec<String> {
    models
        .iter()
        .filter(|m| !m.members.is_empty())
        .map(|m| {
            let w: Vec<String> = m.members.iter().map(|(n, w)| format!("{n} {w:.2}")).collect();
            format!("{} weights: {} (fit on validation rows only)", m.step, w.join(", "))
        })
        .collect()
}

/// A whole report: the latest run in detail, and all runs compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub pipeline: String,
    pub latest: RunReport,
    /// Every run of the pipeline with a result of its own (those that succeeded first, each
    /// group oldest first); empty when fewer than two.
    pub comparison: Vec<RunReport>,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Csv,
    Json,
    Html,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "table" => Some(Format::Table),
            "markdown" | "md" => Some(Format::Markdown),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "html" => Some(Format::Html),
            _ => None,
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

fn lr(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.2e}")
    }
}

const EPOCH_HEADER: [&str; 7] = ["epoch", "train loss", "train acc", "valid acc", "test acc", "lr", "seconds"];

/// The per-epoch figure that charts and comparisons headline for a task: its name and how to
/// read it from an epoch's validation and test figures (accuracy where it applies).
#[allow(clippy::type_complexity)]
pub(crate) fn headline(
    task: Task,
) -> (&'static str, fn(&EpochMetrics) -> Option<f64>, fn(&EpochMetrics) -> Option<f64>) {
    match task {
        Task::SingleLabel => ("accuracy", |e| e.valid_accuracy, |e| e.test_accuracy),
        Task::MultiLabel => ("micro F1", |e| e.valid_micro_f1, |e| e.test_micro_f1),
        Task::Regression => ("Pearson", |e| e.valid_pearson, |e| e.test_pearson),
    }
}

/// The title of the per-epoch table.
fn epochs_title(t: &TrainingMetrics) -> &'static str {
    if t.task.is_single_label() {
        "Accuracy per epoch"
    } else {
        "Metrics per epoch"
    }
}

/// Whether the per-epoch table has a validation macro F1 column (metrics that recorded it).
fn has_valid_f1(t: &TrainingMetrics) -> bool {
    t.epochs.iter().any(|e| e.valid_macro_f1.is_some())
}

/// The per-epoch table's columns: [`EPOCH_HEADER`] (with `valid F1` after `valid acc` where
/// the metrics have it) for single-label runs, the task's figures for the others.
fn epoch_header(t: &TrainingMetrics) -> Vec<String> {
    let names: &[&str] = match t.task {
        Task::SingleLabel => {
            let mut header: Vec<String> = EPOCH_HEADER.iter().map(|s| s.to_string()).collect();
            if has_valid_f1(t) {
                header.insert(4, "valid F1".into());
            }
            return header;
        }
        Task::MultiLabel => &[
            "epoch",
            "train loss",
            "valid loss",
            "valid micro F1",
            "valid macro F1",
            "valid subset acc",
            "test micro F1",
            "test macro F1",
            "lr",
            "seconds",
        ],
        Task::Regression => &[
            "epoch",
            "train loss",
            "valid MSE",
            "valid Pearson",
            "valid Spearman",
            "test MSE",
            "test Pearson",
            "test Spearman",
            "lr",
            "seconds",
        ],
    };
    names.iter().map(|s| s.to_string()).collect()
}

fn epoch_rows(t: &TrainingMetrics) -> Vec<Vec<String>> {
    let f1 = has_valid_f1(t);
    t.epochs
        .iter()
        .map(|e| {
            let seconds = e.seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
            let figures = match t.task {
                Task::SingleLabel => {
                    let mut row = vec![pct(e.train_accuracy), pct(e.valid_accuracy), pct(e.test_accuracy)];
                    if f1 {
                        row.insert(2, pct(e.valid_macro_f1));
                    }
                    row
                }
                Task::MultiLabel => vec![
                    num(e.valid_loss),
                    pct(e.valid_micro_f1),
                    pct(e.valid_macro_f1),
                    pct(e.valid_accuracy),
                    pct(e.test_micro_f1),
                    pct(e.test_macro_f1),
                ],
                Task::Regression => vec![
                    num(e.valid_loss),
                    num(e.valid_pearson),
                    num(e.valid_spearman),
                    num(e.test_loss),
                    num(e.test_pearson),
                    num(e.test_spearman),
                ],
            };
            let mut row = vec![e.epoch.to_string(), num(Some(e.train_loss))];
            row.extend(figures);
            row.extend([lr(e.lr), seconds]);
            row
        })
        .collect()
}

/// Says how the comparison's epoch columns were chosen (below the table).
const CHOICE_NOTE: &str = "chosen epoch: the highest validation accuracy, or macro F1 with `select_by: macro_f1` \
     (the earliest on ties), or the last epoch without a validation set; test accuracy is shown, never used to choose";

fn comparison_header(report: &Report) -> Vec<String> {
    let mut header = vec!["run".to_string(), "state".to_string()];
    header.extend(provenance_columns(report).iter().map(|c| c.to_string()));
    header.extend(param_columns(report));
    let figures: [&str; 5] = match comparison_task(report) {
        Task::SingleLabel => ["valid acc (chosen)", "test acc (chosen)", "last test acc", "final acc", "macro F1"],
        Task::MultiLabel => {
            ["valid micro F1 (chosen)", "test micro F1 (chosen)", "last test micro F1", "final micro F1", "macro F1"]
        }
        Task::Regression => {
            ["valid Pearson (chosen)", "test Pearson (chosen)", "last test Pearson", "final MSE", "Spearman"]
        }
    };
    header.extend(["chosen epoch", "chosen by"].into_iter().chain(figures).map(String::from));
    header
}

/// The task of the runs compared: the latest run's.
fn comparison_task(report: &Report) -> Task {
    report.latest.training.as_ref().map(|t| t.task).unwrap_or_default()
}

fn param_columns(report: &Report) -> Vec<String> {
    let mut cols: Vec<String> = report.comparison.iter().flat_map(|r| r.params.keys().cloned()).collect();
    cols.sort();
    cols.dedup();
    cols
}

/// `by` and `commit`, where some run of the comparison has them.
fn provenance_columns(report: &Report) -> Vec<&'static str> {
    let mut cols = Vec::new();
    if report.comparison.iter().any(|r| r.by.is_some()) {
        cols.push("by");
    }
    if report.comparison.iter().any(|r| r.commit.is_some()) {
        cols.push("commit");
    }
    cols
}

fn comparison_rows(report: &Report) -> Vec<Vec<String>> {
    let cols = param_columns(report);
    let provenance = provenance_columns(report);
    report
        .comparison
        .iter()
        .map(|r| {
            let mut row = vec![r.label.clone(), r.state.clone()];
            for c in &provenance {
                let value = if *c == "by" { &r.by } else { &r.commit };
                row.push(value.clone().unwrap_or_else(|| "-".into()));
            }
            row.extend(cols.iter().map(|c| r.params.get(c).cloned().unwrap_or_else(|| "-".into())));
            let chosen = r.training.as_ref().and_then(TrainingMetrics::chosen);
            let last = r.training.as_ref().and_then(|t| t.epochs.last());
            let task = comparison_task(report);
            let (_, valid, test) = headline(task);
            row.push(chosen.map(|(e, _)| e.epoch.to_string()).unwrap_or_else(|| "-".into()));
            row.push(chosen.map(|(_, by)| by.describe().to_string()).unwrap_or_else(|| "-".into()));
            row.push(pct(chosen.and_then(|(e, _)| valid(e))));
            row.push(pct(chosen.and_then(|(e, _)| test(e))));
            row.push(pct(last.and_then(test)));
            let (final_figure, second) = match task {
                Task::SingleLabel => {
                    (r.evaluation.as_ref().map(|e| e.accuracy), r.evaluation.as_ref().map(|e| e.macro_f1))
                }
                Task::MultiLabel => {
                    (r.evaluation.as_ref().and_then(|e| e.micro_f1), r.evaluation.as_ref().map(|e| e.macro_f1))
                }
                Task::Regression => (r.regression.as_ref().map(|m| m.mse), r.regression.as_ref().map(|m| m.spearman)),
            };
            row.push(pct(final_figure));
            row.push(pct(second));
            row
        })
        .collect()
}

/// One line on a run's chosen epoch and the epoch its saved model holds (below its per-epoch
/// table, and the `report` step's log).
fn chosen_line(t: &TrainingMetrics) -> Option<String> {
    let (e, by) = t.chosen()?;
    let saved = match t.saved() {
        Some(s) if s == e.epoch => "the saved model is this epoch's".to_string(),
        Some(s) => format!(
            "the saved model is the last epoch's ({s}), not this one's (written by a fine-tune from before the saved \
             model was the chosen epoch's)"
        ),
        None => String::new(),
    };
    Some(match by {
        ChosenBy::ValidAccuracy => format!(
            "chosen epoch {} by validation accuracy (valid {}, test {}); {saved}; the test set is never used to choose",
            e.epoch,
            pct(e.valid_accuracy),
            pct(e.test_accuracy)
        ),
        ChosenBy::ValidMacroF1 => format!(
            "chosen epoch {} by validation macro F1 (valid F1 {}, valid acc {}, test {}); {saved}; the test set is \
             never used to choose",
            e.epoch,
            pct(e.valid_macro_f1),
            pct(e.valid_accuracy),
            pct(e.test_accuracy)
        ),
        ChosenBy::LastEpoch => {
            let (name, _, test) = headline(t.task);
            let test =
                if t.task.is_single_label() { pct(e.test_accuracy) } else { format!("test {name} {}", pct(test(e))) };
            format!("chosen epoch {}: the last (no validation set; test {test}); {saved}", e.epoch)
        }
        _ => format!(
            "chosen epoch {} by {} ({}); {saved}; the test set is never used to choose",
            e.epoch,
            t.select_by.describe(),
            pct(e.valid_figure(t.select_by))
        ),
    })
}

/// Lines on how a run trained, where it differs from plain training: early stopping and the
/// class weights of its loss.
fn training_lines(t: &TrainingMetrics) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(s) = &t.stopped_early {
        lines.push(format!(
            "stopped early after epoch {} of {}: {} had not improved for {} epoch(s) since epoch {} \
             (early_stopping_patience {})",
            s.after_epoch,
            s.of_epochs,
            t.select_by.describe(),
            s.after_epoch - s.best_epoch,
            s.best_epoch,
            s.patience
        ));
    }
    if let Some(w) = &t.class_weights {
        let w: Vec<String> = w.iter().map(|x| format!("{x:.4}")).collect();
        lines.push(format!("class weights of the training loss, in label order: {}", w.join(", ")));
    }
    lines
}

fn text_table(header: &[String], rows: &[Vec<String>], markdown: bool) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        if markdown {
            format!("| {} |", padded.join(" | "))
        } else {
            padded.join("  ").trim_end().to_string()
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", if markdown { format!("| {} |", rule.join(" | ")) } else { rule.join("  ") });
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// The confusion matrix with each class's precision, recall and F1: header and rows.
fn confusion_table(e: &EvalMetrics) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["true \\ predicted".to_string()];
    header.extend(e.labels.iter().cloned());
    header.extend(["precision", "recall", "F1"].map(String::from));
    let rows = e
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut row = vec![l.clone()];
            row.extend(e.confusion.get(i).into_iter().flatten().map(|c| c.to_string()));
            row.push(pct(e.precision.get(i).copied()));
            row.push(pct(e.recall.get(i).copied()));
            row.push(pct(e.f1.get(i).copied()));
            row
        })
        .collect();
    (header, rows)
}

/// A multi-label model's per-class figures: header and rows.
fn per_class_table(e: &EvalMetrics) -> (Vec<String>, Vec<Vec<String>>) {
    let header = ["label", "precision", "recall", "F1", "rows"].map(String::from).to_vec();
    let support = e.support();
    let rows = e
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            vec![
                l.clone(),
                pct(e.precision.get(i).copied()),
                pct(e.recall.get(i).copied()),
                pct(e.f1.get(i).copied()),
                support.get(i).map(u64::to_string).unwrap_or_default(),
            ]
        })
        .collect();
    (header, rows)
}

/// The headline line of a multi-label evaluation.
fn multi_label_line(e: &EvalMetrics) -> String {
    format!(
        "micro F1 {}  macro F1 {:.4}  macro precision {:.4}  macro recall {:.4}  subset accuracy {:.4}  loss {:.4}  \
         threshold {}  ({} rows)",
        pct(e.micro_f1),
        e.macro_f1,
        e.macro_precision,
        e.macro_recall,
        e.accuracy,
        e.loss,
        e.threshold.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
        e.rows
    )
}

/// The line of a regression evaluation.
fn regression_line(m: &RegressionMetrics) -> String {
    format!(
        "MSE {:.4}  MAE {:.4}  Pearson {:.4}  Spearman {:.4}  ({} rows of `{}`)",
        m.mse, m.mae, m.pearson, m.spearman, m.rows, m.target
    )
}

fn evaluation_text(e: &EvalMetrics, markdown: bool) -> String {
    let mut out = String::new();
    if e.task == Task::MultiLabel {
        let _ = writeln!(out, "{}\n", multi_label_line(e));
        let (header, rows) = per_class_table(e);
        out.push_str(&text_table(&header, &rows, markdown));
        return out;
    }
    let _ = writeln!(
        out,
        "accuracy {:.4}  macro precision {:.4}  macro recall {:.4}  macro F1 {:.4}  weighted F1 {:.4}  loss {:.4}  ({} rows)",
        e.accuracy,
        e.macro_precision,
        e.macro_recall,
        e.macro_f1,
        e.weighted_f1(),
        e.loss,
        e.rows
    );
    out.push('\n');
    let (header, rows) = confusion_table(e);
    out.push_str(&text_table(&header, &rows, markdown));
    out
}

impl Report {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.text(false),
            Format::Markdown => self.text(true),
            Format::Csv => self.csv(),
            Format::Json => serde_json::to_string_pretty(&JsonReport::of(self)).unwrap_or_default() + "\n",
            Format::Html => html::render(self),
        }
    }

    fn text(&self, markdown: bool) -> String {
        let h = |level: usize, title: &str| {
            if markdown {
                format!("{} {title}\n\n", "#".repeat(level))
            } else {
                format!("{title}\n\n")
            }
        };
        let mut out = String::new();
        out.push_str(&h(1, &format!("Report: {} — run {} ({})", self.pipeline, self.latest.label, self.latest.state)));
        let who: Vec<String> = [
            self.latest.by.as_ref().map(|b| format!("by {b}")),
            self.latest.commit.as_ref().map(|c| format!("commit {c}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !who.is_empty() {
            let _ = writeln!(out, "{}\n", who.join(", "));
        }
        if !self.latest.params.is_empty() {
            let p: Vec<String> = self.latest.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "parameters: {}\n", p.join(", "));
        }
        match &self.latest.training {
            Some(_) if self.latest.fine_tunes.len() > 1 => {
                // Each fine-tune's table, titled by its step.
                for f in &self.latest.fine_tunes {
                    let t = &f.training;
                    out.push_str(&h(2, &format!("{}: {}", epochs_title(t), f.step)));
                    out.push_str(&text_table(&epoch_header(t), &epoch_rows(t), markdown));
                    out.push('\n');
                    for line in chosen_line(t).into_iter().chain(training_lines(t)) {
                        let _ = writeln!(out, "{line}\n");
                    }
                }
            }
            Some(t) if !t.epochs.is_empty() => {
                out.push_str(&h(2, epochs_title(t)));
                out.push_str(&text_table(&epoch_header(t), &epoch_rows(t), markdown));
                out.push('\n');
                for line in chosen_line(t).into_iter().chain(training_lines(t)) {
                    let _ = writeln!(out, "{line}\n");
                }
            }
            _ => {
                let _ = writeln!(
                    out,
                    "no training metrics{}\n",
                    self.latest.note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
                );
            }
        }
        if let Some(e) = &self.latest.evaluation {
            out.push_str(&h(2, "Final evaluation"));
            out.push_str(&evaluation_text(e, markdown));
            out.push('\n');
        }
        if let Some(m) = &self.latest.regression {
            out.push_str(&h(2, "Final evaluation"));
            let _ = writeln!(out, "{}\n", regression_line(m));
        }
        if self.latest.models.len() > 1 {
            out.push_str(&h(2, "Models compared"));
            let header: Vec<String> = MODELS_HEADER.iter().map(|s| s.to_string()).collect();
            out.push_str(&text_table(&header, &model_rows(&self.latest.models), markdown));
            for line in weight_lines(&self.latest.models) {
                let _ = writeln!(out, "\n{line}");
            }
            out.push('\n');
        }
        if self.comparison.len() > 1 {
            out.push_str(&h(2, "Runs compared"));
            out.push_str(&text_table(&comparison_header(self), &comparison_rows(self), markdown));
            let _ = writeln!(out, "\n{CHOICE_NOTE}");
        }
        out
    }

    fn csv(&self) -> String {
        let mut out =
            String::from("run,state,epoch,train_loss,train_accuracy,valid_accuracy,test_accuracy,lr,seconds,chosen");
        let runs: Vec<&RunReport> =
            if self.comparison.is_empty() { vec![&self.latest] } else { self.comparison.iter().collect() };
        // The figures of multi-label and regression epochs, where a run has them.
        let tasks = runs.iter().any(|r| r.training.as_ref().is_some_and(|t| !t.task.is_single_label()));
        const TASK_COLUMNS: &str = ",valid_loss,test_loss,valid_micro_f1,test_micro_f1,valid_macro_f1,test_macro_f1,\
                                    valid_pearson,test_pearson,valid_spearman,test_spearman";
        if tasks {
            out.push_str(TASK_COLUMNS);
        }
        let cols = param_columns(self);
        for c in &cols {
            out.push(',');
            out.push_str(&csv_cell(c));
        }
        out.push('\n');
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in runs {
            let Some(t) = &r.training else { continue };
            let chosen = t.chosen_epoch();
            for e in &t.epochs {
                // The chosen epoch's row says how it was chosen; the others are empty.
                let by = match chosen {
                    Some(c) if c.epoch == e.epoch => c.by.name(),
                    _ => "",
                };
                let _ = write!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{by}",
                    csv_cell(&r.label),
                    csv_cell(&r.state),
                    e.epoch,
                    e.train_loss,
                    opt(e.train_accuracy),
                    e.valid_accuracy.map(|v| v.to_string()).unwrap_or_default(),
                    e.test_accuracy.map(|v| v.to_string()).unwrap_or_default(),
                    e.lr,
                    e.seconds.map(|s| format!("{s:.3}")).unwrap_or_default()
                );
                if tasks {
                    for v in [
                        e.valid_loss,
                        e.test_loss,
                        e.valid_micro_f1,
                        e.test_micro_f1,
                        e.valid_macro_f1,
                        e.test_macro_f1,
                        e.valid_pearson,
                        e.test_pearson,
                        e.valid_spearman,
                        e.test_spearman,
                    ] {
                        let _ = write!(out, ",{}", opt(v));
                    }
                }
                for c in &cols {
                    out.push(',');
                    out.push_str(&csv_cell(r.params.get(c).map(String::as_str).unwrap_or("")));
                }
                out.push('\n');
            }
        }
        out
    }
}

/// The JSON form of a report: the report with each run's chosen epoch beside its metrics (so
/// readers need not repeat the rule).
#[derive(Serialize)]
struct JsonReport<'a> {
    pipeline: &'a str,
    latest: JsonRun<'a>,
    comparison: Vec<JsonRun<'a>>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    #[serde(flatten)]
    run: &'a RunReport,
    chosen: Option<ChosenEpoch>,
    /// The epoch whose weights the saved model holds ([`TrainingMetrics::saved`]).
    saved_epoch: Option<usize>,
}

impl<'a> JsonReport<'a> {
    fn of(report: &'a Report) -> Self {
        let run = |r: &'a RunReport| JsonRun {
            run: r,
            chosen: r.training.as_ref().and_then(TrainingMetrics::chosen_epoch),
            saved_epoch: r.training.as_ref().and_then(TrainingMetrics::saved),
        };
        JsonReport {
            pipeline: &report.pipeline,
            latest: run(&report.latest),
            comparison: report.comparison.iter().map(run).collect(),
        }
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn epoch(epoch: usize, test: f64) -> EpochMetrics {
        EpochMetrics {
            valid_loss: Some(0.4),
            valid_accuracy: Some(test - 0.01),
            test_loss: Some(0.41),
            test_accuracy: Some(test),
            seconds: Some(12.5),
            samples_per_second: Some(300.0),
            ..EpochMetrics::new(epoch, 0.5 / epoch as f64, Some(0.7 + 0.05 * epoch as f64), 5e-5 / epoch as f64)
        }
    }

    pub(super) fn run(label: &str, lr: &str, accs: &[f64]) -> RunReport {
        RunReport {
            label: label.into(),
            state: "succeeded".into(),
            by: None,
            commit: None,
            params: BTreeMap::from([("finetune.lr".to_string(), lr.to_string())]),
            training: Some(TrainingMetrics {
                epochs: accs.iter().enumerate().map(|(i, a)| epoch(i + 1, *a)).collect(),
                ..TrainingMetrics::default()
            }),
            evaluation: Some(EvalMetrics {
                rows: 10,
                accuracy: 0.8,
                loss: 0.45,
                labels: vec!["0".into(), "1".into()],
                precision: vec![0.75, 0.83],
                recall: vec![0.8, 0.8],
                f1: vec![0.77, 0.81],
                macro_precision: 0.79,
                macro_recall: 0.8,
                macro_f1: 0.79,
                confusion: vec![vec![4, 1], vec![1, 4]],
                ..EvalMetrics::default()
            }),
            regression: None,
            note: None,
            models: Vec::new(),
            fine_tunes: Vec::new(),
        }
    }

    pub(super) fn report() -> Report {
        let a = run("run-a", "5e-5", &[0.80, 0.84, 0.83]);
        let b = run("run-b", "3e-5", &[0.81, 0.82, 0.85]);
        Report { pipeline: "nsmc".into(), latest: b.clone(), comparison: vec![a, b] }
    }

    #[test]
    fn models_are_compared_with_the_ensemble_weights() {
        let score = |step: &str, model: Reported, acc: f64, members: Vec<(String, f64)>| ModelScore {
            step: step.into(),
            model,
            rows: 50000,
            accuracy: acc,
            macro_f1: acc,
            valid_accuracy: Some(acc - 0.01),
            members,
        };
        let mut r = report();
        r.latest.models = vec![
            score("evaluate", Reported::Evaluation, 0.8682, vec![]),
            score("linear", Reported::Baseline, 0.8732, vec![]),
            score("ensemble", Reported::Ensemble, 0.8787, vec![("bert".into(), 0.35), ("linear".into(), 0.65)]),
        ];
        for format in [Format::Table, Format::Markdown, Format::Html] {
            let text = r.render(format);
            assert!(text.contains("Models compared"), "{text}");
            assert!(text.contains("0.8787") && text.contains("0.8732") && text.contains("0.8682"), "{text}");
            assert!(text.contains("ensemble weights: bert 0.35, linear 0.65 (fit on validation rows only)"), "{text}");
        }
        assert!(r.render(Format::Json).contains("\"models\""));
        // One model alone is the final evaluation already: no table.
        r.latest.models.truncate(1);
        assert!(!r.render(Format::Table).contains("Models compared"));
    }

    #[test]
    fn table_has_epochs_evaluation_and_comparison() {
        let text = report().render(Format::Table);
        assert!(text.contains("epoch  train loss"), "{text}");
        assert!(text.contains("0.8500"), "{text}");
        assert!(text.contains("true \\ predicted"), "{text}");
        let compared: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("Runs compared"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        // run, state, the differing parameter, chosen epoch, chosen by ("valid acc"), its valid
        // and test accuracy, last test acc.
        fn row<'a>(c: &[&'a str]) -> Vec<&'a str> {
            c.iter().take(9).copied().collect()
        }
        assert!(
            compared
                .iter()
                .map(|c| row(c))
                .any(|c| c == ["run-a", "succeeded", "5e-5", "2", "valid", "acc", "0.8300", "0.8400", "0.8300"]),
            "{text}"
        );
        assert!(
            compared
                .iter()
                .map(|c| row(c))
                .any(|c| c == ["run-b", "succeeded", "3e-5", "3", "valid", "acc", "0.8400", "0.8500", "0.8500"]),
            "{text}"
        );
        assert!(
            text.contains("chosen epoch  chosen by  valid acc (chosen)  test acc (chosen)  last test acc"),
            "{text}"
        );
        assert!(text.contains("test accuracy is shown, never used to choose"), "{text}");
        assert!(text.contains("chosen epoch 3 by validation accuracy (valid 0.8400, test 0.8500)"), "{text}");
    }

    fn metrics(valid: &[Option<f64>], test: &[f64]) -> TrainingMetrics {
        TrainingMetrics {
            epochs: test
                .iter()
                .zip(valid)
                .enumerate()
                .map(|(i, (t, v))| EpochMetrics { valid_accuracy: *v, test_accuracy: Some(*t), ..epoch(i + 1, *t) })
                .collect(),
            ..TrainingMetrics::default()
        }
    }

    #[test]
    fn the_epoch_is_chosen_by_validation_accuracy_never_by_test_accuracy() {
        // Test accuracy peaks at epoch 3, validation accuracy at epoch 2.
        let m = metrics(&[Some(0.70), Some(0.80), Some(0.75)], &[0.60, 0.65, 0.90]);
        assert_eq!(m.chosen_epoch(), Some(ChosenEpoch { epoch: 2, by: ChosenBy::ValidAccuracy }));
        // Ties go to the earliest epoch.
        let m = metrics(&[Some(0.70), Some(0.80), Some(0.80)], &[0.60, 0.65, 0.90]);
        assert_eq!(m.chosen_epoch(), Some(ChosenEpoch { epoch: 2, by: ChosenBy::ValidAccuracy }));
        // Without a validation set: the last epoch, whatever the test accuracy.
        let m = metrics(&[None, None, None], &[0.90, 0.65, 0.60]);
        assert_eq!(m.chosen_epoch(), Some(ChosenEpoch { epoch: 3, by: ChosenBy::LastEpoch }));
        assert_eq!(metrics(&[], &[]).chosen_epoch(), None);
    }

    #[test]
    fn select_by_macro_f1_chooses_by_that_column_and_early_stopping_follows_it() {
        // Accuracy peaks at epoch 2, macro F1 at epoch 3.
        let mut m = metrics(&[Some(0.70), Some(0.80), Some(0.75), Some(0.74)], &[0.6, 0.6, 0.6, 0.6]);
        for (e, f1) in m.epochs.iter_mut().zip([0.50, 0.55, 0.70, 0.60]) {
            e.valid_macro_f1 = Some(f1);
        }
        assert_eq!(m.chosen_epoch(), Some(ChosenEpoch { epoch: 2, by: ChosenBy::ValidAccuracy }));
        assert_eq!(m.early_stop(2, 10), Some(EarlyStop { after_epoch: 4, of_epochs: 10, patience: 2, best_epoch: 2 }));
        m.select_by = SelectBy::MacroF1;
        assert_eq!(m.chosen_epoch(), Some(ChosenEpoch { epoch: 3, by: ChosenBy::ValidMacroF1 }));
        assert_eq!(m.early_stop(2, 10), None, "one epoch without improvement is not two");
        assert_eq!(m.early_stop(1, 10).map(|s| (s.after_epoch, s.best_epoch)), Some((4, 3)));
        // The last epoch is no early stop; nor is a run without a validation set.
        assert_eq!(m.early_stop(1, 4), None);
        assert_eq!(metrics(&[None, None, None], &[0.6, 0.6, 0.6]).early_stop(1, 10), None);
    }

    #[test]
    fn the_report_says_which_epoch_the_saved_model_holds_and_how_training_ran() {
        let mut r = run("run-a", "5e-5", &[0.80, 0.84, 0.83]);
        // A file from before the saved epoch was recorded: its model is the last epoch's.
        let text = Report { pipeline: "p".into(), latest: r.clone(), comparison: vec![] }.render(Format::Table);
        assert!(
            text.contains(
                "chosen epoch 2 by validation accuracy (valid 0.8300, test 0.8400); the saved model is the last \
                 epoch's (3), not this one's"
            ),
            "{text}"
        );
        let t = r.training.as_mut().unwrap();
        t.saved_epoch = Some(2);
        t.select_by = SelectBy::MacroF1;
        for (e, f1) in t.epochs.iter_mut().zip([0.5, 0.7, 0.6]) {
            e.valid_macro_f1 = Some(f1);
        }
        t.stopped_early = Some(EarlyStop { after_epoch: 3, of_epochs: 8, patience: 1, best_epoch: 2 });
        t.class_weights = Some(vec![0.625, 2.5]);
        let report = Report { pipeline: "p".into(), latest: r, comparison: vec![] };
        for format in [Format::Table, Format::Markdown, Format::Html] {
            let text = report.render(format);
            assert!(
                text.contains(
                    "chosen epoch 2 by validation macro F1 (valid F1 0.7000, valid acc 0.8300, test 0.8400); \
                     the saved model is this epoch&#39;s"
                ) || text.contains(
                    "chosen epoch 2 by validation macro F1 (valid F1 0.7000, valid acc 0.8300, test 0.8400); the \
                         saved model is this epoch's"
                ),
                "{text}"
            );
            assert!(
                text.contains(
                    "stopped early after epoch 3 of 8: validation macro F1 had not improved for 1 epoch(s) since epoch 2 \
                     (early_stopping_patience 1)"
                ),
                "{text}"
            );
            assert!(text.contains("class weights of the training loss, in label order: 0.6250, 2.5000"), "{text}");
            assert!(text.contains("valid F1"), "{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
        assert_eq!(json["latest"]["chosen"], serde_json::json!({"epoch": 2, "by": "valid_macro_f1"}));
        assert_eq!(json["latest"]["saved_epoch"], 2);
        assert_eq!(json["latest"]["training"]["stopped_early"]["after_epoch"], 3);
    }

    #[test]
    fn every_format_says_how_the_epoch_was_chosen() {
        let with_valid = run("run-a", "5e-5", &[0.80, 0.84, 0.83]);
        let mut without = run("run-b", "3e-5", &[0.81, 0.82, 0.85]);
        without.training = Some(metrics(&[None, None, None], &[0.90, 0.82, 0.85]));
        let report = Report { pipeline: "p".into(), latest: without.clone(), comparison: vec![with_valid, without] };

        let text = report.render(Format::Table);
        assert!(text.contains("chosen epoch 3: the last (no validation set; test 0.8500)"), "{text}");
        let b = text.lines().find(|l| l.starts_with("run-b")).unwrap();
        let cells: Vec<&str> = b.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        // The first epoch has the best test accuracy (0.90); the last is reported.
        assert_eq!(cells[3..7], ["3", "last (no valid set)", "-", "0.8500"], "{text}");

        let csv = report.render(Format::Csv);
        let chosen: Vec<(&str, &str)> = csv
            .lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                (!c[9].is_empty()).then(|| (c[0], c[9]))
            })
            .collect();
        assert_eq!(chosen, [("run-a", "valid_accuracy"), ("run-b", "last_epoch")], "{csv}");
        assert!(csv.lines().any(|l| l.starts_with("run-a,succeeded,2,") && l.contains(",valid_accuracy,")), "{csv}");

        let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
        assert_eq!(json["comparison"][0]["chosen"], serde_json::json!({"epoch": 2, "by": "valid_accuracy"}));
        assert_eq!(json["latest"]["chosen"], serde_json::json!({"epoch": 3, "by": "last_epoch"}));
        // The JSON still reads back as a report.
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!((back.latest.label, back.comparison.len()), ("run-b".to_string(), 2));

        let html = report.render(Format::Html);
        assert!(html.contains("<th>chosen epoch</th><th>chosen by</th>"), "{html}");
        assert!(html.contains("never used to choose"), "{html}");
    }

    #[test]
    fn csv_has_one_line_per_run_and_epoch_with_parameter_columns() {
        let csv = report().render(Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 6);
        assert!(lines[0].ends_with(",finetune.lr"));
        assert!(lines[1].starts_with("run-a,succeeded,1,") && lines[1].ends_with(",5e-5"));
    }

    #[test]
    fn markdown_and_json_render() {
        let md = report().render(Format::Markdown);
        assert!(md.starts_with("# Report: nsmc"));
        assert!(md.contains("| epoch | train loss |"));
        let json: serde_json::Value = serde_json::from_str(&report().render(Format::Json)).unwrap();
        assert_eq!(json["comparison"].as_array().unwrap().len(), 2);
    }
}
