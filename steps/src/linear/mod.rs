//! The `linear` step kind: a TF-IDF + logistic-regression baseline trained on a raw table
//! (word and character n-grams, [`features`]; L2-regularised logistic regression by truncated
//! Newton, [`solver`]), with metrics and predictions in `evaluate`'s form
//! ([`crate::predictions`]), for the test table and for validation rows.
//!
//! Validation rows come from a `valid` table, or are held out of `train` with `valid_fraction`
//! exactly as the `split` step holds them out of the tokenized training table
//! ([`crate::text::split::split_rows`] on the same labels, seed and stratification), so an
//! ensemble can weigh this model against a BERT fine-tuned on the other rows. Rows are read as
//! `tokenize` reads them ([`crate::text::table::Table`], labels integers or strings as
//! [`crate::labels`] says, empty texts kept), so row `i` here is row `i` of the tokenized table.
//! Any number of classes (multinomial for more than two); `nb_scaling` takes two only. Not
//! multi-label or regression: `task` is there to refuse them by name ([`crate::task`]).
//!
//! The vocabulary and idf are fit on the training rows only; validation rows never choose
//! anything here (they are predicted, for the ensemble to weigh).

pub mod features;
pub mod nb;
pub mod solver;
pub mod sparse;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use features::{CharAnalyzer, FeatureOptions, Vectorizer};
use nb::NbScale;
use solver::{Model, Options};

use crate::bert::classify::Predictions as Scored;
use crate::error::{StepError, StepResult};
use crate::predictions;
use crate::step::{
    Default, InputSource, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Reported, ReportedOutput, Step,
    StepContext, StepSpec,
};
use crate::text::split::split_rows;
use crate::text::table::{
    resolve_formats, validate_params, Malformed, Reading, Table, FORMAT_PARAM, QUOTING_PARAM, SEPARATOR_PARAM,
};
use crate::text::thread_pool;

pub struct Linear;

static SPEC: StepSpec = StepSpec {
    kind: "linear",
    all_cores: true,
    version: 1,
    summary: "TF-IDF (word + char n-grams) logistic regression on a raw table: metrics and predictions as `evaluate`",
    params: &[
        ParamSpec::optional("text_column", ParamType::Str, Default::Str("document"), "column of the text"),
        ParamSpec::optional(
            "label_column",
            ParamType::Str,
            Default::Str("label"),
            "column of labels, integers or strings (as `tokenize`)",
        ),
        FORMAT_PARAM,
        QUOTING_PARAM,
        SEPARATOR_PARAM,
        ParamSpec::optional(
            "malformed",
            ParamType::Choice(&["drop", "error"]),
            Default::Str("error"),
            "lines with the wrong number of fields or an empty label: drop or fail (as `tokenize`)",
        ),
        ParamSpec::optional("lowercase", ParamType::Bool, Default::Bool(true), "lowercase texts first (as sklearn)"),
        ParamSpec::optional(
            "word_ngrams",
            ParamType::Uint,
            Default::Int(2),
            "word n-grams of 1 to N words, words as sklearn's token_pattern (0: none)",
        ),
        ParamSpec::optional("char_min", ParamType::Uint, Default::Int(1), "shortest character n-gram"),
        ParamSpec::optional("char_max", ParamType::Uint, Default::Int(3), "longest character n-gram (0: none)"),
        ParamSpec::optional(
            "char_analyzer",
            ParamType::Choice(&["char", "char_wb"]),
            Default::Str("char"),
            "character n-grams over the whole text (char) or within space-padded words (char_wb), as sklearn",
        ),
        ParamSpec::optional(
            "min_df",
            ParamType::Uint,
            Default::Int(1),
            "drop n-grams in fewer training texts than this",
        ),
        ParamSpec::optional(
            "max_features",
            ParamType::Uint,
            Default::Absent,
            "keep the most frequent N n-grams of each block (words, chars)",
        ),
        ParamSpec::optional(
            "sublinear_tf",
            ParamType::Bool,
            Default::Bool(true),
            "term frequency 1 + ln(count) instead of the count",
        ),
        // No default value: keyed only when set, so results from before it existed keep their keys.
        ParamSpec::optional(
            "nb_scaling",
            ParamType::Bool,
            Default::Absent,
            "scale features by their naive-Bayes log-count ratio (NB-LR; two labels only; false when absent)",
        ),
        // 2.0: the best validation accuracy of 0.5, 1, 2, 4, 8 on NSMC (5% of train held out;
        // steps/BENCHMARKS_LINEAR.md). sklearn's default is 1.0.
        ParamSpec::optional(
            "C",
            ParamType::Float,
            Default::Float(2.0),
            "inverse L2 regularisation strength (sklearn's C; its default is 1.0)",
        ),
        ParamSpec::optional(
            "tol",
            ParamType::Float,
            Default::Float(1e-4),
            "stop when the gradient norm falls to this share of its initial value",
        ),
        ParamSpec::optional("max_iter", ParamType::Uint, Default::Int(100), "Newton steps at most"),
        ParamSpec::optional(
            "valid_fraction",
            ParamType::Float,
            Default::Absent,
            "hold out this share of `train` for validation, as `split` does (instead of a `valid` input)",
        ),
        ParamSpec::optional("seed", ParamType::Uint, Default::Int(42), "seed of the hold-out (`split`'s `seed`)"),
        ParamSpec::optional(
            "stratify",
            ParamType::Bool,
            Default::Bool(true),
            "stratified hold-out (`split`'s `stratify`)",
        ),
        ParamSpec::optional("log_every", ParamType::Uint, Default::Int(1), "log every N Newton steps (0: never)")
            .not_in_key(),
        ParamSpec {
            help: "single_label only (N classes; when absent): multi_label and regression are refused",
            ..crate::task::TASK_PARAM
        },
    ],
    inputs: &[
        InputSpec::required("train", "the training table (e.g. a download or sample)"),
        InputSpec::optional("valid", "a validation table (or hold rows out of `train` with `valid_fraction`)"),
        InputSpec::required("test", "the table to evaluate"),
    ],
    outputs: &[
        OutputSpec {
            name: "metrics",
            help: "test accuracy, loss, precision/recall/F1, confusion matrix (evaluate's JSON)",
        },
        OutputSpec { name: "predictions", help: "test predictions, one CSV row per row (evaluate's form)" },
        OutputSpec {
            name: "valid_metrics",
            help: "validation metrics (evaluate's JSON), or `null` without validation rows",
        },
        OutputSpec {
            name: "valid_predictions",
            help: "validation predictions (evaluate's form; the header only without validation rows)",
        },
    ],
    reported: &[
        ReportedOutput::new("metrics", Reported::Baseline),
        ReportedOutput::new("valid_metrics", Reported::ValidScores),
    ],
};

/// The settings, checked.
struct Settings<'a> {
    text_column: &'a str,
    label_column: &'a str,
    malformed: Malformed,
    features: FeatureOptions,
    nb_scaling: bool,
    solver: Options,
    valid_fraction: Option<f64>,
    seed: u64,
    stratify: bool,
    log_every: usize,
}

impl<'a> Settings<'a> {
    fn from(params: &'a Params) -> StepResult<Self> {
        let char_min = params.usize("char_min")?;
        let char_max = params.usize("char_max")?;
        if char_max > 0 && (char_min == 0 || char_min > char_max) {
            return Err(StepError::param(
                "char_min",
                format!("must be between 1 and char_max ({char_max}), got {char_min}"),
            ));
        }
        let word_ngrams = params.usize("word_ngrams")?;
        if word_ngrams == 0 && char_max == 0 {
            return Err(StepError::param("word_ngrams", "and `char_max` are both 0: there would be no features"));
        }
        let c = params.f64("C")?;
        if !(c > 0.0 && c.is_finite()) {
            return Err(StepError::param("C", format!("must be a positive number, got {c}")));
        }
        let tol = params.f64("tol")?;
        if !(0.0..1.0).contains(&tol) {
            return Err(StepError::param("tol", format!("must be in [0, 1), got {tol}")));
        }
        let valid_fraction = params.opt_f64("valid_fraction")?;
        if let Some(f) = valid_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(StepError::param(
                    "valid_fraction",
                    format!("must be between 0 and 1 (exclusive), got {f}"),
                ));
            }
        }
        let max_features = params.opt_usize("max_features")?;
        if max_features == Some(0) {
            return Err(StepError::param("max_features", "must be at least 1"));
        }
        Ok(Settings {
            text_column: params.str("text_column")?,
            label_column: params.str("label_column")?,
            malformed: Malformed::parse(params.str("malformed")?)?,
            features: FeatureOptions {
                lowercase: params.bool("lowercase")?,
                word_ngrams,
                char_min,
                char_max,
                char_analyzer: match params.str("char_analyzer")? {
                    "char_wb" => CharAnalyzer::CharWb,
                    "char" => CharAnalyzer::Char,
                    other => {
                        return Err(StepError::param(
                            "char_analyzer",
                            format!("must be char or char_wb, got `{other}`"),
                        ))
                    }
                },
                min_df: params.usize("min_df")?.max(1),
                max_features,
                sublinear_tf: params.bool("sublinear_tf")?,
            },
            nb_scaling: match params.get("nb_scaling") {
                None => false,
                Some(v) => v.as_bool().ok_or_else(|| StepError::param("nb_scaling", "must be true or false"))?,
            },
            solver: Options { c, tol, max_iter: params.usize("max_iter")? },
            valid_fraction,
            seed: params.usize("seed")? as u64,
            stratify: params.bool("stratify")?,
            log_every: params.usize("log_every")?,
        })
    }
}

/// The texts and labels (trimmed names) of a table, read as `tokenize` reads them.
struct Labelled {
    texts: Vec<String>,
    labels: Vec<String>,
}

impl Labelled {
    fn select(&self, rows: &[usize]) -> Labelled {
        Labelled {
            texts: rows.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: rows.iter().map(|&i| self.labels[i].clone()).collect(),
        }
    }
}

/// Reads the input `what`: the text and label columns, empty labels dropped or an error
/// as `malformed` says, like `tokenize`.
fn read_table(ctx: &StepContext<'_>, what: &str, s: &Settings<'_>) -> StepResult<(Labelled, usize)> {
    let source = ctx.source(what);
    let table = Table::open(ctx.input(what)?, &source, Reading::of(ctx.params, what, &source)?)?;
    let texts = table.column(s.text_column, "text_column")?;
    let raw = table.column(s.label_column, "label_column")?;
    let mut out = Labelled { texts: Vec::with_capacity(texts.len()), labels: Vec::with_capacity(texts.len()) };
    let mut dropped = table.malformed_dropped;
    for (i, (text, label)) in texts.into_iter().zip(&raw).enumerate() {
        let name = label.trim();
        match crate::labels::invalid(name) {
            None => {
                out.texts.push(text);
                out.labels.push(name.to_string());
            }
            Some(_) if s.malformed == Malformed::Drop => dropped += 1,
            Some(why) => {
                return Err(StepError::input_with_help(
                    format!(
                        "input `{what}` ({}) {}: the label `{}` in column `{}` {why}",
                        table.name(),
                        table.at(i),
                        label.chars().take(40).collect::<String>(),
                        s.label_column
                    ),
                    "set `malformed: drop` to skip such rows",
                ))
            }
        }
    }
    if out.labels.is_empty() {
        return Err(StepError::input(format!("input `{what}` ({}) has no rows", table.name())));
    }
    out.labels = crate::labels::encode(&out.labels).row_names();
    Ok((out, dropped))
}

/// The class index of each label; a label the training rows lack is an error naming its rows.
fn classes_of(labels: &[String], classes: &[String], what: &str) -> StepResult<Vec<u32>> {
    let rows: Vec<Option<&str>> = labels.iter().map(|l| Some(l.as_str())).collect();
    crate::labels::classes_by_name(&rows, classes, &format!("input `{what}`"), "the training labels")
}

/// Scores rows with the model and writes `evaluate`'s metrics and predictions; returns the
/// metrics.
fn evaluate(
    model: &Model,
    x: &sparse::Csr,
    truth: &[String],
    classes: Vec<u32>,
    labels: &[String],
    metrics_path: &Path,
    predictions_path: &Path,
) -> StepResult<crate::report::EvalMetrics> {
    let probs = model.probabilities(x);
    // Mean cross-entropy from the f64 probabilities, floored as a float can hold.
    let loss = probs.iter().zip(&classes).map(|(p, &c)| -p[c as usize].max(f64::MIN_POSITIVE).ln()).sum::<f64>()
        / probs.len().max(1) as f64;
    let probs: Vec<Vec<f32>> = probs.into_iter().map(|p| p.into_iter().map(|v| v as f32).collect()).collect();
    let scored = Scored { probs, classes, loss };
    let metrics = scored.metrics(labels);
    write_json(metrics_path, &metrics)?;
    predictions::write(predictions_path, labels, truth, &scored.probs)?;
    Ok(metrics)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> StepResult<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| StepError::failed(e.to_string()))?;
    fs::write(path, text).map_err(StepError::io("writing", path))
}

impl Step for Linear {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        crate::task::Task::of_params(params)?.refuse_unless_single_label("linear", "parameter `task`")?;
        validate_params(params)?;
        Settings::from(params).map(|_| ())
    }

    fn resolve_inputs(&self, params: &Params, sources: &BTreeMap<String, InputSource>) -> StepResult<Params> {
        resolve_formats(params, &["train", "valid", "test"], sources)
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let s = Settings::from(ctx.params)?;
        thread_pool(ctx.env)?.install(|| run(ctx, &s))
    }
}

fn run(ctx: &StepContext<'_>, s: &Settings<'_>) -> StepResult<()> {
    let started = Instant::now();
    let (all_train, dropped) = read_table(ctx, "train", s)?;
    let (train, valid) = match (ctx.opt_input("valid"), s.valid_fraction) {
        (Some(_), Some(_)) => {
            return Err(StepError::param(
                "valid_fraction",
                "is set and a `valid` input is given: validation rows come from one or the other",
            ))
        }
        (Some(_), None) => (all_train, Some(read_table(ctx, "valid", s)?.0)),
        (None, Some(fraction)) => {
            // The ids `tokenize` stores for these labels, so the hold-out is `split`'s.
            let ids = crate::labels::encode(&all_train.labels).ids;
            let (train_rows, valid_rows) = split_rows(&ids, fraction, s.seed, s.stratify)?;
            (all_train.select(&train_rows), Some(all_train.select(&valid_rows)))
        }
        (None, None) => (all_train, None),
    };
    let (test, _) = read_table(ctx, "test", s)?;
    if dropped > 0 {
        ctx.events.log(&format!("train: dropped {dropped} malformed lines"));
    }
    let labels = crate::labels::encode(&train.labels).class_names();
    if labels.len() < 2 {
        return Err(StepError::input_with_help(
            format!("the training rows have one label ({}): a classifier needs two or more", labels[0]),
            "check `label_column`",
        ));
    }
    let y = classes_of(&train.labels, &labels, "train")?;
    let test_classes = classes_of(&test.labels, &labels, "test")?;
    let valid_classes = valid.as_ref().map(|v| classes_of(&v.labels, &labels, "valid")).transpose()?;

    if s.nb_scaling && labels.len() != 2 {
        return Err(StepError::param(
            "nb_scaling",
            format!(
                "needs exactly two labels (naive-Bayes ratios compare two classes); the training rows have {} ({}): \
                 leave it out for a multinomial model",
                labels.len(),
                crate::labels::quoted(&labels)
            ),
        ));
    }
    let (vectorizer, mut x) = Vectorizer::fit_transform(&train.texts, &s.features);
    // Laplace smoothing (alpha 1), as Wang & Manning.
    let nb = s.nb_scaling.then(|| NbScale::fit(&x, &y, 1.0));
    let transform = |texts: &[String]| {
        let mut m = vectorizer.transform(texts);
        if let Some(nb) = &nb {
            nb.apply(&mut m);
        }
        m
    };
    if let Some(nb) = &nb {
        nb.apply(&mut x);
    }
    let blocks: Vec<String> = vectorizer.block_columns().iter().map(|(b, n)| format!("{n} {b}")).collect();
    ctx.events.log(&format!(
        "{} training rows, {} labels; features: {} n-grams ({}), {} non-zeros; {:.1}s",
        train.labels.len(),
        labels.len(),
        vectorizer.columns(),
        blocks.join(" + "),
        x.nnz(),
        started.elapsed().as_secs_f64()
    ));
    if ctx.env.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    let fit_started = Instant::now();
    let mut on_iteration = |it: &solver::Iteration| {
        if s.log_every > 0 && it.iteration.is_multiple_of(s.log_every) {
            ctx.events.log(&format!(
                "[Newton {}] objective={:.6e}, |g|/|g0|={:.2e}, cg={}, step={}",
                it.iteration, it.objective, it.gradient_ratio, it.cg_steps, it.step_size
            ));
        }
        if ctx.env.is_cancelled() {
            Err(StepError::Cancelled)
        } else {
            Ok(())
        }
    };
    let (model, summary) = solver::fit(&x, &y, labels.len(), &s.solver, &mut on_iteration)?;
    ctx.events.log(&format!(
        "fit: {} Newton steps, |g|/|g0|={:.2e}{}; {:.1}s",
        summary.iterations,
        summary.gradient_ratio,
        if summary.converged { "" } else { " (max_iter reached before tol)" },
        fit_started.elapsed().as_secs_f64()
    ));
    drop(x);

    let x_test = transform(&test.texts);
    let m = evaluate(
        &model,
        &x_test,
        &test.labels,
        test_classes,
        &labels,
        &ctx.output("metrics"),
        &ctx.output("predictions"),
    )?;
    ctx.events.log(&format!(
        "test: {} rows, accuracy={:.4}, macro F1={:.4}, loss={:.4}",
        m.rows, m.accuracy, m.macro_f1, m.loss
    ));
    match (valid, valid_classes) {
        (Some(v), Some(classes)) => {
            let x_valid = transform(&v.texts);
            let m = evaluate(
                &model,
                &x_valid,
                &v.labels,
                classes,
                &labels,
                &ctx.output("valid_metrics"),
                &ctx.output("valid_predictions"),
            )?;
            ctx.events.log(&format!("valid: {} rows, accuracy={:.4}, loss={:.4}", m.rows, m.accuracy, m.loss));
        }
        _ => {
            write_json(&ctx.output("valid_metrics"), &serde_json::Value::Null)?;
            predictions::write::<&str>(&ctx.output("valid_predictions"), &labels, &[], &[])?;
        }
    }
    ctx.events.log(&format!("done in {:.1}s", started.elapsed().as_secs_f64()));
    Ok(())
}
