//! `pipe report` at the edges: a cache without runs says how to start one, and a failed run is
//! shown as failed with what is missing, not skipped. (A successful run and the comparison of
//! runs are covered by `nsmc_tiny.rs`.)


use crate::support::http::{Behavior, Server};
use crate::support::{settings, Project};

#[test]
fn a_cache_without_runs_says_how_to_start_one() {
    let project = Project::new();
    let run = project.run(&["report"]).expect_code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    settings(Some(&project)).bind(|| insta::assert_snapshot!("no_runs", run.stderr));
}

#[test]
fn a_failed_run_is_reported_as_failed() {
    let server = Server::start();
    server.route("/missing.tsv", Behavior::Status(404));
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            "name: broken
steps:
  fetch:
    kind: download
    url: {}
  vocab:
    kind: train-tokenizer
    inputs:
      data: fetch
  encode:
    kind: tokenize
    inputs:
      data: fetch
      tokenizer: vocab
  pretrain:
    kind: pretrain
    inputs:
      data: encode
    layers: 1
    hidden: 8
    heads: 1
    intermediate: 16
  finetune:
    kind: fine-tune
    inputs:
      train: encode
      model: pretrain.model
",
            server.url("/missing.tsv")
        ),
    );
    // A URL that answers 404 is bad input (exit 2); the run is recorded as failed.
    project.run(&["run", "p.yaml"]).expect_code(2);
    let report = project.run(&["report"]).expect_code(0);
    assert!(report.stdout.contains("(failed)"), "{}", report.stdout);
    assert!(report.stdout.contains("finetune skipped"), "{}", report.stdout);
    let json = project.run(&["report", "--format", "json"]).expect_code(0).json();
    assert_eq!(json["latest"]["state"], "failed");
    assert!(json["latest"]["training"].is_null());
}
