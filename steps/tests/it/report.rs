//! The `report` step on a run with several fine-tunes and models: every fine-tune's epochs,
//! the final evaluation and the models compared (Markdown snapshot), the inputs of versions
//! before 6, and inputs that are not metrics (bad input naming the input).

use std::fs;
use std::path::{Path, PathBuf};

use pipe_steps::report::{EpochMetrics, EvalMetrics, ReportStep, TrainingMetrics};
use pipe_steps::Reported;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::text_support::{message, run};

fn training(tests: &[f64]) -> TrainingMetrics {
    TrainingMetrics {
        epochs: tests
            .iter()
            .enumerate()
            .map(|(i, &t)| EpochMetrics {
                valid_accuracy: Some(t - 0.01),
                test_accuracy: Some(t),
                ..EpochMetrics::new(i + 1, 0.6 / (i + 1) as f64, Some(0.7 + 0.05 * i as f64), 1e-4)
            })
            .collect(),
        saved_epoch: Some(tests.len()),
        ..TrainingMetrics::default()
    }
}

fn scores(accuracy: f64) -> EvalMetrics {
    EvalMetrics {
        rows: 100,
        accuracy,
        loss: 0.4,
        labels: vec!["neg".into(), "pos".into()],
        precision: vec![accuracy, accuracy],
        recall: vec![accuracy, accuracy],
        f1: vec![accuracy, accuracy],
        macro_precision: accuracy,
        macro_recall: accuracy,
        macro_f1: accuracy,
        confusion: vec![vec![40, 10], vec![10, 40]],
        ..EvalMetrics::default()
    }
}

/// The files of a run with two fine-tunes and their evaluations, a linear baseline (with its
/// validation scores) and an ensemble (with its weights), by the report step's input names.
fn run_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let files: Vec<(&str, Reported, Value)> = vec![
        ("finetune", Reported::Training, json!(training(&[0.80, 0.84]))),
        ("evaluate", Reported::Evaluation, json!(scores(0.84))),
        ("finetune_seed2", Reported::Training, json!(training(&[0.79, 0.83]))),
        ("evaluate_seed2", Reported::Evaluation, json!(scores(0.83))),
        ("linear", Reported::Baseline, json!(scores(0.82))),
        ("linear", Reported::ValidScores, json!(scores(0.81))),
        ("ensemble", Reported::Ensemble, json!(scores(0.86))),
        (
            "ensemble",
            Reported::Weights,
            json!({"members": [{"name": "bert", "weight": 0.6}, {"name": "linear", "weight": 0.4}],
                   "valid_accuracy": 0.87}),
        ),
    ];
    files
        .into_iter()
        .map(|(step, is, value)| {
            let name = is.input_name(step);
            let path = dir.join(&name);
            fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
            (name, path)
        })
        .collect()
}

fn report(files: &[(String, PathBuf)], params: Value) -> Result<TempDir, pipe_steps::StepError> {
    let inputs: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
    run(&ReportStep, params, &inputs)
}

const STEPS: [&str; 7] =
    ["finetune", "evaluate", "finetune_seed2", "evaluate_seed2", "linear", "linear_nb", "ensemble"];

#[test]
fn the_report_names_every_fine_tune_and_compares_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let files = run_files(dir.path());
    // `linear_nb` is named but not given: a step of the list without outputs is left out.
    let out = report(&files, json!({"steps": STEPS})).unwrap();
    let md = fs::read_to_string(out.path().join("report/report.md")).unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&dir.path().display().to_string()), "[DIR]");
    settings.add_filter(r"\b[0-9a-f]{64}\b", "[HASH]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[DATE]");
    settings.bind(|| insta::assert_snapshot!("multi_model_markdown", md));

    let json: Value = serde_json::from_slice(&fs::read(out.path().join("report/report.json")).unwrap()).unwrap();
    let tunes: Vec<&str> =
        json["latest"]["fine_tunes"].as_array().unwrap().iter().map(|f| f["step"].as_str().unwrap()).collect();
    assert_eq!(tunes, ["finetune", "finetune_seed2"]);
    let models: Vec<(&str, &str, f64)> = json["latest"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_str().unwrap(), m["model"].as_str().unwrap(), m["accuracy"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        models,
        [
            ("evaluate", "evaluation", 0.84),
            ("evaluate_seed2", "evaluation", 0.83),
            ("linear", "baseline", 0.82),
            ("ensemble", "ensemble", 0.86)
        ]
    );
    assert_eq!(json["latest"]["models"][2]["valid_accuracy"], 0.81);
    assert_eq!(json["latest"]["models"][3]["valid_accuracy"], 0.87);
    assert_eq!(json["latest"]["evaluation"]["accuracy"], 0.84);
    // The HTML form has a table per fine-tune and the models compared.
    let html = fs::read_to_string(out.path().join("report/report.html")).unwrap();
    assert!(html.contains("<h3>finetune</h3>") && html.contains("<h3>finetune_seed2</h3>"), "{html}");
    assert!(html.contains("<h2>Models compared</h2>") && html.contains("linear baseline: test 0.8200"), "{html}");
}

#[test]
fn the_inputs_of_earlier_versions_still_report_one_fine_tune_and_its_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let files = run_files(dir.path());
    let path = |name: &str| files.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let old =
        [("training".to_string(), path("finetune.training")), ("evaluation".to_string(), path("evaluate.evaluation"))];
    let out = report(&old, json!({})).unwrap();
    let md = fs::read_to_string(out.path().join("report/report.md")).unwrap();
    assert!(md.contains("## Accuracy per epoch\n") && md.contains("## Final evaluation"), "{md}");
    assert!(!md.contains("Models compared"), "{md}");
    assert!(md.contains("chosen epoch 2 by validation accuracy (valid 0.8300, test 0.8400)"), "{md}");
}

#[test]
fn an_input_that_is_not_metrics_is_bad_input_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = run_files(dir.path());
    // The evaluation where the second fine-tune's metrics should be.
    let evaluation = files.iter().find(|(n, _)| n == "evaluate.evaluation").unwrap().1.clone();
    files.iter_mut().find(|(n, _)| n == "finetune_seed2.training").unwrap().1 = evaluation;
    let e = report(&files, json!({"steps": STEPS})).unwrap_err();
    assert!(e.is_bad_input(), "{e:?}");
    let text = message(&e);
    assert!(
        text.starts_with("input `finetune_seed2.training` (") && text.contains("not a fine-tune's training metrics"),
        "{text}"
    );
    // Not JSON at all.
    let table = dir.path().join("table.tsv");
    fs::write(&table, "id\tlabel\n1\t0\n").unwrap();
    let e = report(&[("training".to_string(), table)], json!({})).unwrap_err();
    assert!(e.is_bad_input() && message(&e).starts_with("input `training` ("), "{}", message(&e));
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if "\\.+*?()|[]{}^$#&-~".contains(c) { format!("\\{c}") } else { c.to_string() }).collect()
}
