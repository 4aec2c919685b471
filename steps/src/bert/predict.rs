//! The `predict` step kind: a fine-tuned model and an unlabelled table → one row per input row
//! with its own columns (an `id` passes through) and the model's predictions, as CSV or JSONL.
//! The table is read as every table kind reads one ([`Table::open`]: CSV, TSV, JSON Lines,
//! Parquet, gzipped or not, `format`/`quoting`/`separator`); `output_format` is the
//! predictions'. The scoring is [`super::predictor::Predictor`]'s, shared with `pipe
//! predict`; so is the output form ([`render`]).
//!
//! Output columns after the input's, by the model's task ([`crate::task`]):
//! - single_label: `predicted` (the class name of the highest probability, the lower class on
//!   ties), `probability` (its probability) and one `p_<name>` per class in class order (CSV),
//!   or `probabilities: {name: p}` (JSONL);
//! - multi_label: `predicted` (a JSON list of the classes whose probability is at least
//!   `threshold`, in class order; absent: the model's stored threshold, see [`crate::task`])
//!   and every class's probability as above;
//! - regression: `predicted`, the value.
//!
//! An input column of one of those names is an error rather than silently overwritten.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use serde_json::Value;

use super::device;
use super::model_dir::ModelDir;
use super::predictor::{PredictOptions, Predictor};
use crate::error::{StepError, StepResult};
use crate::predictions::{argmax, csv_cell, over_threshold};
use crate::step::{
    Default, Environment, InputSource, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};
use crate::task::{given_threshold, Task, DEFAULT_THRESHOLD, MODEL_THRESHOLD_PARAM};
use crate::text::table::{
    resolve_formats, validate_params, Format, Reading, Table, FORMAT_PARAM, QUOTING_PARAM, SEPARATOR_PARAM,
};

pub struct Predict;

static SPEC: StepSpec = StepSpec {
    kind: "predict",
    all_cores: true,
    // 2: the input is read by `Table::open` (`format` is the input's, as in every table kind;
    // the predictions' is `output_format`); multi-label and regression models.
    version: 2,
    summary: "run a fine-tuned model on raw text: the predicted label(s) or value, and every class's probability",
    params: &[
        ParamSpec::optional(
            "model",
            ParamType::PathOrHubId,
            Default::Absent,
            "a fine-tuned model directory or hub id (else the `model` input)",
        ),
        ParamSpec::optional("text_column", ParamType::Str, Default::Str("document"), "column of the (first) text"),
        ParamSpec::optional("text_b_column", ParamType::Str, Default::Absent, "column of the second text, for pairs"),
        FORMAT_PARAM,
        QUOTING_PARAM,
        SEPARATOR_PARAM,
        ParamSpec::optional(
            "malformed",
            ParamType::Choice(&["drop", "error"]),
            Default::Str("error"),
            "lines with the wrong number of fields: drop or fail",
        ),
        ParamSpec::optional(
            "output_format",
            ParamType::Choice(&["csv", "jsonl"]),
            Default::Str("csv"),
            "the predictions file: CSV (p_<label> columns) or JSON lines (a `probabilities` object)",
        ),
        MODEL_THRESHOLD_PARAM,
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
    reported: &[],
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

/// A model's outputs for some rows, with what names and reads them.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub task: Task,
    /// The class names (a regression model's one name).
    pub labels: &'a [String],
    /// Multi-label: the probability from which a class is predicted.
    pub threshold: f32,
    /// Each row's class probabilities, or its value.
    pub values: &'a [Vec<f32>],
}

impl Scored<'_> {
    /// The names of the output's own columns.
    pub fn columns(task: Task, labels: &[String]) -> Vec<String> {
        let probs = labels.iter().map(|l| format!("p_{l}"));
        match task {
            Task::SingleLabel => ["predicted", "probability"].map(String::from).into_iter().chain(probs).collect(),
            Task::MultiLabel => std::iter::once("predicted".to_string()).chain(probs).collect(),
            Task::Regression => vec!["predicted".to_string()],
        }
    }

    /// Row `row`'s output cells, numbers with `decimals` decimals; a multi-label prediction as
    /// a JSON list, or its names joined by ", " when `plain`.
    pub fn cells(&self, row: usize, decimals: usize, plain: bool) -> Vec<String> {
        let p = &self.values[row];
        let num = |v: f32| format!("{v:.decimals$}");
        match self.task {
            Task::SingleLabel => {
                let best = argmax(p);
                let mut cells = vec![self.labels[best].clone()];
                cells.extend(std::iter::once(p[best]).chain(p.iter().copied()).map(num));
                cells
            }
            Task::MultiLabel => {
                let names = over_threshold(self.labels, p, self.threshold);
                let shown = if plain { names.join(", ") } else { serde_json::to_string(&names).unwrap_or_default() };
                std::iter::once(shown).chain(p.iter().copied().map(num)).collect()
            }
            Task::Regression => vec![num(p[0])],
        }
    }

    /// Row `row`'s output fields as JSON (`"key":value`), numbers in f32's shortest form.
    fn json_fields(&self, row: usize) -> Vec<String> {
        let key = |k: &str| serde_json::to_string(k).unwrap_or_default();
        let p = &self.values[row];
        let all = || {
            let each: Vec<String> = self.labels.iter().zip(p).map(|(l, p)| format!("{}:{p}", key(l))).collect();
            format!("\"probabilities\":{{{}}}", each.join(","))
        };
        match self.task {
            Task::SingleLabel => {
                let best = argmax(p);
                vec![
                    format!("\"predicted\":{}", key(&self.labels[best])),
                    format!("\"probability\":{}", p[best]),
                    all(),
                ]
            }
            Task::MultiLabel => {
                let names = over_threshold(self.labels, p, self.threshold);
                vec![format!("\"predicted\":{}", serde_json::to_string(&names).unwrap_or_default()), all()]
            }
            Task::Regression => vec![format!("\"predicted\":{}", p[0])],
        }
    }
}

/// Checks that no input column has the name of an output column.
pub fn check_columns(columns: &[String], task: Task, labels: &[String]) -> StepResult<()> {
    let ours = Scored::columns(task, labels);
    match columns.iter().find(|c| ours.contains(c) || c.as_str() == "probabilities") {
        None => Ok(()),
        Some(c) => Err(StepError::input_with_help(
            format!("the input has a column `{c}`, which the predictions add ({})", ours.join(", ")),
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
fn json_object(rows: &InputRows, row: usize, scored: &Scored<'_>) -> String {
    let key = |k: &str| serde_json::to_string(k).unwrap_or_default();
    let mut fields: Vec<String> =
        rows.columns.iter().zip(&rows.values[row]).map(|(c, v)| format!("{}:{v}", key(c))).collect();
    fields.extend(scored.json_fields(row));
    format!("{{{}}}", fields.join(","))
}

/// The predictions of `rows` as CSV (six decimals), JSON lines or one JSON array.
pub fn render(rows: &InputRows, scored: &Scored<'_>, format: OutputFormat) -> String {
    let mut out = String::new();
    match format {
        OutputFormat::Csv => {
            let header: Vec<String> = rows
                .columns
                .iter()
                .cloned()
                .chain(Scored::columns(scored.task, scored.labels))
                .map(|c| csv_cell(&c).into_owned())
                .collect();
            let _ = writeln!(out, "{}", header.join(","));
            for row in 0..scored.values.len() {
                let mut cells: Vec<String> = rows.values[row].iter().map(|v| csv_cell(&cell(v)).into_owned()).collect();
                cells.extend(scored.cells(row, 6, false).iter().map(|c| csv_cell(c).into_owned()));
                let _ = writeln!(out, "{}", cells.join(","));
            }
        }
        OutputFormat::Jsonl => {
            for row in 0..scored.values.len() {
                let _ = writeln!(out, "{}", json_object(rows, row, scored));
            }
        }
        OutputFormat::Json => {
            let objects: Vec<String> =
                (0..scored.values.len()).map(|row| format!("  {}", json_object(rows, row, scored))).collect();
            let _ = writeln!(out, "[\n{}\n]", objects.join(",\n"));
        }
    }
    out
}

/// What `format` was before version 2, for the errors of pipelines written then.
const RENAMED: &str = "the output's format is `output_format` since version 2 of `predict`; `format` is the input \
                       table's (leave it out to tell it from the file name)";

/// The `format` parameter when it is one of the old output formats (csv, jsonl), given for
/// every input.
fn given_format(params: &Params) -> Option<&str> {
    params.opt_str("format").ok().flatten().filter(|f| ["csv", "jsonl"].contains(f))
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

    fn resolve_inputs(&self, params: &Params, sources: &BTreeMap<String, InputSource>) -> StepResult<Params> {
        if let (Some(given), Some(source)) = (given_format(params), sources.get("data")) {
            let named = source.file_name.as_deref().and_then(|n| Format::from_file_name(n).ok().flatten());
            if let Some(named) = named.filter(|&f| f.name() != given) {
                return Err(StepError::input_with_help(
                    format!(
                        "parameter `format: {given}` reads the input `data` ({}) as {given}, and its name says {}",
                        source.display,
                        named.name()
                    ),
                    RENAMED,
                ));
            }
        }
        resolve_formats(params, &["data"], sources)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        validate_params(params)?;
        if let Some(n) = params.opt_usize("max_len")? {
            if n < 2 {
                return Err(StepError::param("max_len", format!("must be at least 2 ([CLS] and [SEP]), got {n}")));
            }
        }
        given_threshold(params)?;
        crate::bert::train::precision(params)?;
        device::check(params.str("device")?)
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let params = ctx.params;
        let text_b_column = params.opt_str("text_b_column")?.filter(|s| !s.is_empty());
        let data = ctx.input("data")?;
        let source = ctx.source("data");
        let table = Table::open(data, &source, Reading::of(params, "data", &source)?).map_err(|e| {
            // An input whose name tells no format, read as a `format` that may be meant for the output.
            let unnamed = source.file_name.as_deref().is_none_or(|n| matches!(Format::from_file_name(n), Ok(None)));
            match (e, given_format(params)) {
                (StepError::Input { message, help }, Some(_)) if unnamed => {
                    let help = match help {
                        Some(h) => format!("{h}; or, if `format` was meant for the predictions: {RENAMED}"),
                        None => RENAMED.to_string(),
                    };
                    StepError::Input { message, help: Some(help) }
                }
                (e, _) => e,
            }
        })?;
        if table.malformed_dropped > 0 {
            ctx.events.log(&format!("dropped {} malformed lines", table.malformed_dropped));
        }
        let rows = InputRows::from_table(&table, params.str("text_column")?, text_b_column)?;
        let model = ModelDir::resolve(ctx.opt_input("model"), params.opt_str("model")?, ctx.env)?;
        let device = device::open(params.str("device")?)?;
        let mut predictor = Predictor::load(&model, &device, options(params, text_b_column.is_some())?)?;
        check_columns(&rows.columns, predictor.task, &predictor.labels)?;
        let started = std::time::Instant::now();
        let values = predictor.outputs(&rows.a, rows.b.as_deref(), ctx.env)?;
        let seconds = started.elapsed().as_secs_f64();
        let what = match predictor.task {
            Task::SingleLabel => format!("{} classes", predictor.labels.len()),
            Task::MultiLabel => format!("{} labels (multi_label)", predictor.labels.len()),
            Task::Regression => "regression".to_string(),
        };
        ctx.events.log(&format!(
            "{} rows, {what} ({}), max_len {}: {:.1}s, {:.0} rows/s",
            rows.len(),
            crate::labels::quoted(&predictor.labels),
            predictor.max_len(),
            seconds,
            rows.len() as f64 / seconds.max(1e-9)
        ));
        let format = match params.str("output_format")? {
            "jsonl" => OutputFormat::Jsonl,
            _ => OutputFormat::Csv,
        };
        let threshold = given_threshold(params)?.or(predictor.threshold).unwrap_or(DEFAULT_THRESHOLD);
        let scored = Scored { task: predictor.task, labels: &predictor.labels, threshold, values: &values };
        let path = ctx.output("predictions");
        fs::write(&path, render(&rows, &scored, format)).map_err(StepError::io("writing", &path))
    }
}
