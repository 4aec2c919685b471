//! Reading a TSV/CSV table of text with polars, quoting off.
//!
//! NSMC (and many corpora like it) was written by pandas with `QUOTE_MINIMAL` and read back with
//! `QUOTE_NONE`: documents contain raw `"` runs that are not CSV quoting. So fields are split on
//! the separator only, every column is read as text, and an empty field (which polars reads as
//! null) is the empty string. Text comes through byte for byte.
//!
//! Before polars parses the file, each line's field count is checked against the header's: a
//! *malformed* line (too few or too many separators) is reported with its line number, or
//! dropped and counted. A UTF-8 byte order mark and Windows line ends (`\r\n`) are accepted.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::{CsvReadOptions, DataFrame, SerReader};

use crate::error::{StepError, StepResult};
use crate::suggest::did_you_mean;

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

/// A table read into memory.
pub struct Table {
    path: PathBuf,
    df: DataFrame,
    /// The 1-based line number in the file of each row.
    lines: Vec<usize>,
    /// Lines dropped because their field count was wrong.
    pub malformed_dropped: usize,
}

impl Table {
    /// Reads `path` with `separator`; malformed lines are an error or dropped.
    pub fn read(path: &Path, separator: u8, malformed: Malformed) -> StepResult<Table> {
        let bytes = fs::read(path).map_err(StepError::io("reading", path))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            StepError::input_with_help(
                format!("{} is not a text table: invalid UTF-8 at byte {}", path.display(), e.valid_up_to()),
                "give a UTF-8 TSV or CSV file with a header line",
            )
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.trim().is_empty() {
            return Err(StepError::input(format!("{} is empty: a table needs a header line", path.display())));
        }
        let mut raw_lines = body.split('\n');
        // Windows line ends: the `\r` belongs to the line end, not to the last field.
        let header = raw_lines.next().unwrap_or_default().trim_end_matches('\r');
        let fields = |line: &str| memchr_count(line.as_bytes(), separator) + 1;
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
            return Err(StepError::input_with_help(
                format!(
                    "{}: line {line_no} has {n} fields, the header has {header_fields} ({} separated){more}",
                    path.display(),
                    separator_name(separator)
                ),
                "check `separator`, or set `malformed: drop` to skip such lines",
            ));
        }
        let expected_rows = lines.len();
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .map_parse_options(|o| o.with_separator(separator).with_quote_char(None))
            .into_reader_with_file_handle(Cursor::new(kept.into_bytes()))
            .finish()
            .map_err(|e| StepError::input(format!("{} could not be read as a table: {e}", path.display())))?;
        if df.height() != expected_rows {
            return Err(StepError::failed(format!(
                "{}: read {} rows, expected {expected_rows} (one per data line)",
                path.display(),
                df.height()
            )));
        }
        Ok(Table { path: path.to_path_buf(), df, lines, malformed_dropped: bad.len() })
    }

    pub fn len(&self) -> usize {
        self.df.height()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The column names in file order.
    pub fn column_names(&self) -> Vec<String> {
        self.df.get_column_names().into_iter().map(|n| n.to_string()).collect()
    }

    /// The 1-based line of row `row` in the file.
    pub fn line_of(&self, row: usize) -> usize {
        self.lines.get(row).copied().unwrap_or(0)
    }

    /// The values of column `name` (named by parameter `param` in errors), empty for nulls.
    pub fn column(&self, name: &str, param: &str) -> StepResult<Vec<String>> {
        let names = self.column_names();
        let column = self.df.column(name).map_err(|_| {
            let hint =
                did_you_mean(name, names.iter().map(String::as_str)).map(|h| format!("; {h}")).unwrap_or_default();
            StepError::input_with_help(
                format!(
                    "{} has no column `{name}` (parameter `{param}`); its columns are {}{hint}",
                    self.path.display(),
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                ),
                format!("set `{param}` to one of the columns"),
            )
        })?;
        let strings = column
            .str()
            .map_err(|e| StepError::failed(format!("{}: column `{name}` is not text: {e}", self.path.display())))?;
        Ok(strings.iter().map(|v| v.unwrap_or_default().to_string()).collect())
    }
}

fn memchr_count(haystack: &[u8], needle: u8) -> usize {
    haystack.iter().filter(|&&b| b == needle).count()
}
