//! `pipe run --sweep`: one graph for every variant, shared upstream steps once, one run record
//! per variant, and `pipe report` comparing the variants.

use std::fs;

use crate::support::http::{Behavior, Server};
use crate::support::{sample_pipeline, Project, TABLE};

fn pipeline(url: &str) -> String {
    sample_pipeline("sweep", url)
}

#[test]
fn a_sweep_shares_upstream_steps_and_records_each_variant() {
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/data.tsv")));
    let run = project.run(&["run", "p.yaml", "--json", "--sweep", "head.rows=3,4"]).expect_code(0);
    let names: Vec<String> = run.statuses().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fetch", "head[rows=3]", "head[rows=4]", "tail[rows=3]", "tail[rows=4]"]);
    assert!(run.statuses().iter().all(|(_, s)| s == "ran"), "{:?}", run.statuses());
    assert_eq!(server.hits("/data.tsv"), 1, "the shared download ran once");
    assert!(run.stderr.contains("5 steps, 2 variants") || run.stdout.contains("5 steps, 2 variants"));

    // One record per variant, each with the pipeline's own step names and its overrides.
    let mut records: Vec<serde_json::Value> = fs::read_dir(project.cache().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| serde_json::from_slice(&fs::read(e.path()).unwrap()).unwrap())
        .collect();
    records.sort_by_key(|r| r["id"].as_str().unwrap().to_string());
    assert_eq!(records.len(), 2);
    for (record, rows) in records.iter().zip([3, 4]) {
        assert_eq!(record["variant"], format!("rows={rows}"));
        assert_eq!(record["overrides"], serde_json::json!([format!("head.rows={rows}")]));
        assert_eq!(record["state"], "succeeded");
        let steps: Vec<&str> =
            record["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(steps, ["fetch", "head", "tail"]);
        assert_eq!(record["steps"][1]["params"]["rows"], rows);
    }
    assert_eq!(records[0]["steps"][0]["key"], records[1]["steps"][0]["key"]);
    assert_ne!(records[0]["steps"][1]["key"], records[1]["steps"][1]["key"]);

    // Again: everything cached; a single value of the sweep is the same step as before.
    let again = project.run(&["run", "p.yaml", "--json", "--sweep", "head.rows=3,4"]).expect_code(0);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", again.statuses());
    let one = project.run(&["run", "p.yaml", "--json", "--set", "head.rows=3"]).expect_code(0);
    assert!(one.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", one.statuses());
    // --force names the pipeline's step: every variant of it reruns.
    let forced =
        project.run(&["run", "p.yaml", "--json", "--sweep", "head.rows=3,4", "--force", "tail"]).expect_code(0);
    assert_eq!(forced.status_of("tail[rows=3]"), "ran");
    assert_eq!(forced.status_of("tail[rows=4]"), "ran");
    assert_eq!(forced.status_of("head[rows=3]"), "cached");
}

#[test]
fn a_sweep_of_an_unknown_parameter_or_a_single_value_is_a_usage_error() {
    let project = Project::new();
    project.write("p.yaml", &pipeline("http://127.0.0.1:9/x"));
    let bad = project.run(&["run", "p.yaml", "--sweep", "head.rowz=1,2"]).expect_code(2);
    assert!(bad.stderr.contains("rowz"), "{}", bad.stderr);
    let single = project.run(&["run", "p.yaml", "--sweep", "head.rows=1"]).expect_code(2);
    assert!(single.stderr.contains("at least two values"), "{}", single.stderr);
    assert!(!project.cache().exists());
}
