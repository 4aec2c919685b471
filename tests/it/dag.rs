//! `pipe dag`: the step graph as text, Mermaid and DOT, with each step's state decided as
//! `pipe status` decides it, for a sweep whose tokenize step has two inputs (a fan-in).

use crate::support::{settings, tiny_bert_table, Project};

const PIPELINE: &str = "name: dagged
steps:
  data:
    kind: download
    url: data.tsv
  vocab:
    kind: train-tokenizer
    inputs: { data: data }
    vocab_size: 200
  encode:
    kind: tokenize
    inputs: { data: data, tokenizer: vocab }
    max_len: 16
  split:
    kind: split
    inputs: { data: encode }
    valid_fraction: 0.2
";

/// A project whose pipeline ran once with `encode.max_len=8`.
fn ran_once() -> Project {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(40, 1));
    project.write("p.yaml", PIPELINE);
    project.run(&["run", "p.yaml", "--set", "encode.max_len=8"]).expect_code(0);
    project
}

#[test]
fn dag_draws_a_sweep_with_states_in_every_format() {
    let project = ran_once();
    let sweep = ["dag", "p.yaml", "--sweep", "encode.max_len=8,16"];
    let text = project.run(&sweep).expect_code(0);
    let mermaid = project.run(&[&sweep[..], &["--format", "mermaid"]].concat()).expect_code(0);
    let dot = project.run(&[&sweep[..], &["--format", "dot"]].concat()).expect_code(0);
    // The variant already run is up-to-date, the other is stale (its parameter changed since
    // the last run, as `status` says); the shared steps appear once.
    assert!(text.stdout.contains("encode[max_len=8]    tokenize         up-to-date"), "{}", text.stdout);
    assert!(text.stdout.contains("encode[max_len=16]   tokenize         stale"), "{}", text.stdout);
    assert_eq!(text.stdout.matches("vocab").count(), 3, "{}", text.stdout);
    // No colour codes when NO_COLOR is set (Project sets it) or stdout is not a terminal.
    assert!(!text.stdout.contains('\u{1b}'), "{}", text.stdout);
    let mut forced = project.command(&sweep);
    forced.env("CLICOLOR_FORCE", "1");
    let forced = crate::support::Run::from(forced.output().unwrap()).expect_code(0);
    assert!(forced.stdout.contains("\u{1b}[32mup-to-date"), "{:?}", forced.stdout);
    assert!(forced.stdout.contains("\u{1b}[33mstale"), "{:?}", forced.stdout);
    let s = settings(Some(&project));
    s.bind(|| {
        insta::assert_snapshot!("sweep_text", text.stdout);
        insta::assert_snapshot!("sweep_mermaid", mermaid.stdout);
        insta::assert_snapshot!("sweep_dot", dot.stdout);
    });
    // Nothing was run or written by looking.
    let again = project.run(&["run", "p.yaml", "--set", "encode.max_len=8", "--json"]).expect_code(0);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", again.statuses());
}

#[test]
fn dag_shows_stale_steps_and_defaults_to_the_last_pipeline() {
    let project = ran_once();
    // With the last run's file and another vocabulary size, vocab and what follows are stale.
    let stale = project.run(&["dag", "--set", "encode.max_len=8", "--set", "vocab.vocab_size=150"]).expect_code(0);
    settings(Some(&project)).bind(|| insta::assert_snapshot!("stale_text", stale.stdout));
    let bad = project.run(&["dag", "p.yaml", "--set", "vocab.vocab_sise=150"]).expect_code(2);
    assert!(bad.stderr.contains("vocab_size"), "{}", bad.stderr);
    let none = Project::new().run(&["dag"]).expect_code(2);
    assert!(none.stderr.contains("help: name a pipeline"), "{}", none.stderr);
}
