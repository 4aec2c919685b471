//! The `ensemble` step kind: combines the class probabilities of two to four classifiers
//! (`evaluate`, `linear` or `ensemble` predictions, [`crate::predictions`]) by a weighted
//! average of their log-odds, the weights fit on the validation rows only.
//!
//! Member `x` (`a` to `d`) is the pair of inputs `valid_x` (its predictions of the validation
//! rows) and `test_x` (of the test rows); `a` and `b` are required. The combined score of class
//! `k` is `Σₘ wₘ · ln pₘ(k)` and its probabilities the softmax of the scores; for two classes
//! that is the sigmoid of the weighted average of the members' logits. Weights are non-negative
//! and sum to 1; they are searched on a grid (multiples of `grid_step`) for the lowest
//! validation log-loss (or the highest validation accuracy, ties by log-loss), the first grid
//! point on ties (member `a`'s weight descending, then `b`'s...). The test rows never take part
//! in the choice: their figures are computed with the chosen weights and only reported.
//!
//! Predictions files are written with six decimals, so probabilities are floored at
//! [`FLOOR`] before their logarithm (a `0.000000` is below half the last digit, not zero).
//!
//! Members must describe the same rows: every validation file the same rows as `valid_a`, every
//! test file as `test_a` (same classes, row count and true labels; the files carry no ids).
//!
//! Single-label classifiers only (N classes): the predictions of a multi-label or regression
//! model are refused by name ([`crate::predictions::Predictions::read`]).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bert::classify::Predictions as Scored;
use crate::error::{StepError, StepResult};
use crate::predictions::{self, Predictions};
use crate::report::EvalMetrics;
use crate::step::{
    Default, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Reported, ReportedOutput, Step, StepContext, StepSpec,
};

pub struct Ensemble;

/// The members' letters, in input order.
const MEMBERS: [&str; 4] = ["a", "b", "c", "d"];

/// Probabilities below this count as this before their logarithm: half the last written digit.
pub const FLOOR: f64 = 5e-7;

static SPEC: StepSpec = StepSpec {
    kind: "ensemble",
    all_cores: false,
    version: 1,
    summary: "weighted log-odds average of 2-4 classifiers' predictions, weights fit on validation rows only",
    params: &[
        ParamSpec::optional(
            "names",
            ParamType::StrList,
            Default::Absent,
            "a name for each member, in order a, b, c, d (default: the letters)",
        ),
        ParamSpec::optional(
            "grid_step",
            ParamType::Float,
            Default::Float(0.05),
            "weights are multiples of this (1 / grid_step must be a whole number)",
        ),
        ParamSpec::optional(
            "criterion",
            ParamType::Choice(&["log_loss", "accuracy"]),
            Default::Str("log_loss"),
            "what the weights optimise on the validation rows",
        ),
    ],
    inputs: &[
        InputSpec::required("valid_a", "member a's predictions of the validation rows"),
        InputSpec::required("test_a", "member a's predictions of the test rows"),
        InputSpec::required("valid_b", "member b's predictions of the validation rows"),
        InputSpec::required("test_b", "member b's predictions of the test rows"),
        InputSpec::optional("valid_c", "member c's predictions of the validation rows"),
        InputSpec::optional("test_c", "member c's predictions of the test rows"),
        InputSpec::optional("valid_d", "member d's predictions of the validation rows"),
        InputSpec::optional("test_d", "member d's predictions of the test rows"),
    ],
    outputs: &[
        OutputSpec { name: "metrics", help: "the ensemble's test metrics (evaluate's JSON)" },
        OutputSpec { name: "predictions", help: "the ensemble's test predictions (evaluate's form)" },
        OutputSpec { name: "weights", help: "each member's weight and accuracy, and the ensemble's (JSON)" },
    ],
    reported: &[ReportedOutput::new("metrics", Reported::Ensemble), ReportedOutput::new("weights", Reported::Weights)],
};

/// One member in the `weights` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    pub weight: f64,
    /// From the member's own `predicted` column.
    pub valid_accuracy: f64,
    pub valid_loss: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
}

/// The `weights` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleReport {
    /// `valid_log_loss` or `valid_accuracy`: always measured on the validation rows.
    pub criterion: String,
    pub grid_step: f64,
    pub valid_rows: usize,
    pub test_rows: usize,
    pub members: Vec<MemberReport>,
    pub valid_accuracy: f64,
    pub valid_loss: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Criterion {
    LogLoss,
    Accuracy,
}

/// Grid points per unit weight, from `grid_step`.
fn grid_steps(params: &Params) -> StepResult<usize> {
    let step = params.f64("grid_step")?;
    let n = (1.0 / step).round();
    if !(step > 0.0 && step <= 1.0) || ((1.0 / step) - n).abs() > 1e-6 || n > 1000.0 {
        return Err(StepError::param(
            "grid_step",
            format!("must be 1 divided by a whole number from 1 to 1000 (e.g. 0.05, 0.1), got {step}"),
        ));
    }
    Ok(n as usize)
}

/// Every way to give `members` non-negative weights that are multiples of `1/steps` summing to
/// 1, as counts of steps: member 0's count descending, then member 1's, and so on.
pub fn simplex_grid(members: usize, steps: usize) -> Vec<Vec<usize>> {
    fn rec(left: usize, members: usize, prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if members == 1 {
            prefix.push(left);
            out.push(prefix.clone());
            prefix.pop();
            return;
        }
        for k in (0..=left).rev() {
            prefix.push(k);
            rec(left - k, members - 1, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    rec(steps, members, &mut Vec::new(), &mut out);
    out
}

/// The floored log-probabilities of every row of a predictions file.
fn log_probs(p: &Predictions) -> Vec<Vec<f64>> {
    p.probs.iter().map(|row| row.iter().map(|v| v.max(FLOOR).ln()).collect()).collect()
}

/// Probabilities of the weighted combination of members' log-probabilities.
fn combine(members: &[Vec<Vec<f64>>], weights: &[f64]) -> Vec<Vec<f64>> {
    let rows = members[0].len();
    let k = members[0].first().map_or(0, Vec::len);
    (0..rows)
        .map(|i| {
            let scores: Vec<f64> =
                (0..k).map(|c| members.iter().zip(weights).map(|(m, w)| w * m[i][c]).sum::<f64>()).collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect()
        })
        .collect()
}

/// Mean cross-entropy and accuracy (ties to the lower class, as `evaluate`) of probabilities.
fn score(probs: &[Vec<f64>], classes: &[u32]) -> (f64, f64) {
    let mut loss = 0.0;
    let mut right = 0usize;
    for (p, &c) in probs.iter().zip(classes) {
        loss -= p[c as usize].max(FLOOR).ln();
        let best = p.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        right += usize::from(best == c as usize);
    }
    let n = probs.len().max(1) as f64;
    (loss / n, right as f64 / n)
}

fn classes(p: &Predictions, what: &str) -> StepResult<Vec<u32>> {
    p.truth
        .iter()
        .enumerate()
        .map(|(row, t)| {
            p.labels.iter().position(|l| l == t).map(|i| i as u32).ok_or_else(|| {
                StepError::input(format!(
                    "{what} ({}): row {row} has label {t}, which is not among its classes {:?}",
                    p.path.display(),
                    p.labels
                ))
            })
        })
        .collect()
}

fn write_json(path: &Path, value: &impl Serialize) -> StepResult<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| StepError::failed(e.to_string()))?;
    fs::write(path, text).map_err(StepError::io("writing", path))
}

impl Step for Ensemble {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        grid_steps(params)?;
        let names = params.str_list("names")?;
        if names.len() > MEMBERS.len() {
            return Err(StepError::param(
                "names",
                format!("has {} names; an ensemble has at most 4 members", names.len()),
            ));
        }
        if let Some(n) = names.iter().find(|n| n.trim().is_empty()) {
            return Err(StepError::param("names", format!("has an empty name `{n}`")));
        }
        Ok(())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        self.validate(ctx.params)?;
        let steps = grid_steps(ctx.params)?;
        let criterion = match ctx.params.str("criterion")? {
            "accuracy" => Criterion::Accuracy,
            _ => Criterion::LogLoss,
        };
        // The members given, as (letter, valid, test).
        let mut members = Vec::new();
        for letter in MEMBERS {
            let (v, t) = (format!("valid_{letter}"), format!("test_{letter}"));
            match (ctx.opt_input(&v), ctx.opt_input(&t)) {
                (Some(vp), Some(tp)) => members.push((
                    letter,
                    Predictions::read(vp, &format!("input `{v}`"))?,
                    Predictions::read(tp, &format!("input `{t}`"))?,
                )),
                (None, None) => {}
                (Some(_), None) | (None, Some(_)) => {
                    let (given, missing) = if ctx.opt_input(&v).is_some() { (&v, &t) } else { (&t, &v) };
                    return Err(StepError::input_with_help(
                        format!("member {letter}: input `{given}` is given but `{missing}` is not"),
                        format!("give both `{v}` and `{t}` (validation and test predictions of the same model)"),
                    ));
                }
            }
        }
        if members.len() < 2 {
            return Err(StepError::input(
                "an ensemble needs at least two members (inputs valid_a/test_a, valid_b/test_b)",
            ));
        }
        let names = ctx.params.str_list("names")?;
        if !names.is_empty() && names.len() != members.len() {
            return Err(StepError::param(
                "names",
                format!("has {} names for {} members ({})", names.len(), members.len(), {
                    let l: Vec<&str> = members.iter().map(|m| m.0).collect();
                    l.join(", ")
                }),
            ));
        }
        let name_of = |i: usize| names.get(i).cloned().unwrap_or_else(|| members[i].0.to_string());

        let (_, first_valid, first_test) = &members[0];
        for (letter, valid, test) in &members {
            if valid.is_empty() {
                return Err(StepError::input_with_help(
                    format!("input `valid_{letter}` ({}) has no rows", valid.path.display()),
                    "give `linear` a `valid` input or `valid_fraction`, or `evaluate` the validation rows",
                ));
            }
            first_valid.check_aligned("input `valid_a`", valid, &format!("input `valid_{letter}`"))?;
            first_test.check_aligned("input `test_a`", test, &format!("input `test_{letter}`"))?;
        }
        if first_valid.labels.len() < 2 {
            return Err(StepError::input(format!(
                "the members have {} class; an ensemble needs two or more",
                first_valid.labels.len()
            )));
        }
        let valid_classes = classes(first_valid, "input `valid_a`")?;
        let test_classes = classes(first_test, "input `test_a`")?;
        let valid_logs: Vec<Vec<Vec<f64>>> = members.iter().map(|m| log_probs(&m.1)).collect();

        // The grid search, on the validation rows only.
        let mut best: Option<(Vec<f64>, f64, f64)> = None;
        for counts in simplex_grid(members.len(), steps) {
            let w: Vec<f64> = counts.iter().map(|&c| c as f64 / steps as f64).collect();
            let (loss, acc) = score(&combine(&valid_logs, &w), &valid_classes);
            let better = match &best {
                None => true,
                Some((_, bl, ba)) => match criterion {
                    Criterion::LogLoss => loss < *bl,
                    Criterion::Accuracy => acc > *ba || (acc == *ba && loss < *bl),
                },
            };
            if better {
                best = Some((w, loss, acc));
            }
        }
        let Some((weights, valid_loss, valid_accuracy)) = best else {
            return Err(StepError::failed("the weight grid is empty"));
        };

        let test_logs: Vec<Vec<Vec<f64>>> = members.iter().map(|m| log_probs(&m.2)).collect();
        let test_probs = combine(&test_logs, &weights);
        let (test_loss, _) = score(&test_probs, &test_classes);
        let scored = Scored {
            probs: test_probs.iter().map(|p| p.iter().map(|&v| v as f32).collect()).collect(),
            classes: test_classes.clone(),
            loss: test_loss,
        };
        let metrics: EvalMetrics = scored.metrics(&first_test.labels);
        write_json(&ctx.output("metrics"), &metrics)?;
        predictions::write(&ctx.output("predictions"), &first_test.labels, &first_test.truth, &scored.probs)?;

        let member_reports: Vec<MemberReport> = members
            .iter()
            .enumerate()
            .map(|(i, (_, valid, test))| MemberReport {
                name: name_of(i),
                weight: weights[i],
                valid_accuracy: valid.accuracy(),
                valid_loss: score(&valid.probs, &valid_classes).0,
                test_accuracy: test.accuracy(),
                test_loss: score(&test.probs, &test_classes).0,
            })
            .collect();
        for m in &member_reports {
            ctx.events.log(&format!(
                "{}: weight {:.2}, valid accuracy {:.4}, test accuracy {:.4}",
                m.name, m.weight, m.valid_accuracy, m.test_accuracy
            ));
        }
        ctx.events.log(&format!(
            "ensemble: valid accuracy {valid_accuracy:.4} (loss {valid_loss:.4}), test accuracy {:.4}; weights fit on {} validation rows",
            metrics.accuracy,
            first_valid.len()
        ));
        let report = EnsembleReport {
            criterion: match criterion {
                Criterion::LogLoss => "valid_log_loss".into(),
                Criterion::Accuracy => "valid_accuracy".into(),
            },
            grid_step: 1.0 / steps as f64,
            valid_rows: first_valid.len(),
            test_rows: first_test.len(),
            members: member_reports,
            valid_accuracy,
            valid_loss,
            test_accuracy: metrics.accuracy,
            test_loss,
        };
        write_json(&ctx.output("weights"), &report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_covers_the_simplex_in_order() {
        let g = simplex_grid(2, 4);
        assert_eq!(g, [[4, 0], [3, 1], [2, 2], [1, 3], [0, 4]]);
        let g = simplex_grid(3, 20);
        assert_eq!(g.len(), 231, "C(22, 2)");
        assert!(g.iter().all(|w| w.iter().sum::<usize>() == 20));
        assert_eq!(g[0], [20, 0, 0]);
    }

    #[test]
    fn two_class_combination_is_the_weighted_logit_average() {
        let a = vec![vec![(0.2f64).ln(), (0.8f64).ln()]];
        let b = vec![vec![(0.6f64).ln(), (0.4f64).ln()]];
        let p = combine(&[a, b], &[0.25, 0.75]);
        let logit = |p: f64| (p / (1.0 - p)).ln();
        let want = 1.0 / (1.0 + (-(0.25 * logit(0.8) + 0.75 * logit(0.4))).exp());
        assert!((p[0][1] - want).abs() < 1e-12, "{p:?} vs {want}");
    }
}
