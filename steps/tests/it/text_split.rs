//! The `split` step: seeded, stratified, deterministic, and clear about sets too small to split.

use std::fs;
use std::path::Path;

use crate::text_support::{message, run};
use pipe_steps::tensor_set::{TensorSet, TensorSetMeta, TOKENIZER_FILE};
use pipe_steps::text::split::{split_rows, Split};
use serde_json::json;
use tempfile::TempDir;

fn meta() -> TensorSetMeta {
    TensorSetMeta {
        max_len: 8,
        pad_id: 0,
        cls_id: 2,
        sep_id: 3,
        mask_id: Some(4),
        unk_id: Some(1),
        vocab_size: 100,
        pair: false,
        label_values: vec![0, 1],
        label_names: vec![],
        task: pipe_steps::task::Task::SingleLabel,
    }
}

/// A tensor set with `labels`, row `i` holding token `10 + i`, and a tokenizer file.
fn set_dir(labels: &[i64]) -> TempDir {
    let mut set = TensorSet::empty(meta());
    for (i, &l) in labels.iter().enumerate() {
        set.push(&[2, 10 + i as u32, 3], &[0, 0, 0], 3, l);
    }
    let dir = tempfile::tempdir().unwrap();
    set.save(dir.path()).unwrap();
    fs::write(dir.path().join(TOKENIZER_FILE), "{\"fake\": true}").unwrap();
    dir
}

fn load(out: &Path, side: &str) -> TensorSet {
    TensorSet::load(&out.join(side)).unwrap()
}

#[test]
fn splits_are_stratified_disjoint_complete_and_deterministic() {
    let labels: Vec<i64> = (0..1000).map(|i| if i % 4 == 0 { 1 } else { 0 }).collect();
    let data = set_dir(&labels);
    let out = run(&Split, json!({"valid_fraction": 0.2, "seed": 7}), &[("data", data.path())]).unwrap();
    let (train, valid) = (load(out.path(), "train"), load(out.path(), "valid"));
    assert_eq!((train.len(), valid.len()), (800, 200));
    assert_eq!(valid.labels.iter().filter(|&&l| l == 1).count(), 50, "a quarter of valid is label 1, as in the data");
    let mut tokens: Vec<u32> = train.input_ids.iter().chain(&valid.input_ids).copied().filter(|&t| t >= 10).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (10..1010).collect::<Vec<u32>>(), "every row lands on exactly one side");
    assert_eq!(train.meta, meta());
    assert_eq!(fs::read(out.path().join("valid").join(TOKENIZER_FILE)).unwrap(), b"{\"fake\": true}");
    // Rows keep their original order on each side.
    let valid_rows: Vec<u32> = (0..valid.len()).map(|i| valid.ids(i)[1]).collect();
    assert!(valid_rows.windows(2).all(|w| w[0] < w[1]));

    let again = run(&Split, json!({"valid_fraction": 0.2, "seed": 7}), &[("data", data.path())]).unwrap();
    assert_eq!(load(again.path(), "valid"), valid);
    assert_eq!(load(again.path(), "train"), train);
    let other = run(&Split, json!({"valid_fraction": 0.2, "seed": 8}), &[("data", data.path())]).unwrap();
    assert_ne!(load(other.path(), "valid"), valid);
}

#[test]
fn unstratified_split_takes_the_fraction_of_all_rows() {
    let labels: Vec<i64> = (0..101).map(|i| i64::from(i < 3)).collect();
    let (train, valid) = split_rows(&labels, 0.1, 42, false).unwrap();
    assert_eq!((train.len(), valid.len()), (91, 10));
    let (train, valid) = split_rows(&labels, 0.1, 42, true).unwrap();
    // 98 * 0.1 -> 10 of label 0; 3 * 0.1 rounds to 0 but each side gets at least one.
    assert_eq!((train.len(), valid.len()), (90, 11));
}

#[test]
fn sets_too_small_to_split_are_refused_clearly() {
    let e = run(&Split, json!({}), &[("data", set_dir(&[0]).path())]).unwrap_err();
    assert!(e.is_bad_input());
    assert!(message(&e).contains("label 0 has 1 row"), "{}", message(&e));
    let e = run(&Split, json!({}), &[("data", set_dir(&[0, 0, 0, 1]).path())]).unwrap_err();
    assert!(message(&e).contains("label 1 has 1 row"), "{}", message(&e));
    assert!(message(&e).contains("stratify: false"), "{}", message(&e));
    assert!(run(&Split, json!({"stratify": false}), &[("data", set_dir(&[0, 0, 0, 1]).path())]).is_ok());
    let e = run(&Split, json!({"stratify": false}), &[("data", set_dir(&[1]).path())]).unwrap_err();
    assert!(message(&e).contains("needs at least 2"), "{}", message(&e));
    let e = run(&Split, json!({}), &[("data", set_dir(&[]).path())]).unwrap_err();
    assert!(message(&e).contains("no rows"), "{}", message(&e));
}

#[test]
fn valid_fraction_must_be_strictly_between_0_and_1() {
    let data = set_dir(&[0, 0, 1, 1]);
    for bad in [0.0, 1.0, -0.5, 1.5] {
        let e = run(&Split, json!({"valid_fraction": bad}), &[("data", data.path())]).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("`valid_fraction`"), "{e}");
    }
}

#[test]
fn a_directory_that_is_not_a_tensor_set_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("meta.json"), "not json").unwrap();
    let e = run(&Split, json!({}), &[("data", dir.path())]).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
}
