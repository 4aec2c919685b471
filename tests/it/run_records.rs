//! What run records hold and what `pipe report` reads from them: timings (never in a hashed
//! output, so two computes of one key give the same bytes), every run of a result, and who
//! ran it (user, host, the pipeline's git commit).

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use serde_json::Value as Json;

use crate::support::{tiny_bert_pipeline, tiny_bert_table, Project, Run, TinyBert};

/// The tiny BERT with a validation split, its evaluation, the linear baseline and the `report`
/// step: every kind that writes metrics.
fn pipeline(name: &str) -> String {
    let after = "  linear:
    kind: linear
    inputs: { train: data, test: data }
    valid_fraction: 0.2
  report:
    kind: report
    inputs: { training: finetune.metrics, evaluation: evaluate.metrics }
";
    tiny_bert_pipeline(&TinyBert { name, split: true, epochs: 2, evaluate: true, after, ..TinyBert::default() })
}

fn project(name: &str) -> Project {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(120, 7));
    project.write("p.yaml", &pipeline(name));
    project
}

/// Step name → (key, output name → content hash from its manifest) of a `--json` run.
fn outputs(project: &Project, run: &Run) -> BTreeMap<String, (String, Json)> {
    run.json()["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let key = s["key"].as_str().expect("key").to_string();
            let path = project.cache().join("steps").join(&key).join("manifest.json");
            let manifest: Json = serde_json::from_slice(&fs::read(path).expect("manifest")).expect("json");
            let hashes: BTreeMap<String, Json> = manifest["outputs"]
                .as_object()
                .expect("outputs")
                .iter()
                .map(|(name, o)| (name.clone(), o["hash"].clone()))
                .collect();
            (s["name"].as_str().unwrap().to_string(), (key, serde_json::json!(hashes)))
        })
        .collect()
}

/// The run records in the cache, oldest first.
fn records(project: &Project) -> Vec<Json> {
    let mut paths: Vec<_> = fs::read_dir(project.cache().join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap()).collect()
}

#[test]
fn two_computes_of_one_key_give_the_same_bytes_and_timings_live_in_the_run_record() {
    let project = project("deterministic");
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    let before = outputs(&project, &first);
    // Everything again, from the download on: same keys, and every output the same bytes.
    let second = project.run(&["run", "p.yaml", "--json", "--force", "data"]).expect_code(0);
    assert!(second.statuses().iter().all(|(_, s)| s == "ran"), "{}", second.stdout);
    assert_eq!(outputs(&project, &second), before);

    let metrics = fs::read_to_string(project.output(&before["finetune"].0, "metrics")).unwrap();
    assert!(!metrics.contains("seconds"), "a timing in the hashed metrics: {metrics}");
    let pretrain = fs::read_to_string(project.output(&before["pretrain"].0, "metrics")).unwrap();
    assert!(!pretrain.contains("seconds"), "a timing in the hashed metrics: {pretrain}");
    // The run record has them, and `pipe report` shows them from there.
    let record = records(&project).pop().unwrap();
    let finetune = record["steps"].as_array().unwrap().iter().find(|s| s["name"] == "finetune").unwrap();
    let phases: Vec<&str> =
        finetune["timings"].as_array().expect("timings").iter().map(|t| t["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["epoch 1", "epoch 2"], "{finetune}");
    let report = project.run(&["report", "--format", "json"]).expect_code(0).json();
    for e in report["latest"]["training"]["epochs"].as_array().unwrap() {
        assert!(e["seconds"].as_f64().is_some_and(|s| s > 0.0), "{e}");
        assert!(e["samples_per_second"].as_f64().is_some_and(|s| s > 0.0), "{e}");
    }
}

#[test]
fn a_failed_rerun_of_a_result_does_not_hide_it_and_every_run_says_who_ran_it() {
    let project = project("every-run");
    let ok = |args: &[&str]| {
        let mut cmd = project.command(args);
        cmd.env("PIPE_USER", "alice").env("PIPE_HOST", "node7");
        Run::from(cmd.output().unwrap())
    };
    ok(&["run", "p.yaml"]).expect_code(0);
    // The same parameters again, forced, and failing (its data is gone): bad input.
    fs::remove_file(project.path().join("data.tsv")).unwrap();
    let mut cmd = project.command(&["run", "p.yaml", "--force", "data"]);
    cmd.env("PIPE_USER", "bob").env("PIPE_HOST", "node8");
    Run::from(cmd.output().unwrap()).expect_code(2);

    let report = project.run(&["report", "--format", "json"]).expect_code(0).json();
    // The headline is the good result, and both runs are compared, the one that succeeded first.
    assert_eq!(report["latest"]["state"], "succeeded", "{report:#}");
    assert!(report["latest"]["training"]["epochs"].is_array(), "{report:#}");
    let runs = report["comparison"].as_array().expect("comparison");
    let rows: Vec<(&str, &str)> =
        runs.iter().map(|r| (r["state"].as_str().unwrap(), r["by"].as_str().unwrap_or("?"))).collect();
    assert_eq!(rows, [("succeeded", "alice@node7"), ("failed", "bob@node8")], "{report:#}");
    let table = project.run(&["report"]).expect_code(0).stdout;
    assert!(table.contains("alice@node7") && table.contains("bob@node8"), "{table}");
}

fn git(project: &Project, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(project.path())
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

fn head(project: &Project) -> String {
    let out = Command::new("git").current_dir(project.path()).args(["rev-parse", "HEAD"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn run_records_say_who_ran_them_and_at_which_commit_of_the_pipeline() {
    let project = Project::new();
    project.write("data.tsv", crate::support::TABLE);
    project.write("p.yaml", &crate::support::sample_pipeline("provenance", "data.tsv"));
    project.write(".gitignore", "cache/\n");
    let run = |user: &str| {
        let mut cmd = project.command(&["run", "p.yaml"]);
        cmd.env("PIPE_USER", user).env("PIPE_HOST", "node7");
        Run::from(cmd.output().unwrap()).expect_code(0)
    };
    // Not in a git work tree: no commit.
    run("alice");
    let record = records(&project).pop().unwrap();
    assert_eq!((record["user"].as_str(), record["host"].as_str()), (Some("alice"), Some("node7")), "{record}");
    assert!(record.get("git").is_none_or(Json::is_null), "{record}");

    git(&project, &["init", "-q"]);
    git(&project, &["add", "."]);
    git(&project, &["commit", "-q", "-m", "pipeline"]);
    run("alice");
    let record = records(&project).pop().unwrap();
    assert_eq!(record["git"]["commit"], head(&project), "{record}");
    assert_eq!(record["git"]["dirty"], false, "{record}");

    project.write("p.yaml", &crate::support::sample_pipeline("provenance", "data.tsv").replace("rows: 2", "rows: 1"));
    run("bob");
    let record = records(&project).pop().unwrap();
    assert_eq!(record["git"]["dirty"], true, "{record}");

    let report = project.run(&["report", "--format", "json"]).expect_code(0).json();
    let short = &head(&project)[..12];
    assert_eq!(report["latest"]["by"], "bob@node7", "{report:#}");
    assert_eq!(report["latest"]["commit"], format!("{short} (dirty)"), "{report:#}");
    let table = project.run(&["report"]).expect_code(0).stdout;
    assert!(table.contains(&format!("by bob@node7, commit {short} (dirty)")), "{table}");
}
