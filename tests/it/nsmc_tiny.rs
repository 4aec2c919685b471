//! The shipped `pipelines/nsmc-tiny.yaml` end to end through the real binary, against the
//! published NSMC files in `../shared/nsmc` (via `--mirror`): a run, a rerun with another
//! learning rate that reuses everything up to fine-tuning, and `pipe report` comparing the two.

use std::path::PathBuf;

use crate::support::{settings, Project};
use pipe_steps::shared_data::shared_path;

fn pipeline() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/nsmc-tiny.yaml").display().to_string()
}

const UPSTREAM: &[&str] =
    &["train_raw", "test_raw", "train_rows", "test_rows", "vocab", "encode_train", "encode_test", "split", "pretrain"];
const DOWNSTREAM: &[&str] = &["finetune", "evaluate", "report"];

#[test]
fn tiny_pipeline_runs_reuses_upstream_steps_and_reports_the_comparison() {
    let Some(mirror) = shared_path("nsmc") else { return };
    let mirror = mirror.display().to_string();
    let project = Project::new();
    let file = pipeline();

    let first = project.run(&["run", &file, "--mirror", &mirror, "--json"]).expect_code(0);
    for (name, status) in first.statuses() {
        assert_eq!(status, "ran", "first run: step {name}");
    }

    // One step at a time: the snapshot's lines in file order (with more, evaluate_valid and
    // report may finish in either order).
    let second =
        project.run(&["run", &file, "--mirror", &mirror, "--set", "finetune.lr=3e-4", "--jobs", "1"]).expect_code(0);
    let mut s = settings(Some(&project));
    s.add_filter(&regex_escape_path(&file), "[PIPELINE]");
    s.add_filter(&regex_escape_path(&mirror), "[MIRROR]");
    let json = project.run(&["run", &file, "--mirror", &mirror, "--set", "finetune.lr=3e-4", "--json"]).expect_code(0);
    for (name, status) in json.statuses() {
        assert_eq!(status, "cached", "an identical rerun reuses every step, {name} did not");
    }
    for step in UPSTREAM {
        assert!(
            second.stdout.lines().any(|l| l.contains(&format!(" {step} ")) && l.contains("cached")),
            "{step} should be cached after changing finetune.lr:\n{}",
            second.stdout
        );
    }
    for step in DOWNSTREAM {
        assert!(
            second.stdout.lines().any(|l| l.contains(&format!(" {step} ")) && l.contains("done in")),
            "{step} should run again after changing finetune.lr:\n{}",
            second.stdout
        );
    }
    s.bind(|| insta::assert_snapshot!("rerun_with_other_lr", summary_lines(&second.stdout)));

    let report = project.run(&["report", "--format", "json"]).expect_code(0).json();
    assert_eq!(report["pipeline"], "nsmc-tiny");
    let epochs = report["latest"]["training"]["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 3, "nsmc-tiny trains 3 epochs");
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i + 1);
        let acc = e["test_accuracy"].as_f64().expect("test accuracy per epoch");
        assert!((0.0..=1.0).contains(&acc));
    }
    // The reported epoch is chosen by validation accuracy (the earliest best), never by test.
    let valid: Vec<f64> = epochs.iter().map(|e| e["valid_accuracy"].as_f64().expect("valid accuracy")).collect();
    let best_valid = (0..valid.len()).fold(0, |b, i| if valid[i] > valid[b] { i } else { b }) + 1;
    assert_eq!(report["latest"]["chosen"], serde_json::json!({"epoch": best_valid, "by": "valid_accuracy"}));
    let runs = report["comparison"].as_array().expect("comparison");
    assert_eq!(runs.len(), 2, "two learning rates compared: {report:#}");
    let lrs: Vec<&str> = runs.iter().map(|r| r["params"]["finetune.lr"].as_str().unwrap_or("?")).collect();
    assert_eq!(lrs, ["0.0005", "0.0003"]);
    assert_eq!(report["latest"]["params"]["finetune.lr"], "0.0003");
    let evaluation = &report["latest"]["evaluation"];
    assert_eq!(evaluation["rows"], 1000);
    let confusion: u64 = evaluation["confusion"]
        .as_array()
        .expect("confusion")
        .iter()
        .flat_map(|r| r.as_array().cloned().unwrap_or_default())
        .map(|v| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(confusion, 1000, "the confusion matrix counts every test row");

    let table = project.run(&["report"]).expect_code(0).stdout;
    assert!(table.contains("finetune.lr"), "comparison has the differing parameter as a column:\n{table}");
    assert!(table.contains("macro F1"), "final evaluation is shown:\n{table}");
    assert!(
        table.contains("chosen epoch  chosen by") && table.contains("test accuracy is shown, never used to choose"),
        "the comparison says how its epoch was chosen:\n{table}"
    );

    let status = project.run(&["status", "--json"]).expect_code(0).json();
    for step in status["steps"].as_array().expect("steps") {
        assert_eq!(step["state"], "up-to-date", "{step}");
    }
}

/// The step lines of a run's output (not the logs in between).
fn summary_lines(stdout: &str) -> String {
    stdout.lines().filter(|l| !l.starts_with(' ') && !l.starts_with("[Epoch")).collect::<Vec<_>>().join("\n")
}

fn regex_escape_path(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
