//! The per-row predictions file of a classifier (`evaluate`'s `predictions` output, and the
//! `linear` and `ensemble` step kinds'): a CSV with the header `row,label,predicted,p_<label>...`
//! and one line per evaluated row, in the evaluated table's row order. `row` counts from 0,
//! `label` is the true label, `predicted` the label of the highest probability (the lower class
//! on ties), and the `p_` columns hold the class probabilities, in the classifier's label order,
//! with six decimals.
//!
//! The file carries no row ids: two files describe the same rows when their row numbers and
//! true labels agree, which is all [`Predictions::check_aligned`] can check.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{StepError, StepResult};

/// Writes a predictions file: `labels` names the classes (the `p_` columns), `truth` is each
/// row's true label and `probs` its class probabilities (as `evaluate` computes them, `f32`).
pub fn write(path: &Path, labels: &[i64], truth: &[i64], probs: &[Vec<f32>]) -> StepResult<()> {
    let mut csv = String::from("row,label,predicted");
    for l in labels {
        let _ = write!(csv, ",p_{l}");
    }
    csv.push('\n');
    for (row, (t, p)) in truth.iter().zip(probs).enumerate() {
        let _ = write!(csv, "{row},{t},{}", labels[argmax(p)]);
        for v in p {
            let _ = write!(csv, ",{v:.6}");
        }
        csv.push('\n');
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
    /// The class labels of the `p_` columns, in column order.
    pub labels: Vec<i64>,
    /// The true label of each row.
    pub truth: Vec<i64>,
    /// The `predicted` column.
    pub predicted: Vec<i64>,
    /// The class probabilities of each row (in `labels` order).
    pub probs: Vec<Vec<f64>>,
}

impl Predictions {
    /// Reads a predictions file; `what` names it in errors (e.g. "input `valid_a`").
    pub fn read(path: &Path, what: &str) -> StepResult<Predictions> {
        let text = fs::read_to_string(path).map_err(StepError::io("reading", path))?;
        let bad = |line: usize, why: String| {
            StepError::input_with_help(
                format!("{what} ({}) line {line}: {why}", path.display()),
                "give the `predictions` (or `valid_predictions`) output of `evaluate`, `linear` or `ensemble`",
            )
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        if header.len() < 5 || header[..3] != ["row", "label", "predicted"] {
            return Err(bad(
                1,
                format!("the header is not `row,label,predicted,p_<label>,...`: `{}`", header.join(",")),
            ));
        }
        let labels = header[3..]
            .iter()
            .map(|h| h.strip_prefix("p_").and_then(|l| l.parse::<i64>().ok()))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| bad(1, format!("class columns must be `p_<integer label>`: `{}`", header[3..].join(","))))?;
        let mut out = Predictions {
            path: path.to_path_buf(),
            labels,
            truth: Vec::new(),
            predicted: Vec::new(),
            probs: Vec::new(),
        };
        for (i, line) in lines.enumerate() {
            let line_no = i + 2;
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                return Err(bad(line_no, format!("{} fields, the header has {}", cells.len(), header.len())));
            }
            let int = |k: usize| {
                cells[k].parse::<i64>().map_err(|_| bad(line_no, format!("`{}` is not an integer", cells[k])))
            };
            if int(0)? != i as i64 {
                return Err(bad(line_no, format!("row number {} where {i} was expected", cells[0])));
            }
            out.truth.push(int(1)?);
            out.predicted.push(int(2)?);
            let probs = cells[3..]
                .iter()
                .map(|c| c.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)))
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
                    "{other_what} and {what} disagree on the true label of row {row} ({} vs {}): not the same rows",
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
        write(&path, &[0, 1], &[1, 0, 1], &[vec![0.25, 0.75], vec![0.5, 0.5], vec![0.9, 0.1]]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "row,label,predicted,p_0,p_1\n0,1,1,0.250000,0.750000\n1,0,0,0.500000,0.500000\n2,1,0,0.900000,0.100000\n"
        );
        let p = Predictions::read(&path, "input `x`").unwrap();
        assert_eq!(
            (p.labels.clone(), p.truth.clone(), p.predicted.clone()),
            (vec![0, 1], vec![1, 0, 1], vec![1, 0, 0])
        );
        assert_eq!(p.probs[0], vec![0.25, 0.75]);
        assert!((p.accuracy() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        for (text, wanted) in [
            ("id,document,label\n1,a,0\n", "the header is not"),
            ("row,label,predicted,p_0,p_x\n", "class columns must be"),
            ("row,label,predicted,p_0,p_1\n0,1,1,0.2\n", "line 2: 4 fields"),
            ("row,label,predicted,p_0,p_1\n1,1,1,0.2,0.8\n", "row number 1 where 0 was expected"),
            ("row,label,predicted,p_0,p_1\n0,1,1,0.2,1.8\n", "between 0 and 1"),
        ] {
            fs::write(&path, text).unwrap();
            let e = Predictions::read(&path, "input `valid_a`").unwrap_err().to_string();
            assert!(e.contains(wanted) && e.contains("input `valid_a`"), "{e}");
        }
    }
}
