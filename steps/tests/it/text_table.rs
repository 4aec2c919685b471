//! Tables as users have them: the same rows as CSV (RFC 4180, as Python's `csv` module writes
//! it), JSON Lines, Parquet and gzipped CSV give byte-identical tokenizers and tensor sets;
//! NSMC-style TSV keeps its raw quotes; errors name the user's file, the row and the column.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::text_support::{message, params};
use pipe_steps::text::table::{Format, Reading, Table};
use pipe_steps::text::train_tokenizer::TrainTokenizer;
use pipe_steps::text::Tokenize;
use pipe_steps::{Environment, InputSource, NoEvents, Step, StepContext, StepError};
use polars::prelude::{df, ParquetWriter};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The rows every format below holds: text with commas, quotes (doubled in CSV), newlines, a
/// tab, Korean and an empty text; labels 0 and 1.
fn rows() -> Vec<(i64, String, i64)> {
    vec![
        (1, "a plain review".into(), 1),
        (2, "commas, in a field, twice".into(), 0),
        (3, "she said \"wow\" and left".into(), 1),
        (4, "line one\nline two\nline three".into(), 0),
        (5, "a\ttab inside".into(), 1),
        (6, "영화 정말 재미있어요, \"최고\"".into(), 1),
        (7, String::new(), 0),
        (8, "\"quoted whole\"".into(), 0),
        (9, "ends with a comma,".into(), 1),
        (10, "trailing spaces   ".into(), 0),
    ]
}

/// The rows as Python's `csv.writer` writes them (QUOTE_MINIMAL, `\r\n` line ends), by hand.
const PYTHON_STYLE_CSV: &str = "id,text,label\r\n\
1,a plain review,1\r\n\
2,\"commas, in a field, twice\",0\r\n\
3,\"she said \"\"wow\"\" and left\",1\r\n\
4,\"line one\nline two\nline three\",0\r\n\
5,a\ttab inside,1\r\n\
6,\"영화 정말 재미있어요, \"\"최고\"\"\",1\r\n\
7,,0\r\n\
8,\"\"\"quoted whole\"\"\",0\r\n\
9,\"ends with a comma,\",1\r\n\
10,trailing spaces   ,0\r\n";

fn jsonl() -> String {
    rows().iter().map(|(id, text, label)| json!({"id": id, "text": text, "label": label}).to_string() + "\n").collect()
}

fn write_parquet(path: &Path) {
    let rows = rows();
    let mut frame = df!(
        "id" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "text" => rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        "label" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
    )
    .unwrap();
    ParquetWriter::new(fs::File::create(path).unwrap()).finish(&mut frame).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Runs `step` on `data` as the runner does: the input named by the user's file name.
fn run_named(step: &dyn Step, given: Value, data: &Path, extra: &[(&str, &Path)]) -> Result<TempDir, StepError> {
    let name = data.file_name().unwrap().to_string_lossy().into_owned();
    let mut inputs: BTreeMap<String, PathBuf> = BTreeMap::from([("data".to_string(), data.to_path_buf())]);
    let mut sources = BTreeMap::from([(
        "data".to_string(),
        InputSource { display: format!("https://example.com/{name}"), file_name: Some(name) },
    )]);
    for (k, v) in extra {
        inputs.insert(k.to_string(), v.to_path_buf());
        sources.insert(k.to_string(), InputSource::step_output("vocab", "tokenizer"));
    }
    let params = step.resolve_inputs(&params(step, given), &sources)?;
    step.validate(&params)?;
    let out = tempfile::tempdir().unwrap();
    let checkpoint = tempfile::tempdir().unwrap();
    let env = Environment { threads: 2, ..Environment::default() };
    let ctx = StepContext {
        name: "test",
        params: &params,
        inputs: &inputs,
        sources: &sources,
        out_dir: out.path(),
        checkpoint_dir: checkpoint.path(),
        env: &env,
        events: &NoEvents,
    };
    step.run(&ctx)?;
    Ok(out)
}

/// The tokenizer trained on `data` and the tensor set of `data` tokenized with it.
fn tokenized(data: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let vocab =
        run_named(&TrainTokenizer, json!({"text_column": "text", "vocab_size": 120, "min_frequency": 1}), data, &[])
            .unwrap_or_else(|e| panic!("train-tokenizer on {}: {}", data.display(), message(&e)));
    let tokenizer = vocab.path().join("tokenizer");
    let out = run_named(
        &Tokenize,
        json!({"text_column": "text", "label_column": "label", "max_len": 16}),
        data,
        &[("tokenizer", &tokenizer)],
    )
    .unwrap_or_else(|e| panic!("tokenize {}: {}", data.display(), message(&e)));
    let tensors = out.path().join("tensors");
    (
        fs::read(&tokenizer).unwrap(),
        fs::read(tensors.join("tensors.safetensors")).unwrap(),
        fs::read(tensors.join("stats.json")).unwrap(),
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn the_same_rows_in_csv_jsonl_parquet_and_gzip_give_identical_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "reviews.csv", PYTHON_STYLE_CSV.as_bytes());
    let reference = tokenized(&csv);
    let table = Table::open(
        &csv,
        &InputSource { display: "reviews.csv".into(), file_name: Some("reviews.csv".into()) },
        Reading::of(
            &params(&Tokenize, json!({})),
            "data",
            &InputSource { display: "reviews.csv".into(), file_name: Some("reviews.csv".into()) },
        )
        .unwrap(),
    )
    .unwrap();
    let texts = table.column("text", "text_column").unwrap();
    assert_eq!(texts, rows().into_iter().map(|r| r.1).collect::<Vec<_>>(), "CSV fields come through byte for byte");

    let parquet = dir.path().join("reviews.parquet");
    write_parquet(&parquet);
    let others = [
        write(dir.path(), "reviews.jsonl", jsonl().as_bytes()),
        write(dir.path(), "reviews.ndjson", jsonl().as_bytes()),
        parquet,
        write(dir.path(), "reviews.csv.gz", &gzip(PYTHON_STYLE_CSV.as_bytes())),
        write(dir.path(), "reviews.jsonl.gz", &gzip(jsonl().as_bytes())),
    ];
    for other in &others {
        let got = tokenized(other);
        assert!(got.0 == reference.0, "{}: the tokenizer differs from the CSV's", other.display());
        assert!(got.1 == reference.1, "{}: tensors.safetensors differs from the CSV's", other.display());
        assert!(got.2 == reference.2, "{}: stats.json differs from the CSV's", other.display());
    }
}

/// The Python interpreter of `PIPE_PYTHON`, if set (a notice otherwise; an error under CI).
fn python() -> Option<String> {
    match std::env::var("PIPE_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => panic!("PIPE_PYTHON is not set (CI is set, so this is an error)"),
        Err(_) => {
            eprintln!("notice: skipping the Python-written tables: set PIPE_PYTHON to a Python with pyarrow");
            None
        }
    }
}

#[test]
fn tables_written_by_python_csv_and_pyarrow_read_as_the_hand_written_csv() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rows_json = serde_json::to_string(&rows()).unwrap();
    let script = r#"
import csv, json, sys
import pyarrow as pa, pyarrow.parquet as pq
out, rows = sys.argv[1], json.loads(sys.argv[2])
with open(out + "/py.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "text", "label"])
    w.writerows(rows)
pq.write_table(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows], "label": [r[2] for r in rows]}),
               out + "/py.parquet")
"#;
    let status = Command::new(&python).args(["-c", script, dir.path().to_str().unwrap(), &rows_json]).status().unwrap();
    assert!(status.success(), "{python} could not write the tables");
    let py_csv = dir.path().join("py.csv");
    assert_eq!(fs::read_to_string(&py_csv).unwrap(), PYTHON_STYLE_CSV, "the fixture is what Python's csv writes");
    let reference = tokenized(&write(dir.path(), "hand.csv", PYTHON_STYLE_CSV.as_bytes()));
    for file in [py_csv, dir.path().join("py.parquet")] {
        let got = tokenized(&file);
        assert!(got.1 == reference.1, "{}: tensors differ from the hand-written CSV's", file.display());
    }
}

#[test]
fn nsmc_style_tsv_keeps_raw_quotes_and_a_csv_can_be_read_without_quoting() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = write(dir.path(), "ratings.txt", "id\tdocument\tlabel\n1\t\"최악\" 이라니\t0\n2\t\"\"\"\t1\n".as_bytes());
    let source = InputSource { display: "ratings.txt".into(), file_name: Some("ratings.txt".into()) };
    let reading = Reading::of(&params(&Tokenize, json!({})), "data", &source).unwrap();
    assert_eq!(reading.format, Format::Tsv);
    let table = Table::open(&tsv, &source, reading).unwrap();
    assert_eq!(table.column("document", "text_column").unwrap(), ["\"최악\" 이라니", "\"\"\""]);

    // `quoting: none` reads a .csv's quotes as text, split on commas only.
    let csv = write(dir.path(), "raw.csv", "text,label\n\"hi\" there,1\n".as_bytes());
    let source = InputSource { display: "raw.csv".into(), file_name: Some("raw.csv".into()) };
    let reading = Reading::of(&params(&Tokenize, json!({"quoting": "none"})), "data", &source).unwrap();
    let table = Table::open(&csv, &source, reading).unwrap();
    assert_eq!(table.column("text", "text_column").unwrap(), ["\"hi\" there"]);
}

#[test]
fn errors_name_the_users_file_the_row_and_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "reviews.csv", PYTHON_STYLE_CSV.as_bytes());
    let vocab =
        run_named(&TrainTokenizer, json!({"text_column": "text", "vocab_size": 120, "min_frequency": 1}), &csv, &[])
            .unwrap();
    let tokenizer = vocab.path().join("tokenizer");

    let e = run_named(&Tokenize, json!({"text_column": "txet"}), &csv, &[("tokenizer", &tokenizer)]).unwrap_err();
    let m = message(&e);
    assert!(e.is_bad_input(), "{m}");
    assert!(m.contains("https://example.com/reviews.csv has no column `txet` (parameter `text_column`)"), "{m}");
    assert!(m.contains("`id`, `text`, `label`") && m.contains("did you mean `text`?"), "{m}");
    assert!(!m.contains(&dir.path().display().to_string()), "the message names the user's file, not the cache: {m}");

    // String labels are names (steps/src/labels.rs); an empty one is an error naming file and row.
    let bad = PYTHON_STYLE_CSV.replace("\r\n7,,0\r\n", "\r\n7,,\r\n");
    let bad = write(dir.path(), "bad.csv", bad.as_bytes());
    let e = run_named(&Tokenize, json!({"text_column": "text"}), &bad, &[("tokenizer", &tokenizer)]).unwrap_err();
    let m = message(&e);
    assert!(m.contains("https://example.com/bad.csv row 7: the label `` in column `label` is empty"), "{m}");

    let e = run_named(
        &TrainTokenizer,
        json!({"text_column": "body"}),
        &write(dir.path(), "t.jsonl", jsonl().as_bytes()),
        &[],
    )
    .unwrap_err();
    assert!(message(&e).contains("https://example.com/t.jsonl has no column `body`"), "{}", message(&e));

    let e = run_named(&TrainTokenizer, json!({}), &write(dir.path(), "t.xlsx", b"x"), &[]).unwrap_err();
    let m = message(&e);
    assert!(e.is_bad_input() && m.contains("cannot tell the table format of a `.xlsx` file"), "{m}");
    assert!(m.contains("help: set `format:`"), "{m}");

    let e = run_named(
        &Tokenize,
        json!({}),
        &write(dir.path(), "broken.parquet", b"PAR1 not really"),
        &[("tokenizer", &tokenizer)],
    )
    .unwrap_err();
    assert!(message(&e).contains("https://example.com/broken.parquet could not be read as Parquet"), "{}", message(&e));
}

#[test]
fn a_format_parameter_overrides_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    // JSON Lines in a file named .txt.
    let odd = write(dir.path(), "export.txt", jsonl().as_bytes());
    let vocab = run_named(
        &TrainTokenizer,
        json!({"text_column": "text", "vocab_size": 120, "min_frequency": 1, "format": "jsonl"}),
        &odd,
        &[],
    )
    .unwrap();
    let reference = tokenized(&write(dir.path(), "reviews.csv", PYTHON_STYLE_CSV.as_bytes()));
    assert!(fs::read(vocab.path().join("tokenizer")).unwrap() == reference.0);
}
