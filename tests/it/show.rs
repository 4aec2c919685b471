//! `pipe show STEP [PIPELINE] [--path]`: where a step's cached result is, and its files.

use std::fs;

use crate::support::{sample_pipeline, settings, Project, TABLE};

fn project() -> Project {
    let project = Project::new();
    project.write("data.tsv", TABLE);
    project.write("p.yaml", &sample_pipeline("show", "data.tsv"));
    project
}

#[test]
fn show_prints_a_cached_steps_folder_and_files_and_path_alone_for_scripts() {
    let project = project();
    let run = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    let key = run.json()["steps"][1]["key"].as_str().unwrap().to_string();

    let path = project.run(&["show", "head", "--path"]).expect_code(0).stdout;
    let path = path.trim_end_matches('\n');
    assert!(!path.contains('\n'), "one line: {path}");
    assert_eq!(
        fs::read_to_string(std::path::Path::new(path).join("file")).unwrap(),
        fs::read_to_string(project.output(&key, "file")).unwrap()
    );

    let shown = project.run(&["show", "head", "p.yaml"]).expect_code(0);
    assert!(shown.stdout.contains(path), "{}", shown.stdout);
    let mut s = settings(Some(&project));
    s.add_filter(r"out-[0-9-]+", "out-[ID]");
    s.bind(|| insta::assert_snapshot!("show_head", shown.stdout));
}

#[test]
fn show_of_a_step_not_cached_or_unknown_says_what_to_do() {
    let project = project();
    let run = project.run(&["show", "head", "p.yaml"]).expect_code(1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("head is not in the cache"), "{}", run.stderr);
    assert!(run.stderr.contains("help: run it: `pipe run p.yaml`"), "{}", run.stderr);

    let run = project.run(&["show", "haed", "p.yaml"]).expect_code(2);
    assert!(run.stderr.contains("no step named `haed`"), "{}", run.stderr);
    assert!(run.stderr.contains("head"), "{}", run.stderr);
}
