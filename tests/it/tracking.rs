//! `pipe run --track URI` (MLflow) and `--tensorboard DIR`: checked by reading back with the
//! tools' own Python libraries — MLflow's client against a real `mlflow server` on 127.0.0.1,
//! TensorBoard's `EventAccumulator` on the event files — and against the metrics pipe cached.
//! Tracking changes no key and a failure to track is a warning.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::http::{Behavior, Server};
use crate::support::mlflow::MlflowServer;
use crate::support::{sample_pipeline, tiny_bert_pipeline, tiny_bert_table, Project, TinyBert, TABLE};

/// A tiny BERT with a validation split, logged every 5 batches, its evaluations, the linear
/// baseline, their ensemble and a report step.
fn pipeline() -> String {
    let after = "  evaluate_valid:
    kind: evaluate
    inputs: { data: split.valid, model: finetune.model }
  linear:
    kind: linear
    inputs: { train: data, test: data }
    valid_fraction: 0.2
  ensemble:
    kind: ensemble
    inputs:
      valid_a: evaluate_valid.predictions
      test_a: evaluate.predictions
      valid_b: linear.valid_predictions
      test_b: linear.predictions
    names: [bert, linear]
  report:
    kind: report
    inputs: { training: finetune.metrics, evaluation: evaluate.metrics }
";
    tiny_bert_pipeline(&TinyBert {
        name: "tracked",
        split: true,
        epochs: 2,
        finetune: "    log_every: 5\n",
        evaluate: true,
        after,
        ..TinyBert::default()
    })
}

fn project() -> Project {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(200, 7));
    project.write("p.yaml", &pipeline());
    project
}

/// The run records, oldest first.
fn records(project: &Project) -> Vec<Value> {
    let mut paths: Vec<_> = fs::read_dir(project.cache().join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap()).collect()
}

/// Step `name` of a run record.
fn step<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

/// Output `output` (JSON) of step `name` of a run record, from the cache.
fn output(project: &Project, record: &Value, name: &str, output: &str) -> Value {
    let path = project.output(step(record, name)["key"].as_str().unwrap(), output);
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

const READ_RUNS: &str = r#"
exp = client.get_experiment_by_name(sys.argv[1] if len(sys.argv) > 1 else "tracked")
runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
result = []
for r in runs:
    history = {}
    for key in r.data.metrics:
        history[key] = [[m.step, m.value] for m in client.get_metric_history(r.info.run_id, key)]
    path = client.download_artifacts(r.info.run_id, "report/report.html", out)
    result.append({
        "id": r.info.run_id,
        "name": r.info.run_name,
        "status": r.info.status,
        "tags": {k: v for k, v in r.data.tags.items() if k.startswith("pipe.")},
        "params": r.data.params,
        "history": history,
        "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id, "report")),
        "report": open(path).read(),
    })
print(json.dumps(result))
"#;

/// `[[step, value], ...]` of a metric history.
fn history(run: &Value, key: &str) -> Vec<(u64, f64)> {
    run["history"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no metric {key} in {}", run["history"]))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

fn close(a: &[(u64, f64)], b: &[(u64, f64)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-6)
}

#[test]
fn mlflow_gets_a_run_per_variant_with_params_metric_histories_and_the_report() {
    let Some(server) = MlflowServer::start("mlflow_gets_a_run_per_variant_with_params_metric_histories_and_the_report")
    else {
        return;
    };
    let project = project();
    let mut cmd = project.command(&["run", "p.yaml", "--sweep", "finetune.lr=1e-3,3e-3"]);
    cmd.env("MLFLOW_TRACKING_URI", server.uri());
    let run = crate::support::Run::from(cmd.output().unwrap()).expect_code(0);
    assert_eq!(run.stderr.matches("mlflow: run ").count(), 2, "{}", run.stderr);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);

    let runs = server.query(READ_RUNS);
    let runs = runs.as_array().unwrap();
    let records = records(&project);
    assert_eq!((runs.len(), records.len()), (2, 2));
    for record in &records {
        // The variants start at the same millisecond: match them by pipe's run id.
        let tracked = runs.iter().find(|r| r["tags"]["pipe.run"] == record["id"]).expect("a run per record");
        let variant = record["variant"].as_str().unwrap();
        assert_eq!(tracked["status"], "FINISHED");
        assert_eq!(tracked["tags"]["pipe.pipeline"], "tracked");
        assert_eq!(tracked["tags"]["pipe.variant"], variant);
        assert_eq!(tracked["tags"]["pipe.run"], record["id"]);
        assert_eq!(tracked["tags"]["pipe.overrides"], format!("finetune.{variant}"));
        assert_eq!(tracked["tags"]["pipe.ensemble.members"], "bert, linear");
        // Every resolved parameter of every step, as the run record has it.
        let params: BTreeMap<String, String> = serde_json::from_value(tracked["params"].clone()).unwrap();
        assert_eq!(params["finetune.lr"], step(record, "finetune")["params"]["lr"].to_string());
        assert_eq!(params["finetune.batch_size"], "8");
        assert_eq!(params["vocab.vocab_size"], "200");
        assert_eq!(params["data.url"], step(record, "data")["params"]["url"].as_str().unwrap());
        let count: usize =
            record["steps"].as_array().unwrap().iter().map(|s| s["params"].as_object().unwrap().len()).sum();
        assert_eq!(params.len(), count);

        // The histories MLflow's client returns are the cached metrics, with their step numbers.
        let metrics = output(&project, record, "finetune", "metrics");
        let epochs = metrics["epochs"].as_array().unwrap();
        for field in ["train_loss", "train_accuracy", "valid_accuracy", "test_accuracy", "lr"] {
            let expected: Vec<(u64, f64)> =
                epochs.iter().map(|e| (e["epoch"].as_u64().unwrap(), e[field].as_f64().unwrap())).collect();
            let got = history(tracked, &format!("finetune.{field}"));
            assert!(close(&got, &expected), "finetune.{field}: {got:?} vs {expected:?}");
        }
        let batches = metrics["batches"].as_array().unwrap();
        let expected: Vec<(u64, f64)> =
            batches.iter().map(|b| (b["update"].as_u64().unwrap(), b["loss"].as_f64().unwrap())).collect();
        assert_eq!(expected.iter().map(|b| b.0).collect::<Vec<_>>(), [5, 10, 15, 20, 25, 30, 35, 40]);
        assert!(close(&history(tracked, "finetune.batch.loss"), &expected));
        let pretrain = output(&project, record, "pretrain", "metrics");
        let mlm = pretrain[0]["mlm_loss"].as_f64().unwrap();
        assert!(close(&history(tracked, "pretrain.mlm_loss"), &[(1, mlm)]));
        // The final evaluations, and the ensemble's weights.
        let eval = output(&project, record, "evaluate", "metrics");
        assert!(close(&history(tracked, "evaluate.accuracy"), &[(0, eval["accuracy"].as_f64().unwrap())]));
        assert!(close(&history(tracked, "evaluate.macro_f1"), &[(0, eval["macro_f1"].as_f64().unwrap())]));
        let linear = output(&project, record, "linear", "metrics");
        assert!(close(&history(tracked, "linear.accuracy"), &[(0, linear["accuracy"].as_f64().unwrap())]));
        let weights = output(&project, record, "ensemble", "weights");
        for m in weights["members"].as_array().unwrap() {
            let key = format!("ensemble.weight.{}", m["name"].as_str().unwrap());
            assert!(close(&history(tracked, &key), &[(0, m["weight"].as_f64().unwrap())]), "{key}");
        }
        // The report step's files, report.html byte for byte.
        let names: Vec<&str> = tracked["artifacts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(names, ["report/report.csv", "report/report.html", "report/report.json", "report/report.md"]);
        let report = project.output(step(record, "report")["key"].as_str().unwrap(), "report");
        let html = fs::read_to_string(report.join("report.html")).unwrap();
        assert_eq!(tracked["report"].as_str().unwrap(), html);
    }
    // The variants differ where they should.
    assert_ne!(history(&runs[0], "finetune.train_loss"), history(&runs[1], "finetune.train_loss"));

    // Tracking is in no key: a tracked rerun is all cached, and logs one more MLflow run.
    let mut again = project.command(&["run", "p.yaml", "--json", "--track", &server.uri(), "--experiment", "other"]);
    again.env_remove("MLFLOW_TRACKING_URI");
    let again = crate::support::Run::from(again.output().unwrap()).expect_code(0);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", again.statuses());
    let other = server.query(&READ_RUNS.replace("sys.argv[1] if len(sys.argv) > 1 else \"tracked\"", "\"other\""));
    assert_eq!(other.as_array().unwrap().len(), 1);
    assert!(other[0]["tags"].get("pipe.variant").is_none());
}

#[test]
fn tracking_failures_are_warnings_without_credentials() {
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let project = Project::new();
    project.write("p.yaml", &sample_pipeline("fast", &server.url("/data.tsv")));
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert!(first.statuses().iter().all(|(_, s)| s == "ran"));
    // Nothing listens on port 9; the credentials must appear nowhere in the output.
    let mut cmd = project.command(&["run", "p.yaml", "--json"]);
    cmd.env("MLFLOW_TRACKING_URI", "http://alice:hunter2-pw@127.0.0.1:9/")
        .env("MLFLOW_TRACKING_TOKEN", "tok-s3cret-77");
    let run = crate::support::Run::from(cmd.output().unwrap()).expect_code(0);
    assert!(run.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", run.statuses());
    assert!(run.stderr.contains("warning: mlflow: http://127.0.0.1:9: experiments/get-by-name"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("warning").count(), 1, "{}", run.stderr);
    for secret in ["hunter2", "tok-s3cret", "alice"] {
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret), "{secret} leaked:\n{}", run.stderr);
    }
    // Not a server URI: a warning too. --help does not show the variable's value.
    let mut cmd = project.command(&["run", "p.yaml", "--track", "databricks"]);
    let run = crate::support::Run::from(cmd.output().unwrap()).expect_code(0);
    assert!(run.stderr.contains("warning: the MLflow tracking URI is not a URL"), "{}", run.stderr);
    let mut help = project.command(&["run", "--help"]);
    help.env("MLFLOW_TRACKING_URI", "http://alice:hunter2-pw@127.0.0.1:9/");
    let help = crate::support::Run::from(help.output().unwrap()).expect_code(0);
    assert!(help.stdout.contains("--track <URI>") && !help.stdout.contains("hunter2"), "{}", help.stdout);
}

const READ_EVENTS: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
result = {}
for d in sys.argv[1:]:
    acc = EventAccumulator(d)
    acc.Reload()
    result[d] = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
print(json.dumps(result))
"#;

fn python() -> Option<String> {
    let python = std::env::var("PIPE_PYTHON").ok()?;
    let ok = Command::new(&python).args(["-c", "import tensorboard"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[test]
fn tensorboard_event_files_hold_the_training_curves() {
    let test = "tensorboard_event_files_hold_the_training_curves";
    let Some(python) = python() else {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: $PIPE_PYTHON with tensorboard is needed (.ci/run installs it)");
        }
        eprintln!("skipped {test}: no $PIPE_PYTHON with tensorboard (pip install tensorboard)");
        return;
    };
    let project = project();
    project.run(&["run", "p.yaml", "--tensorboard", "tb"]).expect_code(0);
    let record = records(&project).pop().unwrap();
    let run_dir = project.path().join("tb").join(record["id"].as_str().unwrap());
    let mut steps: Vec<String> =
        fs::read_dir(&run_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    steps.sort();
    assert_eq!(steps, ["finetune", "pretrain"], "the training steps only");
    let dirs = [run_dir.join("finetune"), run_dir.join("pretrain")];
    let o = Command::new(&python).arg("-c").arg(READ_EVENTS).args(&dirs).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Value = serde_json::from_slice(&o.stdout).unwrap();
    let of = |dir: &Path, tag: &str| -> Vec<(u64, f64)> {
        events[dir.display().to_string()][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {}", events[dir.display().to_string()]))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    // float32 in the files: compare to 1e-6 relative.
    let near = |a: &[(u64, f64)], b: &[(u64, f64)]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() <= 1e-6 * y.1.abs().max(1.0))
    };
    let metrics = output(&project, &record, "finetune", "metrics");
    let batches = metrics["batches"].as_array().unwrap();
    for (tag, field) in [("batch/loss", "loss"), ("batch/accuracy", "accuracy"), ("batch/lr", "lr")] {
        let expected: Vec<(u64, f64)> =
            batches.iter().map(|b| (b["update"].as_u64().unwrap(), b[field].as_f64().unwrap())).collect();
        assert!(near(&of(&dirs[0], tag), &expected), "{tag}: {:?} vs {expected:?}", of(&dirs[0], tag));
    }
    let epochs = metrics["epochs"].as_array().unwrap();
    for field in ["train_loss", "train_accuracy", "valid_accuracy", "test_accuracy", "lr"] {
        let expected: Vec<(u64, f64)> =
            epochs.iter().map(|e| (e["epoch"].as_u64().unwrap(), e[field].as_f64().unwrap())).collect();
        assert!(near(&of(&dirs[0], &format!("epoch/{field}")), &expected), "epoch/{field}");
    }
    let pretrain = output(&project, &record, "pretrain", "metrics");
    assert!(near(&of(&dirs[1], "epoch/mlm_loss"), &[(1, pretrain[0]["mlm_loss"].as_f64().unwrap())]));
    assert_eq!(of(&dirs[0], "batch/loss").len(), 8);
}
