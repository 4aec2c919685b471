//! The cache contract of DESIGN.md §4, each rule as run → change → run through the real binary
//! against a real HTTP server on 127.0.0.1.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::http::{Behavior, Server};
use crate::support::{sample_pipeline, settings, Project, Run, TABLE};

fn pipeline(url: &str) -> String {
    sample_pipeline("contract", url)
}

fn setup() -> (Project, Server) {
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    server.route("/copy.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/data.tsv")));
    (project, server)
}

fn statuses(project: &Project, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["run", "p.yaml", "--json"];
    args.extend_from_slice(extra);
    project.run(&args).expect_code(0).statuses()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn second_run_is_all_cached_without_network() {
    let (project, server) = setup();
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "ran"), ("head", "ran"), ("tail", "ran")]));
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")]));
    assert_eq!(server.hits("/data.tsv"), 1);
}

#[test]
fn changing_a_parameter_reruns_that_step_and_its_dependents_only() {
    let (project, _server) = setup();
    statuses(&project, &[]);
    let second = statuses(&project, &["--set", "head.rows=4"]);
    assert_eq!(second, pairs(&[("fetch", "cached"), ("head", "ran"), ("tail", "ran")]));
    let run = project.run(&["run", "p.yaml", "--set", "head.rows=2"]).expect_code(0);
    settings(Some(&project)).bind(|| insta::assert_snapshot!("run_after_param_change", run.stdout));
}

#[test]
fn parameters_outside_the_key_do_not_invalidate() {
    let (project, _server) = setup();
    statuses(&project, &[]);
    assert_eq!(
        statuses(&project, &["--set", "head.log_every=5"]),
        pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")])
    );
}

#[test]
fn early_cutoff_when_an_upstream_rerun_yields_identical_bytes() {
    let (project, server) = setup();
    statuses(&project, &[]);
    project.write("p.yaml", &pipeline(&server.url("/copy.tsv")));
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "ran"), ("head", "cached"), ("tail", "cached")]));
}

#[test]
fn force_reruns_a_step_and_what_depends_on_it() {
    let (project, server) = setup();
    statuses(&project, &[]);
    assert_eq!(
        statuses(&project, &["--force", "head"]),
        pairs(&[("fetch", "cached"), ("head", "ran"), ("tail", "ran")])
    );
    assert_eq!(server.hits("/data.tsv"), 1);
}

#[test]
fn dry_run_decides_like_a_run_and_writes_nothing() {
    let (project, server) = setup();
    let dry = project.run(&["run", "p.yaml", "--json", "--dry-run"]).expect_code(0);
    assert_eq!(dry.statuses(), pairs(&[("fetch", "would-run"), ("head", "would-run"), ("tail", "would-run")]));
    assert!(!project.cache().exists());
    assert_eq!(server.hits("/data.tsv"), 0);
    statuses(&project, &[]);
    let runs_before = fs::read_dir(project.cache().join("runs")).unwrap().count();
    let dry = project.run(&["run", "p.yaml", "--json", "--dry-run", "--set", "head.rows=4"]).expect_code(0);
    assert_eq!(dry.statuses(), pairs(&[("fetch", "would-use-cache"), ("head", "would-run"), ("tail", "would-run")]));
    assert_eq!(fs::read_dir(project.cache().join("runs")).unwrap().count(), runs_before);
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")]));
}

#[test]
fn status_explains_staleness_in_words() {
    let (project, _server) = setup();
    let never = project.run(&["status", "p.yaml"]).expect_code(0);
    statuses(&project, &[]);
    let fresh = project.run(&["status"]).expect_code(0);
    let changed = project.run(&["status", "p.yaml", "--set", "head.rows=2"]).expect_code(0);
    let json = project.run(&["status", "--json", "--set", "params.rows=4"]).expect_code(0).json();
    assert_eq!(json["steps"][1]["state"], "stale");
    assert_eq!(json["steps"][1]["reasons"][0], "param rows: 3 -> 4");
    settings(Some(&project)).bind(|| {
        insta::assert_snapshot!("status_never_run", never.stdout);
        insta::assert_snapshot!("status_fresh", fresh.stdout);
        insta::assert_snapshot!("status_changed", changed.stdout);
    });
}

#[test]
fn a_corrupt_artifact_is_detected_and_recomputed() {
    let (project, _server) = setup();
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0).json();
    let head_key = first["steps"][1]["key"].as_str().unwrap().to_string();
    let file = project.output(&head_key, "file");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, &text[..text.len() / 2]).unwrap();
    let status = project.run(&["status", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][1]["state"], "stale");
    let reason = status["steps"][1]["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("cached artifact missing or corrupt"), "{reason}");
    // Same content again: early cutoff keeps `tail` cached.
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "cached"), ("head", "ran"), ("tail", "cached")]));
    let file = project.output(&head_key, "file");
    assert_eq!(fs::read_to_string(&file).unwrap(), text);

    // A flipped byte of the same size is caught by blake3.
    let mut bytes = fs::read(&file).unwrap();
    bytes[0] ^= 1;
    fs::write(&file, bytes).unwrap();
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "cached"), ("head", "ran"), ("tail", "cached")]));
}

#[test]
fn a_run_killed_mid_step_leaves_nothing_that_looks_valid() {
    let server = Server::start();
    let body: Vec<u8> = TABLE.repeat(200).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body: body.clone(), chunk: 512, delay: Duration::from_millis(40) });
    server.route("/fast.tsv", Behavior::Serve(body));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/slow.tsv")));
    let mut child = project.command(&["run", "p.yaml"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait until the download is writing into its scratch directory, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = fs::read_dir(project.cache().join("tmp")).map(|rd| rd.count() > 0).unwrap_or(false);
        if started && server.hits("/slow.tsv") > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    for entry in project.entries() {
        assert!(!entry.join("manifest.json").exists(), "killed run left a manifest in {}", entry.display());
    }
    let status = project.run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][0]["state"], "never-run");
    // The same step (same key) completes on the next run.
    let rerun = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(rerun.status_of("fetch"), "ran");
    // The scratch directory of the killed run is what gc collects (after its grace period).
    let gc = project.run(&["gc", "--dry-run"]).expect_code(0);
    assert!(gc.stdout.contains("would remove"), "{}", gc.stdout);
}

#[test]
fn concurrent_runs_compute_a_shared_step_once() {
    let server = Server::start();
    let body: Vec<u8> = TABLE.repeat(50).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body, chunk: 1024, delay: Duration::from_millis(100) });
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/slow.tsv")));
    let a =
        project.command(&["run", "p.yaml", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let b =
        project.command(&["run", "p.yaml", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (Run::from(a.wait_with_output().unwrap()), Run::from(b.wait_with_output().unwrap()));
    let (a, b) = (a.expect_code(0), b.expect_code(0));
    assert_eq!(server.hits("/slow.tsv"), 1, "the shared download ran twice");
    let mut fetch = vec![a.status_of("fetch"), b.status_of("fetch")];
    fetch.sort();
    assert_eq!(fetch, vec!["cached", "ran"]);
    assert_eq!(project.entries().len(), 3);
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")]));
}

#[test]
fn runs_are_recorded_with_effective_parameters_keys_and_outcomes() {
    let (project, _server) = setup();
    project.run(&["run", "p.yaml", "--set", "head.rows=2"]).expect_code(0);
    let runs: Vec<_> = fs::read_dir(project.cache().join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(runs.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&fs::read(runs[0].path()).unwrap()).unwrap();
    assert_eq!(record["pipeline"], "contract");
    assert_eq!(record["state"], "succeeded");
    assert_eq!(record["overrides"][0], "head.rows=2");
    assert_eq!(record["steps"][1]["params"]["rows"], 2);
    assert_eq!(record["steps"][1]["params"]["log_every"], 1);
    assert_eq!(record["steps"][1]["status"], "ran");
    assert_eq!(record["steps"][1]["key"].as_str().unwrap().len(), 64);
    assert!(record["steps"][1]["seconds"].as_f64().is_some());
}

#[test]
fn gc_removes_what_recent_runs_do_not_reference() {
    let (project, _server) = setup();
    statuses(&project, &[]);
    statuses(&project, &["--set", "head.rows=4"]);
    assert_eq!(project.entries().len(), 5);
    // Everything is younger than gc's grace period; age the entries.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for e in project.entries() {
        fs::File::open(&e).unwrap().set_modified(old).unwrap();
    }
    let dry = project.run(&["gc", "--keep-runs", "1", "--dry-run"]).expect_code(0);
    assert!(dry.stdout.contains("would remove 2 entries"), "{}", dry.stdout);
    assert_eq!(project.entries().len(), 5);
    project.run(&["gc", "--keep-runs", "1"]).expect_code(0);
    assert_eq!(project.entries().len(), 3);
    assert_eq!(
        statuses(&project, &["--set", "head.rows=4"]),
        pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")])
    );
}

#[test]
fn a_failed_step_exits_1_keeps_earlier_results_and_skips_later_steps() {
    let (project, server) = setup();
    server.route("/gone.tsv", Behavior::Status(500));
    let yaml = pipeline(&server.url("/data.tsv")).replace("    rows: 2\n", "    rows: 2\n  other:\n    kind: download\n    url: URL\n    retries: 0\n  after:\n    kind: sample\n    inputs: { data: other }\n    rows: 1\n").replace("URL", &server.url("/gone.tsv"));
    project.write("p.yaml", &yaml);
    // One step at a time, in file order: with more, `other` may fail before `head` starts, and
    // nothing new starts after a failure (tests/it/jobs.rs).
    let run = project.run(&["run", "p.yaml", "--json", "--jobs", "1"]).expect_code(1);
    assert_eq!(
        run.statuses(),
        pairs(&[("fetch", "ran"), ("head", "ran"), ("tail", "ran"), ("other", "failed"), ("after", "skipped")])
    );
    assert!(run.json()["steps"][3]["error"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(project.entries().len(), 3);
}

#[test]
fn a_project_moved_with_its_cache_keeps_every_hit() {
    // An unpinned local download and a local file are keyed by content, not by where they are.
    let project = Project::new();
    project.write("proj/data/table.tsv", TABLE);
    project.write("proj/p.yaml", &pipeline("data/table.tsv"));
    let run = |dir: &str| {
        project
            .command(&["run", "p.yaml", "--json"])
            .current_dir(project.path().join(dir))
            .env("PIPE_CACHE_DIR", project.path().join(dir).join("cache"))
            .output()
            .unwrap()
    };
    let first = Run::from(run("proj")).expect_code(0);
    assert_eq!(first.statuses(), pairs(&[("fetch", "ran"), ("head", "ran"), ("tail", "ran")]));
    fs::rename(project.path().join("proj"), project.path().join("moved")).unwrap();
    let second = Run::from(run("moved")).expect_code(0);
    assert_eq!(second.statuses(), pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")]));
    // Content still counts: editing the file reruns the download.
    fs::write(project.path().join("moved/data/table.tsv"), TABLE.replace("good", "great")).unwrap();
    let third = Run::from(run("moved")).expect_code(0);
    assert_eq!(third.status_of("fetch"), "ran");
}

#[test]
fn a_forced_rerun_that_fails_keeps_the_cached_result() {
    let (project, server) = setup();
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0).json();
    let key = first["steps"][0]["key"].as_str().unwrap().to_string();
    let before = fs::read(project.output(&key, "file")).unwrap();
    server.route("/data.tsv", Behavior::Status(500));
    let forced = project.run(&["run", "p.yaml", "--json", "--force", "fetch", "--set", "fetch.retries=0"]);
    let forced = forced.expect_code(1);
    assert_eq!(forced.status_of("fetch"), "failed");
    // The good result is still there, whole, and the next run uses it.
    assert_eq!(fs::read(project.output(&key, "file")).unwrap(), before);
    assert_eq!(statuses(&project, &[]), pairs(&[("fetch", "cached"), ("head", "cached"), ("tail", "cached")]));
}

#[test]
fn a_forced_rerun_replaces_the_result_and_frees_the_old_files() {
    let (project, server) = setup();
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0).json();
    let key = first["steps"][0]["key"].as_str().unwrap().to_string();
    server.route("/data.tsv", Behavior::Serve(TABLE.replace("good", "great").into_bytes()));
    let forced = project.run(&["run", "p.yaml", "--json", "--force", "fetch"]).expect_code(0);
    assert_eq!(forced.statuses(), pairs(&[("fetch", "ran"), ("head", "ran"), ("tail", "ran")]));
    assert!(fs::read_to_string(project.output(&key, "file")).unwrap().contains("great"));
    // One output directory per entry: the superseded one was removed (nobody was reading it).
    let dirs: Vec<_> = fs::read_dir(project.cache().join("steps").join(&key))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("out-"))
        .collect();
    assert_eq!(dirs.len(), 1);
}

#[test]
fn gc_leaves_alone_what_a_live_run_holds() {
    let server = Server::start();
    let body: Vec<u8> = TABLE.repeat(200).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body, chunk: 512, delay: Duration::from_millis(30) });
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/slow.tsv")));
    let child = project.command(&["run", "p.yaml", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let child = child.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let scratch = loop {
        let found = fs::read_dir(project.cache().join("tmp")).ok().and_then(|mut rd| rd.next()).and_then(Result::ok);
        if let Some(entry) = found.filter(|_| server.hits("/slow.tsv") > 0) {
            break entry.path();
        }
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The key of the running step is on record before the step ends.
    let runs: Vec<_> = fs::read_dir(project.cache().join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    let record: serde_json::Value = serde_json::from_slice(&fs::read(runs[0].path()).unwrap()).unwrap();
    assert_eq!(record["steps"][0]["status"], "running");
    let key = record["steps"][0]["key"].as_str().unwrap().to_string();
    assert!(scratch.file_name().unwrap().to_string_lossy().starts_with(&key));
    // No grace period: only the lock protects the running step.
    let gc = project.run(&["gc", "--grace", "0s", "--keep-runs", "0"]).expect_code(0);
    assert!(gc.stdout.contains("in use by a running pipe"), "{}", gc.stdout);
    assert!(scratch.is_dir(), "gc removed the scratch directory of a running step");
    let run = Run::from(child.wait_with_output().unwrap()).expect_code(0);
    assert_eq!(run.statuses(), pairs(&[("fetch", "ran"), ("head", "ran"), ("tail", "ran")]));
    // Once the run has ended, the same gc removes its results.
    let gc = project.run(&["gc", "--grace", "0s", "--keep-runs", "0"]).expect_code(0);
    assert!(gc.stdout.contains("removed 3 entries"), "{}", gc.stdout);
}

#[test]
fn gc_removes_job_directories_no_kept_run_needs() {
    let (project, _server) = setup();
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0).json();
    let live = first["steps"][0]["key"].as_str().unwrap().to_string();
    // The run's record says it is still in progress (its jobs may be queued): its keys are kept.
    let records: Vec<_> = fs::read_dir(project.cache().join("runs")).unwrap().flatten().collect();
    let mut record: serde_json::Value = serde_json::from_slice(&fs::read(records[0].path()).unwrap()).unwrap();
    record["state"] = "running".into();
    fs::write(records[0].path(), serde_json::to_vec(&record).unwrap()).unwrap();
    // ... and its process lives: it holds the run's lock.
    let run_lock_path = project.cache().join("runs").join(format!("{}.lock", record["id"].as_str().unwrap()));
    let run_lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&run_lock_path).unwrap();
    run_lock.lock().unwrap();
    // Job directories as the Slurm executor and its worker leave them (36 bytes each).
    let (ended, locked, young) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let job_dir = |key: &str| project.cache().join("jobs").join(key);
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for key in [&ended, &locked, &young, &live] {
        let files = [("job.json", "{}"), ("job.sh", "#!/bin/sh\n"), ("slurm-17.out", "epoch 1\n")];
        for (name, text) in files.into_iter().chain([("17.result.json", r#"{"status":"ran"}"#)]) {
            let path = project.write(&format!("cache/jobs/{key}/{name}"), text);
            // The young job's log was written just now; everything else is an hour old.
            if !(key == &young && name == "slurm-17.out") {
                fs::File::open(&path).unwrap().set_modified(old).unwrap();
            }
        }
        fs::File::open(job_dir(key)).unwrap().set_modified(old).unwrap();
    }
    // A running pipe holds the compute lock of `locked`.
    let lock_path = project.cache().join("locks").join(format!("{locked}.lock"));
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).unwrap();
    lock.lock().unwrap();

    let dry = project.run(&["gc", "--keep-runs", "0", "--dry-run"]).expect_code(0);
    assert!(dry.stdout.contains(&format!("would remove job files {}  36 B", &ended[..12])), "{}", dry.stdout);
    assert_eq!(dry.stdout.matches("job files").count(), 1, "{}", dry.stdout);
    assert!(job_dir(&ended).is_dir(), "--dry-run removed a job directory");
    // Default grace (10m): the young log keeps its directory, the lock keeps `locked`.
    let gc = project.run(&["gc", "--keep-runs", "0"]).expect_code(0);
    assert!(gc.stdout.contains("1 in use by a running pipe"), "{}", gc.stdout);
    assert!(!job_dir(&ended).exists(), "{}", gc.stdout);
    assert!(job_dir(&young).is_dir() && job_dir(&locked).is_dir() && job_dir(&live).is_dir());
    // No grace: the lock and the run in progress still protect theirs.
    let gc = project.run(&["gc", "--grace", "0s", "--keep-runs", "0"]).expect_code(0);
    assert!(!job_dir(&young).exists(), "{}", gc.stdout);
    assert!(job_dir(&locked).is_dir(), "gc removed the job directory of a key a run holds");
    assert!(job_dir(&live).is_dir(), "gc removed the job directory of a run in progress");
    drop(lock);
    let gc = project.run(&["gc", "--grace", "0s", "--keep-runs", "0"]).expect_code(0);
    assert!(gc.stdout.contains(&format!("removed job files {}  36 B", &locked[..12])), "{}", gc.stdout);
    assert!(!job_dir(&locked).exists() && job_dir(&live).is_dir());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (project, _server) = setup();
    project.run(&["run", "p.yaml"]).expect_code(0);
    for args in [&["report"][..], &["kinds"], &["status"]] {
        let mut child = project.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // `| head -0`: the reader is gone before anything is written
        let out = Run::from(child.wait_with_output().unwrap());
        assert!(!out.stderr.contains("panicked"), "pipe {args:?}: {}", out.stderr);
        assert_eq!(out.code, 0, "pipe {args:?}: {}", out.stderr);
    }
}

/// A step that cannot be decided (its local source is gone) is `unknown`, and so is what reads
/// it; the steps after it in file order that do not depend on it are still decided: `status`,
/// `--dry-run`, `push` and `pull` all see them as they are.
#[test]
fn a_dry_run_keeps_deciding_after_a_step_it_cannot_decide() {
    let project = Project::new();
    project.write("a.tsv", TABLE);
    project.write("gone.tsv", TABLE);
    project.write(
        "p.yaml",
        "name: undecidable
steps:
  gone:
    kind: download
    url: gone.tsv
  uses_gone:
    kind: sample
    inputs: { data: gone }
    rows: 2
  a:
    kind: download
    url: a.tsv
  head:
    kind: sample
    inputs: { data: a }
    rows: 3
",
    );
    project.run(&["run", "p.yaml"]).expect_code(0);
    fs::remove_file(project.path().join("gone.tsv")).unwrap();
    let status = project.run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    let states: Vec<(String, String)> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        states,
        pairs(&[("gone", "unknown"), ("uses_gone", "unknown"), ("a", "up-to-date"), ("head", "up-to-date")])
    );
    assert!(status["steps"][0]["error"].as_str().unwrap().contains("gone.tsv"), "{status}");
    let dry = project.run(&["run", "p.yaml", "--dry-run", "--json"]);
    let statuses = dry.statuses();
    assert_eq!(&statuses[2..], pairs(&[("a", "would-use-cache"), ("head", "would-use-cache")]), "{}", dry.stderr);
}

/// A step whose latest attempt at its key failed (here a download answered 404; a cancelled
/// Slurm job the same) is `failed` with the error in `status`, not `never-run`.
#[test]
fn status_shows_a_step_whose_last_attempt_failed_as_failed() {
    let server = Server::start();
    server.route("/data.tsv", Behavior::Status(404));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/data.tsv")));
    project.run(&["run", "p.yaml"]).expect_code(2);
    let status = project.run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][0]["state"], "failed", "{status}");
    assert!(status["steps"][0]["error"].as_str().unwrap().contains("404"), "{status}");
    assert_eq!(status["steps"][1]["state"], "never-run", "{status}");
    let text = project.run(&["status", "p.yaml"]).expect_code(0).stdout;
    assert!(text.lines().any(|l| l.contains("fetch") && l.contains("failed") && l.contains("404")), "{text}");
}

/// A run killed without ending its record leaves it `running`; its free run lock tells gc it
/// is dead, so the record pins nothing (it pinned its keys forever before).
#[test]
fn a_record_left_running_by_a_dead_run_pins_nothing() {
    let (project, _server) = setup();
    statuses(&project, &[]);
    let records: Vec<_> = fs::read_dir(project.cache().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(records.len(), 1);
    let id = records[0].file_stem().unwrap().to_string_lossy().to_string();
    assert!(!project.cache().join("runs").join(format!("{id}.lock")).exists(), "a run that ended removes its lock");
    // As a killed run leaves it: still `running`, its lock file there and nobody holding it.
    let text = fs::read_to_string(&records[0]).unwrap().replace("\"state\": \"succeeded\"", "\"state\": \"running\"");
    assert!(text.contains("\"state\": \"running\""), "{text}");
    fs::write(&records[0], text).unwrap();
    fs::write(project.cache().join("runs").join(format!("{id}.lock")), "").unwrap();
    let gc = project.run(&["gc", "--grace", "0s", "--keep-runs", "0"]).expect_code(0);
    assert!(gc.stdout.contains("removed 3 entries"), "{}", gc.stdout);
}

/// `pipe status` and dry runs only read: they leave no lock file behind (status used to create
/// one for every step a run record says is running).
#[test]
fn status_and_dry_runs_create_no_lock_files() {
    let (project, _server) = setup();
    statuses(&project, &[]);
    // A record that says a step is running makes status ask whether its key is being computed.
    let record = fs::read_dir(project.cache().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let text = fs::read_to_string(&record)
        .unwrap()
        .replace("\"state\": \"succeeded\"", "\"state\": \"running\"")
        .replacen("\"status\": \"ran\"", "\"status\": \"running\"", 1);
    assert!(text.contains("\"status\": \"running\""), "{text}");
    fs::write(&record, text).unwrap();
    let locks = project.cache().join("locks");
    fs::remove_dir_all(&locks).unwrap();
    project.run(&["status", "p.yaml"]).expect_code(0);
    project.run(&["run", "p.yaml", "--dry-run"]).expect_code(0);
    project.run(&["status", "p.yaml", "--set", "head.rows=1"]).expect_code(0);
    assert!(!locks.exists(), "{:?}", fs::read_dir(&locks).map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>()));
}

/// A cache on a filesystem without `flock` (Lustre mounted without `-o flock`, NFS v3 without
/// its lock manager) is refused when opened, with what to do, instead of failing on the first
/// step. Such a filesystem cannot be mounted here: a preloaded shim makes `flock` fail as they
/// do (ENOLCK), for the real binary.
#[test]
fn a_cache_whose_filesystem_lacks_flock_is_refused_with_what_to_do() {
    let shim_dir = tempfile::tempdir().unwrap();
    let source = shim_dir.path().join("noflock.c");
    fs::write(
        &source,
        "#include <errno.h>\nint flock(int fd, int op) { (void)fd; (void)op; errno = ENOLCK; return -1; }\n",
    )
    .unwrap();
    let shim = shim_dir.path().join("noflock.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = std::process::Command::new(&cc).arg("-shared").arg("-fPIC").arg("-o").arg(&shim).arg(&source).status();
    if !built.is_ok_and(|s| s.success()) {
        let why = format!("a_cache_whose_filesystem_lacks_flock: no C compiler (`{cc}`) to build the flock shim");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        pipe_steps::shared_data::skipped(&why);
        return;
    }
    let (project, _server) = setup();
    let mut cmd = project.command(&["run", "p.yaml"]);
    cmd.env("LD_PRELOAD", &shim);
    let run = Run::from(cmd.output().unwrap()).expect_code(2);
    assert!(run.stderr.contains("does not support flock"), "{}", run.stderr);
    assert!(run.stderr.contains("help: mount Lustre with `-o flock`"), "{}", run.stderr);
    assert!(run.stderr.contains("locks/.probe: No locks available"), "{}", run.stderr);
    assert!(!run.stdout.contains("running"), "nothing ran: {}", run.stdout);
    // Without the shim the same cache works.
    project.run(&["run", "p.yaml"]).expect_code(0);
}
