//! The per-row predictions file of a classifier (`evaluate`'s `predictions` output, and the
//! `linear` and `ensemble` step kinds'): a CSV with the header `row,label,predicted,p_<label>...`
//! and one line per evaluated row, in the evaluated table's row order. `row` counts from 0,
//! `label` is the true label's name, `predicted` the name of the class of the highest
//! probability (the lower class on ties), and the `p_<name>` columns hold the class
//! probabilities, in the classifier's class order, with six decimals. Integer labels are named
//! by their value, so their files read as before names existed; a cell with a comma or a quote
//! is quoted as RFC 4180 says (names never hold line breaks, [`crate::labels::invalid`]).
//!
//! The file carries no row ids: two files describe the same rows when their row numbers and
//! true labels agree, which is all [`Predictions::check_aligned`] can check.
//!
//! Multi-label models write `row,labels,predicted,p_<label>...` (`labels` and `predicted` JSON
//! lists of names, [`write_multi_label`]) and regression models `row,target,predicted`
//! ([`write_regression`]); [`Predictions::read`] refuses both by name: the kinds that read
//! predictions back (`ensemble`) combine single-label classifiers only.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::{CsvReadOptions, SerReader};

use crate::error::{StepError, StepResult};

/// A CSV cell: quoted (quotes doubled) when it holds a separator, a quote or a line break.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// Writes a predictions file: `labels` names the classes (the `p_` columns), `truth` is each
/// row's true label and `probs` its class probabilities (as `evaluate` computes them, `f32`).
pub fn write<S: AsRef<str>>(path: &Path, labels: &[String], truth: &[S], probs: &[Vec<f32>]) -> StepResult<()> {
    let mut csv = String::from("row,label,predicted");
    for l in labels {
        let _ = write!(csv, ",{}", csv_cell(&format!("p_{l}")));
    }
    csv.push('\n');
    for (row, (t, p)) in truth.iter().zip(probs).enumerate() {
        let _ = write!(csv, "{row},{},{}", csv_cell(t.as_ref()), csv_cell(&labels[argmax(p)]));
        for v in p {
            let _ = write!(csv, ",{v:.6}");
        }
        csv.push('\n');
    }
    fs::write(path, csv).map_err(StepError::io("writing", path))
}

/// The names of the classes whose probability is at least `threshold`, as a JSON list.
pub fn over_threshold(labels: &[String], probs: &[f32], threshold: f32) -> Vec<String> {
    labels.iter().zip(probs).filter(|(_, &p)| p >= threshold).map(|(l, _)| l.clone()).collect()
}

/// Writes a multi-label predictions file: `truth` is each row's set of labels, `probs` each
/// class's probability; `predicted` holds the classes at or over `threshold`.
pub fn write_multi_label(
    path: &Path,
    labels: &[String],
    truth: &[Vec<String>],
    probs: &[Vec<f32>],
    threshold: f32,
) -> StepResult<()> {
    let mut csv = String::from("row,labels,predicted");
    for l in labels {
        let _ = write!(csv, ",{}", csv_cell(&format!("p_{l}")));
    }
    csv.push('\n');
    let json = |names: &[String]| serde_json::to_string(names).unwrap_or_default();
    for (row, (t, p)) in truth.iter().zip(probs).enumerate() {
        let predicted = over_threshold(labels, p, threshold);
        let _ = write!(csv, "{row},{},{}", csv_cell(&json(t)), csv_cell(&json(&predicted)));
        for v in p {
            let _ = write!(csv, ",{v:.6}");
        }
        csv.push('\n');
    }
    fs::write(path, csv).map_err(StepError::io("writing", path))
}

/// Writes a regression predictions file: each row's target and predicted value.
pub fn write_regression(path: &Path, truth: &[f32], predicted: &[f32]) -> StepResult<()> {
    let mut csv = String::from("row,target,predicted\n");
    for (row, (t, p)) in truth.iter().zip(predicted).enumerate() {
        let _ = writeln!(csv, "{row},{t},{p:.6}");
    }
    fs::write(path, csv).map_err(StepError::io("writing", path))
}

/// The index of the largest value; ties go to the lower index.
pub fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

/// A predictions file read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub path: PathBuf,
    /// The class names of the `p_` columns, in column order.
    pub labels: Vec<String>,
    /// The true label of each row.
    pub truth: Vec<String>,
    /// The `predicted` column.
    pub predicted: Vec<String>,
    /// The class probabilities of each row (in `labels` order).
    pub probs: Vec<Vec<f64>>,
}

impl Predictions {
    /// Reads a predictions file; `what` names it in errors (e.g. "input `valid_a`").
    pub fn read(path: &Path, what: &str) -> StepResult<Predictions> {
        let bytes = fs::read(path).map_err(StepError::io("reading", path))?;
        let bad = |line: usize, why: String| {
            StepError::input_with_help(
                format!("{what} ({}) line {line}: {why}", path.display()),
                "give the `predictions` (or `valid_predictions`) output of `evaluate`, `linear` or `ensemble`",
            )
        };
        // Every cell as text (quoted cells unquoted); the rows never span lines.
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
            .map_err(|e| bad(1, format!("not a CSV file: {e}")))?;
        // polars strips a quoted header's outer quotes but keeps its doubled ones.
        let raw: Vec<String> = df.get_column_names().into_iter().map(|n| n.to_string()).collect();
        let header: Vec<String> = raw.iter().map(|n| n.replace("\"\"", "\"")).collect();
        let task = match header.get(1).map(String::as_str) {
            Some("labels") => Some("multi_label"),
            Some("target") => Some("regression"),
            _ => None,
        };
        if let (Some(task), Some("row")) = (task, header.first().map(String::as_str)) {
            return Err(StepError::input_with_help(
                format!("{what} ({}) holds the predictions of a `{task}` model", path.display()),
                "ensemble combines single-label classifiers (N classes) only; it does not support multi_label or \
                 regression models",
            ));
        }
        if header.len() < 5 || header[..3] != ["row", "label", "predicted"] {
            return Err(bad(
                1,
                format!("the header is not `row,label,predicted,p_<label>,...`: `{}`", header.join(",")),
            ));
        }
        let labels = header[3..]
            .iter()
            .map(|h| h.strip_prefix("p_").filter(|l| !l.is_empty()).map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| bad(1, format!("class columns must be `p_<label>`: `{}`", header[3..].join(","))))?;
        let mut columns = Vec::with_capacity(header.len());
        for (name, raw) in header.iter().zip(&raw) {
            let column =
                df.column(raw).and_then(|c| c.str().cloned()).map_err(|e| bad(1, format!("column `{name}`: {e}")))?;
            columns.push(column);
        }
        let cell = |k: usize, i: usize| columns[k].get(i).unwrap_or_default();
        let mut out = Predictions {
            path: path.to_path_buf(),
            labels,
            truth: Vec::new(),
            predicted: Vec::new(),
            probs: Vec::new(),
        };
        for i in 0..df.height() {
            let line_no = i + 2;
            if cell(0, i).parse::<usize>().ok() != Some(i) {
                return Err(bad(line_no, format!("row number {} where {i} was expected", cell(0, i))));
            }
            out.truth.push(cell(1, i).to_string());
            out.predicted.push(cell(2, i).to_string());
            let probs = (3..header.len())
                .map(|k| cell(k, i).parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)))
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| bad(line_no, "class probabilities must be numbers between 0 and 1".into()))?;
            out.probs.push(probs);
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.truth.len()
    }

    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }

    /// The share of rows whose `predicted` equals their label.
    pub fn accuracy(&self) -> f64 {
        let right = self.truth.iter().zip(&self.predicted).filter(|(t, p)| t == p).count();
        right as f64 / self.len().max(1) as f64
    }

    /// Checks that `other` describes the same rows with the same classes: the same labels, row
    /// count and true label on every row. `what`/`other_what` name the two in the error.
    pub fn check_aligned(&self, what: &str, other: &Predictions, other_what: &str) -> StepResult<()> {
        let help = "give every member's predictions of the same table (the same validation rows, the same test rows)";
        if self.labels != other.labels {
            return Err(StepError::input_with_help(
                format!("{other_what} has classes {:?}, {what} has {:?}", other.labels, self.labels),
                help,
            ));
        }
        if self.len() != other.len() {
            return Err(StepError::input_with_help(
                format!("{other_what} has {} rows, {what} has {}", other.len(), self.len()),
                help,
            ));
        }
        if let Some(row) = (0..self.len()).find(|&r| self.truth[r] != other.truth[r]) {
            return Err(StepError::input_with_help(
                format!(
                    "{other_what} and {what} disagree on the true label of row {row} (`{}` vs `{}`): not the same rows",
                    other.truth[row], self.truth[row]
                ),
                help,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let labels = ["0".to_string(), "1".to_string()];
        write(&path, &labels, &["1", "0", "1"], &[vec![0.25, 0.75], vec![0.5, 0.5], vec![0.9, 0.1]]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "row,label,predicted,p_0,p_1\n0,1,1,0.250000,0.750000\n1,0,0,0.500000,0.500000\n2,1,0,0.900000,0.100000\n"
        );
        let p = Predictions::read(&path, "input `x`").unwrap();
        assert_eq!(
            (p.labels.clone(), p.truth.clone(), p.predicted.clone()),
            (s(&["0", "1"]), s(&["1", "0", "1"]), s(&["1", "0", "0"]))
        );
        assert_eq!(p.probs[0], vec![0.25, 0.75]);
        assert!((p.accuracy() - 2.0 / 3.0).abs() < 1e-12);
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_with_commas_and_quotes_are_quoted_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let labels = s(&["arts, culture", "say \"hi\""]);
        write(&path, &labels, &["say \"hi\""], &[vec![0.75, 0.25]]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "row,label,predicted,\"p_arts, culture\",\"p_say \"\"hi\"\"\"\n0,\"say \"\"hi\"\"\",\"arts, culture\",0.750000,0.250000\n"
        );
        let p = Predictions::read(&path, "input `x`").unwrap();
        assert_eq!((p.labels, p.truth, p.predicted), (labels.clone(), s(&["say \"hi\""]), s(&["arts, culture"])));
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        for (text, wanted) in [
            ("id,document,label\n1,a,0\n", "the header is not"),
            ("row,label,predicted,p_0,x\n", "class columns must be"),
            ("row,label,predicted,p_0,p_1\n1,1,1,0.2,0.8\n", "row number 1 where 0 was expected"),
            ("row,label,predicted,p_0,p_1\n0,1,1,0.2,1.8\n", "between 0 and 1"),
        ] {
            fs::write(&path, text).unwrap();
            let e = Predictions::read(&path, "input `valid_a`").unwrap_err().to_string();
            assert!(e.contains(wanted) && e.contains("input `valid_a`"), "{e}");
        }
    }
}
