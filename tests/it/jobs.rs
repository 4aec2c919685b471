//! `pipe run --jobs N`: independent steps run at once, their output stays one line per step
//! event with the step named, a failure stops new steps while running ones finish, and the run
//! record is right; with more than one step allowed at once, every log line names its step, also
//! while one runs alone. The overlap is proven by a server that answers a request only once a
//! second one is in flight (or after a patience), so a sequential run cannot fake it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::http::{Behavior, Server};
use crate::support::{Project, TABLE};

/// Answers every request with `TABLE`, but holds each until `together` requests are in flight
/// at once or `patience` has passed; counts the most in flight at once.
struct Rendezvous {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<(Mutex<(usize, usize)>, Condvar)>,
}

impl Rendezvous {
    fn start(together: usize, patience: Duration) -> Rendezvous {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        // (in flight now, most in flight at once)
        let state: Arc<(Mutex<(usize, usize)>, Condvar)> = Arc::default();
        let (s, st) = (stop.clone(), state.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let st = st.clone();
                thread::spawn(move || serve(stream, &st, together, patience));
            }
        });
        Rendezvous { addr, stop, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn most_at_once(&self) -> usize {
        self.state.0.lock().unwrap().1
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut stream: TcpStream, state: &(Mutex<(usize, usize)>, Condvar), together: usize, patience: Duration) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let (lock, cvar) = state;
    {
        let mut s = lock.lock().unwrap();
        s.0 += 1;
        s.1 = s.1.max(s.0);
        cvar.notify_all();
        let deadline = Instant::now() + patience;
        while s.1 < together {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = cvar.wait_timeout(s, left).unwrap().0;
        }
    }
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", TABLE.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(TABLE.as_bytes());
    let _ = stream.flush();
    lock.lock().unwrap().0 -= 1;
}

/// Two independent downloads, each followed by a sample that logs every row.
fn pipeline(left: &str, right: &str) -> String {
    format!(
        "name: jobs
steps:
  left:
    kind: download
    url: {left}
    retries: 0
  right:
    kind: download
    url: {right}
    retries: 0
  left_rows:
    kind: sample
    inputs: {{ data: left }}
    rows: 2
    log_every: 1
  right_rows:
    kind: sample
    inputs: {{ data: right }}
    rows: 3
    log_every: 1
"
    )
}

#[test]
fn two_independent_downloads_are_in_flight_at_once_with_jobs_2() {
    let server = Rendezvous::start(2, Duration::from_secs(20));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/left.tsv"), &server.url("/right.tsv")));
    let started = Instant::now();
    let run = project.run(&["run", "p.yaml", "--jobs", "2"]).expect_code(0);
    assert_eq!(server.most_at_once(), 2, "both downloads were in flight at once");
    assert!(started.elapsed() < Duration::from_secs(15), "the downloads waited for each other's patience");

    // Every step line names its step; while both ran, their log lines carry the step's name.
    for line in run.stdout.lines().filter(|l| l.starts_with('[')) {
        assert!(
            ["left ", "right ", "left_rows ", "right_rows "].iter().any(|s| line.contains(s)),
            "a step line without its step: {line}\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("ok: 0 cached, 4 ran"), "{}", run.stdout);
    for step in ["left", "right"] {
        let prefix = format!("      {step:<10} | downloading");
        assert!(run.stderr.lines().any(|l| l.starts_with(&prefix)), "no log line prefixed by {step}:\n{}", run.stderr);
    }
    // Log lines are whole lines: none holds two step names.
    for line in run.stderr.lines() {
        let names = ["left ", "right ", "left_rows ", "right_rows "].iter().filter(|s| line.contains(**s)).count();
        assert!(names <= 1, "interleaved line: {line}");
    }

    // The run record is complete and right, written from the executor's thread only.
    let runs: Vec<_> = std::fs::read_dir(project.cache().join("runs")).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(runs[0].path()).unwrap()).unwrap();
    assert_eq!(record["state"], "succeeded");
    for step in record["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "ran", "{step}");
        assert!(step["key"].as_str().is_some_and(|k| k.len() == 64), "{step}");
    }
    let again = project.run(&["run", "p.yaml", "--jobs", "2", "--json"]).expect_code(0);
    assert!(again.statuses().iter().all(|(_, s)| s == "cached"), "{:?}", again.statuses());
}

#[test]
fn with_jobs_1_steps_run_one_after_another_and_lines_are_as_before() {
    let server = Rendezvous::start(2, Duration::from_millis(300));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/left.tsv"), &server.url("/right.tsv")));
    let run = project.run(&["run", "p.yaml", "--jobs", "1"]).expect_code(0);
    assert_eq!(server.most_at_once(), 1, "one step at a time");
    let steps: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(steps.len(), 8, "{}", run.stdout);
    let order: Vec<&str> = steps.iter().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(order, ["left", "left", "right", "right", "left_rows", "left_rows", "right_rows", "right_rows"]);
    // No prefixes: the log lines are as a sequential run always printed them.
    assert!(run.stderr.lines().any(|l| l == "      1 rows"), "{}", run.stderr);
    assert!(!run.stderr.contains(" | "), "{}", run.stderr);
}

#[test]
fn a_failure_with_jobs_2_lets_the_running_step_finish_and_starts_nothing_new() {
    let server = Server::start();
    let body = TABLE.repeat(40).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body, chunk: 64, delay: Duration::from_millis(25) });
    server.route("/gone.tsv", Behavior::Status(500));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/slow.tsv"), &server.url("/gone.tsv")));
    let run = project.run(&["run", "p.yaml", "--jobs", "2", "--json"]).expect_code(1);
    let statuses = run.statuses();
    assert_eq!(
        statuses,
        [("left", "ran"), ("right", "failed"), ("left_rows", "skipped"), ("right_rows", "skipped")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(run.json()["steps"][1]["error"].as_str().unwrap().contains("HTTP 500"), "{}", run.stdout);
    assert!(
        run.stderr.lines().any(|l| l.contains("right") && l.contains("failed") && l.contains("HTTP 500")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("not run: step right failed"), "{}", run.stderr);
    // What ran is cached: the next run needs only the failed branch.
    server.route("/gone.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let again = project.run(&["run", "p.yaml", "--jobs", "2", "--json"]).expect_code(0);
    assert_eq!(again.status_of("left"), "cached");
    assert_eq!(again.status_of("right"), "ran");
    assert_eq!(server.hits("/slow.tsv"), 1);
}

#[test]
fn jobs_must_be_a_positive_number() {
    let project = Project::new();
    project.write("p.yaml", &pipeline("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"));
    let run = project.run(&["run", "p.yaml", "--jobs", "0"]).expect_code(2);
    assert!(run.stderr.contains("--jobs"), "{}", run.stderr);
}

#[test]
fn status_shows_a_step_that_a_live_run_computes_as_running() {
    let server = Server::start();
    let body = TABLE.repeat(400).into_bytes();
    server.route("/slow.tsv", Behavior::Slow { body, chunk: 256, delay: Duration::from_millis(30) });
    server.route("/fast.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let project = Project::new();
    project.write("p.yaml", &pipeline(&server.url("/slow.tsv"), &server.url("/fast.tsv")));
    let mut child = project
        .command(&["run", "p.yaml", "--jobs", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.hits("/slow.tsv") == 0 {
        assert!(Instant::now() < deadline, "the download never started");
        thread::sleep(Duration::from_millis(20));
    }
    let status = project.run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    let text = project.run(&["status", "p.yaml"]).expect_code(0).stdout;
    child.wait().unwrap();
    assert_eq!(status["steps"][0]["state"], "running", "{status:#}");
    assert!(status["steps"][0]["where"].as_str().unwrap().starts_with("in run "), "{status:#}");
    assert_eq!(status["steps"][1]["state"], "never-run", "{status:#}");
    assert!(text.lines().any(|l| l.contains("left") && l.contains("running") && l.contains("in run")), "{text}");
    // Once the run ended, the record no longer makes the step look busy.
    let after = project.run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(after["steps"][0]["state"], "up-to-date", "{after:#}");
}

#[test]
fn with_jobs_2_a_step_running_alone_still_labels_its_log_lines() {
    let project = Project::new();
    project.write("data.tsv", TABLE);
    project.write(
        "p.yaml",
        "name: chain\nsteps:\n  fetch:\n    kind: download\n    url: data.tsv\n  rows:\n    kind: sample\n    inputs: { data: fetch }\n    rows: 2\n    log_every: 1\n",
    );
    // `rows` waits for `fetch`: it runs alone, and a saved log still says whose lines these are.
    let run = project.run(&["run", "p.yaml", "--jobs", "2"]).expect_code(0);
    let logs: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("      ")).collect();
    assert!(logs.iter().any(|l| l.contains("1 rows")), "{}", run.stderr);
    for line in logs {
        assert!(
            line.trim_start().starts_with("fetch ") || line.trim_start().starts_with("rows "),
            "unlabelled: {line}"
        );
        assert!(line.contains(" | "), "unlabelled: {line}");
    }
}
