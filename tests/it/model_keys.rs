//! Keys of the model steps through the real binary: `device: auto` is keyed as the device it
//! resolves to, and `--force` trains from scratch instead of resuming an earlier attempt.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{tiny_bert_pipeline, tiny_bert_table, Project, TinyBert};

fn pipeline(epochs: usize, evaluate: bool) -> String {
    tiny_bert_pipeline(&TinyBert {
        name: "keys",
        epochs,
        finetune: "    log_every: 0\n",
        evaluate,
        ..TinyBert::default()
    })
}

fn project(epochs: usize) -> Project {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(400, 12345));
    project.write("p.yaml", &pipeline(epochs, false));
    project
}

#[test]
fn device_auto_is_keyed_as_the_device_it_picks() {
    let project = project(1);
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(first.status_of("finetune"), "ran");
    // This build has no GPU backend: `auto` is the CPU, so the CPU result is a hit...
    let auto = project.run(&["run", "p.yaml", "--json", "--set", "finetune.device=auto"]).expect_code(0);
    assert_eq!(auto.status_of("finetune"), "cached");
    let record = latest_record(&project);
    let finetune = record["steps"].as_array().unwrap().iter().find(|s| s["name"] == "finetune").unwrap();
    // ...recorded with what the user wrote and keyed by what it resolved to.
    assert_eq!(finetune["params"]["device"], "auto");
    assert_eq!(finetune["fingerprint"]["params"]["device"], "cpu");
}

#[test]
fn force_trains_from_scratch_instead_of_resuming() {
    let project = project(200);
    let mut child = project.command(&["run", "p.yaml"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Interrupt (Ctrl-C) once the first epoch's checkpoint is written.
    let checkpoints = project.cache().join("checkpoints");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = fs::read_dir(&checkpoints)
            .map(|rd| rd.flatten().any(|d| fs::read_dir(d.path()).map(|f| f.count() > 0).unwrap_or(false)))
            .unwrap_or(false);
        if written {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint was written");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    // A plain rerun would resume; a forced one starts over (and is not told to resume).
    let forced = project.run(&["run", "p.yaml", "--force", "finetune", "--set", "finetune.epochs=200"]);
    let forced = forced.expect_code(0);
    assert!(!forced.stderr.contains("resuming after epoch"), "{}", forced.stderr);
    assert!(forced.stderr.contains("[Epoch 1]"), "{}", forced.stderr);
}

fn latest_record(project: &Project) -> serde_json::Value {
    let mut runs: Vec<_> = fs::read_dir(project.cache().join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    runs.sort();
    serde_json::from_slice(&fs::read(runs.last().unwrap()).unwrap()).unwrap()
}

#[test]
fn a_sweep_of_learning_rates_shares_pretraining_and_the_report_compares_the_variants() {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(400, 12345));
    project.write("p.yaml", &pipeline(2, true));
    let run = project.run(&["run", "p.yaml", "--json", "--sweep", "finetune.lr=1e-3,3e-3"]).expect_code(0);
    let statuses = run.statuses();
    let ran = |name: &str| statuses.iter().filter(|(n, s)| n.starts_with(name) && s == "ran").count();
    assert_eq!((ran("pretrain"), ran("finetune["), ran("evaluate[")), (1, 2, 2), "{statuses:?}");
    let report = project.run(&["report", "--format", "json"]).expect_code(0).json();
    let rows = report["comparison"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let lrs: Vec<&str> = rows.iter().map(|r| r["params"]["finetune.lr"].as_str().unwrap()).collect();
    assert_eq!(lrs, ["0.001", "0.003"]);
    assert!(rows.iter().all(|r| r["evaluation"]["accuracy"].as_f64().is_some()), "{report}");
    assert!(rows[0]["label"].as_str().unwrap().ends_with("[lr=1e-3]"), "{report}");
}
