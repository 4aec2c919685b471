//! Bad pipeline files and overrides: a precise message (snapshot), exit code 2, and nothing
//! run or written.

use crate::support::{settings, Project};

const GOOD: &str = "name: errors
params:
  rows: 3
steps:
  fetch:
    kind: download
    url: data.tsv
  head:
    kind: sample
    inputs:
      data: fetch
    rows: ${params.rows}
";

/// Runs `pipe run` on `yaml` (plus extra args), expects exit 2 and no cache, returns stderr.
fn rejected(yaml: &str, extra: &[&str]) -> String {
    let project = Project::new();
    project.write("data.tsv", "id\tdocument\tlabel\n1\ta\t0\n");
    project.write("p.yaml", yaml);
    let mut args = vec!["run", "p.yaml"];
    args.extend_from_slice(extra);
    let run = project.run(&args).expect_code(2);
    assert!(!project.cache().exists(), "bad input must not create the cache");
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    run.stderr
}

fn snapshot(name: &str, text: &str) {
    settings(None).bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn good_pipeline_is_accepted() {
    let project = Project::new();
    project.write("data.tsv", "id\tdocument\tlabel\n1\ta\t0\n");
    project.write("p.yaml", GOOD);
    project.run(&["run", "p.yaml", "--dry-run"]).expect_code(0);
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let text = rejected("name: x\nsteps:\n  a:\n    kind: download\n   url: [unclosed\n", &[]);
    snapshot("yaml_syntax", &text);
}

#[test]
fn unknown_kind_suggests_the_closest() {
    snapshot("unknown_kind", &rejected(&GOOD.replace("kind: sample", "kind: sampel"), &[]));
}

#[test]
fn misspelled_parameter_says_did_you_mean() {
    snapshot("misspelled_param", &rejected(&GOOD.replace("rows: ${params.rows}", "rowz: 3"), &[]));
}

#[test]
fn wrong_type_is_named() {
    snapshot("wrong_type", &rejected(&GOOD.replace("rows: ${params.rows}", "rows: many"), &[]));
}

#[test]
fn missing_required_parameter() {
    snapshot("missing_required", &rejected(&GOOD.replace("    rows: ${params.rows}\n", ""), &[]));
}

#[test]
fn unknown_step_and_output_references() {
    snapshot("unknown_step_ref", &rejected(&GOOD.replace("data: fetch", "data: fecth"), &[]));
    snapshot("unknown_output_ref", &rejected(&GOOD.replace("data: fetch", "data: fetch.files"), &[]));
}

#[test]
fn cycle_is_shown_as_a_path() {
    let yaml = "name: cyc
steps:
  a:
    kind: sample
    inputs: { data: c }
    rows: 1
  b:
    kind: sample
    inputs: { data: a }
    rows: 1
  c:
    kind: sample
    inputs: { data: b }
    rows: 1
";
    snapshot("cycle", &rejected(yaml, &[]));
}

#[test]
fn duplicate_step_name() {
    let yaml = format!("{GOOD}  head:\n    kind: sample\n    inputs: {{ data: fetch }}\n    rows: 1\n");
    snapshot("duplicate_step", &rejected(&yaml, &[]));
}

#[test]
fn overrides_naming_unknown_step_or_parameter() {
    snapshot("set_unknown_step", &rejected(GOOD, &["--set", "haed.rows=2"]));
    snapshot("set_unknown_param", &rejected(GOOD, &["--set", "head.rowz=2"]));
    snapshot("set_wrong_type", &rejected(GOOD, &["--set", "head.rows=-1"]));
    snapshot("set_malformed", &rejected(GOOD, &["--set", "headrows2"]));
}

#[test]
fn several_errors_are_reported_together() {
    let yaml = GOOD.replace("kind: download", "kind: dowload").replace("rows: ${params.rows}", "rowz: 3");
    let text = rejected(&yaml, &[]);
    assert!(text.contains("2 errors"), "{text}");
    snapshot("several", &text);
}

#[test]
fn unreadable_pipeline_file() {
    let project = Project::new();
    let run = project.run(&["run", "missing.yaml"]).expect_code(2);
    assert!(!project.cache().exists());
    snapshot("unreadable", &run.stderr);
}

#[test]
fn unknown_shared_parameter_reference() {
    snapshot("unknown_shared_param", &rejected(&GOOD.replace("${params.rows}", "${params.row}"), &[]));
}

#[test]
fn force_naming_unknown_step() {
    snapshot("force_unknown", &rejected(GOOD, &["--force", "nope"]));
}
