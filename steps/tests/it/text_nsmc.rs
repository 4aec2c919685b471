//! NSMC's quirks: every row of both files comes through with its text unchanged (raw `"` runs,
//! empty documents), and the whole test file tokenizes into a consistent tensor set.

use std::fs;
use std::path::Path;

use crate::text_support::{minilm_dir, run};
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::text::table::{Malformed, Table};
use pipe_steps::text::Tokenize;
use serde_json::{json, Value};

/// `(id, document, label)` of every data line, split by hand on tabs.
fn by_hand(path: &Path) -> Vec<(String, String, String)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3);
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn every_row_of_both_files_comes_through_unchanged() {
    let Some(dir) = pipe_steps::shared_data::shared_path("nsmc") else { return };
    let mut empty_total = 0;
    for (file, rows, quoted) in [("ratings_train.txt", 150_000, 623), ("ratings_test.txt", 50_000, 233)] {
        let path = dir.join(file);
        let table = Table::read(&path, b'\t', Malformed::Error).unwrap();
        assert_eq!(table.len(), rows, "{file}");
        assert_eq!(table.column_names(), vec!["id", "document", "label"]);
        let docs = table.column("document", "text_column").unwrap();
        let ids = table.column("id", "id").unwrap();
        let labels = table.column("label", "label_column").unwrap();
        let expected = by_hand(&path);
        for (i, (id, doc, label)) in expected.iter().enumerate() {
            assert_eq!(&docs[i], doc, "{file} row {i}");
            assert_eq!(&ids[i], id);
            assert_eq!(&labels[i], label);
        }
        assert_eq!(docs.iter().filter(|d| d.contains('"')).count(), quoted, "{file}: documents with raw quotes");
        empty_total += docs.iter().filter(|d| d.is_empty()).count();
        assert_eq!(table.line_of(0), 2);
        assert_eq!(table.line_of(rows - 1), rows + 1);
    }
    assert_eq!(empty_total, 8, "NSMC has 8 empty documents in all");
}

#[test]
fn quote_runs_are_kept_verbatim() {
    let Some(path) = pipe_steps::shared_data::shared_path("nsmc/ratings_train.txt") else { return };
    let table = Table::read(&path, b'\t', Malformed::Error).unwrap();
    let docs = table.column("document", "text_column").unwrap();
    let wanted = "\"\"\"영화 끝나갈때쯤에 멍하다가 다보고나면 한마디 나올거임 \"\"\"\"ㅈ같다.\"\"\"\"\"\"\"";
    assert!(docs.iter().any(|d| d == wanted));
}

#[test]
fn the_whole_test_file_tokenizes_with_its_empty_rows_kept() {
    let (Some(dir), Some(model)) = (pipe_steps::shared_data::shared_path("nsmc"), minilm_dir()) else { return };
    let path = dir.join("ratings_test.txt");
    let out = run(&Tokenize, json!({"tokenizer": model.to_str().unwrap(), "max_len": 64}), &[("data", &path)]).unwrap();
    let tensors = out.path().join("tensors");
    let set = TensorSet::load(&tensors).unwrap();
    assert_eq!(set.len(), 50_000);
    assert_eq!(set.meta.label_values, vec![0, 1]);
    assert_eq!(set.labels.iter().filter(|&&l| l == 1).count(), 25_173);
    assert!(set.valid_length.iter().all(|&v| (2..=64).contains(&v)));
    assert_eq!(set.valid_length.iter().filter(|&&v| v == 2).count(), 3, "the 3 empty documents");
    let stats: Value = serde_json::from_slice(&fs::read(tensors.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rows"], 50_000);
    assert_eq!(stats["dropped"], json!({}));
    let hist_total: u64 = stats["length_histogram"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(hist_total, 50_000);
    assert!(stats["truncated"].as_u64().unwrap() > 0);

    let dropped =
        run(&Tokenize, json!({"tokenizer": model.to_str().unwrap(), "empty": "drop"}), &[("data", &path)]).unwrap();
    let stats: Value = serde_json::from_slice(&fs::read(dropped.path().join("tensors/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rows"], 49_997);
    assert_eq!(stats["dropped"], json!({"empty": 3}));
}
