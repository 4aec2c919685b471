//! The `predict` step kind: a classification model and an unlabelled table → one row per input
//! row with its own columns (an `id` passes through), the predicted label's name, its
//! probability and every class's probability, as CSV or JSONL. The scoring is
//! [`super::predictor::Predictor`]'s, shared with `pipe predict`; so is the output form
//! ([`render`]).
//!
//! Output columns after the input's: `predicted` (the class name of the highest probability,
//! the lower class on ties), `probability` (its probability) and one `p_<name>` per class in
//! class order (CSV), or `probabilities: {name: p}` (JSONL). An input column of one of those
//! names is an error rather than silently overwritten.

use std::fmt::Write as _;
use std::fs;

use serde_json::Value;

use super::device;
use super::model_dir::ModelDir;
use super::predictor::{PredictOptions, Predictor};
use crate::error::{StepError, StepResult};
use crate::predictions::{argmax, csv_cell};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};
use crate::text::table::{parse_separator, Malformed, Table};

pub struct Predict;

static SPEC: StepSpec = StepSpec {
    kind: "predict",
    version: 1,
    summary: "run a fine-tuned classifier on raw text: the predicted label, its probability and all probabilities",
    params: &[
        ParamSpec::optional(
            "model",
            ParamType::PathOrHubId,
            Default::Absent,
            "a fine-tuned model directory or hub id (else the `model` input)",
        ),
        ParamSpec::optional("text_column", ParamType::Str, Default::Str("document"), "column of the (first) text"),
        ParamSpec::optional("text_b_column", ParamType::Str, Default::Absent, "column of the second text, for pairs"),
        ParamSpec::optional("separator", ParamType::Str, Default::Str("\t"), "field separator: \"\\t\" or \",\""),
        ParamSpec::optional(
            "malformed",
            ParamType::Choice(&["drop", "error"]),
            Default::Str("error"),
            "lines with the wrong number of fields: drop or fail",
        ),
        ParamSpec::optional(
            "format",
            ParamType::Choice(&["csv", "jsonl"]),
            Default::Str("csv"),
            "the predictions file: CSV (p_<label> columns) or JSON lines (a `probabilities` object)",
        ),
        ParamSpec::optional(
            "max_len",
            ParamType::Uint,
            Default::Absent,
            "tokens per row (default: the model's model_max_length, what fine-tune trained with)",
        ),
        // In the key: the batch changes the float summation order (as `evaluate`'s).
        ParamSpec::optional(
            "batch_size",
            ParamType::Uint,
            Default::Int(128),
            "rows per batch (in the key: it changes the last digits of the probabilities)",
        ),
        crate::bert::train::params::DEVICE,
        crate::bert::train::params::PRECISION,
    ],
    inputs: &[
        InputSpec::required("data", "the table to predict (its text column; other columns are kept)"),
        InputSpec::optional("model", "a model directory from `fine-tune`"),
    ],
    outputs: &[OutputSpec {
        name: "predictions",
        help: "one row per input row: its columns, predicted, probability, p_<label>... (CSV or JSONL)",
    }],
};

/// The form of a predictions file or listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
}

/// Rows to predict: their own columns (kept in the output) and the texts to score.
#[derive(Debug, Clone, PartialEq, std::default::Default)]
pub struct InputRows {
    /// The input's column names, in order.
    pub columns: Vec<String>,
    /// Each row's values, one per column.
    pub values: Vec<Vec<Value>>,
    /// The (first) text of each row.
    pub a: Vec<String>,
    /// The second text of each row, for pairs.
    pub b: Option<Vec<String>>,
}

impl InputRows {
    /// The rows of `table`: every column kept, the texts from `text_column` (and
    /// `text_b_column`).
    pub fn from_table(table: &Table, text_column: &str, text_b_column: Option<&str>) -> StepResult<InputRows> {
        let columns = table.column_names();
        let a = table.column(text_column, "text_column")?;
        let b = text_b_column.map(|c| table.column(c, "text_b_column")).transpose()?;
        let mut values = vec![Vec::with_capacity(columns.len()); table.len()];
        for name in &columns {
            for (row, v) in values.iter_mut().zip(table.column(name, "text_column")?) {
                row.push(Value::String(v));
            }
        }
        Ok(InputRows { columns, values, a, b })
    }

    pub fn len(&self) -> usize {
        self.a.len()
    }

    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }
}

/// The names of the output's own columns for `labels`.
fn prediction_columns(labels: &[String]) -> Vec<String> {
    let mut out = vec!["predicted".to_string(), "probability".to_string()];
    out.extend(labels.iter().map(|l| format!("p_{l}")));
    out
}

/// Checks that no input column has the name of an output column.
pub fn check_columns(columns: &[String], labels: &[String]) -> StepResult<()> {
    let ours = prediction_columns(labels);
    match columns.iter().find(|c| ours.contains(c) || c.as_str() == "probabilities") {
        None => Ok(()),
        Some(c) => Err(StepError::input_with_help(
            format!("the input has a column `{c}`, which the predictions add (predicted, probability, p_<label>)"),
            "rename or drop that column of the input",
        )),
    }
}

/// A value as a CSV cell: strings as they are, null empty, anything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One output row as a JSON object, the input's columns first, in order.
fn json_object(rows: &InputRows, row: usize, labels: &[String], probs: &[f32]) -> String {
    let key = |k: &str| serde_json::to_string(k).unwrap_or_default();
    let mut fields: Vec<String> =
        rows.columns.iter().zip(&rows.values[row]).map(|(c, v)| format!("{}:{v}", key(c))).collect();
    let best = argmax(probs);
    fields.push(format!("\"predicted\":{}", key(&labels[best])));
    // f32's shortest form (a finite number: JSON).
    fields.push(format!("\"probability\":{}", probs[best]));
    let all: Vec<String> = labels.iter().zip(probs).map(|(l, p)| format!("{}:{p}", key(l))).collect();
    fields.push(format!("\"probabilities\":{{{}}}", all.join(",")));
    format!("{{{}}}", fields.join(","))
}

/// The predictions of `rows` (`probs[i]`: row `i`'s class probabilities, classes named by
/// `labels`) as CSV (six decimals), JSON lines or one JSON array.
pub fn render(rows: &InputRows, labels: &[String], probs: &[Vec<f32>], format: OutputFormat) -> String {
    let mut out = String::new();
    match format {
        OutputFormat::Csv => {
            let header: Vec<String> = rows
                .columns
                .iter()
                .cloned()
                .chain(prediction_columns(labels))
                .map(|c| csv_cell(&c).into_owned())
                .collect();
            let _ = writeln!(out, "{}", header.join(","));
            for (row, p) in probs.iter().enumerate() {
                let best = argmax(p);
                let mut cells: Vec<String> = rows.values[row].iter().map(|v| csv_cell(&cell(v)).into_owned()).collect();
                cells.push(csv_cell(&labels[best]).into_owned());
                cells.extend(std::iter::once(p[best]).chain(p.iter().copied()).map(|v| format!("{v:.6}")));
                let _ = writeln!(out, "{}", cells.join(","));
            }
        }
        OutputFormat::Jsonl => {
            for (row, p) in probs.iter().enumerate() {
                let _ = writeln!(out, "{}", json_object(rows, row, labels, p));
            }
        }
        OutputFormat::Json => {
            let objects: Vec<String> =
                probs.iter().enumerate().map(|(row, p)| format!("  {}", json_object(rows, row, labels, p))).collect();
            let _ = writeln!(out, "[\n{}\n]", objects.join(",\n"));
        }
    }
    out
}

/// The options of `params` (batch size, max_len, precision) for rows that are pairs or not.
fn options(params: &Params, pair: bool) -> StepResult<PredictOptions> {
    Ok(PredictOptions {
        batch_size: params.usize("batch_size")?.max(1),
        max_len: params.opt_usize("max_len")?,
        precision: crate::bert::train::precision(params)?,
        pair,
    })
}

impl Step for Predict {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        device::resolve_params(params, env)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        parse_separator(params.str("separator")?)?;
        Malformed::parse(params.str("malformed")?)?;
        if let Some(n) = params.opt_usize("max_len")? {
            if n < 2 {
                return Err(StepError::param("max_len", format!("must be at least 2 ([CLS] and [SEP]), got {n}")));
            }
        }
        crate::bert::train::precision(params)?;
        device::check(params.str("device")?)
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let params = ctx.params;
        let text_b_column = params.opt_str("text_b_column")?.filter(|s| !s.is_empty());
        let data = ctx.input("data")?;
        let table =
            Table::read(data, parse_separator(params.str("separator")?)?, Malformed::parse(params.str("malformed")?)?)?;
        if table.malformed_dropped > 0 {
            ctx.events.log(&format!("dropped {} malformed lines", table.malformed_dropped));
        }
        let rows = InputRows::from_table(&table, params.str("text_column")?, text_b_column)?;
        let source = ModelDir::resolve(ctx.opt_input("model"), params.opt_str("model")?, ctx.env)?;
        let device = device::open(params.str("device")?)?;
        let mut predictor = Predictor::load(&source, &device, options(params, text_b_column.is_some())?)?;
        check_columns(&rows.columns, &predictor.labels)?;
        let started = std::time::Instant::now();
        let probs = predictor.probabilities(&rows.a, rows.b.as_deref(), ctx.env)?;
        let seconds = started.elapsed().as_secs_f64();
        ctx.events.log(&format!(
            "{} rows, {} classes ({}), max_len {}: {:.1}s, {:.0} rows/s",
            rows.len(),
            predictor.labels.len(),
            crate::labels::quoted(&predictor.labels),
            predictor.max_len(),
            seconds,
            rows.len() as f64 / seconds.max(1e-9)
        ));
        let format = match params.str("format")? {
            "jsonl" => OutputFormat::Jsonl,
            _ => OutputFormat::Csv,
        };
        let path = ctx.output("predictions");
        fs::write(&path, render(&rows, &predictor.labels, &probs, format)).map_err(StepError::io("writing", &path))
    }
}
