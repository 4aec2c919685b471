//! `pipe predict TARGET`: a fine-tuned model on raw text. TARGET is `PIPELINE.yaml:STEP`
//! (that step's cached `model` output, found as `pipe status` decides: the step must be
//! up to date in this cache), a model directory, or a hub model id. Texts come from `--input
//! FILE` (a table; its other columns are kept), `--text` (repeatable) or JSON lines on stdin
//! (objects with a `--text-column` field; other fields kept); `--text-b-column` makes pairs.
//! A table is read as the table step kinds read one, its format told by its name (.csv, .tsv,
//! .txt, .parquet, each optionally .gz; JSON lines as objects). The scoring is the `predict`
//! step kind's ([`pipe_steps::bert::predictor::Predictor`], any task: classes, multi-label
//! classes at or over `--threshold` (default: the threshold the model stores), or a value),
//! and so are the csv, jsonl and json forms; `table` is for reading in a terminal.
//!
//! Not in it: running the pipeline (a step that is not cached is an error saying so).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use pipe_steps::bert::model_dir::ModelDir;
use pipe_steps::bert::predict::{check_columns, render, InputRows, OutputFormat, Scored};
use pipe_steps::bert::predictor::{PredictOptions, Predictor};
use pipe_steps::text::table::{Reading, Table};
use pipe_steps::{Environment, InputSource, Params, StepError};
use serde_json::Value;

use crate::cache::Cache;
use crate::commands::{environment, load_pipeline, GlobalArgs};
use crate::dirty_reason::DirtyReason;
use crate::error::Error;
use crate::executor::{Executor, RunOptions};
use crate::reporter::Reporter;
use crate::run_record::RunRecord;
use crate::spec::OverrideArg;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// PIPELINE.yaml:STEP (the cached model of that step, e.g. a fine-tune), a model directory
    /// or a hub model id.
    pub target: String,
    /// A table of texts (.csv: comma separated, .jsonl/.ndjson: JSON lines, else tab
    /// separated); its other columns are kept.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    pub input: Option<PathBuf>,
    /// A text to classify (repeatable). Without --input or --text, JSON lines are read from stdin.
    #[arg(long = "text", value_name = "TEXT")]
    pub text: Vec<String>,
    /// The column (or JSON field) that holds the text.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_column: String,
    /// The column (or JSON field) of the second text, for a model trained on pairs.
    #[arg(long, value_name = "NAME", conflicts_with = "text")]
    pub text_b_column: Option<String>,
    /// A multi-label model predicts the classes whose probability is at least this (default:
    /// the model's `multi_label_threshold`, what fine-tune used, else 0.5).
    #[arg(long, value_name = "P")]
    pub threshold: Option<f32>,
    /// table (aligned, for reading), csv, jsonl (one object per line) or json (one array).
    #[arg(long, value_enum, default_value = "table")]
    pub format: PredictFormat,
    /// With PIPELINE.yaml:STEP: the step as run with this override (STEP.PARAM=VALUE).
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
    /// Rows per batch.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub batch_size: usize,
    /// Tokens per row (default: the model's model_max_length, what fine-tune trained with).
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    /// cpu, auto, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PredictFormat {
    Table,
    Csv,
    Jsonl,
    Json,
}

pub fn execute(args: &PredictArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let env = environment(global);
    let source = match pipeline_target(&args.target) {
        Some((file, step)) => ModelDir::local(&cached_model(&file, step, &args.set, global, &env)?)?,
        None => {
            if !args.set.is_empty() {
                return Err(Error::usage(
                    "--set applies to a PIPELINE.yaml:STEP target",
                    Some(format!("`{}` is a model directory or hub id; drop --set", args.target)),
                ));
            }
            ModelDir::resolve(None, Some(&args.target), &env)?
        }
    };
    let rows = read_rows(args)?;
    if rows.is_empty() {
        return Err(Error::usage(
            "no texts to predict",
            Some("give --input FILE, --text TEXT or JSON lines on stdin".into()),
        ));
    }
    if let Some(t) = args.threshold.filter(|t| !(*t > 0.0 && *t < 1.0)) {
        return Err(Error::usage(format!("--threshold must be in (0, 1), got {t}"), None));
    }
    pipe_steps::bert::device::check(&args.device)?;
    let device = pipe_steps::bert::device::open(&pipe_steps::bert::device::resolve(&args.device))?;
    let options = PredictOptions {
        batch_size: args.batch_size.max(1),
        max_len: args.max_len,
        pair: rows.b.is_some(),
        ..PredictOptions::default()
    };
    let mut predictor = Predictor::load(&source, &device, options)?;
    check_columns(&rows.columns, predictor.task, &predictor.labels)?;
    let values = predictor.outputs(&rows.a, rows.b.as_deref(), &env)?;
    let threshold = args.threshold.or(predictor.threshold).unwrap_or(pipe_steps::task::DEFAULT_THRESHOLD);
    let scored = Scored { task: predictor.task, labels: &predictor.labels, threshold, values: &values };
    let text = match args.format {
        PredictFormat::Table => table(&rows, &scored),
        PredictFormat::Csv => render(&rows, &scored, OutputFormat::Csv),
        PredictFormat::Jsonl => render(&rows, &scored, OutputFormat::Jsonl),
        PredictFormat::Json => render(&rows, &scored, OutputFormat::Json),
    };
    reporter.line(text.trim_end_matches('\n'));
    Ok(ExitCode::SUCCESS)
}

/// `PIPELINE.yaml:STEP` split in two, when TARGET has that form.
fn pipeline_target(target: &str) -> Option<(PathBuf, &str)> {
    let (file, step) = target.rsplit_once(':')?;
    (file.ends_with(".yaml") || file.ends_with(".yml")).then(|| (PathBuf::from(file), step))
}

/// The `model` output of `step` of the pipeline in `file`, when the cache holds it up to date.
fn cached_model(
    file: &Path,
    step: &str,
    set: &[OverrideArg],
    global: &GlobalArgs,
    env: &Environment,
) -> Result<PathBuf, Error> {
    let (_spec, graph) = load_pipeline(file, set)?;
    let Some(index) = graph.steps.iter().position(|s| s.name == step) else {
        let names: Vec<&str> = graph.steps.iter().map(|s| s.name.as_str()).collect();
        let hint = pipe_steps::suggest::did_you_mean(step, names.iter().copied()).unwrap_or_default();
        return Err(Error::usage(
            format!("{} has no step `{step}` {hint}", file.display()),
            Some(format!("its steps are {}", names.join(", "))),
        ));
    };
    let kind = graph.steps[index].kind.spec();
    if kind.output("model").is_none() {
        let models: Vec<&str> =
            graph.steps.iter().filter(|s| s.kind.spec().output("model").is_some()).map(|s| s.name.as_str()).collect();
        return Err(Error::usage(
            format!("step `{step}` ({}) has no `model` output to predict with", kind.kind),
            Some(format!("name a step that writes a model: {}", models.join(", "))),
        ));
    }
    let cache = Cache::at(&global.cache_dir);
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let quiet = Reporter::quiet();
    let store = crate::tiered_cache::TieredCache::new(&cache, None, &quiet);
    let executor = Executor::new(&store, &graph, env, &quiet, &history);
    let outcomes = executor.run(&RunOptions { dry_run: true, ..RunOptions::default() }, &mut |_, _| {});
    let outcome = &outcomes[index];
    match &outcome.artifact {
        Some(dir) => Ok(dir.join("model")),
        None => {
            let why: Vec<String> =
                outcome.reasons.iter().filter(|r| **r != DirtyReason::NeverRun).map(ToString::to_string).collect();
            let why = if why.is_empty() { "never run".to_string() } else { why.join("; ") };
            Err(Error::usage(
                format!("step `{step}` of {} is not cached in {} ({why})", file.display(), global.cache_dir.display()),
                Some(format!("run `pipe run {}` first", file.display())),
            ))
        }
    }
}

/// The rows from --input, --text or stdin.
fn read_rows(args: &PredictArgs) -> Result<InputRows, Error> {
    let b_column = args.text_b_column.as_deref();
    if let Some(path) = &args.input {
        let name = path.to_string_lossy().to_lowercase();
        if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::usage(format!("reading {}: {e}", path.display()), None))?;
            return json_lines(&text, &path.display().to_string(), &args.text_column, b_column);
        }
        let source = InputSource {
            display: path.display().to_string(),
            file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        };
        let reading = Reading::of(&Params::default(), "input", &source)?;
        let table = Table::open(path, &source, reading)?;
        return InputRows::from_table(&table, &args.text_column, b_column).map_err(|e| match e {
            StepError::Input { message, .. } => Error::usage(
                message
                    .replace("(parameter `text_column`)", "(--text-column)")
                    .replace("(parameter `text_b_column`)", "(--text-b-column)"),
                Some("set --text-column (and --text-b-column) to the columns of the texts".into()),
            ),
            other => Error::Step(other),
        });
    }
    if !args.text.is_empty() {
        return Ok(InputRows {
            columns: vec![args.text_column.clone()],
            values: args.text.iter().map(|t| vec![Value::String(t.clone())]).collect(),
            a: args.text.clone(),
            b: None,
        });
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::usage(
            "no texts to predict",
            Some("give --input FILE, --text TEXT, or JSON lines on stdin ({\"text\": \"...\"} per line)".into()),
        ));
    }
    let mut text = String::new();
    stdin.lock().read_to_string(&mut text).map_err(|e| Error::usage(format!("reading stdin: {e}"), None))?;
    json_lines(&text, "stdin", &args.text_column, b_column)
}

/// Rows from JSON lines: one object per line with the text in `field` (and the second text in
/// `b_field`, for pairs); the other fields kept (columns in the order first seen).
fn json_lines(text: &str, what: &str, field: &str, b_field: Option<&str>) -> Result<InputRows, Error> {
    let mut rows = InputRows { b: b_field.map(|_| Vec::new()), ..InputRows::default() };
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| {
            Error::usage(
                format!("{what} line {}: {why}", i + 1),
                Some(format!("give one JSON object per line with a `{field}` string, e.g. {{\"{field}\": \"...\"}}")),
            )
        };
        let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(object) = value else { return Err(bad("not a JSON object".into())) };
        let text_of = |field: &str| match object.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(bad(format!("`{field}` is {other}, not a string"))),
            None => Err(bad(format!("no `{field}` field"))),
        };
        rows.a.push(text_of(field)?);
        if let (Some(b_field), Some(b)) = (b_field, rows.b.as_mut()) {
            b.push(text_of(b_field)?);
        }
        for k in object.keys() {
            if !rows.columns.contains(k) {
                rows.columns.push(k.clone());
            }
        }
        objects.push(object);
    }
    rows.values = objects
        .into_iter()
        .map(|o| rows.columns.iter().map(|c| o.get(c).cloned().unwrap_or(Value::Null)).collect())
        .collect();
    Ok(rows)
}

/// Longest text shown in the table, in characters.
const PREVIEW: usize = 48;

/// An aligned table: the input's columns (texts cut to [`PREVIEW`] characters, on one line),
/// then the predictions (four decimals; a multi-label prediction's names joined by ", ").
fn table(rows: &InputRows, scored: &Scored<'_>) -> String {
    let mut header: Vec<String> = rows.columns.clone();
    header.extend(Scored::columns(scored.task, scored.labels));
    let body: Vec<Vec<String>> = (0..scored.values.len())
        .map(|row| {
            let mut cells: Vec<String> = rows.values[row]
                .iter()
                .map(|v| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                    if one_line.chars().count() > PREVIEW {
                        one_line.chars().take(PREVIEW - 1).collect::<String>() + "…"
                    } else {
                        one_line
                    }
                })
                .collect();
            cells.extend(scored.cells(row, 4, true));
            cells
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| body.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(&header) + "\n";
    out.push_str(&(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ") + "\n"));
    for r in &body {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}
