//! Reading a table of text with polars: CSV (RFC 4180), TSV, JSON Lines and Parquet, each
//! optionally gzipped; every kind that reads a table (`sample`, `train-tokenizer`, `tokenize`,
//! `linear`) reads it here.
//!
//! The format comes from the `format` parameter, else from the input's file name
//! ([`InputSource::file_name`]: `.csv`, `.tsv`, `.txt`, `.jsonl`, `.ndjson`, `.parquet`, each
//! optionally followed by `.gz`), else it is TSV. Compression is told by the bytes (gzip's magic
//! number), not the name.
//!
//! `quoting` is RFC 4180 (a quoted field may hold separators, doubled quotes and newlines) by
//! default for CSV, and off for TSV: NSMC (and many corpora like it) was written by pandas with
//! `QUOTE_MINIMAL` and read back with `QUOTE_NONE`, so its documents contain raw `"` runs that
//! are not quoting. With quoting off, fields are split on the separator only and each line's
//! field count is checked against the header's before polars parses the file: a *malformed*
//! line (too few or too many separators) is reported with its line number, or dropped and
//! counted (`malformed: drop`). A UTF-8 byte order mark and Windows line ends are accepted.
//!
//! CSV and TSV columns are all read as text, and an empty field (which polars reads as null) is
//! the empty string, so text comes through byte for byte. JSON Lines and Parquet columns keep
//! their types; [`Table::column`] gives their values as text (`1` for the integer 1), so the
//! same rows in any format give the same strings.
//!
//! Keys: what a table reads as depends on its file name, which is not in any key. So each
//! table kind pins the format in its parameters before its key is computed
//! ([`resolve_formats`], from [`crate::Step::resolve_inputs`]), in a canonical form that leaves
//! the keys of TSV readings (NSMC's) as they were before formats existed: no `format` for TSV,
//! no `quoting` when it is the format's default.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use polars::prelude::{CsvReadOptions, DataFrame, DataType, JsonFormat, JsonReader, ParquetReader, SerReader};
use serde_json::Value;

use crate::error::{StepError, StepResult};
use crate::step::{Default, InputSource, ParamSpec, ParamType, Params};
use crate::suggest::did_you_mean;

/// The `format` parameter of every kind that reads a table.
pub const FORMAT_PARAM: ParamSpec = ParamSpec::optional(
    "format",
    ParamType::Choice(&["csv", "tsv", "jsonl", "parquet"]),
    Default::Absent,
    "table format; default from the file name (.csv, .tsv/.txt, .jsonl/.ndjson, .parquet, optionally .gz), else tsv",
);

/// The `quoting` parameter of every kind that reads a table.
pub const QUOTING_PARAM: ParamSpec = ParamSpec::optional(
    "quoting",
    ParamType::Choice(&["rfc4180", "none"]),
    Default::Absent,
    "CSV/TSV quoting: rfc4180 (quoted fields hold separators, \"\" and newlines; csv's default) or none (raw \", \
     split on the separator only; tsv's default, as NSMC needs)",
);

/// The `separator` parameter of every kind that reads a table.
pub const SEPARATOR_PARAM: ParamSpec = ParamSpec::optional(
    "separator",
    ParamType::Str,
    Default::Str("\t"),
    "field separator of a tsv table: \"\\t\" or \",\" (a csv table is comma-separated)",
);

/// What to do with a line whose field count differs from the header's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Drop,
    Error,
}

impl Malformed {
    pub fn parse(s: &str) -> StepResult<Self> {
        match s {
            "drop" => Ok(Malformed::Drop),
            "error" => Ok(Malformed::Error),
            other => Err(StepError::param("malformed", format!("must be drop or error, got `{other}`"))),
        }
    }
}

/// The field separator: a tab or a comma (also accepted as the words `tab`, `\t`, `comma`).
pub fn parse_separator(s: &str) -> StepResult<u8> {
    match s {
        "\t" | "\\t" | "tab" => Ok(b'\t'),
        "," | "comma" => Ok(b','),
        other => {
            Err(StepError::param("separator", format!("must be a tab (\"\\t\") or a comma (\",\"), got `{other}`")))
        }
    }
}

fn separator_name(sep: u8) -> &'static str {
    if sep == b'\t' {
        "tab"
    } else {
        "comma"
    }
}

/// A table's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Tsv,
    Jsonl,
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            "jsonl" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The format a file name stands for: `Ok(None)` when the name has no extension (an
    /// upstream step's output), `Err` with the extension when it is one no format has.
    pub fn from_file_name(name: &str) -> Result<Option<Format>, String> {
        let lower = name.to_ascii_lowercase();
        let stem = lower.strip_suffix(".gz").unwrap_or(&lower);
        let Some((_, ext)) = stem.rsplit_once('.') else { return Ok(None) };
        match ext {
            "csv" => Ok(Some(Format::Csv)),
            "tsv" | "txt" | "tab" => Ok(Some(Format::Tsv)),
            "jsonl" | "ndjson" => Ok(Some(Format::Jsonl)),
            "parquet" | "pq" => Ok(Some(Format::Parquet)),
            other => Err(other.to_string()),
        }
    }

    /// The format of an input read without a `format` parameter.
    fn of_source(source: &InputSource) -> StepResult<Format> {
        match source.file_name.as_deref().map(Format::from_file_name) {
            None | Some(Ok(None)) => Ok(Format::Tsv),
            Some(Ok(Some(f))) => Ok(f),
            Some(Err(ext)) => Err(StepError::input_with_help(
                format!("{}: cannot tell the table format of a `.{ext}` file", source.display),
                "set `format:` to csv, tsv, jsonl or parquet",
            )),
        }
    }

    fn default_quoting(self) -> Quoting {
        match self {
            Format::Csv => Quoting::Rfc4180,
            _ => Quoting::None,
        }
    }
}

/// Whether `"` quotes fields of a CSV/TSV table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    Rfc4180,
    None,
}

impl Quoting {
    fn parse(s: &str) -> StepResult<Quoting> {
        match s {
            "rfc4180" => Ok(Quoting::Rfc4180),
            "none" => Ok(Quoting::None),
            other => Err(StepError::param("quoting", format!("must be rfc4180 or none, got `{other}`"))),
        }
    }
}

/// How one table is read: its format and the format's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub format: Format,
    pub quoting: Quoting,
    /// The field separator of CSV (always a comma) and TSV (the `separator` parameter).
    pub separator: u8,
    pub malformed: Malformed,
}

impl Reading {
    /// How input `input`, which comes from `source`, is read under `params` (`format`,
    /// `quoting`, `separator`, `malformed`, each optional).
    pub fn of(params: &Params, input: &str, source: &InputSource) -> StepResult<Reading> {
        let format = match params.get("format") {
            None => Format::of_source(source)?,
            // Pinned per input by `resolve_formats` when a kind's inputs differ.
            Some(Value::Object(per_input)) => match per_input.get(input).and_then(Value::as_str) {
                Some(s) => parse_format(s)?,
                None => Format::of_source(source)?,
            },
            Some(_) => parse_format(params.str("format")?)?,
        };
        let quoting = match params.opt_str("quoting")? {
            Some(q) => Quoting::parse(q)?,
            None => format.default_quoting(),
        };
        let separator = match format {
            Format::Csv => b',',
            _ => params.opt_str("separator")?.map(parse_separator).transpose()?.unwrap_or(b'\t'),
        };
        let malformed = params.opt_str("malformed")?.map(Malformed::parse).transpose()?.unwrap_or(Malformed::Error);
        Ok(Reading { format, quoting, separator, malformed })
    }
}

fn parse_format(s: &str) -> StepResult<Format> {
    Format::parse(s).ok_or_else(|| StepError::param("format", format!("must be csv, tsv, jsonl or parquet, got `{s}`")))
}

/// Checks the table parameters (`format`, `quoting`, `separator`, `malformed`) alone.
pub fn validate_params(params: &Params) -> StepResult<()> {
    if let Some(f) = params.opt_str("format")? {
        parse_format(f)?;
    }
    if let Some(q) = params.opt_str("quoting")? {
        Quoting::parse(q)?;
    }
    if let Some(s) = params.opt_str("separator")? {
        parse_separator(s)?;
    }
    if let Some(m) = params.opt_str("malformed")? {
        Malformed::parse(m)?;
    }
    Ok(())
}

/// Pins how the table inputs `inputs` are read, for the key: the parameters with `format` set
/// to the format each input is read as (one name when they agree, else input → name), in a
/// canonical form that keeps the keys of TSV readings as they were: no `format` when every
/// input reads as TSV anyway, no `quoting` when it is the default of every input's format.
pub fn resolve_formats(
    params: &Params,
    inputs: &[&str],
    sources: &BTreeMap<String, InputSource>,
) -> StepResult<Params> {
    let mut out = params.clone();
    let mut formats: BTreeMap<String, Format> = BTreeMap::new();
    let mut by_name: Vec<Format> = Vec::new();
    for &input in inputs {
        let Some(source) = sources.get(input) else { continue };
        let reading = Reading::of(params, input, source)?;
        formats.insert(input.to_string(), reading.format);
        by_name.push(Format::of_source(source).unwrap_or(reading.format));
    }
    let all_tsv = formats.values().all(|&f| f == Format::Tsv);
    let first = formats.values().next().copied();
    if all_tsv && by_name.iter().all(|&f| f == Format::Tsv) {
        out.remove("format");
    } else if formats.values().all(|&f| Some(f) == first) {
        if let Some(f) = first {
            out.set("format", Value::from(f.name()));
        }
    } else {
        let per_input = formats.iter().map(|(k, f)| (k.clone(), Value::from(f.name()))).collect();
        out.set("format", Value::Object(per_input));
    }
    if let Some(q) = params.opt_str("quoting")? {
        let q = Quoting::parse(q)?;
        if formats.values().all(|f| f.default_quoting() == q) {
            out.remove("quoting");
        }
    }
    Ok(out)
}

/// A table read into memory.
pub struct Table {
    path: PathBuf,
    source: InputSource,
    reading: Reading,
    df: DataFrame,
    /// The 1-based line number in the file of each row, when rows are lines (TSV without
    /// quoting); else rows are counted.
    lines: Option<Vec<usize>>,
    /// Lines dropped because their field count was wrong.
    pub malformed_dropped: usize,
}

impl Table {
    /// Reads `path` as a TSV with `separator` and no quoting; malformed lines are an error or
    /// dropped. Messages name the path.
    pub fn read(path: &Path, separator: u8, malformed: Malformed) -> StepResult<Table> {
        let source = InputSource {
            display: path.display().to_string(),
            file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        };
        Table::open(path, &source, Reading { format: Format::Tsv, quoting: Quoting::None, separator, malformed })
    }

    /// Reads `path`, which stands for `source` in messages, as `reading` says.
    pub fn open(path: &Path, source: &InputSource, reading: Reading) -> StepResult<Table> {
        let raw = fs::read(path).map_err(StepError::io("reading", path))?;
        let bytes = gunzip(raw, &source.display)?;
        let name = &source.display;
        let (df, lines, dropped) = match (reading.format, reading.quoting) {
            (Format::Jsonl, _) => (read_jsonl(&bytes, name)?, None, 0),
            (Format::Parquet, _) => (read_parquet(bytes, name)?, None, 0),
            (_, Quoting::None) => {
                let (df, lines, dropped) = read_unquoted(&bytes, name, reading.separator, reading.malformed)?;
                (df, Some(lines), dropped)
            }
            (_, Quoting::Rfc4180) => (read_quoted(&bytes, name, reading.separator)?, None, 0),
        };
        Ok(Table { path: path.to_path_buf(), source: source.clone(), reading, df, lines, malformed_dropped: dropped })
    }

    pub fn len(&self) -> usize {
        self.df.height()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the table is in this machine's cache.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table as the user knows it (its URL or path, or the step that wrote it): what
    /// messages name.
    pub fn name(&self) -> &str {
        &self.source.display
    }

    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// The rows, as polars read them.
    pub fn frame(&self) -> &DataFrame {
        &self.df
    }

    /// The column names in file order.
    pub fn column_names(&self) -> Vec<String> {
        self.df.get_column_names().into_iter().map(|n| n.to_string()).collect()
    }

    /// The 1-based line of row `row` in the file when rows are lines, else the 1-based row.
    pub fn line_of(&self, row: usize) -> usize {
        match &self.lines {
            Some(lines) => lines.get(row).copied().unwrap_or(0),
            None => row + 1,
        }
    }

    /// Where row `row` is, for messages: `line 12` when rows are lines, `row 11` (data rows
    /// counted from 1, the header not counted) when a row may span lines or there are none.
    pub fn at(&self, row: usize) -> String {
        match &self.lines {
            Some(_) => format!("line {}", self.line_of(row)),
            None => format!("row {}", row + 1),
        }
    }

    /// The values of column `name` (named by parameter `param` in errors) as text, empty for
    /// nulls; numbers and booleans of JSON Lines and Parquet as they are written (`1`, `true`).
    pub fn column(&self, name: &str, param: &str) -> StepResult<Vec<String>> {
        let names = self.column_names();
        let column = self.df.column(name).map_err(|_| {
            let hint =
                did_you_mean(name, names.iter().map(String::as_str)).map(|h| format!("; {h}")).unwrap_or_default();
            StepError::input_with_help(
                format!(
                    "{} has no column `{name}` (parameter `{param}`); its columns are {}{hint}",
                    self.name(),
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ),
                format!("set `{param}` to one of the columns"),
            )
        })?;
        let text = match column.dtype() {
            DataType::String => column.clone(),
            dtype if dtype.is_nested() => {
                return Err(StepError::input(format!(
                    "{}: column `{name}` (parameter `{param}`) holds {} values, not text or numbers",
                    self.name(),
                    column.dtype()
                )))
            }
            _ => column.cast(&DataType::String).map_err(|e| {
                StepError::input(format!("{}: column `{name}` cannot be read as text: {e}", self.name()))
            })?,
        };
        let strings =
            text.str().map_err(|e| StepError::failed(format!("{}: column `{name}` is not text: {e}", self.name())))?;
        // Chunk by chunk through the arrow arrays: polars-core's own row iterator is dynamic
        // dispatch into code the build profile leaves unoptimised (Cargo.toml).
        let mut out = Vec::with_capacity(strings.len());
        for chunk in strings.downcast_iter() {
            out.extend(chunk.iter().map(|v| v.unwrap_or_default().to_string()));
        }
        Ok(out)
    }
}

impl Table {
    /// The values of column `name` when it holds lists (a JSON Lines array, a Parquet list):
    /// each row's items as text (null rows and items: none and empty); `None` for any other
    /// column (read it with [`Table::column`]).
    pub fn lists(&self, name: &str, param: &str) -> StepResult<Option<Vec<Vec<String>>>> {
        let Ok(column) = self.df.column(name) else { return self.column(name, param).map(|_| None) };
        if !matches!(column.dtype(), DataType::List(_)) {
            return Ok(None);
        }
        let bad = |e: polars::prelude::PolarsError| {
            StepError::input(format!("{}: column `{name}` (parameter `{param}`): {e}", self.name()))
        };
        let lists = column.list().map_err(bad)?;
        let mut out = Vec::with_capacity(lists.len());
        for i in 0..lists.len() {
            let Some(items) = lists.get_as_series(i) else {
                out.push(Vec::new());
                continue;
            };
            let text = items.cast(&DataType::String).map_err(bad)?;
            out.push(text.str().map_err(bad)?.iter().map(|v| v.unwrap_or_default().to_string()).collect());
        }
        Ok(Some(out))
    }
}

/// The bytes of a file, gunzipped when they start with gzip's magic number.
pub(crate) fn gunzip(raw: Vec<u8>, name: &str) -> StepResult<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| StepError::input(format!("{name} is not a valid gzip file: {e}")))?;
    Ok(out)
}

/// The text of a CSV/TSV/JSON Lines file: UTF-8, without a byte order mark.
fn utf8<'a>(bytes: &'a [u8], name: &str) -> StepResult<&'a str> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        StepError::input_with_help(
            format!("{name} is not a text table: invalid UTF-8 at byte {} (line {line})", e.valid_up_to()),
            "give a UTF-8 table: CSV, TSV or JSON Lines (or Parquet)",
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(StepError::input(format!("{name} is empty: a table needs a header line")));
    }
    Ok(text)
}

/// CSV/TSV with quoting off: fields split on the separator only; lines checked first.
fn read_unquoted(
    bytes: &[u8],
    name: &str,
    separator: u8,
    malformed: Malformed,
) -> StepResult<(DataFrame, Vec<usize>, usize)> {
    let text = utf8(bytes, name)?;
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut raw_lines = body.split('\n');
    // Windows line ends: the `\r` belongs to the line end, not to the last field.
    let header = raw_lines.next().unwrap_or_default().trim_end_matches('\r');
    let fields = |line: &str| line.bytes().filter(|&b| b == separator).count() + 1;
    let header_fields = fields(header);

    let mut kept = String::with_capacity(text.len());
    kept.push_str(header);
    kept.push('\n');
    let mut lines = Vec::new();
    let mut bad: Vec<(usize, usize)> = Vec::new();
    for (i, line) in raw_lines.enumerate() {
        let line_no = i + 2;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let n = fields(line);
        let blank = line.is_empty();
        if n != header_fields || (blank && header_fields > 1) {
            bad.push((line_no, n));
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
        lines.push(line_no);
    }
    if let (Malformed::Error, Some(&(line_no, n))) = (malformed, bad.first()) {
        let more = if bad.len() > 1 { format!(" ({} malformed lines in all)", bad.len()) } else { String::new() };
        let help = if separator == b',' {
            "a CSV with quoted fields needs `quoting: rfc4180` (the default for .csv files); else set `malformed: drop` \
             to skip such lines"
        } else {
            "check `separator` and `format`, or set `malformed: drop` to skip such lines"
        };
        return Err(StepError::input_with_help(
            format!(
                "{name}: line {line_no} has {n} fields, the header has {header_fields} ({} separated, quoting off){more}",
                separator_name(separator)
            ),
            help,
        ));
    }
    let expected_rows = lines.len();
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .map_parse_options(|o| o.with_separator(separator).with_quote_char(None))
        .into_reader_with_file_handle(Cursor::new(kept.into_bytes()))
        .finish()
        .map_err(|e| StepError::input(format!("{name} could not be read as a table: {e}")))?;
    if df.height() != expected_rows {
        return Err(StepError::failed(format!(
            "{name}: read {} rows, expected {expected_rows} (one per data line)",
            df.height()
        )));
    }
    Ok((df, lines, bad.len()))
}

/// CSV/TSV with RFC 4180 quoting: a quoted field may hold separators, `""` and newlines.
fn read_quoted(bytes: &[u8], name: &str, separator: u8) -> StepResult<DataFrame> {
    let text = utf8(bytes, name)?;
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .map_parse_options(|o| o.with_separator(separator).with_quote_char(Some(b'"')))
        .into_reader_with_file_handle(Cursor::new(text.as_bytes()))
        .finish()
        .map_err(|e| {
            StepError::input_with_help(
                format!("{name} could not be read as {} with quoting: {e}", format_name(separator)),
                "check `format` and `quoting` (`quoting: none` for text holding raw `\"`, as NSMC's)",
            )
        })
}

fn format_name(separator: u8) -> &'static str {
    if separator == b',' {
        "CSV"
    } else {
        "TSV"
    }
}

fn read_jsonl(bytes: &[u8], name: &str) -> StepResult<DataFrame> {
    let text = utf8(bytes, name)?;
    JsonReader::new(Cursor::new(text.as_bytes()))
        .with_json_format(JsonFormat::JsonLines)
        .infer_schema_len(None)
        .finish()
        .map_err(|e| {
            StepError::input_with_help(
                format!("{name} could not be read as JSON Lines: {e}"),
                "give one JSON object per line, the same keys in each",
            )
        })
}

fn read_parquet(bytes: Vec<u8>, name: &str) -> StepResult<DataFrame> {
    ParquetReader::new(Cursor::new(bytes))
        .finish()
        .map_err(|e| StepError::input(format!("{name} could not be read as Parquet: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str) -> InputSource {
        InputSource { display: name.to_string(), file_name: Some(name.to_string()) }
    }

    #[test]
    fn formats_come_from_file_names() {
        assert_eq!(Format::from_file_name("reviews.CSV"), Ok(Some(Format::Csv)));
        assert_eq!(Format::from_file_name("ratings_train.txt"), Ok(Some(Format::Tsv)));
        assert_eq!(Format::from_file_name("a.ndjson.gz"), Ok(Some(Format::Jsonl)));
        assert_eq!(Format::from_file_name("a.parquet"), Ok(Some(Format::Parquet)));
        assert_eq!(Format::from_file_name("file"), Ok(None));
        assert_eq!(Format::from_file_name("a.xlsx"), Err("xlsx".to_string()));
    }

    #[test]
    fn keys_of_tsv_readings_are_unchanged_and_others_are_pinned() {
        let params = Params::new(BTreeMap::from([("separator".to_string(), Value::from("\t"))]));
        let sources = |names: &[(&str, &str)]| -> BTreeMap<String, InputSource> {
            names.iter().map(|(k, v)| (k.to_string(), source(v))).collect()
        };
        let nsmc = resolve_formats(&params, &["data"], &sources(&[("data", "ratings_train.txt")])).unwrap();
        assert_eq!(nsmc, params, "a .txt table is keyed as before formats existed");
        let csv = resolve_formats(&params, &["data"], &sources(&[("data", "reviews.csv")])).unwrap();
        assert_eq!(csv.get("format"), Some(&Value::from("csv")));
        let mixed =
            resolve_formats(&params, &["train", "test"], &sources(&[("train", "a.csv"), ("test", "b.jsonl")])).unwrap();
        assert_eq!(mixed.get("format"), Some(&serde_json::json!({"train": "csv", "test": "jsonl"})));
        assert_eq!(Reading::of(&mixed, "test", &source("file")).unwrap().format, Format::Jsonl);
        // `format: tsv` on a .csv file is pinned: without it the name would say csv.
        let mut forced = params.clone();
        forced.set("format", Value::from("tsv"));
        let pinned = resolve_formats(&forced, &["data"], &sources(&[("data", "x.csv")])).unwrap();
        assert_eq!(pinned.get("format"), Some(&Value::from("tsv")));
        // The default quoting is left out of the key.
        forced.set("format", Value::from("csv"));
        forced.set("quoting", Value::from("rfc4180"));
        let canonical = resolve_formats(&forced, &["data"], &sources(&[("data", "x.csv")])).unwrap();
        assert_eq!(canonical.get("quoting"), None);
    }
}
