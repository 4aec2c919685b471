//! Every shipped pipeline is valid: `--dry-run` parses it, checks every step's parameters and
//! references and decides, without network or training. (`nsmc-mbert.yaml` needs the hub and
//! a GPU to run, `nsmc.yaml` an hour; `nsmc_tiny.rs` runs the tiny one.)


use std::path::PathBuf;

use crate::support::Project;

fn check(file: &str, steps: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines").join(file);
    let project = Project::new();
    let run = project.run(&["run", &path.display().to_string(), "--dry-run", "--json"]).expect_code(0);
    let names: Vec<String> = run
        .statuses()
        .into_iter()
        .map(|(name, status)| {
            assert_eq!(status, "would-run", "{file}: {name}");
            name
        })
        .collect();
    assert_eq!(names, steps, "{file}");
    assert!(project.entries().is_empty(), "a dry run writes nothing");
}

#[test]
fn nsmc_validates() {
    check(
        "nsmc.yaml",
        &[
            "train_raw",
            "test_raw",
            "vocab",
            "encode_train",
            "encode_test",
            "split",
            "pretrain",
            "finetune",
            "evaluate",
            "report",
        ],
    );
}

#[test]
fn nsmc_mbert_validates() {
    check(
        "nsmc-mbert.yaml",
        &["train_raw", "test_raw", "encode_train", "encode_test", "finetune", "evaluate", "report"],
    );
}

#[test]
fn nsmc_tiny_validates() {
    check(
        "nsmc-tiny.yaml",
        &[
            "train_raw",
            "test_raw",
            "train_rows",
            "test_rows",
            "vocab",
            "encode_train",
            "encode_test",
            "split",
            "pretrain",
            "finetune",
            "evaluate",
            "report",
        ],
    );
}
