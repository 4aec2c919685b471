//! The Slurm executor (`pipe run --executor slurm`, `executor:` in the pipeline) against a real
//! single-node cluster (support/slurm.rs): fine-tune and evaluate as jobs give the bytes of a
//! local run, a rerun submits nothing, a repeated job finds its result and exits 0, failures,
//! `scancel` and Ctrl-C are reported as such, a sweep's fine-tunes run as concurrent jobs while
//! `pipe status` shows them queued, and secrets reach jobs through the environment only; a job
//! gets only the variables it needs (checked in what slurmctld stores), a cache path may hold a
//! space, a failing `squeue`/`scontrol` (a wrapper first on PATH) is asked again and a cluster
//! that stops answering gets its job cancelled, a rerun reattaches to a killed run's job, and
//! `pipe status` shows the cancelled job of a run that quit at once as failed, and jobs with a
//! node cache of their own move their inputs and results through the remote (moto).
//! Skipped (with a notice) where Slurm is not installed, failed under CI. The checks of the
//! `executor:`/`resources:` sections and of `device: auto` need no cluster.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{Behavior, Server};
use crate::support::s3::{Moto, ACCESS_KEY, SECRET_KEY};
use crate::support::slurm::{cluster, Cluster};
use crate::support::{tiny_bert_pipeline, tiny_bert_table, Project, Run, TinyBert, TABLE};

const WAIT: Duration = Duration::from_secs(120);

/// A tiny BERT on `PARTITION`: data steps here, fine-tune and evaluate as jobs.
fn project(partition: &str, epochs: usize, rows: usize) -> Project {
    let header = format!(
        "executor:
  kind: slurm
  partition: {partition}
  local_kinds: [download, train-tokenizer, tokenize, pretrain]
  resources: {{ cpus: 1, time: 10 }}
"
    );
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(rows, 7));
    project.write(
        "p.yaml",
        &tiny_bert_pipeline(&TinyBert {
            name: "slurm-tiny",
            header: &header,
            epochs,
            finetune: "    resources: { cpus: 1, time: \"0:10:00\" }\n",
            evaluate: true,
            ..TinyBert::default()
        }),
    );
    project
}

fn command(c: &Cluster, project: &Project, args: &[&str]) -> Command {
    let mut cmd = project.command(args);
    c.env(&mut cmd);
    cmd
}

fn run(c: &Cluster, project: &Project, args: &[&str]) -> Run {
    Run::from(command(c, project, args).output().expect("run pipe"))
}

fn spawn(c: &Cluster, project: &Project, args: &[&str]) -> Child {
    command(c, project, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn pipe")
}

/// The run record being written by a run in progress (the only one, or the newest).
fn records(project: &Project) -> Vec<serde_json::Value> {
    let mut paths: Vec<PathBuf> = fs::read_dir(project.cache().join("runs"))
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect())
        .unwrap_or_default();
    paths.sort();
    paths.iter().filter_map(|p| serde_json::from_slice(&fs::read(p).ok()?).ok()).collect()
}

/// Waits until the step of the newest record has a job in `state`; its id.
fn wait_job(project: &Project, step: &str, state: &str, child: &mut Child) -> String {
    let start = Instant::now();
    loop {
        let found = records(project).last().and_then(|r| {
            let s = r["steps"].as_array()?.iter().find(|s| s["name"] == step)?.clone();
            (s["job"]["state"] == state).then(|| s["job"]["id"].as_str().map(str::to_string)).flatten()
        });
        if let Some(id) = found {
            return id;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("pipe ended ({status}) before {step}'s job was {state}");
        }
        assert!(start.elapsed() < WAIT, "{step}'s job never was {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().expect("wait for pipe"))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn job_logs(project: &Project) -> Vec<PathBuf> {
    files(&project.cache().join("jobs"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("slurm-")))
        .collect()
}

/// What a result stored under `key` holds that must not depend on where it ran: output name →
/// content hash, but for `metrics` the JSON without its timings (`seconds`,
/// `samples_per_second`), which differ between any two runs.
fn outputs(project: &Project, key: &str) -> serde_json::Value {
    let entry = project.cache().join("steps").join(key);
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(entry.join("manifest.json")).unwrap()).unwrap();
    let mut out = serde_json::Map::new();
    for (name, o) in manifest["outputs"].as_object().unwrap() {
        let value = if name == "metrics" {
            let path = entry.join(manifest["dir"].as_str().unwrap()).join(name);
            let mut metrics: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
            strip_timings(&mut metrics);
            metrics
        } else {
            o["hash"].clone()
        };
        out.insert(name.clone(), value);
    }
    serde_json::Value::Object(out)
}

fn strip_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| k != "seconds" && k != "samples_per_second");
            m.values_mut().for_each(strip_timings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_timings),
        _ => {}
    }
}

#[test]
fn fine_tune_and_evaluate_as_jobs_give_the_bytes_of_a_local_run_and_a_rerun_submits_nothing() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("same_bytes");
    let on_slurm = project(&partition, 2, 400);
    let first = run(c, &on_slurm, &["run", "p.yaml", "--json"]).expect_code(0);
    assert!(first.statuses().iter().all(|(_, s)| s == "ran"), "{:?}\n{}", first.statuses(), first.stderr);
    let doc = first.json();
    let steps = doc["steps"].as_array().unwrap();
    for step in steps {
        let job = &step["job"];
        if ["finetune", "evaluate"].contains(&step["name"].as_str().unwrap()) {
            assert_eq!(job["executor"], "slurm", "{step}");
            assert_eq!(job["state"], "completed", "{step}");
            assert_eq!(job["node"], c.node(), "{step}");
        } else {
            assert!(job.is_null(), "a local kind ran as a job: {step}");
        }
    }
    assert!(first.stderr.contains("queued      slurm job"), "{}", first.stderr);
    assert!(first.stderr.contains("[Epoch 2]"), "the job's log lines are the step's: {}", first.stderr);
    // More than one step may run at once: every log line names its step, also those of the
    // fine-tune, which runs alone (evaluate waits for it).
    let epochs: Vec<&str> = first.stderr.lines().filter(|l| l.contains("[Epoch ")).collect();
    assert!(epochs.iter().any(|l| l.trim_start().starts_with("finetune ")), "{}", first.stderr);
    for line in epochs {
        assert!(line.contains(" | [Epoch "), "unlabelled: {line}");
    }
    assert!(!first.stderr.contains("pipe worker:"), "{}", first.stderr);

    // The same pipeline run here: the same keys and the same bytes.
    let here = project(&partition, 2, 400);
    let local = run(c, &here, &["run", "p.yaml", "--json", "--executor", "local"]).expect_code(0);
    for (a, b) in steps.iter().zip(local.json()["steps"].as_array().unwrap()) {
        assert_eq!(a["key"], b["key"], "{} differs", a["name"]);
        assert!(b["job"].is_null());
        let key = a["key"].as_str().unwrap();
        assert_eq!(outputs(&on_slurm, key), outputs(&here, key), "{} wrote other bytes", a["name"]);
    }

    // A rerun finds everything cached and submits nothing.
    let logs = job_logs(&on_slurm).len();
    assert_eq!(logs, 2);
    let again = run(c, &on_slurm, &["run", "p.yaml", "--json"]).expect_code(0);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", again.statuses());
    assert!(!again.stderr.contains("queued"), "{}", again.stderr);
    assert_eq!(job_logs(&on_slurm).len(), logs, "a rerun submitted a job");

    // A repeated job (requeued, resubmitted) finds its result committed and exits 0.
    let key = steps.iter().find(|s| s["name"] == "finetune").unwrap()["key"].as_str().unwrap().to_string();
    let dir = on_slurm.cache().join("jobs").join(&key);
    let id = c.sbatch(&[dir.join("job.sh").to_str().unwrap()]);
    let job = c.wait_final(&id, WAIT);
    assert_eq!((job["JobState"].as_str(), job["ExitCode"].as_str()), ("COMPLETED", "0:0"), "{job:?}");
    let log = fs::read_to_string(dir.join(format!("slurm-{id}.out"))).unwrap();
    assert!(log.contains("pipe worker: the result is committed already"), "{log}");
    assert!(!log.contains("[Epoch 1]"), "the repeated job trained again: {log}");

    // A job whose inputs do not give its key is refused (here: another learning rate).
    let job_file = dir.join("job.json");
    let mut tampered: serde_json::Value = serde_json::from_slice(&fs::read(&job_file).unwrap()).unwrap();
    tampered["params"]["lr"] = serde_json::json!(0.5);
    tampered["key"] = serde_json::json!("0".repeat(64));
    let bad = dir.join("tampered.json");
    fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let worker = Run::from(on_slurm.command(&["worker", bad.to_str().unwrap()]).output().unwrap()).expect_code(2);
    assert!(worker.stderr.contains("refusing to run") && worker.stderr.contains("param lr"), "{}", worker.stderr);

    // A remote mode this pipe does not know (a newer submitter) is refused, never read-write.
    tampered["remote"] = serde_json::json!({ "url": "file:///no/such/remote", "mode": "sideways" });
    fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let worker = Run::from(on_slurm.command(&["worker", bad.to_str().unwrap()]).output().unwrap()).expect_code(2);
    assert!(worker.stderr.contains("remote mode `sideways` is not one this pipe knows"), "{}", worker.stderr);
}

/// One download step, run as a job.
fn download_pipeline(partition: &str, url: &str) -> String {
    format!(
        "name: slurm-download
executor: {{ kind: slurm, partition: {partition} }}
steps:
  fetch:
    kind: download
    url: {url}
    retries: 0
  rows:
    kind: sample
    inputs: {{ data: fetch }}
    rows: 2
"
    )
}

/// `pipe run` of [`download_pipeline`] on a new partition `name`, from a server that sends a
/// KiB every 200 ms, spawned and waited for until the job runs: the server (keep it), the
/// project, the run and the job's id.
fn running_slow_download(c: &Cluster, name: &str) -> (Server, Project, Child, String) {
    running_download(c, name, 2000)
}

/// [`running_slow_download`] of `TABLE` `times` over (2000: ~28 s).
fn running_download(c: &Cluster, name: &str, times: usize) -> (Server, Project, Child, String) {
    let partition = c.new_partition(name);
    let server = Server::start();
    let body = TABLE.repeat(times).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body, chunk: 1024, delay: Duration::from_millis(200) });
    let project = Project::new();
    project.write("p.yaml", &download_pipeline(&partition, &server.url("/slow.tsv")));
    let mut child = spawn(c, &project, &["run", "p.yaml"]);
    let id = wait_job(&project, "fetch", "running", &mut child);
    (server, project, child, id)
}

/// The line of [`download_pipeline`]'s `fetch` failing, in a run's output.
fn fetch_failure(run: &Run) -> &str {
    run.stdout
        .lines()
        .find(|l| l.starts_with("[1/2] fetch") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no failure line for fetch:\n{}\n{}", run.stdout, run.stderr))
}

#[test]
fn a_failing_job_reports_its_step_the_error_and_the_exit_code() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("failing");
    let server = Server::start();
    server.route("/gone.tsv", Behavior::Status(500));
    let project = Project::new();
    project.write("p.yaml", &download_pipeline(&partition, &server.url("/gone.tsv")));
    let failed = run(c, &project, &["run", "p.yaml"]).expect_code(1);
    let line = fetch_failure(&failed);
    assert!(line.contains("HTTP 500"), "{line}");
    assert!(line.contains("(slurm job ") && line.ends_with(", exit code 1)"), "{line}");
    assert!(failed.stdout.contains("[2/2] rows   skipped     not run: step fetch failed"), "{}", failed.stdout);
    assert_eq!(server.hits("/gone.tsv"), 1, "the job itself downloaded");
    let record = records(&project).pop().unwrap();
    assert_eq!(record["state"], "failed");
    assert_eq!(record["steps"][0]["job"]["state"], "failed");
}

/// Waits until job `id`'s log holds `text`; its path.
fn wait_for_log(project: &Project, id: &str, text: &str) -> PathBuf {
    let name = format!("slurm-{id}.out");
    let start = Instant::now();
    loop {
        let found = job_logs(project).into_iter().find(|p| p.ends_with(&name));
        if let Some(log) = found.filter(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(text))) {
            return log;
        }
        assert!(start.elapsed() < WAIT, "job {id}'s log never said {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn scancel_of_a_running_job_is_reported_as_cancelled() {
    let Some(c) = cluster() else { return };
    let (_server, project, child, id) = running_slow_download(c, "scancel");
    // The worker runs (RUNNING in the queue may come before the batch script starts).
    let log = wait_for_log(&project, &id, "pipe worker: step fetch");
    c.scancel(&id);
    let run = finish(child).expect_code(1);
    assert!(
        run.stdout.contains(&format!("failed      slurm job {id} was cancelled (scancel, or by the cluster)")),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(c.job_state(&id), "CANCELLED");
    assert!(project.entries().is_empty(), "a cancelled job left a result");
    // The job's own log says what the worker did with the SIGTERM: not "after the current step".
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("pipe worker: cancelled (SIGTERM, from scancel or the cluster)"), "{text}");
    assert!(!text.contains("after the current step"), "{text}");
}

#[test]
fn ctrl_c_cancels_the_jobs_this_run_submitted() {
    let Some(c) = cluster() else { return };
    let (_server, _project, child, id) = running_slow_download(c, "ctrl_c");
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let run = finish(child);
    assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("interrupted (slurm job {id} cancelled)")), "{}", run.stdout);
    assert!(run.stdout.contains("not run: interrupted"), "{}", run.stdout);
    let job = c.wait_final(&id, WAIT);
    assert_eq!(job["JobState"], "CANCELLED", "{job:?}");
}

#[test]
fn a_sweep_runs_both_fine_tunes_as_concurrent_jobs_status_shows_them_queued_and_report_compares_them() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("sweep");
    let project = project(&partition, 8, 1200);
    // Up to the fine-tunes here, first, so that the held partition holds just them.
    run(c, &project, &["run", "p.yaml", "--executor", "local", "--set", "finetune.epochs=1"]).expect_code(0);
    c.hold_partition(&partition);
    let mut child = spawn(c, &project, &["run", "p.yaml", "--sweep", "finetune.lr=1e-3,3e-3"]);
    let start = Instant::now();
    let queued = loop {
        let ids = c.squeue_ids_in(&partition);
        if ids.len() == 2 {
            break ids;
        }
        assert!(start.elapsed() < WAIT, "the two fine-tunes were not both submitted: {ids:?}");
        assert!(child.try_wait().unwrap().is_none(), "pipe ended early");
        std::thread::sleep(Duration::from_millis(50));
    };
    // `pipe status` (the pipeline's own lr, 1e-3: the sweep's first variant) says queued.
    let mut status = None;
    for _ in 0..100 {
        let s = run(c, &project, &["status", "p.yaml", "--json"]).expect_code(0).json();
        if s["steps"][4]["state"] == "queued" {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.expect("status never showed the fine-tune queued");
    let at = status["steps"][4]["where"].as_str().unwrap();
    assert!(queued.iter().any(|id| at.starts_with(&format!("slurm job {id}"))), "{at} {queued:?}");
    // Evaluating waits for the fine-tune: its key is not known yet.
    assert_eq!(status["steps"][5]["state"], "stale", "{status:#}");
    let text = run(c, &project, &["status", "p.yaml"]).expect_code(0).stdout;
    assert!(text.lines().any(|l| l.contains("finetune") && l.contains("queued") && l.contains("slurm job")), "{text}");

    // Released, both run at once.
    c.release_partition(&partition);
    let mut together = false;
    while child.try_wait().unwrap().is_none() {
        let states: Vec<String> = queued.iter().map(|id| c.job_state(id)).collect();
        together |= states.iter().all(|s| s == "RUNNING");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run_out = finish(child).expect_code(0);
    let (a, b) = (c.scontrol_job(&queued[0]), c.scontrol_job(&queued[1]));
    assert!(together, "the two fine-tunes were never RUNNING at the same time: {a:?} {b:?}");
    assert!(a["StartTime"] <= b["EndTime"] && b["StartTime"] <= a["EndTime"], "{a:?} {b:?}");
    assert!(run_out.stdout.contains("finetune[lr=1e-3]") && run_out.stdout.contains("finetune[lr=3e-3]"));

    let report = run(c, &project, &["report", "--format", "json"]).expect_code(0).json();
    let rows = report["comparison"].as_array().unwrap();
    let lrs: Vec<&str> = rows.iter().filter_map(|r| r["params"]["finetune.lr"].as_str()).collect();
    assert!(lrs.ends_with(&["0.001", "0.003"]), "{report:#}");
    assert!(rows.iter().rev().take(2).all(|r| r["evaluation"]["accuracy"].as_f64().is_some()), "{report:#}");
}

#[test]
fn secrets_reach_jobs_through_their_environment_and_nowhere_else() {
    let Some(c) = cluster() else { return };
    let Some(moto) = Moto::start("slurm_secrets") else { return };
    moto.create_bucket("team");
    let partition = c.new_partition("secrets");
    let project = project(&partition, 1, 400);
    // A step of a kind the cluster runs can stay here.
    let yaml = fs::read_to_string(project.path().join("p.yaml")).unwrap();
    project.write("p.yaml", &yaml.replace("    kind: evaluate\n", "    kind: evaluate\n    executor: local\n"));
    let mut cmd = command(c, &project, &["run", "p.yaml", "--json", "--remote", "s3://team/cache"]);
    moto.env(&mut cmd);
    let run = Run::from(cmd.output().unwrap()).expect_code(0);
    let doc = run.json();
    let finetune = doc["steps"].as_array().unwrap().iter().find(|s| s["name"] == "finetune").unwrap().clone();
    assert_eq!(finetune["job"]["executor"], "slurm", "{finetune}");
    let evaluate = doc["steps"].as_array().unwrap().iter().find(|s| s["name"] == "evaluate").unwrap().clone();
    assert!(evaluate["job"].is_null() && evaluate["status"] == "ran", "{evaluate}");
    // The job pushed its result with the credentials it got from its environment.
    let key = finetune["key"].as_str().unwrap();
    let manifests: Vec<String> = moto.list("team", "cache/manifests").into_iter().map(|(k, _)| k).collect();
    assert!(manifests.contains(&format!("cache/manifests/{key}.json")), "{manifests:?}");
    // ...which are in no file of the job, nor in what Slurm keeps of it, nor in pipe's output.
    let mut seen = format!("{}{}", run.stdout, run.stderr);
    for path in files(&project.cache().join("jobs")).into_iter().chain(files(&project.cache().join("runs"))) {
        seen.push_str(&String::from_utf8_lossy(&fs::read(&path).unwrap()));
    }
    let id = finetune["job"]["id"].as_str().unwrap();
    let script = c.command("scontrol").args(["write", "batch_script", id, "-"]).output().unwrap();
    assert!(script.status.success(), "{}", String::from_utf8_lossy(&script.stderr));
    let script = String::from_utf8_lossy(&script.stdout).into_owned();
    assert!(script.contains(" worker "), "{script}");
    seen.push_str(&script);
    seen.push_str(&format!("{:?}", c.scontrol_job(id)));
    assert!(!seen.contains(SECRET_KEY), "the secret key leaked");
    assert!(!seen.contains(ACCESS_KEY), "the access key leaked");
}

#[test]
fn the_slurm_executor_without_sbatch_is_a_usage_error() {
    let project = project("p", 1, 10);
    let run = Run::from(project.command(&["run", "p.yaml"]).env("PATH", "/nonexistent").output().expect("run pipe"))
        .expect_code(2);
    assert!(run.stderr.contains("the Slurm executor needs `sbatch`"), "{}", run.stderr);
    assert!(run.stderr.contains("--executor local"), "{}", run.stderr);
    assert!(!project.cache().join("steps").exists(), "something ran");
}

#[test]
fn resources_and_executors_are_not_in_keys() {
    let project = Project::new();
    project.write("data.tsv", TABLE);
    let plain = "name: keys\nsteps:\n  data:\n    kind: download\n    url: data.tsv\n  rows:\n    kind: sample\n    inputs: { data: data }\n    rows: 2\n";
    project.write("p.yaml", plain);
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    let with = plain.replace(
        "    rows: 2\n",
        "    rows: 2\n    executor: local\n    resources: { gpus: 1, cpus: 8, mem: 32G, time: \"4:00:00\", partition: gpu }\n",
    );
    project.write(
        "p.yaml",
        &format!(
            "{with}executor:\n  kind: local\n  partition: big\n  resources: {{ mem: 4G }}\n  local_kinds: [download]\n"
        ),
    );
    let again = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(again.statuses(), [("data", "cached"), ("rows", "cached")].map(|(a, b)| (a.into(), b.into())));
    assert_eq!(first.json()["steps"][1]["key"], again.json()["steps"][1]["key"]);
}

#[test]
fn bad_executor_and_resources_sections_name_the_file_line_and_step() {
    let project = Project::new();
    project.write(
        "p.yaml",
        "name: bad
executor:
  kind: slurmm
  local_kinds: [downlaod]
  colour: blue
steps:
  data:
    kind: download
    url: http://127.0.0.1:9/x
    executor: cloud
    resources: { gpus: -1, mem: lots, time: soon, cpu: 2 }
",
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    let err = run.stderr;
    for expected in [
        "error: executor: `kind` must be local or slurm, got \"slurmm\"\n  --> p.yaml:3:9",
        "= help: did you mean `slurm`?",
        "error: executor: `local_kinds` names unknown step kind `downlaod`\n  --> p.yaml:4:16",
        "= help: did you mean `download`?",
        "error: executor: unknown key `colour`\n  --> p.yaml:5:3",
        "error: step `data`: `executor` must be local or slurm, got \"cloud\"\n  --> p.yaml:10:15",
        "error: step `data`: resources: `gpus` must be a non-negative integer, got `-1`",
        "error: step `data`: resources: `mem` must be a memory size, got \"lots\"",
        "help: a number of MiB or a size with a unit: 4096, 500M, 16G, 1T",
        "error: step `data`: resources: `time` must be a Slurm time limit, got \"soon\"",
        "error: step `data`: unknown resource `cpu`",
        "= help: did you mean `cpus`?",
        "nothing was run",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
#[ignore = "takes 60-90 s: Slurm time limits are whole minutes"]
fn a_job_over_its_time_limit_is_reported_with_the_resource_to_raise() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("timeout");
    let server = Server::start();
    let body = TABLE.repeat(4000).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body, chunk: 512, delay: Duration::from_millis(200) });
    let project = Project::new();
    let yaml = download_pipeline(&partition, &server.url("/slow.tsv"))
        .replace("    retries: 0\n", "    retries: 0\n    resources: { time: 1 }\n");
    project.write("p.yaml", &yaml);
    let run = run(c, &project, &["run", "p.yaml"]).expect_code(1);
    let line = fetch_failure(&run);
    assert!(line.contains("reached its time limit"), "{line}");
    assert!(run.stdout.contains("help: give step `fetch` more time"), "{}", run.stdout);
}

/// A directory with `squeue` and `scontrol` first on PATH that fail (as with the controller
/// down) their first `squeue_failures` and `scontrol_failures` calls, then run the real ones;
/// `calls/<program>` counts the calls.
fn flaky_slurm(squeue_failures: u32, scontrol_failures: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("calls")).unwrap();
    for (program, failures) in [("squeue", squeue_failures), ("scontrol", scontrol_failures)] {
        let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .chain(["/usr/bin".into()])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no {program} on PATH"));
        let count = dir.path().join("calls").join(program);
        let script = format!(
            "#!/bin/sh\nn=$(cat '{count}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{count}'\n\
             if [ $n -le {failures} ]; then echo '{program}: error: Unable to contact slurm controller (connect failure)' >&2; exit 1; fi\n\
             exec '{real}' \"$@\"\n",
            count = count.display(),
            real = real.display()
        );
        let path = dir.path().join(program);
        fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn calls(flaky: &tempfile::TempDir, program: &str) -> u32 {
    fs::read_to_string(flaky.path().join("calls").join(program)).map(|t| t.trim().parse().unwrap()).unwrap_or(0)
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest))).unwrap()
}

#[test]
fn a_failing_squeue_or_scontrol_is_asked_again_and_the_job_watched_to_its_end() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("flaky");
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let project = Project::new();
    project.write("p.yaml", &download_pipeline(&partition, &server.url("/data.tsv")));
    let flaky = flaky_slurm(3, 2);
    let run = Run::from(
        command(c, &project, &["run", "p.yaml", "--json"]).env("PATH", path_with(flaky.path())).output().unwrap(),
    )
    .expect_code(0);
    assert_eq!(
        run.statuses(),
        [("fetch", "ran"), ("rows", "ran")].map(|(a, b)| (a.into(), b.into())),
        "{}",
        run.stderr
    );
    assert!(calls(&flaky, "squeue") > 3, "squeue never failed: the test tests nothing");
    assert!(!run.stderr.contains("lost contact"), "{}", run.stderr);
    let job = &run.json()["steps"][0]["job"];
    assert_eq!(job["state"], "completed", "{job}");
}

#[test]
fn a_cluster_that_stops_answering_gets_its_job_cancelled_and_the_step_failed() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("unanswered");
    // Held: the job waits, and only the failing queries can end the wait.
    c.hold_partition(&partition);
    let project = Project::new();
    project.write("p.yaml", &download_pipeline(&partition, "http://127.0.0.1:9/never.tsv"));
    let flaky = flaky_slurm(u32::MAX / 2, u32::MAX / 2);
    let run = Run::from(
        command(c, &project, &["run", "p.yaml"])
            .env("PATH", path_with(flaky.path()))
            .env("PIPE_SLURM_PATIENCE", "3")
            .output()
            .unwrap(),
    )
    .expect_code(1);
    let line = fetch_failure(&run);
    assert!(line.contains("lost contact with the cluster: no answer about slurm job"), "{line}");
    assert!(line.contains("Unable to contact slurm controller"), "{line}");
    assert!(run.stdout.contains("was cancelled so that it does not run unwatched"), "{}", run.stdout);
    let record = records(&project).pop().unwrap();
    let id = record["steps"][0]["job"]["id"].as_str().unwrap().to_string();
    assert_eq!(record["steps"][0]["job"]["state"], "cancelled");
    // The real scontrol: cancelled, not left pending unwatched.
    assert_eq!(c.wait_final(&id, WAIT)["JobState"], "CANCELLED");
    c.release_partition(&partition);
}

/// Every file under the cluster's state directory (where slurmctld keeps each job's script
/// and environment) that holds `needle`.
fn in_cluster_state(c: &Cluster, needle: &str) -> Vec<PathBuf> {
    files(&c.dir().join("state"))
        .into_iter()
        .filter(|p| fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())))
        .collect()
}

#[test]
fn a_job_gets_only_the_variables_it_needs_and_a_cache_path_may_have_spaces() {
    let Some(c) = cluster() else { return };
    let partition = c.new_partition("exported");
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            "name: slurm-env
executor: {{ kind: slurm, partition: {partition} }}
steps:
  look:
    kind: command
    outputs: {{ seen: seen.txt }}
    env: [{{ name: MY_TEST_SETTING, unkeyed: true }}]
    run: printf '%s' \"$MY_TEST_SETTING\" > {{outputs.seen}}
"
        ),
    );
    let unique = format!("{}-{}", std::process::id(), project.path().display().to_string().len());
    let canary = format!("canary-{unique}");
    let aws_secret = format!("aws-secret-{unique}");
    let wanted = format!("wanted-{unique}");
    // A cache directory with a space: `#SBATCH --output=` must be quoted.
    let cache = project.path().join("my cache");
    let run = Run::from(
        command(c, &project, &["run", "p.yaml", "--json"])
            .env("PIPE_CACHE_DIR", &cache)
            .env("TEST_CANARY_X", &canary)
            .env("AWS_SECRET_ACCESS_KEY", &aws_secret)
            .env("MY_TEST_SETTING", &wanted)
            .output()
            .unwrap(),
    )
    .expect_code(0);
    let doc = run.json();
    let step = &doc["steps"][0];
    assert_eq!(step["job"]["state"], "completed", "{step}");
    // What the step declared reached it...
    let key = step["key"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(cache.join("steps").join(key).join("manifest.json")).unwrap()).unwrap();
    let seen = cache.join("steps").join(key).join(manifest["dir"].as_str().unwrap()).join("seen");
    assert_eq!(fs::read_to_string(seen).unwrap(), wanted);
    // ...and is what slurmctld keeps of the job's environment (so this looks in the right place)...
    assert!(!in_cluster_state(c, &wanted).is_empty(), "the job's environment is not under {}", c.dir().display());
    // ...but not the rest of the submitting environment, nor AWS credentials without a remote.
    assert_eq!(in_cluster_state(c, &canary), Vec::<PathBuf>::new(), "the whole environment was exported");
    assert_eq!(
        in_cluster_state(c, &aws_secret),
        Vec::<PathBuf>::new(),
        "AWS credentials went to a job without a remote"
    );
    let id = step["job"]["id"].as_str().unwrap();
    let record = format!("{:?}", c.scontrol_job(id));
    assert!(!record.contains(&canary) && !record.contains(&aws_secret), "{record}");
    assert!(
        cache.join("jobs").join(key).join(format!("slurm-{id}.out")).is_file(),
        "the job's log is not in the cache"
    );
}

#[test]
fn device_auto_is_refused_for_a_slurm_job_and_fine_here() {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(40, 7));
    project.write(
        "p.yaml",
        &tiny_bert_pipeline(&TinyBert {
            name: "slurm-auto",
            header: "executor: { kind: slurm, local_kinds: [download, train-tokenizer, tokenize, pretrain] }\n",
            epochs: 1,
            finetune: "    device: auto\n    resources: { gpus: 1 }\n",
            ..TinyBert::default()
        }),
    );
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(
        run.stderr.contains(
            "step `finetune` runs as a Slurm job with `device: auto`, which would be decided on this machine"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("`device: cuda` (with `resources: { gpus: 1 }`)"), "{}", run.stderr);
    assert!(!project.cache().join("steps").exists(), "something ran");
    // Here `auto` is this machine's device, as ever.
    project.run(&["run", "p.yaml", "--dry-run", "--executor", "local"]).expect_code(0);
}

#[test]
fn a_rerun_reattaches_to_the_job_of_a_killed_run_and_forwards_its_log() {
    let Some(c) = cluster() else { return };
    // ~6 s of download left when the first run is killed.
    let (_server, project, mut child, id) = running_download(c, "reattach", 500);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(c.job_state(&id), "RUNNING", "the job runs on without its run");
    let rerun = run(c, &project, &["run", "p.yaml", "--json"]).expect_code(0);
    assert!(
        rerun.stderr.contains(&format!("reattached to slurm job {id} (submitted by run "))
            && rerun.stderr.contains(&format!("`scancel {id}` cancels it")),
        "{}",
        rerun.stderr
    );
    assert!(rerun.stderr.contains("fetch | downloading"), "the job's log was not forwarded: {}", rerun.stderr);
    let doc = rerun.json();
    assert_eq!(doc["steps"][0]["status"], "ran", "{doc:#}");
    assert_eq!(doc["steps"][0]["job"]["id"].as_str(), Some(id.as_str()), "{doc:#}");
    let key = doc["steps"][0]["key"].as_str().unwrap();
    let logs = files(&project.cache().join("jobs").join(key));
    let logs: Vec<_> = logs.iter().filter(|p| p.to_string_lossy().ends_with(".out")).collect();
    assert_eq!(logs.len(), 1, "a second job was submitted for fetch: {logs:?}");
}

#[test]
fn status_shows_the_cancelled_job_of_a_run_that_quit_at_once_as_failed() {
    let Some(c) = cluster() else { return };
    let (_server, project, child, id) = running_slow_download(c, "quit");
    // Ctrl-C twice: cancel the jobs and quit without waiting (the record still says running).
    for _ in 0..2 {
        assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let quit = finish(child);
    assert_eq!(quit.code, 130, "{}\n{}", quit.stdout, quit.stderr);
    assert_eq!(c.wait_final(&id, WAIT)["JobState"], "CANCELLED");
    assert_eq!(records(&project).pop().unwrap()["steps"][0]["status"], "running");
    let status = run(c, &project, &["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][0]["state"], "failed", "{status:#}");
    assert_eq!(status["steps"][0]["error"], format!("slurm job {id} cancelled"), "{status:#}");
    let text = run(c, &project, &["status", "p.yaml"]).expect_code(0).stdout;
    assert!(
        text.lines().any(|l| l.contains("fetch") && l.contains(&format!("failed      slurm job {id} cancelled"))),
        "{text}"
    );
}

/// `executor: node_cache:` — jobs keep results in a cache of their node's own (here a
/// directory this machine's cache is not) and move them through the remote: the job pulls its
/// input, which this machine computed, from the remote, and this run pulls the job's result
/// from it. Without a writable remote it is a usage error.
#[test]
fn jobs_with_a_node_cache_of_their_own_move_results_through_the_remote() {
    let Some(c) = cluster() else { return };
    let Some(moto) = Moto::start("slurm_node_cache") else { return };
    moto.create_bucket("team");
    let partition = c.new_partition("nodecache");
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let node = tempfile::tempdir().unwrap();
    let project = Project::new();
    let yaml = download_pipeline(&partition, &server.url("/data.tsv"))
        .replace("executor: {", &format!("executor: {{ node_cache: {},", node.path().display()))
        .replace("    retries: 0\n", "    retries: 0\n    executor: local\n");
    project.write("p.yaml", &yaml);
    let refused = run(c, &project, &["run", "p.yaml"]).expect_code(2);
    assert!(refused.stderr.contains("`executor: node_cache:` needs a remote cache"), "{}", refused.stderr);

    let mut cmd = command(c, &project, &["run", "p.yaml", "--json", "--remote", "s3://team/nodes"]);
    moto.env(&mut cmd);
    let run = Run::from(cmd.output().unwrap()).expect_code(0);
    let doc = run.json();
    let steps = doc["steps"].as_array().unwrap();
    assert!(steps[0]["job"].is_null() && steps[0]["status"] == "ran", "{}", doc);
    assert_eq!(steps[1]["job"]["executor"], "slurm", "{doc}");
    assert_eq!(steps[1]["status"], "ran", "{doc}");
    let (fetch, rows) = (steps[0]["key"].as_str().unwrap(), steps[1]["key"].as_str().unwrap());
    let has = |cache: &Path, key: &str| cache.join("steps").join(key).join("manifest.json").is_file();
    // The node's cache got fetch from the remote and computed rows; this machine's cache got
    // rows back from the remote.
    assert!(has(node.path(), fetch) && has(node.path(), rows), "{:?}", files(node.path()));
    assert!(has(&project.cache(), fetch) && has(&project.cache(), rows));
    let manifests: Vec<String> = moto.list("team", "nodes/manifests").into_iter().map(|(k, _)| k).collect();
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    let node_rows = fs::read(node.path().join("steps").join(rows).join("manifest.json")).unwrap();
    let here_rows = fs::read(project.cache().join("steps").join(rows).join("manifest.json")).unwrap();
    let outputs = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap()["outputs"].clone();
    assert_eq!(outputs(&node_rows), outputs(&here_rows), "the same bytes on the node and here");
}
