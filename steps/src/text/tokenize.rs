//! The `tokenize` step kind: a table of text → a tensor set, exactly as GluonNLP's
//! `BERTSentenceTransform` (see [`super::sentence_transform`]).
//!
//! The tokenizer comes from the `tokenizer` input (the output of `train-tokenizer`, or any
//! `tokenizer.json` file or model directory) or from the `tokenizer` parameter (a local
//! `tokenizer.json`, `vocab.txt` or directory, or a hub model id); exactly one of them.
//!
//! The output directory holds the tensor set (ragged rows unless `pad`), a copy of the
//! tokenizer and `stats.json` ([`super::stats::TokenizeStats`]).
//!
//! The label column is read as `task` says ([`crate::task`]): one class name per row
//! (single_label), a JSON list of class names or names joined by `label_separator`
//! (multi_label; a list column of JSON Lines or Parquet is read as it is), or a number
//! (regression). A cell that does not read so is an error naming the table, row and column
//! (or dropped with `malformed: drop`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::encode::{preview, Encoder};
use super::source::{self, LoadedTokenizer};
use super::stats::TokenizeStats;
use super::table::{
    resolve_formats, validate_params, Malformed, Reading, Table, FORMAT_PARAM, QUOTING_PARAM, SEPARATOR_PARAM,
};
use super::{sentence_transform::SentenceTransform, thread_pool};
use crate::error::{StepError, StepResult};
use crate::labels::{self, quoted, Encoded};
use crate::step::{
    Default, Environment, InputSource, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};
use crate::task::{Task, TASK_PARAM};
use crate::tensor_set::{TensorSet, TensorSetMeta, TOKENIZER_FILE};

pub struct Tokenize;

/// Name of the statistics file beside the tensors.
pub const STATS_FILE: &str = "stats.json";

/// Rows encoded between two cancellation checks and progress updates.
const CHUNK_ROWS: usize = 32768;

static SPEC: StepSpec = StepSpec {
    kind: "tokenize",
    all_cores: true,
    version: 1,
    summary:
        "tokenize a table (CSV, TSV, JSON Lines, Parquet) into BERT inputs ([CLS] a [SEP] (b [SEP])) as a tensor set",
    params: &[
        ParamSpec::optional(
            "tokenizer",
            ParamType::PathOrHubId,
            Default::Absent,
            "tokenizer.json, vocab.txt, a model directory or a hub model id (or give the `tokenizer` input)",
        ),
        ParamSpec::optional("text_column", ParamType::Str, Default::Str("document"), "column of the (first) text"),
        ParamSpec::optional("text_b_column", ParamType::Str, Default::Absent, "column of the second text, for pairs"),
        ParamSpec::optional(
            "label_column",
            ParamType::Str,
            Default::Str("label"),
            "column of labels, integers or strings (string labels get ids in sorted order, their names kept); \
             empty string for unlabelled text (labels -1)",
        ),
        TASK_PARAM,
        ParamSpec::optional(
            "label_separator",
            ParamType::Str,
            Default::Absent,
            "multi_label: the string that joins a row's labels in one cell (e.g. \"|\"; an empty cell is no label); \
             absent: each cell is a JSON list ([\"a\", \"b\"])",
        ),
        ParamSpec::optional("max_len", ParamType::Uint, Default::Int(64), "tokens per row, [CLS] and [SEP] included"),
        ParamSpec::optional(
            "pad",
            ParamType::Bool,
            Default::Bool(false),
            "pad every row to max_len (else rows are ragged)",
        ),
        ParamSpec::optional(
            "lowercase",
            ParamType::Bool,
            Default::Absent,
            "for a vocab.txt: uncased (true) or cased (false); default from tokenizer_config.json or the vocabulary",
        ),
        FORMAT_PARAM,
        QUOTING_PARAM,
        SEPARATOR_PARAM,
        ParamSpec::optional(
            "empty",
            ParamType::Choice(&["keep", "drop", "error"]),
            Default::Str("keep"),
            "rows whose text is empty: keep ([CLS] [SEP]), drop, or fail",
        ),
        ParamSpec::optional(
            "malformed",
            ParamType::Choice(&["drop", "error"]),
            Default::Str("error"),
            "lines with the wrong number of fields or an empty label: drop or fail",
        ),
    ],
    inputs: &[
        InputSpec::required("data", "the table to tokenize"),
        InputSpec::optional("tokenizer", "a tokenizer.json (e.g. from train-tokenizer) or a model directory"),
    ],
    outputs: &[OutputSpec { name: "tensors", help: "tensor set: ids, token types, valid lengths, labels; stats.json" }],
    reported: &[],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Empty {
    Keep,
    Drop,
    Error,
}

/// The parameters, checked.
struct Settings<'a> {
    text_column: &'a str,
    text_b_column: Option<&'a str>,
    label_column: Option<&'a str>,
    task: Task,
    label_separator: Option<&'a str>,
    max_len: usize,
    pad: bool,
    empty: Empty,
    malformed: Malformed,
}

impl<'a> Settings<'a> {
    fn from(params: &'a Params) -> StepResult<Self> {
        let text_b_column = params.opt_str("text_b_column")?.filter(|s| !s.is_empty());
        let max_len = params.usize("max_len")?;
        let least = if text_b_column.is_some() { 3 } else { 2 };
        if max_len < least {
            let why = if least == 3 { "pairs need [CLS] a [SEP] b [SEP]" } else { "[CLS] and [SEP] take 2" };
            return Err(StepError::param("max_len", format!("must be at least {least} ({why}), got {max_len}")));
        }
        let empty = match params.str("empty")? {
            "keep" => Empty::Keep,
            "drop" => Empty::Drop,
            "error" => Empty::Error,
            other => return Err(StepError::param("empty", format!("must be keep, drop or error, got `{other}`"))),
        };
        let task = Task::of_params(params)?;
        let label_separator = params.opt_str("label_separator")?;
        if let Some(sep) = label_separator {
            if task != Task::MultiLabel {
                return Err(StepError::param(
                    "label_separator",
                    format!("applies to `task: multi_label` only (the task is {})", task.name()),
                ));
            }
            if sep.is_empty() {
                return Err(StepError::param("label_separator", "must not be empty"));
            }
        }
        let label_column = params.opt_str("label_column")?.filter(|s| !s.is_empty());
        if label_column.is_none() && !task.is_single_label() {
            return Err(StepError::param(
                "task",
                format!("`{}` needs a label column; `label_column` is empty (unlabelled text)", task.name()),
            ));
        }
        Ok(Settings {
            text_column: params.str("text_column")?,
            text_b_column,
            label_column,
            task,
            label_separator,
            max_len,
            pad: params.bool("pad")?,
            empty,
            malformed: Malformed::parse(params.str("malformed")?)?,
        })
    }
}

impl Step for Tokenize {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        let mut out = params.clone();
        crate::hub::pin_param(&mut out, "tokenizer", env)?;
        // Keyed as the parameter's absence: keys from before tasks existed hold.
        if params.opt_str("task")? == Some("single_label") {
            out.remove("task");
        }
        Ok(out)
    }

    fn resolve_inputs(&self, params: &Params, sources: &BTreeMap<String, InputSource>) -> StepResult<Params> {
        resolve_formats(params, &["data"], sources)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        validate_params(params)?;
        Settings::from(params).map(|_| ())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let settings = Settings::from(ctx.params)?;
        let loaded = load_tokenizer(ctx)?;
        ctx.events.log(&format!("tokenizer: {}", loaded.description));
        let mut encoder = Encoder::new(loaded.tokenizer)?;
        let ids = SpecialIds::of(&encoder, settings.pad)?;
        let transform = SentenceTransform::new(
            settings.max_len,
            settings.pad,
            settings.text_b_column.is_some(),
            ids.cls,
            ids.sep,
            ids.pad,
        )?;

        let data = ctx.input("data")?;
        let table = Table::open(data, &ctx.source("data"), Reading::of(ctx.params, "data", &ctx.source("data"))?)?;
        let mut stats = TokenizeStats::default();
        stats.add_dropped("malformed", table.malformed_dropped);
        let rows = select_rows(&table, &settings, &mut stats)?;
        if rows.a.is_empty() {
            let dropped: usize = stats.dropped.values().sum();
            return Err(StepError::input(format!(
                "{} has no rows to tokenize ({} data rows, {dropped} dropped)",
                table.name(),
                table.len() + table.malformed_dropped
            )));
        }

        let (label_values, label_names) = match (&rows.encoded, settings.task) {
            (Some(e), Task::SingleLabel) => (e.values.clone(), e.names.clone()),
            (Some(e), Task::MultiLabel) => (e.values.clone(), e.class_names()),
            (_, Task::Regression) => (Vec::new(), vec![settings.label_column.unwrap_or_default().to_string()]),
            (None, _) => (Vec::new(), Vec::new()),
        };
        if settings.task == Task::MultiLabel {
            ctx.events.log(&format!("{} labels (multi_label): {}", label_names.len(), quoted(&label_names)));
        } else if !label_names.is_empty() && settings.task.is_single_label() {
            ctx.events.log(&format!(
                "{} string labels, ids in sorted order: {}",
                label_names.len(),
                quoted(&label_names)
            ));
        }
        let meta = TensorSetMeta {
            max_len: settings.max_len,
            pad_id: ids.pad,
            cls_id: ids.cls,
            sep_id: ids.sep,
            mask_id: ids.mask,
            unk_id: ids.unk,
            vocab_size: encoder.tokenizer().get_vocab_size(true),
            pair: settings.text_b_column.is_some(),
            label_values,
            label_names,
            task: settings.task,
        };
        let width = meta.target_width();
        let mut set = TensorSet::empty(meta);
        let pool = thread_pool(ctx.env)?;
        let total = rows.a.len();
        ctx.events.progress_start("tokenize", Some(total as u64), "rows");
        let mut ids_buf = Vec::with_capacity(settings.max_len);
        let mut types_buf = Vec::with_capacity(settings.max_len);
        for start in (0..total).step_by(CHUNK_ROWS) {
            if ctx.env.is_cancelled() {
                ctx.events.progress_finish();
                return Err(StepError::Cancelled);
            }
            let end = (start + CHUNK_ROWS).min(total);
            let (a, b) = pool.install(|| -> StepResult<_> {
                let a = encoder.encode_batch(&rows.a[start..end])?;
                let b = match &rows.b {
                    Some(b) => Some(encoder.encode_batch(&b[start..end])?),
                    None => None,
                };
                Ok((a, b))
            })?;
            for (k, a_ids) in a.iter().enumerate() {
                let b_ids = b.as_ref().map(|b| b[k].as_slice());
                ids_buf.clear();
                types_buf.clear();
                let info = transform.apply_into(a_ids, b_ids, &mut ids_buf, &mut types_buf);
                let row = start + k;
                let targets = &rows.targets[row * width..(row + 1) * width];
                set.push_row(&ids_buf, &types_buf, info.valid_length, rows.labels[row], targets);
                let text_tokens = a_ids.len() + b_ids.map_or(0, <[u32]>::len);
                let unk =
                    ids.unk.map_or(0, |u| a_ids.iter().chain(b_ids.unwrap_or_default()).filter(|&&id| id == u).count());
                stats.add_row(text_tokens, unk, info.valid_length, info.truncated);
            }
            ctx.events.progress_inc((end - start) as u64);
        }
        ctx.events.progress_finish();
        stats.finish();

        let out = ctx.output("tensors");
        fs::create_dir_all(&out).map_err(StepError::io("creating", &out))?;
        set.save(&out)?;
        let tokenizer_path = out.join(TOKENIZER_FILE);
        fs::write(&tokenizer_path, &loaded.json).map_err(StepError::io("writing", &tokenizer_path))?;
        write_stats(&out, &stats)?;
        let dropped: usize = stats.dropped.values().sum();
        ctx.events.log(&format!(
            "{} rows ({} dropped, {} truncated to {}); {:.1} tokens per row before truncation, [UNK] {:.3}% of tokens",
            stats.rows,
            dropped,
            stats.truncated,
            settings.max_len,
            stats.mean_tokens,
            stats.unk_rate * 100.0
        ));
        Ok(())
    }
}

/// The token ids the transform and the tensor set need.
struct SpecialIds {
    cls: u32,
    sep: u32,
    pad: u32,
    mask: Option<u32>,
    unk: Option<u32>,
}

impl SpecialIds {
    fn of(encoder: &Encoder, pad: bool) -> StepResult<Self> {
        let tok = encoder.tokenizer();
        let need = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                StepError::input(format!(
                    "the tokenizer has no `{t}` token; tokenize builds BERT inputs ([CLS] a [SEP])"
                ))
            })
        };
        let pad_id = match tok.token_to_id("[PAD]") {
            Some(id) => id,
            None if pad => {
                return Err(StepError::input("the tokenizer has no `[PAD]` token, so `pad: true` cannot pad"))
            }
            None => 0,
        };
        Ok(SpecialIds {
            cls: need("[CLS]")?,
            sep: need("[SEP]")?,
            pad: pad_id,
            mask: tok.token_to_id("[MASK]"),
            unk: tok.token_to_id("[UNK]"),
        })
    }
}

/// The tokenizer from the input or the parameter (exactly one).
fn load_tokenizer(ctx: &StepContext<'_>) -> StepResult<LoadedTokenizer> {
    let lowercase = match ctx.params.get("lowercase") {
        Some(_) => Some(ctx.params.bool("lowercase")?),
        None => None,
    };
    match (ctx.opt_input("tokenizer"), ctx.params.opt_str("tokenizer")?) {
        (Some(_), Some(_)) => Err(StepError::param(
            "tokenizer",
            "is given twice: as the `tokenizer` input and as the `tokenizer` parameter; keep one",
        )),
        (None, None) => Err(StepError::param(
            "tokenizer",
            "is required: give the `tokenizer` input (e.g. a train-tokenizer step) or the `tokenizer` parameter \
             (tokenizer.json, vocab.txt, model directory or hub model id)",
        )),
        (Some(path), None) => source::load_path(path, lowercase),
        (None, Some(value)) => {
            let path = Path::new(value);
            if path.exists() {
                source::load_path(path, lowercase)
            } else if crate::hub::looks_like_hub_id(value) {
                source::load_hub(value, ctx.env, lowercase)
            } else {
                Err(StepError::param("tokenizer", format!("`{value}` is neither an existing path nor a hub model id")))
            }
        }
    }
}

/// The rows to tokenize: texts and labels, after empty and bad-label rows are handled.
struct Rows {
    a: Vec<String>,
    b: Option<Vec<String>>,
    /// Each row's label as stored (-1 for unlabelled text, and for multi-label and regression
    /// rows, whose labels are their targets).
    labels: Vec<i64>,
    /// The targets of multi-label (multi-hot) and regression (the value) rows, row after row.
    targets: Vec<f32>,
    /// The labels encoded ([`labels::encode`]), for labelled text (multi-label: the classes).
    encoded: Option<Encoded>,
}

/// A label cell as the task reads it.
enum Label<'a> {
    One(&'a str),
    Many(Vec<String>),
    Value(f32),
}

/// Reads one label cell (`list`: the items of a list column) for `task`, or says why it cannot.
fn read_label<'a>(
    task: Task,
    cell: &'a str,
    list: Option<&[String]>,
    separator: Option<&str>,
) -> Result<Label<'a>, String> {
    match task {
        Task::SingleLabel => {
            let label = cell.trim();
            labels::invalid(label).map_or(Ok(Label::One(label)), |why| Err(why.to_string()))
        }
        Task::Regression => match cell.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v.abs() <= f32::MAX as f64 => Ok(Label::Value(v as f32)),
            _ => Err("is not a number (task regression)".into()),
        },
        Task::MultiLabel => {
            let items: Vec<String> = match (list, separator) {
                (Some(items), _) => items.iter().map(|s| s.trim().to_string()).collect(),
                (None, Some(sep)) => {
                    cell.split(sep).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
                }
                (None, None) => match serde_json::from_str::<serde_json::Value>(cell.trim()) {
                    Ok(serde_json::Value::Array(items)) => items
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => Ok(s.trim().to_string()),
                            serde_json::Value::Number(n) => Ok(n.to_string()),
                            other => Err(format!("holds `{other}`, not a label name (task multi_label)")),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err("is not a JSON list of labels (task multi_label)".into()),
                },
            };
            if let Some(why) = items.iter().find_map(|i| labels::invalid(i)) {
                return Err(format!("holds a label that {why} (task multi_label)"));
            }
            let mut items = items;
            items.sort();
            items.dedup();
            Ok(Label::Many(items))
        }
    }
}

fn select_rows(table: &Table, s: &Settings<'_>, stats: &mut TokenizeStats) -> StepResult<Rows> {
    let a_all = table.column(s.text_column, "text_column")?;
    let b_all = match s.text_b_column {
        Some(c) => Some(table.column(c, "text_b_column")?),
        None => None,
    };
    let lists = match (s.label_column, s.task) {
        (Some(c), Task::MultiLabel) => table.lists(c, "label_column")?,
        _ => None,
    };
    let labels_all = match s.label_column {
        // A list column's cells, for messages.
        Some(_) if lists.is_some() => lists
            .as_ref()
            .map(|l| l.iter().map(|items| serde_json::to_string(items).unwrap_or_default()).collect::<Vec<_>>()),
        Some(c) => Some(table.column(c, "label_column").map_err(|e| match e {
            StepError::Input { message, .. } => StepError::input_with_help(
                message,
                "set `label_column` to one of the columns, or to \"\" for unlabelled text (labels -1)",
            ),
            other => other,
        })?),
        None => None,
    };
    let mut rows = Rows {
        a: Vec::with_capacity(a_all.len()),
        b: b_all.as_ref().map(|_| Vec::new()),
        labels: Vec::new(),
        targets: Vec::new(),
        encoded: None,
    };
    let mut read: Vec<Label<'_>> = Vec::new();
    let mut b_iter = b_all.map(Vec::into_iter);
    for (i, a) in a_all.into_iter().enumerate() {
        let b = b_iter.as_mut().and_then(Iterator::next);
        let label = match &labels_all {
            None => None,
            Some(cells) => {
                let list = lists.as_ref().map(|l| l[i].as_slice());
                match read_label(s.task, &cells[i], list, s.label_separator) {
                    Ok(label) => Some(label),
                    Err(_) if s.malformed == Malformed::Drop => {
                        stats.drop_row("bad_label");
                        continue;
                    }
                    Err(why) => {
                        let help = match s.task {
                            Task::SingleLabel => {
                                "set `malformed: drop` to skip such rows, or `label_column: \"\"` for unlabelled text"
                            }
                            Task::MultiLabel => {
                                "write each row's labels as a JSON list ([\"a\", \"b\"]) or set `label_separator` \
                                 (e.g. \"|\"); `malformed: drop` skips such rows"
                            }
                            Task::Regression => "give a number in every row; `malformed: drop` skips such rows",
                        };
                        return Err(StepError::input_with_help(
                            format!(
                                "{} {}: the label `{}` in column `{}` {why}",
                                table.name(),
                                table.at(i),
                                preview(&cells[i]),
                                s.label_column.unwrap_or_default()
                            ),
                            help,
                        ));
                    }
                }
            }
        };
        let is_empty = a.trim().is_empty() || b.as_ref().is_some_and(|b| b.trim().is_empty());
        if is_empty {
            match s.empty {
                Empty::Keep => {}
                Empty::Drop => {
                    stats.drop_row("empty");
                    continue;
                }
                Empty::Error => {
                    return Err(StepError::input_with_help(
                        format!("{} {}: the text is empty", table.name(), table.at(i)),
                        "set `empty: keep` (rows become [CLS] [SEP]) or `empty: drop`",
                    ))
                }
            }
        }
        rows.a.push(a);
        if let (Some(bs), Some(b)) = (rows.b.as_mut(), b) {
            bs.push(b);
        }
        read.extend(label);
    }
    if labels_all.is_none() {
        rows.labels = vec![-1; rows.a.len()];
        return Ok(rows);
    }
    match s.task {
        Task::SingleLabel => {
            let names: Vec<&str> =
                read.iter().filter_map(|l| if let Label::One(n) = l { Some(*n) } else { None }).collect();
            let encoded = labels::encode(&names);
            rows.labels = encoded.ids.clone();
            rows.encoded = Some(encoded);
        }
        Task::Regression => {
            rows.labels = vec![-1; rows.a.len()];
            rows.targets = read.iter().map(|l| if let Label::Value(v) = l { *v } else { 0.0 }).collect();
        }
        Task::MultiLabel => {
            let sets: Vec<&[String]> =
                read.iter().map(|l| if let Label::Many(m) = l { m.as_slice() } else { &[] }).collect();
            let all: Vec<&str> = sets.iter().flat_map(|m| m.iter().map(String::as_str)).collect();
            let encoded = labels::encode(&all);
            let classes = encoded.class_names();
            let index: std::collections::HashMap<&str, usize> =
                classes.iter().enumerate().map(|(k, n)| (n.as_str(), k)).collect();
            rows.labels = vec![-1; rows.a.len()];
            rows.targets = vec![0.0; rows.a.len() * classes.len()];
            for (row, names) in sets.iter().enumerate() {
                for n in names.iter() {
                    // Integer labels are named canonically in `classes` ("07" is class "7").
                    let k = index
                        .get(n.as_str())
                        .copied()
                        .or_else(|| n.parse::<i64>().ok().and_then(|v| index.get(v.to_string().as_str()).copied()));
                    if let Some(k) = k {
                        rows.targets[row * classes.len() + k] = 1.0;
                    }
                }
            }
            rows.encoded = Some(encoded);
        }
    }
    Ok(rows)
}

fn write_stats(dir: &Path, stats: &TokenizeStats) -> StepResult<()> {
    let path = dir.join(STATS_FILE);
    let bytes = serde_json::to_vec_pretty(stats).map_err(|e| StepError::failed(format!("serializing stats: {e}")))?;
    fs::write(&path, bytes).map_err(StepError::io("writing", &path))
}
