//! The Slurm test cluster itself (support/slurm.rs): what the Slurm executor's tests rely on —
//! job states and exit codes as `scontrol` reports them, output files, cancellation, two jobs at
//! once, held partitions. Skipped (with a notice) where Slurm is not installed, failed under CI.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::slurm::{cluster, parse_record, MIN_CPUS};

const WAIT: Duration = Duration::from_secs(30);

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn a_job_that_exits_0_is_completed_and_its_output_file_holds_its_stdout() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.txt");
    let id = c.sbatch(&["--chdir", path(dir.path()), "-o", path(&out), "--wrap", "echo hello from $SLURM_JOB_ID"]);
    let job = c.wait_final(&id, WAIT);
    assert_eq!(job["JobState"], "COMPLETED", "{job:?}");
    assert_eq!(job["ExitCode"], "0:0");
    assert_eq!(job["Partition"], c.partition());
    assert_eq!(job["StdOut"], path(&out));
    assert_eq!(fs::read_to_string(&out).expect("output file"), format!("hello from {id}\n"));
}

#[test]
fn a_job_that_exits_3_is_failed_with_exit_code_3() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let id = c.sbatch(&["--chdir", path(dir.path()), "-o", "/dev/null", "--wrap", "exit 3"]);
    let job = c.wait_final(&id, WAIT);
    assert_eq!(job["JobState"], "FAILED", "{job:?}");
    assert_eq!(job["ExitCode"], "3:0");
    assert_eq!(job["Reason"], "NonZeroExitCode");
}

#[test]
fn scancel_of_a_running_job_cancels_it_and_kills_its_process() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 300", path(&pid_file));
    let id = c.sbatch(&["--chdir", path(dir.path()), "-o", "/dev/null", "--wrap", &script]);
    c.wait_state(&id, "RUNNING", WAIT);
    let pid = wait_for_file(&pid_file).trim().to_string();
    assert!(Path::new("/proc").join(&pid).exists(), "the job's sleep {pid} runs");
    c.scancel(&id);
    let job = c.wait_final(&id, WAIT);
    assert_eq!(job["JobState"], "CANCELLED", "{job:?}");
    let start = Instant::now();
    // A killed process may linger as a zombie of slurmstepd for a moment; "Z" counts as gone.
    while running(&pid) {
        assert!(start.elapsed() < Duration::from_secs(10), "the cancelled job's process {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!c.squeue_ids().contains(&id));
}

#[test]
fn two_one_cpu_jobs_run_at_the_same_time() {
    let Some(c) = cluster() else { return };
    assert!(c.cpus() >= MIN_CPUS);
    let dir = tempfile::tempdir().expect("tempdir");
    // Each job announces itself and waits (at most 20 s) for the other: both complete only if
    // they ran at the same time.
    let job = |me: &str, other: &str| {
        let script = format!(
            "touch {me}; for i in $(seq 200); do [ -e {other} ] && exit 0; sleep 0.1; done; echo alone; exit 1"
        );
        c.sbatch(&["--chdir", path(dir.path()), "-n", "1", "-o", "/dev/null", "--wrap", &script])
    };
    let a = job("a", "b");
    let b = job("b", "a");
    for id in [a, b] {
        let rec = c.wait_final(&id, WAIT);
        assert_eq!(rec["JobState"], "COMPLETED", "job {id} did not meet the other: {rec:?}");
    }
}

#[test]
fn a_held_partition_keeps_jobs_pending_until_released() {
    let Some(c) = cluster() else { return };
    let part = c.new_partition("held");
    assert!(c.squeue_ids_in(&part).is_empty());
    c.hold_partition(&part);
    let dir = tempfile::tempdir().expect("tempdir");
    let id = c.sbatch(&["-p", &part, "--chdir", path(dir.path()), "-o", "/dev/null", "--wrap", "true"]);
    // Scheduling is event-driven and takes well under 2 s here (BENCHMARKS_SLURM.md): a job
    // still pending after 2 s is held, not slow.
    std::thread::sleep(Duration::from_secs(2));
    let job = c.scontrol_job(&id);
    assert_eq!(job["JobState"], "PENDING", "{job:?}");
    assert_eq!(job["Reason"], "PartitionDown");
    assert_eq!(c.squeue_ids_in(&part), vec![id.clone()]);
    assert!(c.squeue_ids_in(c.partition()).iter().all(|other| other != &id));
    c.release_partition(&part);
    let job = c.wait_final(&id, WAIT);
    assert_eq!(job["JobState"], "COMPLETED", "{job:?}");
    assert!(c.squeue_ids_in(&part).is_empty());
}

#[test]
fn an_unknown_job_has_an_empty_record() {
    let Some(c) = cluster() else { return };
    assert!(c.scontrol_job("999999").is_empty());
}

#[test]
fn the_node_is_this_host_with_enough_cpus() {
    let Some(c) = cluster() else { return };
    let out = c.command("scontrol").args(["show", "node", "-o", c.node()]).output().expect("scontrol");
    let node = parse_record(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(node["NodeName"], c.node());
    assert_eq!(node["NodeAddr"], "127.0.0.1");
    assert!(node["CPUTot"].parse::<u32>().expect("CPUTot") >= MIN_CPUS, "{node:?}");
    assert!(c.conf().starts_with(std::env::temp_dir()), "private slurm.conf: {}", c.conf().display());
}

#[test]
fn scontrol_records_keep_values_with_spaces() {
    let rec = parse_record("JobId=7 JobName=wrap Reason=a b c Socks/Node=* NtasksPerN:B:S:C=0:0:*:* Power=");
    assert_eq!(rec["JobId"], "7");
    assert_eq!(rec["Reason"], "a b c");
    assert_eq!(rec["Socks/Node"], "*");
    assert_eq!(rec["NtasksPerN:B:S:C"], "0:0:*:*");
    assert_eq!(rec["Power"], "");
}

/// Slurm checks time limits about every 30 s and limits are whole minutes: this takes 60-90 s,
/// too long for the default run. `cargo test -p pipe --test it slurm_cluster -- --ignored`.
#[test]
#[ignore = "takes 60-90 s: Slurm time limits are whole minutes"]
fn a_job_over_its_time_limit_is_timeout() {
    let Some(c) = cluster() else { return };
    let id = c.sbatch(&["--time=1", "-o", "/dev/null", "--wrap", "sleep 300"]);
    let job = c.wait_final(&id, Duration::from_secs(150));
    assert_eq!(job["JobState"], "TIMEOUT", "{job:?}");
    assert_eq!(job["Reason"], "TimeLimit");
}

fn wait_for_file(p: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(p) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(start.elapsed() < WAIT, "{} was not written", p.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the process exists and is not a zombie.
fn running(pid: &str) -> bool {
    match fs::read_to_string(Path::new("/proc").join(pid).join("stat")) {
        // "PID (comm) STATE …": the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}
