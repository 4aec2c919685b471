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
            "evaluate_valid",
            "finetune_seed2",
            "evaluate_seed2",
            "evaluate_valid_seed2",
            "linear",
            "linear_nb",
            "ensemble",
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
fn nsmc_gpu_validates() {
    // `device: cuda` is checked as a value, not opened: a dry run decides without a GPU.
    check(
        "nsmc-gpu.yaml",
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
            "evaluate_valid",
            "linear",
            "ensemble",
            "report",
        ],
    );
}

/// The generic pipeline on the user's files, named with `--set` relative to the working directory.
#[test]
fn text_classification_validates() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/text-classification.yaml");
    let project = Project::new();
    project.write("reviews.csv", "text,stars\ngood,5\nbad,1\n");
    project.write("reviews_test.csv", "text,stars\nfine,5\n");
    let run = project
        .run(&[
            "run",
            &path.display().to_string(),
            "--set",
            "params.train=reviews.csv",
            "--set",
            "params.test=reviews_test.csv",
            "--set",
            "params.label_column=stars",
            "--dry-run",
            "--json",
        ])
        .expect_code(0);
    let names: Vec<String> = run.statuses().into_iter().map(|(name, _)| name).collect();
    let steps = [
        "train_raw",
        "test_raw",
        "vocab",
        "encode_train",
        "encode_test",
        "split",
        "pretrain",
        "finetune",
        "evaluate",
        "evaluate_valid",
        "linear",
        "ensemble",
        "report",
    ];
    assert_eq!(names, steps);
    assert!(project.entries().is_empty(), "a dry run writes nothing");
}

/// Pre-training must not see the rows that choose the fine-tuned epoch (validation) or measure
/// it (test), not even as unlabelled text: with `valid: split.valid`, `pretrain` reads
/// `split.train`, not the split's input.
#[test]
fn no_pipeline_pretrains_on_its_validation_or_test_rows() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut checked = 0;
    for file in ["nsmc.yaml", "nsmc-tiny.yaml", "nsmc-mbert.yaml", "nsmc-gpu.yaml", "text-classification.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let spec: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let steps = &spec["steps"];
        let input = |step: &str, name: &str| steps[step]["inputs"][name].as_str().map(str::to_string);
        let Some(pretrained_on) = input("pretrain", "data") else { continue };
        let mut forbidden: Vec<String> = input("finetune", "test").into_iter().collect();
        if let Some(valid) = input("finetune", "valid") {
            let split = valid.split('.').next().unwrap_or_default().to_string();
            forbidden.push(valid.clone());
            forbidden.extend(input(&split, "data"));
        }
        assert!(
            !forbidden.contains(&pretrained_on),
            "{file}: pretrain reads `{pretrained_on}`, a source of validation or test rows ({forbidden:?})"
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "nsmc.yaml, nsmc-tiny.yaml, nsmc-gpu.yaml and text-classification.yaml pre-train");
}
