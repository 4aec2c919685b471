//! The HTML form of a report: one self-contained file (inline CSS and SVG; no script, font or
//! anything else fetched) with, for the runs compared (or the latest run alone):
//!
//! - the training loss over the logged batches, one line per run;
//! - validation (solid) and test (dashed) accuracy per epoch, one colour per run, the chosen
//!   epoch ringed, and the linear baselines' and ensembles' test accuracy as labelled reference
//!   lines;
//! - the parameters that differ between the runs;
//! - each run's confusion matrix as a shaded grid (single-label runs);
//! - the tables of the text form (models compared, runs compared, the latest run's epochs).
//!
//! Multi-label and regression runs chart micro F1 and Pearson instead of accuracy
//! ([`super::headline`]) and show their own final evaluation.
//!
//! Every string from a run (labels, parameter values, step names) is escaped.

use std::fmt::Write as _;

use super::svg::{self, esc, LegendEntry, LineChart, Reference, Ring, Series, Swatch, COLORS};
use super::{
    chosen_line, comparison_header, comparison_rows, comparison_task, confusion_table, epoch_header, epoch_rows,
    headline, model_rows, multi_label_line, param_columns, per_class_table, regression_line, training_lines,
    weight_lines, ChosenBy, Report, RunReport, TrainingMetrics, CHOICE_NOTE, MODELS_HEADER,
};
use crate::step::Reported;
use crate::task::Task;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
max-width:1100px;margin:24px auto;padding:0 16px;color:#222;line-height:1.4}\
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.8em 0 .5em;padding-bottom:.2em;border-bottom:1px solid #ddd}\
h3{font-size:1.05em;margin:1.2em 0 .4em}.sub,.note{color:#555}.note{font-size:14px;margin:.3em 0}\
table{border-collapse:collapse;margin:.6em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th{background:#f4f4f4}th:first-child,td:first-child{text-align:left}\
svg.chart{display:block;max-width:100%;height:auto}.grids{display:flex;flex-wrap:wrap;gap:28px}\
figure{margin:.4em 0}figcaption{font-size:13px;color:#444}\
.nowrap{white-space:nowrap}.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}";

/// The dash of test-accuracy lines (validation is solid).
const TEST_DASH: &str = "7,4";

pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = format!("Report: {}", report.pipeline);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\n\
         <style>{STYLE}</style></head><body>\n<h1>{}</h1>",
        esc(&title),
        esc(&title)
    );
    let runs: Vec<&RunReport> =
        if report.comparison.len() > 1 { report.comparison.iter().collect() } else { vec![&report.latest] };
    let names = run_names(&runs);
    let compared = if runs.len() > 1 { format!(" · {} runs compared", runs.len()) } else { String::new() };
    let _ = writeln!(
        out,
        "<p class=\"sub\">latest run {} ({}){compared}</p>",
        esc(&report.latest.label),
        esc(&report.latest.state)
    );

    out.push_str("<h2>Training loss</h2>\n");
    out.push_str(&loss_chart(&runs, &names));
    let task = comparison_task(report);
    let _ = writeln!(out, "<h2>{} per epoch</h2>", if task.is_single_label() { "Accuracy" } else { headline(task).0 });
    out.push_str(&accuracy_chart(&runs, &names, task));
    if runs.len() > 1 {
        out.push_str("<h2>Parameters that differ</h2>\n");
        out.push_str(&params_table(report, &runs));
    }
    confusion_section(&mut out, &runs, &names);
    if report.latest.models.len() > 1 {
        out.push_str("<h2>Models compared</h2>\n");
        let header: Vec<String> = MODELS_HEADER.iter().map(|s| s.to_string()).collect();
        out.push_str(&html_table(&header, &model_rows(&report.latest.models)));
        for line in weight_lines(&report.latest.models) {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(&line));
        }
    }
    if report.comparison.len() > 1 {
        out.push_str("<h2>Runs compared</h2>\n");
        out.push_str(&html_table(&comparison_header(report), &comparison_rows(report)));
        let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(CHOICE_NOTE));
    }
    latest_section(&mut out, &report.latest);
    out.push_str("</body></html>\n");
    out
}

/// How each run is named in legends and labels: its differing parameters (unique between the
/// runs compared, as a rule), else its label; its label too where two runs' parameters read alike.
fn run_names(runs: &[&RunReport]) -> Vec<String> {
    let params: Vec<String> =
        runs.iter().map(|r| r.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")).collect();
    runs.iter()
        .zip(&params)
        .map(|(r, p)| match params.iter().filter(|q| *q == p).count() {
            _ if p.is_empty() => r.label.clone(),
            1 => p.clone(),
            _ => format!("{p} ({})", r.label),
        })
        .collect()
}

fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

/// Runs drawn as one: those whose `key` (training metrics, evaluation) is equal — the same
/// cached result reused by runs that differ elsewhere — so no line hides another unexplained.
struct Group {
    /// The first run of the group, whose colour and data it shows.
    first: usize,
    name: String,
    color: &'static str,
}

fn groups<T: PartialEq>(
    runs: &[&RunReport],
    names: &[String],
    same: &str,
    key: impl Fn(&RunReport) -> Option<&T>,
) -> Vec<Group> {
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let found = key(r).and_then(|k| members.iter_mut().find(|m| key(runs[m[0]]) == Some(k)));
        match found {
            Some(m) => m.push(i),
            None => members.push(vec![i]),
        }
    }
    members
        .into_iter()
        .map(|m| {
            let name = match m.as_slice() {
                [one] => names[*one].clone(),
                all => {
                    let n: Vec<&str> = all.iter().map(|i| names[*i].as_str()).collect();
                    format!("{} ({same})", n.join(", "))
                }
            };
            Group { first: m[0], name, color: color(m[0]) }
        })
        .collect()
}

fn legend_of<'a>(groups: impl Iterator<Item = &'a Group>) -> Vec<LegendEntry> {
    groups.map(|g| LegendEntry { label: g.name.clone(), swatch: Swatch::Line { color: g.color, dash: None } }).collect()
}

fn batches_of(r: &RunReport) -> &[super::BatchLog] {
    r.training.as_ref().map_or(&[], |t| t.batches.as_slice())
}

/// The update after which each epoch from the second on started: (epoch, update).
fn epoch_starts(batches: &[super::BatchLog]) -> Vec<(usize, u64)> {
    let mut out: Vec<(usize, u64)> = Vec::new();
    for b in batches.iter().filter(|b| b.epoch > 1) {
        if out.last().is_none_or(|(e, _)| *e != b.epoch) {
            out.push((b.epoch, b.update.saturating_sub(b.batch as u64)));
        }
    }
    out
}

const SAME_TRAINING: &str = "the same fine-tune metrics";

/// Training loss against the global update, one line per run with a batch log.
fn loss_chart(runs: &[&RunReport], names: &[String]) -> String {
    let groups = groups(runs, names, SAME_TRAINING, |r| r.training.as_ref());
    // Runs without training metrics (unfinished, failed) are left to the other sections.
    let trained: Vec<&Group> = groups.iter().filter(|g| runs[g.first].training.is_some()).collect();
    if trained.is_empty() {
        return "<p class=\"note\">No training metrics to chart.</p>\n".into();
    }
    let (with, without): (Vec<&Group>, Vec<&Group>) =
        trained.into_iter().partition(|g| !batches_of(runs[g.first]).is_empty());
    let series: Vec<Series> = with
        .iter()
        .map(|g| {
            let b = batches_of(runs[g.first]);
            Series {
                name: format!("{} training loss", g.name),
                color: g.color,
                dash: None,
                points: b.iter().map(|b| (b.update as f64, b.loss)).collect(),
                dots: b.len() <= 40,
            }
        })
        .collect();
    // Where each epoch starts, when every run drawn agrees (the same batches per epoch).
    let starts: Vec<Vec<(usize, u64)>> = with.iter().map(|g| epoch_starts(batches_of(runs[g.first]))).collect();
    let x_marks = match starts.first() {
        Some(first) if starts.iter().all(|s| s == first) => {
            first.iter().map(|(e, at)| (*at as f64, format!("epoch {e}"))).collect()
        }
        _ => Vec::new(),
    };
    let chart = LineChart {
        label: "training loss per logged batch".into(),
        x_title: "update (optimizer step)".into(),
        y_title: "training loss (mean over the log interval)".into(),
        integer_x: false,
        series,
        references: Vec::new(),
        rings: Vec::new(),
        legend: legend_of(with.iter().copied()),
        x_marks,
    };
    let why = "metrics written by a fine-tune before version 4, or log_every: 0";
    let mut out = String::new();
    match chart.svg() {
        Some(svg) => {
            out.push_str(&svg);
            for g in without {
                let _ = writeln!(out, "<p class=\"note\">No batch log in run {} ({why}).</p>", esc(&g.name));
            }
        }
        None if without.len() == 1 && runs.len() == 1 => {
            let _ = writeln!(out, "<p class=\"note\">No batch log in this run ({why}).</p>");
        }
        None if without.len() == 1 => {
            let _ = writeln!(out, "<p class=\"note\">No batch log in run {} ({why}).</p>", esc(&without[0].name));
        }
        None => {
            let _ = writeln!(out, "<p class=\"note\">No batch log in these runs ({why}).</p>");
        }
    }
    out
}

/// The linear baselines' and ensembles' test accuracy, once per distinct value; a step whose
/// value differs between runs is drawn in each run's colour (its tooltip names the run).
fn references(runs: &[&RunReport], names: &[String]) -> Vec<Reference> {
    let mut found: Vec<(Vec<usize>, &super::ModelScore)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        for m in r.models.iter().filter(|m| matches!(m.model, Reported::Baseline | Reported::Ensemble)) {
            match found.iter_mut().find(|(_, f)| f.step == m.step && (f.accuracy - m.accuracy).abs() < 1e-12) {
                Some((of, _)) => of.push(i),
                None => found.push((vec![i], m)),
            }
        }
    }
    found
        .iter()
        .map(|(of, m)| {
            let what = match m.model {
                Reported::Baseline => format!("{} baseline", m.step),
                // No "ensemble (ensemble)".
                _ if m.step == m.model.name() => m.step.clone(),
                _ => format!("{} ({})", m.step, m.model.name()),
            };
            let several = found.iter().filter(|(_, f)| f.step == m.step).count() > 1;
            let color = match (several, m.model) {
                (true, _) => color(of[0]),
                (false, Reported::Baseline) => "#555555",
                (false, _) => "#7b3294",
            };
            let runs: Vec<&str> = of.iter().map(|i| names[*i].as_str()).collect();
            Reference {
                label: format!("{what}: test {:.4}", m.accuracy),
                title: format!("{what} of {}: test accuracy {:.4}", runs.join(", "), m.accuracy),
                y: m.accuracy,
                color,
            }
        })
        .collect()
}

/// Validation (solid) and test (dashed) accuracy per epoch, one colour per run, the chosen
/// epoch ringed, the other models as reference lines.
fn accuracy_chart(runs: &[&RunReport], names: &[String], task: Task) -> String {
    let (figure, valid_of, test_of) = headline(task);
    let mut series = Vec::new();
    let mut rings = Vec::new();
    let (mut any_valid, mut any_test) = (false, false);
    let groups = groups(runs, names, SAME_TRAINING, |r| r.training.as_ref());
    let mut drawn = Vec::new();
    for g in &groups {
        let Some(t) = runs[g.first].training.as_ref().filter(|t| !t.epochs.is_empty()) else { continue };
        let valid: Vec<(f64, f64)> = t.epochs.iter().filter_map(|e| Some((e.epoch as f64, valid_of(e)?))).collect();
        let test: Vec<(f64, f64)> = t.epochs.iter().filter_map(|e| Some((e.epoch as f64, test_of(e)?))).collect();
        any_valid |= !valid.is_empty();
        any_test |= !test.is_empty();
        for (points, what, dash) in [(valid, "validation", None), (test, "test", Some(TEST_DASH))] {
            if !points.is_empty() {
                let name = format!("{} {what} {figure} (epoch → {figure})", g.name);
                series.push(Series { name, color: g.color, dash, points, dots: true });
            }
        }
        rings.extend(chosen_rings(t, &g.name, g.color, valid_of, test_of));
        drawn.push(g);
    }
    let mut legend = legend_of(drawn.into_iter());
    if any_valid {
        legend.push(LegendEntry { label: "validation".into(), swatch: Swatch::Line { color: "#333", dash: None } });
    }
    if any_test {
        legend
            .push(LegendEntry { label: "test".into(), swatch: Swatch::Line { color: "#333", dash: Some(TEST_DASH) } });
    }
    if !rings.is_empty() {
        legend.push(LegendEntry { label: "chosen epoch".into(), swatch: Swatch::Ring });
    }
    if !task.is_single_label() {
        // The other models' lines are accuracies: not on this axis.
        let chart = LineChart {
            label: format!("validation and test {figure} per epoch"),
            x_title: "epoch".into(),
            y_title: figure.into(),
            integer_x: true,
            series,
            references: Vec::new(),
            rings,
            legend,
            x_marks: Vec::new(),
        };
        return match chart.svg() {
            Some(svg) => format!(
                "{svg}<p class=\"note\">Solid: validation {figure}; dashed: test {figure}. The ringed epoch is each \
                 run's chosen one.</p>\n"
            ),
            None => format!("<p class=\"note\">No per-epoch {figure} to chart.</p>\n"),
        };
    }
    let chart = LineChart {
        label: "validation and test accuracy per epoch".into(),
        x_title: "epoch".into(),
        y_title: "accuracy".into(),
        integer_x: true,
        series,
        references: references(runs, names),
        rings,
        legend,
        x_marks: Vec::new(),
    };
    match chart.svg() {
        Some(svg) => format!(
            "{svg}<p class=\"note\">Solid: validation accuracy; dashed: test accuracy. The ringed epoch is each run's \
             chosen one (the highest validation accuracy; the last without a validation set). Dotted lines: the \
             test accuracy of the other models of the runs (in a run's colour where it differs between runs).</p>\n"
        ),
        None => "<p class=\"note\">No per-epoch accuracy to chart.</p>\n".into(),
    }
}

/// Rings on the chosen epoch's validation and test points.
type Figure = fn(&super::EpochMetrics) -> Option<f64>;

fn chosen_rings(t: &TrainingMetrics, name: &str, color: &'static str, valid: Figure, test: Figure) -> Vec<Ring> {
    let Some((e, by)) = t.chosen() else { return Vec::new() };
    let best = format!("best {}", t.select_by.describe());
    let why = match by {
        ChosenBy::ValidAccuracy => "highest validation accuracy",
        ChosenBy::ValidMacroF1 => "highest validation macro F1",
        ChosenBy::LastEpoch => "the last; no validation set",
        _ => best.as_str(),
    };
    [valid(e), test(e)]
        .into_iter()
        .flatten()
        .map(|acc| Ring {
            x: e.epoch as f64,
            y: acc,
            color,
            title: format!("{name}: chosen epoch {} ({why})", e.epoch),
        })
        .collect()
}

/// A parameter per row, a run per column; exactly the parameters that differ.
fn params_table(report: &Report, runs: &[&RunReport]) -> String {
    let cols = param_columns(report);
    if cols.is_empty() {
        return format!(
            "<p class=\"note\">No parameter differs between the {} compared runs (they differ in which steps the \
             pipeline had).</p>\n",
            runs.len()
        );
    }
    let mut out = String::from("<table class=\"params\">\n<tr><th>parameter</th>");
    for (i, r) in runs.iter().enumerate() {
        // The start time on one line; a variant may wrap below it.
        let (time, rest) = r.label.split_once(' ').unwrap_or((&r.label, ""));
        let _ = write!(
            out,
            "<th><span class=\"nowrap\"><span class=\"swatch\" style=\"background:{}\"></span>{}</span> {}</th>",
            color(i),
            esc(time),
            esc(rest)
        );
    }
    out.push_str("</tr>\n");
    for c in &cols {
        let _ = write!(out, "<tr><td>{}</td>", esc(c));
        for r in runs {
            let _ = write!(out, "<td>{}</td>", esc(r.params.get(c).map(String::as_str).unwrap_or("-")));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn confusion_section(out: &mut String, runs: &[&RunReport], names: &[String]) {
    let groups = groups(runs, names, "the same evaluation", |r| r.evaluation.as_ref());
    let with: Vec<(&Group, &super::EvalMetrics)> = groups
        .iter()
        .filter_map(|g| Some((g, runs[g.first].evaluation.as_ref().filter(|e| !e.confusion.is_empty())?)))
        .collect();
    if with.is_empty() {
        return;
    }
    out.push_str("<h2>Confusion matrix</h2>\n<div class=\"grids\">\n");
    for (g, e) in with {
        let _ = writeln!(
            out,
            "<figure>{}<figcaption><span class=\"swatch\" style=\"background:{}\"></span>{}: accuracy {:.4}, \
             {} rows</figcaption></figure>",
            svg::confusion_grid(e, &g.name),
            g.color,
            esc(&g.name),
            e.accuracy,
            e.rows
        );
    }
    out.push_str(
        "</div>\n<p class=\"note\">A row per true class, a column per predicted class; each cell holds its count \
         and its share of the row, shaded by the count.</p>\n",
    );
}

fn latest_section(out: &mut String, latest: &RunReport) {
    let _ = writeln!(out, "<h2>Latest run: {} ({})</h2>", esc(&latest.label), esc(&latest.state));
    if latest.fine_tunes.len() > 1 {
        for f in &latest.fine_tunes {
            let t = &f.training;
            let _ = writeln!(out, "<h3>{}</h3>", esc(&f.step));
            out.push_str(&html_table(&epoch_header(t), &epoch_rows(t)));
            for line in chosen_line(t).into_iter().chain(training_lines(t)) {
                let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(&line));
            }
        }
    } else {
        latest_training(out, latest);
    }
    latest_evaluation(out, latest);
}

fn latest_training(out: &mut String, latest: &RunReport) {
    match &latest.training {
        Some(t) if !t.epochs.is_empty() => {
            out.push_str(&html_table(&epoch_header(t), &epoch_rows(t)));
            for line in chosen_line(t).into_iter().chain(training_lines(t)) {
                let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(&line));
            }
        }
        _ => {
            let note = latest.note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
            let _ = writeln!(out, "<p class=\"note\">No training metrics{}</p>", esc(&note));
        }
    }
}

fn latest_evaluation(out: &mut String, latest: &RunReport) {
    if let Some(m) = &latest.regression {
        let _ = writeln!(out, "<h3>Final evaluation</h3>\n<p>{}</p>", esc(&regression_line(m)));
    }
    if let Some(e) = latest.evaluation.as_ref().filter(|e| e.task == Task::MultiLabel) {
        let _ = writeln!(out, "<h3>Final evaluation</h3>\n<p>{}</p>", esc(&multi_label_line(e)));
        let (header, rows) = per_class_table(e);
        out.push_str(&html_table(&header, &rows));
    } else if let Some(e) = &latest.evaluation {
        let _ = writeln!(
            out,
            "<h3>Final evaluation</h3>\n<p>accuracy {:.4}, macro precision {:.4}, macro recall {:.4}, macro F1 {:.4}, \
             weighted F1 {:.4}, loss {:.4} ({} rows)</p>",
            e.accuracy,
            e.macro_precision,
            e.macro_recall,
            e.macro_f1,
            e.weighted_f1(),
            e.loss,
            e.rows
        );
        let (header, rows) = confusion_table(e);
        out.push_str(&html_table(&header, &rows));
    }
}

fn html_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n<tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::tests::{report, run};
    use super::super::{BatchLog, EvalMetrics, Format, ModelScore};
    use super::*;

    /// The opening tags in `html` that start with `start` (e.g. `<rect class="cell"`).
    fn tags<'a>(html: &'a str, start: &str) -> Vec<&'a str> {
        html.match_indices(start).map(|(i, _)| &html[i..i + html[i..].find('>').unwrap_or(0)]).collect()
    }

    fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
        let from = tag.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("no {name} in {tag}")) + name.len() + 3;
        &tag[from..from + tag[from..].find('"').unwrap()]
    }

    /// The texts of the `<g class="…">` groups of `class` (legend entries, reference lines).
    fn group_texts(html: &str, class: &str) -> Vec<String> {
        html.split(&format!("<g class=\"{class}\">"))
            .skip(1)
            .map(|g| {
                let t = &g[..g.find("</g>").unwrap()];
                let t = &t[t.find("<text").unwrap()..];
                t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].to_string()
            })
            .collect()
    }

    fn logged(run: &mut RunReport, losses: &[f64]) {
        let t = run.training.as_mut().unwrap();
        t.batches = losses
            .iter()
            .enumerate()
            .map(|(i, &loss)| BatchLog {
                epoch: i / 2 + 1,
                batch: 50 * (i % 2 + 1),
                update: 50 * (i as u64 + 1),
                loss,
                accuracy: 0.7,
                lr: 1e-4,
            })
            .collect();
    }

    fn score(step: &str, model: Reported, accuracy: f64) -> ModelScore {
        ModelScore {
            step: step.into(),
            model,
            rows: 1000,
            accuracy,
            macro_f1: accuracy,
            valid_accuracy: None,
            members: Vec::new(),
        }
    }

    #[test]
    fn the_charts_have_axis_titles_a_legend_entry_per_run_and_the_chosen_epoch_ringed() {
        let mut r = report();
        for (run, losses) in
            r.comparison.iter_mut().zip([[0.69, 0.6, 0.5, 0.45, 0.4, 0.38], [0.7, 0.5, 0.42, 0.4, 0.35, 0.3]])
        {
            logged(run, &losses);
        }
        let html = r.render(Format::Html);
        assert_eq!(html.matches("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\"").count(), 2, "{html}");
        let titles = group_titles(&html);
        for t in ["update (optimizer step)", "training loss (mean over the log interval)", "epoch", "accuracy"] {
            assert!(titles.iter().any(|x| x == t), "axis title {t} missing: {titles:?}");
        }
        // The loss chart marks where epochs 2 and 3 start (after updates 100 and 200).
        assert_eq!(group_texts(&html, "x-mark"), ["epoch 2", "epoch 3"]);
        // Each chart's legend names both runs; the accuracy chart's also says which line is which.
        let legend = group_texts(&html, "legend-entry");
        for name in ["finetune.lr=5e-5", "finetune.lr=3e-5"] {
            assert_eq!(legend.iter().filter(|l| *l == name).count(), 2, "{legend:?}");
        }
        assert!(["validation", "test", "chosen epoch"].iter().all(|s| legend.iter().any(|l| l == s)), "{legend:?}");
        // Two loss lines, a validation and a test line per run.
        assert_eq!(html.matches("<polyline class=\"series\"").count(), 2 + 4);
        assert_eq!(
            tags(&html, "<polyline class=\"series\"").iter().filter(|t| t.contains("stroke-dasharray")).count(),
            2
        );
        // The chosen epochs (2 and 3 by validation accuracy) are ringed on both lines.
        let rings = tags(&html, "<circle class=\"chosen\"");
        assert_eq!(rings.len(), 4, "{rings:?}");
        assert!(html.contains("finetune.lr=5e-5: chosen epoch 2 (highest validation accuracy)"), "{html}");
        assert!(html.contains("finetune.lr=3e-5: chosen epoch 3 (highest validation accuracy)"), "{html}");
        assert!(html.contains("<th>chosen epoch</th><th>chosen by</th>") && html.contains("never used to choose"));
    }

    fn group_titles(html: &str) -> Vec<String> {
        html.split("<text class=\"axis-title\"")
            .skip(1)
            .map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].to_string())
            .collect()
    }

    #[test]
    fn the_baseline_and_the_ensemble_are_labelled_reference_lines() {
        let mut r = report();
        for run in &mut r.comparison {
            run.models =
                vec![score("linear", Reported::Baseline, 0.8732), score("ensemble", Reported::Ensemble, 0.8787)];
        }
        let html = r.render(Format::Html);
        // The same values in both runs: one line each.
        let labels = group_texts(&html, "reference");
        assert_eq!(labels, ["ensemble: test 0.8787", "linear baseline: test 0.8732"], "{html}");
        let ys: Vec<f64> = html
            .split("<g class=\"reference\">")
            .skip(1)
            .map(|g| attr(tags(g, "<line")[0], "y1").parse().unwrap())
            .collect();
        assert!(ys[0] < ys[1], "the higher accuracy is drawn higher: {ys:?}");
        // Ensembles that differ between the runs: one line per run, named after it.
        r.comparison[1].models[1].accuracy = 0.8801;
        let html = r.render(Format::Html);
        let labels = group_texts(&html, "reference");
        assert_eq!(labels, ["ensemble: test 0.8801", "ensemble: test 0.8787", "linear baseline: test 0.8732"]);
        assert!(html.contains("<title>ensemble of finetune.lr=3e-5: test accuracy 0.8801</title>"), "{html}");
        assert!(html.contains("<title>linear baseline of finetune.lr=5e-5, finetune.lr=3e-5: test"), "{html}");
        // No other models: no reference lines.
        assert!(!report().render(Format::Html).contains("class=\"reference\""));
    }

    #[test]
    fn the_confusion_grid_shades_cells_by_their_count() {
        let mut r = report();
        r.comparison.truncate(1);
        r.latest = r.comparison.pop().unwrap();
        r.latest.evaluation =
            Some(EvalMetrics { confusion: vec![vec![70, 10], vec![25, 45]], ..r.latest.evaluation.unwrap() });
        let html = r.render(Format::Html);
        assert!(html.contains(">predicted</text>") && html.contains(">true</text>"), "{html}");
        let mut cells: Vec<(u64, f64)> = tags(&html, "<rect class=\"cell\"")
            .iter()
            .map(|t| (attr(t, "data-count").parse().unwrap(), attr(t, "fill-opacity").parse().unwrap()))
            .collect();
        assert_eq!(cells.len(), 4);
        cells.sort_by_key(|c| c.0);
        assert_eq!(cells.iter().map(|c| c.0).collect::<Vec<_>>(), [10, 25, 45, 70]);
        assert!(cells.windows(2).all(|w| w[0].1 < w[1].1), "the shade grows with the count: {cells:?}");
        // Counts and each cell's share of its row (true class 1: 25 of 70, 45 of 70).
        for text in [">70</text>", ">87.5%</text>", ">12.5%</text>", ">35.7%</text>", ">64.3%</text>"] {
            assert!(html.contains(text), "{text} missing: {html}");
        }
    }

    #[test]
    fn the_parameter_table_lists_exactly_the_parameters_that_differ() {
        let mut r = report();
        r.comparison[0].params.insert("finetune.epochs".into(), "3".into());
        r.comparison[1].params.insert("finetune.epochs".into(), "4".into());
        let html = r.render(Format::Html);
        let table = &html[html.find("<table class=\"params\">").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        let rows: Vec<Vec<&str>> = table
            .split("<tr>")
            .skip(2)
            .map(|row| row.split("<td>").skip(1).map(|c| &c[..c.find("</td>").unwrap()]).collect())
            .collect();
        assert_eq!(rows, [vec!["finetune.epochs", "3", "4"], vec!["finetune.lr", "5e-5", "3e-5"]], "{table}");
        assert!(table.contains(">run-a</span> </th>") && table.contains(">run-b</span> </th>"), "{table}");
        // Runs that differ in no parameter say so instead.
        for run in &mut r.comparison {
            run.params = BTreeMap::new();
        }
        let html = r.render(Format::Html);
        assert!(!html.contains("<table class=\"params\">"));
        assert!(html.contains("No parameter differs between the 2 compared runs"), "{html}");
    }

    #[test]
    fn runs_with_the_same_result_are_drawn_once_and_named_together() {
        // Three runs that reused one fine-tune result (they differ in steps added later).
        let same = |label: &str| RunReport { params: BTreeMap::new(), ..run(label, "", &[0.80, 0.84]) };
        let r = Report { pipeline: "p".into(), latest: same("c"), comparison: vec![same("a"), same("b"), same("c")] };
        let html = r.render(Format::Html);
        let legend = group_texts(&html, "legend-entry");
        assert!(legend.contains(&"a, b, c (the same fine-tune metrics)".to_string()), "{legend:?}");
        assert_eq!(html.matches("<polyline class=\"series\"").count(), 2, "one validation and one test line");
        assert_eq!(html.matches("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"confusion\"").count(), 1);
        assert!(html.contains("a, b, c (the same evaluation): accuracy 0.8000"), "{html}");
        // Parameters that read alike name their runs too.
        let mut r = report();
        r.comparison[1].params = r.comparison[0].params.clone();
        let legend = group_texts(&r.render(Format::Html), "legend-entry");
        assert!(legend.contains(&"finetune.lr=5e-5 (run-a)".to_string()), "{legend:?}");
        assert!(legend.contains(&"finetune.lr=5e-5 (run-b)".to_string()), "{legend:?}");
    }

    #[test]
    fn runs_without_a_batch_log_say_so() {
        let mut r = report();
        logged(&mut r.comparison[1], &[0.7, 0.6]);
        let html = r.render(Format::Html);
        assert!(html.contains("No batch log in run finetune.lr=5e-5 ("), "{html}");
        assert_eq!(html.matches("<polyline class=\"series\"").count(), 1 + 4);
        let alone = Report { comparison: Vec::new(), ..report() };
        let html = alone.render(Format::Html);
        assert!(html.contains("No batch log in this run ("), "{html}");
        assert_eq!(html.matches("class=\"chart\"").count(), 1, "only the accuracy chart");
        // Beside runs that did not train (failed), the one without a batch log is named.
        let mut failed = report();
        failed.comparison[1].training = None;
        let html = failed.render(Format::Html);
        assert!(html.contains("No batch log in run finetune.lr=5e-5 ("), "{html}");
        // A run without training metrics (unfinished) has no batch log to miss.
        let mut unfinished = Report { comparison: Vec::new(), ..report() };
        unfinished.latest.training = None;
        let html = unfinished.render(Format::Html);
        assert!(!html.contains("No batch log") && html.contains("No training metrics to chart."), "{html}");
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_runs_name() {
        let mut r = report();
        let evil = "<img src=x onerror=\"alert(1)\">&";
        r.pipeline = evil.into();
        r.comparison[0].label = evil.into();
        r.comparison[0].params.insert("finetune.lr".into(), evil.into());
        r.comparison[1].models = vec![score(evil, Reported::Baseline, 0.8)];
        logged(&mut r.comparison[0], &[0.7, 0.6]);
        let html = r.render(Format::Html);
        assert!(!html.contains("<img") && !html.contains("onerror=\""), "{html}");
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;"), "{html}");
        assert!(html.starts_with("<!DOCTYPE html>"));
        for fetch in ["<script", "<link", "@import", "url(", " src=\"", " href="] {
            assert!(!html.contains(fetch), "{fetch} in {html}");
        }
        assert!(html.matches("http").count() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());
    }
}
