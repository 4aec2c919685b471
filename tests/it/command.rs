//! `kind: command`: a user's program as a cached step, through the real binary. What its key
//! covers (the command text, deps, params, keyed env values, the inputs' content) and what it
//! does not (unrelated files, unkeyed env values, paths); early cutoff; failures that commit
//! nothing; folder outputs; errors in declarations with file:line; `--jobs`; a Slurm job whose
//! result a second cache fetches from the S3 remote.

use std::fs;
use std::path::Path;

use crate::support::s3::Moto;
use crate::support::slurm::cluster;
use crate::support::{settings, Project, Run};

/// Keeps the rows (after the header) whose text is at least `min_len` characters; says on
/// stdout how many it kept and whether it saw the unkeyed TOKEN and a variable nobody allowed.
const CLEAN_PY: &str = r#"import os, sys
import helper
src, dst, min_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(src, encoding="utf-8").read().splitlines()
kept = [lines[0]] + [l for l in lines[1:] if len(l.split("\t")[1]) >= min_len]
with open(dst, "w", encoding="utf-8") as f:
    f.write("\n".join(helper.tidy(l) for l in kept) + "\n")
print(f"kept {len(kept) - 1} rows; token {'set' if os.environ.get('TOKEN') else 'unset'}; "
      f"leak {os.environ.get('LEAK', 'absent')}; greeting {os.environ.get('GREETING', 'unset')}")
"#;

const HELPER_PY: &str = "def tidy(line):\n    return line.strip()\n";

const DATA: &str = "id\ttext\n1\tshort\n2\ta longer review\n3\tno\n4\tanother long one\n";

/// `clean` (python, a listed dep, an auto-detected script, params, env) and `count`, a second
/// command on its output.
const PIPELINE: &str = "name: cmd
steps:
  clean:
    kind: command
    inputs: {data: data.tsv}
    deps: [scripts/helper.py]
    params: {min_len: 6}
    outputs: {table: clean.tsv}
    env: [GREETING, {name: TOKEN, unkeyed: true}]
    run: python3 scripts/clean.py {inputs.data} {outputs.table} {params.min_len}
  count:
    kind: command
    inputs: {table: clean.table}
    outputs: {count: count.txt}
    run: wc -l < {inputs.table} > {outputs.count}
";

fn project() -> Project {
    let project = Project::new();
    project.write("data.tsv", DATA);
    project.write("scripts/clean.py", CLEAN_PY);
    project.write("scripts/helper.py", HELPER_PY);
    project.write("notes.txt", "unrelated\n");
    project.write("p.yaml", PIPELINE);
    project
}

fn run(project: &Project, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = project.command(args);
    cmd.env("LEAK", "leaked").env_remove("GREETING").env_remove("TOKEN");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Run::from(cmd.output().expect("run pipe"))
}

fn statuses(run: &Run) -> (String, String) {
    (run.status_of("clean"), run.status_of("count"))
}

fn key_of(run: &Run, step: &str) -> String {
    let doc = run.json();
    let s = doc["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap().clone();
    s["key"].as_str().unwrap().to_string()
}

fn reason_of(run: &Run, step: &str) -> String {
    let doc = run.json();
    let s = doc["steps"].as_array().unwrap().iter().find(|s| s["name"] == step).unwrap().clone();
    s["reason"].as_str().unwrap_or_default().to_string()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn a_command_is_cached_and_reruns_on_what_its_key_covers_only() {
    let project = project();
    let first = run(&project, &["run", "p.yaml", "--json"], &[]).expect_code(0);
    assert_eq!(statuses(&first), pair("ran", "ran"));
    let table = fs::read_to_string(project.output(&key_of(&first, "clean"), "table")).unwrap();
    assert_eq!(table, "id\ttext\n2\ta longer review\n4\tanother long one\n");
    let count = fs::read_to_string(project.output(&key_of(&first, "count"), "count")).unwrap();
    assert_eq!(count.trim(), "3");
    // Its stdout is in the step's log; the environment holds only what `env` lets through.
    assert!(first.stderr.contains("kept 2 rows; token unset; leak absent; greeting unset"), "{}", first.stderr);

    let again = run(&project, &["run", "p.yaml", "--json"], &[]).expect_code(0);
    assert_eq!(statuses(&again), pair("cached", "cached"));

    // Not in the key: an unrelated file, an unkeyed variable (which still reaches the command).
    project.write("notes.txt", "edited\n");
    let unkeyed = run(&project, &["run", "p.yaml", "--json"], &[("TOKEN", "secret-1")]).expect_code(0);
    assert_eq!(statuses(&unkeyed), pair("cached", "cached"));
    let forced = run(&project, &["run", "p.yaml", "--force", "clean"], &[("TOKEN", "secret-1")]).expect_code(0);
    assert!(forced.stderr.contains("token set"), "{}", forced.stderr);
    for record in fs::read_dir(project.cache().join("runs")).unwrap().flatten() {
        let text = fs::read_to_string(record.path()).unwrap_or_default();
        assert!(!text.contains("secret-1"), "an unkeyed value is recorded: {}", record.path().display());
    }

    // A keyed variable: clean reruns; its output bytes are the same, so count does not (early
    // cutoff).
    let keyed = run(&project, &["run", "p.yaml", "--json"], &[("GREETING", "hi")]).expect_code(0);
    assert_eq!(statuses(&keyed), pair("ran", "cached"));
    assert!(reason_of(&keyed, "clean").contains("env.GREETING"), "{}", reason_of(&keyed, "clean"));

    // A listed dep edited without changing what it does: clean reruns, count is cut off.
    project.write("scripts/helper.py", &format!("# tidier\n{HELPER_PY}"));
    let dep = run(&project, &["run", "p.yaml", "--json"], &[("GREETING", "hi")]).expect_code(0);
    assert_eq!(statuses(&dep), pair("ran", "cached"));
    assert!(reason_of(&dep, "clean").contains("scripts/helper.py"), "{}", reason_of(&dep, "clean"));

    // The script named in `run:`, not listed in deps, is a dep too.
    project.write("scripts/clean.py", &CLEAN_PY.replace("import os, sys", "import sys, os"));
    let script = run(&project, &["run", "p.yaml", "--json"], &[("GREETING", "hi")]).expect_code(0);
    assert_eq!(statuses(&script), pair("ran", "cached"));
    assert!(reason_of(&script, "clean").contains("scripts/clean.py"), "{}", reason_of(&script, "clean"));

    // The command text.
    let yaml = fs::read_to_string(project.path().join("p.yaml")).unwrap();
    project.write("p.yaml", &yaml.replace("wc -l < {inputs.table}", "wc -l  < {inputs.table}"));
    let text = run(&project, &["run", "p.yaml", "--json"], &[("GREETING", "hi")]).expect_code(0);
    assert_eq!(statuses(&text), pair("cached", "ran"));

    // A param, from `--set`: the output changes, so count reruns too.
    let param =
        run(&project, &["run", "p.yaml", "--json", "--set", "clean.min_len=3"], &[("GREETING", "hi")]).expect_code(0);
    assert_eq!(statuses(&param), pair("ran", "ran"));
    assert!(reason_of(&param, "clean").contains("params.min_len"), "{}", reason_of(&param, "clean"));
    let count = fs::read_to_string(project.output(&key_of(&param, "count"), "count")).unwrap();
    assert_eq!(count.trim(), "4");

    // The input's content, not its path: the same bytes elsewhere are a hit.
    fs::create_dir(project.path().join("moved")).unwrap();
    fs::rename(project.path().join("data.tsv"), project.path().join("moved/data.tsv")).unwrap();
    let yaml = fs::read_to_string(project.path().join("p.yaml")).unwrap();
    project.write("p.yaml", &yaml.replace("{data: data.tsv}", "{data: moved/data.tsv}"));
    let moved = run(&project, &["run", "p.yaml", "--json"], &[("GREETING", "hi")]).expect_code(0);
    assert_eq!(statuses(&moved), pair("cached", "cached"));
}

/// A one-step pipeline around `run`, with a file input and an output `table: out.tsv`.
fn one_step(project: &Project, run: &str) {
    project.write("data.tsv", DATA);
    project.write(
        "p.yaml",
        &format!(
            "name: one\nsteps:\n  clean:\n    kind: command\n    inputs: {{data: data.tsv}}\n    outputs: {{table: out.tsv}}\n    run: {run}\n"
        ),
    );
}

#[test]
fn a_failing_command_commits_nothing_and_says_the_step_exit_code_and_stderr() {
    let project = Project::new();
    one_step(
        &project,
        r#"python3 -c 'import sys; print("working"); sys.stderr.write("line 1\nbad row 3\n"); sys.exit(3)'"#,
    );
    let failed = project.run(&["run", "p.yaml"]).expect_code(1);
    assert!(failed.stdout.contains("clean"), "{}", failed.stdout);
    assert!(failed.stdout.contains("the command failed with exit code 3"), "{}", failed.stdout);
    assert!(failed.stdout.contains("bad row 3"), "{}", failed.stdout);
    assert!(failed.stderr.contains("working"), "its stdout is in the log: {}", failed.stderr);
    assert!(project.entries().is_empty(), "nothing committed: {:?}", project.entries());
    settings(Some(&project)).bind(|| insta::assert_snapshot!("command_failed", failed.stdout));

    // Exit 0 without the declared output.
    one_step(&project, "cat {inputs.data} > other.tsv");
    let missing = project.run(&["run", "p.yaml", "--json"]).expect_code(1);
    let error = missing.json()["steps"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("did not write its output `table` (out.tsv)"), "{error}");
    assert!(project.entries().is_empty());

    // A file left beside the outputs.
    one_step(&project, "cat {inputs.data} > {outputs.table}; echo debug > stray.log");
    let stray = project.run(&["run", "p.yaml", "--json"]).expect_code(1);
    let error = stray.json()["steps"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("outside its declared outputs: stray.log"), "{error}");
    assert!(project.entries().is_empty());

    // Fixed, it runs and commits; $TMPDIR's files are gone.
    one_step(&project, "echo tmp > $TMPDIR/scratch; cat {inputs.data} > out.tsv");
    let ok = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    let dir = project.output(ok.json()["steps"][0]["key"].as_str().unwrap(), "table");
    assert_eq!(fs::read_to_string(&dir).unwrap(), DATA);
    let names: Vec<String> =
        fs::read_dir(dir.parent().unwrap()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["table"]);
}

#[test]
fn a_folder_output_is_cached_and_read_by_the_next_step() {
    let project = Project::new();
    project.write("data.tsv", DATA);
    project.write(
        "p.yaml",
        "name: folder
steps:
  split:
    kind: command
    inputs: {data: data.tsv}
    outputs: {parts: parts/}
    run: mkdir {outputs.parts} && tail -n +2 {inputs.data} | split -l 2 - {outputs.parts}/part-
  listing:
    kind: command
    inputs: {parts: split.parts}
    outputs: {names: names.txt}
    run: ls {inputs.parts} > {outputs.names} && cat {inputs.parts}/part-ab >> {outputs.names}
",
    );
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(first.status_of("split"), "ran");
    let names = fs::read_to_string(project.output(&key_of(&first, "listing"), "names")).unwrap();
    assert_eq!(names, "part-aa\npart-ab\n3\tno\n4\tanother long one\n");
    let parts = project.output(&key_of(&first, "split"), "parts");
    assert!(parts.is_dir() && parts.join("part-aa").is_file());
    let again = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!((again.status_of("split"), again.status_of("listing")), pair("cached", "cached"));

    // A file where a folder is declared is a failure.
    let yaml = fs::read_to_string(project.path().join("p.yaml")).unwrap();
    project.write(
        "p.yaml",
        &yaml.replace(
            "mkdir {outputs.parts} && tail -n +2 {inputs.data} | split -l 2 - {outputs.parts}/part-",
            "touch {outputs.parts}",
        ),
    );
    let wrong = project.run(&["run", "p.yaml", "--json"]).expect_code(1);
    assert!(wrong.json()["steps"][0]["error"].as_str().unwrap().contains("declared as a folder"));
}

#[test]
fn bad_declarations_are_exit_2_with_file_and_line() {
    let project = Project::new();
    project.write("data.tsv", DATA);
    project.write(
        "p.yaml",
        "name: bad
steps:
  clean:
    kind: command
    inputs: {data: data.tsv}
    deps: [scripts/missing.py]
    outputs: {table: clean.tsv}
    run: cat {inputs.dta} {input.data} > {outputs.table} {params.n}
    timeout: 5
",
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(!project.cache().join("steps").exists(), "nothing ran");
    for expected in [
        "p.yaml:9:5",  // unknown field
        "p.yaml:6:12", // dep that does not exist
        "p.yaml:8:14", // {inputs.dta}
        "p.yaml:8:27", // {input.data}
        "p.yaml:8:58", // {params.n}
    ] {
        assert!(run.stderr.contains(expected), "{expected}:\n{}", run.stderr);
    }
    settings(Some(&project)).bind(|| insta::assert_snapshot!("command_spec_errors", run.stderr));

    // A later step takes an output the command never declared.
    project.write(
        "p.yaml",
        "name: bad
steps:
  clean:
    kind: command
    inputs: {data: data.tsv}
    outputs: {table: clean.tsv}
    run: cat {inputs.data} > {outputs.table}
  count:
    kind: command
    inputs: {table: clean.tabel}
    outputs: {count: count.txt}
    run: wc -l < {inputs.table} > {outputs.count}
",
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(run.stderr.contains("p.yaml:10:21"), "{}", run.stderr);
    assert!(run.stderr.contains("did you mean `table`?"), "{}", run.stderr);
    assert!(!project.cache().join("steps").exists(), "nothing ran");

    // `--set` of a param the step does not declare.
    one_step(&project, "cat {inputs.data} > {outputs.table}");
    let set = project.run(&["run", "p.yaml", "--set", "clean.min_len=3"]).expect_code(2);
    assert!(set.stderr.contains("declares no param `min_len`"), "{}", set.stderr);
}

#[test]
fn pipe_kinds_command_documents_the_declaration() {
    let project = Project::new();
    let list = project.run(&["kinds"]).expect_code(0);
    assert!(list.stdout.lines().any(|l| l.starts_with("command ")), "{}", list.stdout);
    let manual = project.run(&["kinds", "command"]).expect_code(0);
    for part in ["kind: command", "{inputs.NAME}", "$PIPE_OUTPUT_NAME", "unkeyed: true", "ending in /", "not detected"]
    {
        assert!(manual.stdout.contains(part), "{part}:\n{}", manual.stdout);
    }
}

/// Two commands that each wait for the other: they finish only when both run at once.
#[test]
fn commands_run_side_by_side_under_jobs() {
    let project = Project::new();
    let meet = project.path().join("meet");
    fs::create_dir(&meet).unwrap();
    let step = |me: &str, other: &str| {
        format!(
            "  {me}:
    kind: command
    outputs: {{done: done.txt}}
    env: [{{name: MEET, unkeyed: true}}]
    run: touch $MEET/{me}; for i in $(seq 100); do [ -e $MEET/{other} ] && break; sleep 0.1; done; [ -e $MEET/{other} ] && echo {me} > done.txt
"
        )
    };
    project.write("p.yaml", &format!("name: jobs\nsteps:\n{}{}", step("a", "b"), step("b", "a")));
    let run =
        Run::from(project.command(&["run", "p.yaml", "--json", "--jobs", "2"]).env("MEET", &meet).output().unwrap())
            .expect_code(0);
    assert_eq!((run.status_of("a"), run.status_of("b")), pair("ran", "ran"));
}

/// The example shipped in pipelines/: it parses and its script exists (the full run needs the
/// NSMC mirror; `dry-run` checks the declaration).
#[test]
fn the_shipped_example_pipeline_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = Project::new();
    let file = root.join("pipelines/nsmc-clean.yaml");
    let run = project.run(&["run", file.to_str().unwrap(), "--dry-run", "--json"]).expect_code(0);
    assert_eq!(run.status_of("clean_train"), "would-run");
    let manual = project.run(&["kinds", "command"]).expect_code(0);
    assert!(!manual.stdout.is_empty());
}

/// Runs `args` with the S3 server's settings (and the cluster's, when given).
fn run_with(project: &Project, args: &[&str], moto: &Moto, c: Option<&crate::support::slurm::Cluster>) -> Run {
    let mut cmd = project.command(args);
    cmd.env_remove("GREETING").env_remove("TOKEN");
    if let Some(c) = c {
        c.env(&mut cmd);
    }
    moto.env(&mut cmd);
    Run::from(cmd.output().unwrap())
}

/// A second project (the same files elsewhere, its own cache) takes every step from the
/// remote: the same keys, nothing runs.
fn fetched_by_a_second_cache(yaml: &str, moto: &Moto, key: &str) {
    let second = project();
    second.write("p.yaml", yaml);
    let fetched = run_with(
        &second,
        &["run", "p.yaml", "--json", "--remote", "s3://team/cache", "--executor", "local"],
        moto,
        None,
    )
    .expect_code(0);
    for step in fetched.json()["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "cached", "{step}");
        assert_eq!(step["remote"], true, "{step}");
    }
    assert_eq!(key_of(&fetched, "clean"), key);
    let table = fs::read_to_string(second.output(key, "table")).unwrap();
    assert_eq!(table, "id\ttext\n2\ta longer review\n4\tanother long one\n");
}

#[test]
fn a_command_result_is_pushed_and_a_second_cache_fetches_it_from_s3() {
    let Some(moto) = Moto::start("command_remote") else { return };
    moto.create_bucket("team");
    let first = project();
    let ran = run_with(&first, &["run", "p.yaml", "--json", "--remote", "s3://team/cache"], &moto, None).expect_code(0);
    assert_eq!(statuses(&ran), pair("ran", "ran"));
    fetched_by_a_second_cache(PIPELINE, &moto, &key_of(&ran, "clean"));
}

#[test]
fn a_command_runs_as_a_slurm_job_and_a_second_cache_fetches_it_from_s3() {
    let Some(c) = cluster() else { return };
    let Some(moto) = Moto::start("command_slurm") else { return };
    moto.create_bucket("team");
    let partition = c.new_partition("command");
    let header = format!("executor:\n  kind: slurm\n  partition: {partition}\n  resources: {{ cpus: 1, time: 10 }}\n");
    let yaml = PIPELINE.replacen("steps:\n", &format!("{header}steps:\n"), 1);
    let first = project();
    first.write("p.yaml", &yaml);
    let ran =
        run_with(&first, &["run", "p.yaml", "--json", "--remote", "s3://team/cache"], &moto, Some(c)).expect_code(0);
    let doc = ran.json();
    for step in doc["steps"].as_array().unwrap() {
        assert_eq!(step["job"]["executor"], "slurm", "{step}");
        assert_eq!(step["status"], "ran", "{step}");
    }
    let key = key_of(&ran, "clean");
    let manifests: Vec<String> = moto.list("team", "cache/manifests").into_iter().map(|(k, _)| k).collect();
    assert!(manifests.contains(&format!("cache/manifests/{key}.json")), "{manifests:?}");
    // The job's log has the command's stdout.
    let logs: String = fs::read_dir(first.cache().join("jobs").join(&key))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".out"))
        .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("kept 2 rows"), "{logs}");
    fetched_by_a_second_cache(&yaml, &moto, &key);
}
