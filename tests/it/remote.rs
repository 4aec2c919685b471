//! The remote cache contract (src/remote.rs), each rule through the real binary against a real
//! S3 server (moto on 127.0.0.1, see support/s3.rs) or a shared directory (`file://`): two
//! "machines" are two project directories with their own caches.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{Behavior, Server};
use crate::support::s3::{aws_env, GatedProxy, Moto, ReadOnlyStore, ACCESS_KEY, SECRET_KEY};
use crate::support::{sample_pipeline, Project, Run, TABLE};

const BUCKET: &str = "team";

fn pipeline(url: &str) -> String {
    sample_pipeline("remote", url)
}

/// A server, a bucket, and machine A's project (B's is `machine(&url)`).
struct Setup {
    moto: Moto,
    server: Option<Server>,
    url: String,
}

fn setup(test: &str) -> Option<Setup> {
    let moto = Moto::start(test)?;
    moto.create_bucket(BUCKET);
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let url = server.url("/data.tsv");
    Some(Setup { moto, server: Some(server), url })
}

fn machine(url: &str) -> Project {
    let p = Project::new();
    p.write("p.yaml", &pipeline(url));
    p
}

impl Setup {
    fn server(&self) -> &Server {
        self.server.as_ref().expect("server")
    }

    fn remote(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    fn cmd(&self, project: &Project, args: &[&str]) -> Command {
        let mut cmd = project.command(args);
        self.moto.env(&mut cmd);
        cmd
    }

    fn pipe(&self, project: &Project, args: &[&str]) -> Run {
        Run::from(self.cmd(project, args).output().expect("run pipe"))
    }

    fn objects(&self, prefix: &str) -> Vec<String> {
        self.moto.list(BUCKET, prefix).into_iter().map(|(k, _)| k).collect()
    }
}

/// `(name, status, remote)` of every step of a `--json` document.
fn steps(run: &Run) -> Vec<(String, String, bool)> {
    run.json()["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["status"].as_str().unwrap_or("").to_string(),
                s["remote"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn expect(items: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    items.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), *c)).collect()
}

fn output_of(project: &Project, run: &Run, step: usize) -> String {
    let key = run.json()["steps"][step]["key"].as_str().expect("key").to_string();
    fs::read_to_string(project.output(&key, "file")).expect("output")
}

/// Every file under `dir`, as text (lossy), for leak checks.
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&all_text(&p));
            } else if let Ok(b) = fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }
    out
}

#[test]
fn a_second_machine_takes_everything_from_the_remote_and_nothing_leaks() {
    let Some(mut s) = setup("a_second_machine_takes_everything_from_the_remote") else { return };
    let remote = s.remote("cache");
    let a = machine(&s.url);
    let first = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(steps(&first), expect(&[("fetch", "ran", false), ("head", "ran", false), ("tail", "ran", false)]));
    let objects = s.objects("cache");
    assert_eq!(objects.iter().filter(|o| o.starts_with("cache/manifests/")).count(), 3, "{objects:?}");
    assert!(objects.iter().any(|o| o.starts_with("cache/runs/remote/")), "{objects:?}");
    // Manifests name their files by blake3; each is there.
    let manifest: serde_json::Value = serde_json::from_slice(
        &s.moto.get(BUCKET, &format!("cache/manifests/{}.json", first.json()["steps"][1]["key"].as_str().unwrap())),
    )
    .unwrap();
    let hash = manifest["outputs"]["file"]["files"][0]["blake3"].as_str().unwrap();
    assert!(objects.contains(&format!("cache/files/{hash}")), "{objects:?}");

    // Machine B: no HTTP server any more, everything comes from the remote.
    let expected_tail = output_of(&a, &first, 2);
    s.server = None;
    let b = machine(&s.url);
    let status = s.pipe(&b, &["status", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    for step in status.json()["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "up-to-date", "{step}");
        assert_eq!(step["remote"], true, "{step}");
        assert_eq!(step["local"], false, "{step}");
    }
    let text = s.pipe(&b, &["status", "p.yaml", "--remote", &remote]).expect_code(0);
    assert!(text.stdout.contains("remote only"), "{}", text.stdout);

    let second = s.pipe(&b, &["run", "p.yaml", "--remote", &remote]).expect_code(0);
    assert_eq!(second.stdout.matches("cached (remote)").count(), 3, "{}", second.stdout);
    assert!(second.stdout.contains("3 cached (3 from the remote)"), "{}", second.stdout);
    let third = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(
        steps(&third),
        expect(&[("fetch", "cached", false), ("head", "cached", false), ("tail", "cached", false)])
    );
    assert_eq!(output_of(&b, &third, 2), expected_tail);
    // B's run records say it took the results from the remote.
    let records = all_text(&b.cache().join("runs"));
    assert!(records.contains("\"remote\": true"), "{records}");

    // No credential anywhere: output, caches, the remote's objects.
    let mut seen =
        format!("{}{}{}{}{}{}", first.stdout, first.stderr, second.stdout, second.stderr, status.stdout, status.stderr);
    seen.push_str(&all_text(a.path()));
    seen.push_str(&all_text(b.path()));
    for object in s.objects("cache") {
        seen.push_str(&String::from_utf8_lossy(&s.moto.get(BUCKET, &object)));
    }
    assert!(!seen.contains(SECRET_KEY), "the secret key leaked");
    assert!(!seen.contains(ACCESS_KEY), "the access key id leaked");
}

#[test]
fn a_file_shared_by_several_results_is_stored_once() {
    let Some(s) = setup("a_file_shared_by_several_results_is_stored_once") else { return };
    let remote = s.remote("dedup");
    let a = machine(&s.url);
    s.pipe(&a, &["run", "p.yaml", "--remote", &remote]).expect_code(0);
    let files = |s: &Setup| s.objects("dedup/files").len();
    assert_eq!(files(&s), 3);
    // rows=2: head writes what tail wrote before (header + 2 rows), and so does the new tail.
    s.pipe(&a, &["run", "p.yaml", "--remote", &remote, "--set", "params.rows=2"]).expect_code(0);
    assert_eq!(s.objects("dedup/manifests").len(), 5);
    assert_eq!(files(&s), 3, "{:?}", s.objects("dedup/files"));
}

#[test]
fn read_only_mode_pulls_but_never_writes() {
    let Some(s) = setup("read_only_mode_pulls_but_never_writes") else { return };
    let remote = s.remote("ro");
    let a = machine(&s.url);
    let run = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote, "--remote-mode", "read-only"]);
    assert_eq!(steps(&run.expect_code(0)).len(), 3);
    assert!(s.objects("ro").is_empty(), "{:?}", s.objects("ro"));
    let push = s.pipe(&a, &["push", "p.yaml", "--remote", &remote, "--remote-mode", "read-only"]).expect_code(2);
    assert!(push.stderr.contains("read-only"), "{}", push.stderr);
    // And it does read: another machine's results are pulled.
    let c = machine(&s.url);
    s.pipe(&c, &["run", "p.yaml", "--remote", &remote]).expect_code(0);
    let b = machine(&s.url);
    let pulled = s.pipe(&b, &["run", "p.yaml", "--remote", &remote, "--remote-mode", "read-only"]).expect_code(0);
    assert_eq!(pulled.stdout.matches("cached (remote)").count(), 3, "{}", pulled.stdout);
    assert!(pulled.stdout.contains("(read-only)"), "{}", pulled.stdout);
}

#[test]
fn a_corrupt_remote_file_is_a_miss_with_a_warning_and_is_repaired() {
    let Some(s) = setup("a_corrupt_remote_file_is_a_miss_with_a_warning") else { return };
    let remote = s.remote("corrupt");
    let a = machine(&s.url);
    let first = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    let head_key = first.json()["steps"][1]["key"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&s.moto.get(BUCKET, &format!("corrupt/manifests/{head_key}.json"))).unwrap();
    let hash = manifest["outputs"]["file"]["files"][0]["blake3"].as_str().unwrap().to_string();
    let good = s.moto.get(BUCKET, &format!("corrupt/files/{hash}"));
    let mut bad = good.clone();
    bad[0] ^= 1;
    s.moto.put(BUCKET, &format!("corrupt/files/{hash}"), &bad);

    let b = machine(&s.url);
    let run = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(steps(&run), expect(&[("fetch", "cached", true), ("head", "ran", false), ("tail", "cached", true)]));
    assert!(run.stderr.contains("warning: head: the remote's result"), "{}", run.stderr);
    assert!(run.stderr.contains("does not match its hash"), "{}", run.stderr);
    assert_eq!(output_of(&b, &run, 1), String::from_utf8(good.clone()).unwrap());
    // B ran head with the same bytes and pushed the file again over the corrupt one.
    assert_eq!(s.moto.get(BUCKET, &format!("corrupt/files/{hash}")), good);
    let c = machine(&s.url);
    let again = s.pipe(&c, &["run", "p.yaml", "--remote", &remote]).expect_code(0);
    assert_eq!(again.stdout.matches("cached (remote)").count(), 3, "{}", again.stdout);
}

#[test]
fn a_manifest_without_its_files_or_files_without_a_manifest_is_a_miss() {
    let Some(s) = setup("a_manifest_without_its_files_is_a_miss") else { return };
    let remote = s.remote("partial");
    let a = machine(&s.url);
    let first = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    let key = |i: usize| first.json()["steps"][i]["key"].as_str().unwrap().to_string();
    // head: its file gone; tail: its manifest gone (a push that stopped before the manifest).
    let manifest: serde_json::Value =
        serde_json::from_slice(&s.moto.get(BUCKET, &format!("partial/manifests/{}.json", key(1)))).unwrap();
    let hash = manifest["outputs"]["file"]["files"][0]["blake3"].as_str().unwrap().to_string();
    s.moto.delete(BUCKET, &format!("partial/files/{hash}"));
    s.moto.delete(BUCKET, &format!("partial/manifests/{}.json", key(2)));
    let b = machine(&s.url);
    let run = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(steps(&run), expect(&[("fetch", "cached", true), ("head", "ran", false), ("tail", "ran", false)]));
    assert!(run.stderr.contains("is missing"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
}

#[test]
fn a_push_killed_halfway_leaves_nothing_another_machine_takes() {
    let Some(s) = setup("a_push_killed_halfway_leaves_nothing_another_machine_takes") else { return };
    // 64 MiB: a multipart upload that takes a while.
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    s.server().route("/big.bin", Behavior::Serve(big.clone()));
    let yaml = format!("name: big\nsteps:\n  fetch:\n    kind: download\n    url: {}\n", s.server().url("/big.bin"));
    let remote = s.remote("killed");
    let a = Project::new();
    a.write("p.yaml", &yaml);
    let mut child =
        s.cmd(&a, &["run", "p.yaml", "--remote", &remote]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill -9 as soon as the result is committed locally: the push has started.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = a.entries().iter().any(|e| e.join("manifest.json").exists());
        if committed {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        assert!(Instant::now() < deadline, "the download never committed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal, not finished: {status:?}");
    assert!(s.objects("killed/manifests").is_empty(), "{:?}", s.objects("killed"));

    let b = Project::new();
    b.write("p.yaml", &yaml);
    let run = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(steps(&run), expect(&[("fetch", "ran", false)]));
    let key = run.json()["steps"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(fs::read(b.output(&key, "file")).unwrap(), big);
    // B's push is complete: a third machine takes it, verified.
    let c = Project::new();
    c.write("p.yaml", &yaml);
    let run = s.pipe(&c, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(steps(&run), expect(&[("fetch", "cached", true)]));
    assert_eq!(fs::read(c.output(&key, "file")).unwrap(), big);
}

#[test]
fn concurrent_pushes_of_the_same_keys_both_succeed() {
    let Some(s) = setup("concurrent_pushes_of_the_same_keys_both_succeed") else { return };
    for round in 0..3 {
        let remote = s.remote(&format!("race{round}"));
        let (a, b) = (machine(&s.url), machine(&s.url));
        let spawn = |p: &Project| {
            s.cmd(p, &["run", "p.yaml", "--json", "--remote", &remote])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (ca, cb) = (spawn(&a), spawn(&b));
        let (ra, rb) = (Run::from(ca.wait_with_output().unwrap()), Run::from(cb.wait_with_output().unwrap()));
        for r in [&ra, &rb] {
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert!(!r.stderr.contains("not deterministic"), "{}", r.stderr);
        }
        assert_eq!(s.objects(&format!("race{round}/manifests")).len(), 3);
        assert_eq!(output_of(&a, &ra, 2), output_of(&b, &rb, 2));
    }
}

/// Two machines compute one key at once with different bytes: the one that pushes second finds
/// the other's manifest, warns, and continues with those bytes, so downstream keys agree.
#[test]
fn different_bytes_for_a_key_are_adopted_with_a_warning() {
    let Some(s) = setup("different_bytes_for_a_key_are_adopted_with_a_warning") else { return };
    let remote = s.remote("nondet");
    let other = TABLE.replace("good", "GOOD").into_bytes();
    // B's download is slow (other bytes); A, started meanwhile, gets the fast original and
    // pushes first.
    s.server().route("/data.tsv", Behavior::Slow { body: other, chunk: 16, delay: Duration::from_millis(300) });
    let b = machine(&s.url);
    let slow = s
        .cmd(&b, &["run", "p.yaml", "--json", "--remote", &remote])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waited = Instant::now();
    while s.server().hits("/data.tsv") == 0 {
        assert!(waited.elapsed() < Duration::from_secs(30), "B never asked for the file");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.server().route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let a = machine(&s.url);
    let first = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    let run = Run::from(slow.wait_with_output().unwrap()).expect_code(0);
    assert!(run.stderr.contains("fetch is not deterministic"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
    // B continues with A's bytes, so its downstream keys are A's (and taken from the remote).
    assert_eq!(steps(&run), expect(&[("fetch", "ran", false), ("head", "cached", true), ("tail", "cached", true)]));
    for i in 0..3 {
        assert_eq!(run.json()["steps"][i]["key"], first.json()["steps"][i]["key"]);
    }
    let key = run.json()["steps"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(fs::read_to_string(b.output(&key, "file")).unwrap(), TABLE);
}

/// `--force` reruns a step from scratch: its result replaces the remote's as well as the local
/// one (before, the remote's old result was adopted back), and `pipe push --force STEP` puts a
/// machine's local result in place of the remote's.
#[test]
fn a_forced_rerun_replaces_the_remote_result_and_push_force_puts_one_back() {
    let Some(s) = setup("a_forced_rerun_replaces_the_remote_result") else { return };
    let remote = s.remote("forced");
    let a = machine(&s.url);
    let first = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    let key = first.json()["steps"][0]["key"].as_str().unwrap().to_string();
    // The URL serves other bytes now; B reruns fetch on purpose.
    let other = TABLE.replace("good", "GOOD");
    s.server().route("/data.tsv", Behavior::Serve(other.clone().into_bytes()));
    let b = machine(&s.url);
    let forced = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote, "--force", "fetch"]).expect_code(0);
    assert!(!forced.stderr.contains("not deterministic"), "{}", forced.stderr);
    assert_eq!(steps(&forced), expect(&[("fetch", "ran", false), ("head", "ran", false), ("tail", "ran", false)]));
    assert_eq!(forced.json()["steps"][0]["key"].as_str(), Some(key.as_str()), "same key, other bytes");
    assert_eq!(fs::read_to_string(b.output(&key, "file")).unwrap(), other);
    // A third machine gets B's result from the remote, not A's.
    s.server().route("/data.tsv", Behavior::Status(500));
    let c = machine(&s.url);
    let taken = s.pipe(&c, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(taken.json()["steps"][0]["remote"], true, "{}", taken.stdout);
    assert_eq!(fs::read_to_string(c.output(&key, "file")).unwrap(), other);
    // A puts its own back explicitly; a new machine then gets A's.
    let refused = s.pipe(&a, &["push", "p.yaml", "--force", "--remote", &remote]).expect_code(2);
    assert!(refused.stderr.contains("name the steps"), "{}", refused.stderr);
    let push = s.pipe(&a, &["push", "p.yaml", "fetch", "--force", "--remote", &remote]).expect_code(0);
    assert!(push.stdout.contains("replacing the remote's result"), "{}", push.stdout);
    let d = machine(&s.url);
    s.pipe(&d, &["pull", "p.yaml", "fetch", "--remote", &remote]).expect_code(0);
    assert_eq!(fs::read_to_string(d.output(&key, "file")).unwrap(), TABLE);
}

#[test]
fn an_unreachable_remote_is_a_clear_error_or_with_fallback_a_warning() {
    let Some(s) = setup("an_unreachable_remote_is_a_clear_error") else { return };
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let a = machine(&s.url);
    let down = |args: &[&str]| {
        let mut cmd = a.command(args);
        aws_env(&mut cmd, &format!("http://127.0.0.1:{port}"));
        Run::from(cmd.output().unwrap())
    };
    let run = down(&["run", "p.yaml", "--remote", "s3://team/cache"]).expect_code(1);
    assert!(run.stderr.contains("error: remote s3://team/cache: reaching the store"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("check that the store at http://127.0.0.1:{port} (AWS_ENDPOINT_URL)")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--remote-mode fallback"), "{}", run.stderr);
    assert!(!run.stderr.contains(SECRET_KEY), "{}", run.stderr);
    assert!(a.entries().is_empty(), "nothing runs when the remote cannot be reached");

    let run =
        down(&["run", "p.yaml", "--json", "--remote", "s3://team/cache", "--remote-mode", "fallback"]).expect_code(0);
    assert!(run.stderr.contains("warning: remote s3://team/cache: reaching the store"), "{}", run.stderr);
    assert!(run.stderr.contains("working locally (--remote-mode fallback)"), "{}", run.stderr);
    assert_eq!(steps(&run), expect(&[("fetch", "ran", false), ("head", "ran", false), ("tail", "ran", false)]));

    // Once the remote is back, the next run pushes what the fallback run kept local.
    let back = s.pipe(&a, &["run", "p.yaml", "--remote", "s3://team/cache"]).expect_code(0);
    assert!(back.stdout.contains("pushed 3 results the remote lacked"), "{}\n{}", back.stdout, back.stderr);
    assert_eq!(s.objects("cache/manifests").len(), 3);
}

/// A store that refuses writes: the steps still succeed (each result is committed locally
/// before it is pushed), one warning says so and the breaker stops further writes; once the
/// store takes writes, the next run pushes every result the remote lacks.
#[test]
fn a_failed_push_warns_once_and_the_next_run_pushes_what_the_remote_lacks() {
    let Some(mut s) = setup("a_failed_push_warns_once") else { return };
    let remote = s.remote("catchup");
    let a = machine(&s.url);
    let refusing = ReadOnlyStore::start();
    let mut cmd = a.command(&["run", "p.yaml", "--json", "--remote", &remote]);
    aws_env(&mut cmd, &refusing.endpoint());
    let run = Run::from(cmd.output().unwrap()).expect_code(0);
    assert_eq!(steps(&run), expect(&[("fetch", "ran", false), ("head", "ran", false), ("tail", "ran", false)]));
    assert_eq!(run.stderr.matches("warning:").count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("while pushing fetch"), "{}", run.stderr);
    assert!(run.stderr.contains("the next run (or `pipe push`) uploads what the remote lacks"), "{}", run.stderr);
    assert_eq!(refusing.writes(), 1, "after the first refused write nothing more is tried");

    let again = s.pipe(&a, &["run", "p.yaml", "--remote", &remote]).expect_code(0);
    assert!(again.stdout.contains("pushed 3 results the remote lacked"), "{}\n{}", again.stdout, again.stderr);
    assert_eq!(s.objects("catchup/manifests").len(), 3);
    // Nothing is pushed twice.
    let third = s.pipe(&a, &["run", "p.yaml", "--remote", &remote]).expect_code(0);
    assert!(!third.stdout.contains("lacked"), "{}", third.stdout);
    // A second machine takes everything from the remote, the download unreachable.
    s.server = None;
    let b = machine(&s.url);
    let taken = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    assert_eq!(steps(&taken), expect(&[("fetch", "cached", true), ("head", "cached", true), ("tail", "cached", true)]));
}

#[test]
fn a_remote_that_times_out_is_a_failing_store() {
    let Some(s) = setup("a_remote_that_times_out_is_a_failing_store") else { return };
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(16).flatten() {
            open.push(stream);
        }
    });
    let a = machine(&s.url);
    let mut cmd = a.command(&["run", "p.yaml", "--remote", "s3://team/cache"]);
    aws_env(&mut cmd, &format!("http://127.0.0.1:{port}"));
    cmd.env("AWS_TIMEOUT", "300ms");
    let started = Instant::now();
    let run = Run::from(cmd.output().unwrap()).expect_code(1);
    assert!(run.stderr.contains("error: remote s3://team/cache: reaching the store"), "{}", run.stderr);
    assert!(run.stderr.to_lowercase().contains("timed out") || run.stderr.contains("timeout"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(held);
}

#[test]
fn refused_credentials_and_a_missing_bucket_are_configuration_errors() {
    // moto checks credentials when told to: every key is unknown to it.
    let Some(moto) = Moto::start_with("refused_credentials", &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else { return };
    let a = machine("http://127.0.0.1:9/data.tsv");
    let mut cmd = a.command(&["run", "p.yaml", "--remote", "s3://team/cache"]);
    moto.env(&mut cmd);
    let run = Run::from(cmd.output().unwrap()).expect_code(2);
    assert!(run.stderr.contains("refused the credentials"), "{}", run.stderr);
    assert!(run.stderr.contains("help: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{}", run.stderr);
    assert!(!run.stderr.contains(SECRET_KEY) && !run.stderr.contains(ACCESS_KEY), "{}", run.stderr);
    drop(moto);

    let Some(moto) = Moto::start("a_missing_bucket") else { return };
    let mut cmd = a.command(&["run", "p.yaml", "--remote", "s3://no-such-bucket/cache"]);
    moto.env(&mut cmd);
    let run = Run::from(cmd.output().unwrap()).expect_code(2);
    assert!(
        run.stderr.contains("remote s3://no-such-bucket/cache: reaching the store: the bucket does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn urls_with_secrets_are_refused_with_a_hint() {
    let a = machine("http://127.0.0.1:9/data.tsv");
    for url in ["s3://AKIAXYZ:hunter2secret@team/cache", "s3://team/cache?X-Amz-Signature=hunter2secret"] {
        let run = a.run(&["run", "p.yaml", "--json", "--remote", url]).expect_code(2);
        assert!(run.stderr.contains("error: remote s3://team/cache: the URL contains credentials"), "{}", run.stderr);
        assert!(run.stderr.contains("help: give credentials in the environment"), "{}", run.stderr);
        assert!(!format!("{}{}", run.stdout, run.stderr).contains("hunter2secret"), "{}", run.stderr);
    }
    let run = a.run(&["status", "p.yaml", "--remote", "/mnt/shared"]).expect_code(2);
    assert!(run.stderr.contains("help: a shared directory is a file URL: file:///mnt/shared"), "{}", run.stderr);
}

#[test]
fn push_and_pull_move_results_explicitly() {
    let Some(mut s) = setup("push_and_pull_move_results_explicitly") else { return };
    let remote = s.remote("explicit");
    let a = machine(&s.url);
    s.pipe(&a, &["run", "p.yaml"]).expect_code(0);
    assert!(s.objects("explicit").is_empty());
    let push = s.pipe(&a, &["push", "p.yaml", "--remote", &remote]).expect_code(0);
    assert!(push.stdout.contains("pushed 3 results"), "{}", push.stdout);
    assert!(push.stdout.contains("1 run record"), "{}", push.stdout);
    let again = s.pipe(&a, &["push", "--remote", &remote]).expect_code(0);
    assert_eq!(again.stdout.matches("already on the remote").count(), 3, "{}", again.stdout);

    s.server = None;
    let b = machine(&s.url);
    // Only tail: its key is decided from the remote's manifests of fetch and head.
    let pull = s.pipe(&b, &["pull", "p.yaml", "tail", "--json", "--remote", &remote]).expect_code(0);
    let states: Vec<String> =
        pull.json()["steps"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["pulled"]);
    assert_eq!(b.entries().len(), 1);
    let pull = s.pipe(&b, &["pull", "p.yaml", "--remote", &remote]).expect_code(0);
    assert!(pull.stdout.contains("pulled 2 results"), "{}", pull.stdout);
    // Now local: a run without the remote has everything.
    let run = s.pipe(&b, &["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(
        steps(&run),
        expect(&[("fetch", "cached", false), ("head", "cached", false), ("tail", "cached", false)])
    );
    // What the remote lacks is said, and named steps it lacks fail.
    let pull = s.pipe(&b, &["pull", "p.yaml", "head", "--set", "head.rows=1", "--remote", &remote]).expect_code(1);
    assert!(pull.stdout.contains("not on the remote"), "{}", pull.stdout);
    let none = b.run(&["pull", "p.yaml"]).expect_code(2);
    assert!(none.stderr.contains("no remote cache configured"), "{}", none.stderr);
}

#[test]
fn run_records_on_the_remote_reach_report_on_another_machine() {
    let Some(s) = setup("run_records_on_the_remote_reach_report_on_another_machine") else { return };
    let remote = s.remote("runs");
    let a = machine(&s.url);
    let mut cmd = s.cmd(&a, &["run", "p.yaml", "--remote", &remote]);
    assert_eq!(Run::from(cmd.env("PIPE_HOST", "machine-a").output().unwrap()).code, 0);
    let b = machine(&s.url);
    let mut cmd = s.cmd(&b, &["run", "p.yaml", "--remote", &remote, "--set", "head.rows=2"]);
    assert_eq!(Run::from(cmd.env("PIPE_HOST", "machine-b").output().unwrap()).code, 0);
    let report = s.pipe(&b, &["report", "p.yaml", "--format", "json", "--remote", &remote]).expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&report.stdout).expect("json report");
    let text = doc.to_string();
    assert!(text.contains("on machine-a") && text.contains("on machine-b"), "{text}");
    // Without the remote, B knows only its own run.
    let local = s.pipe(&b, &["report", "p.yaml", "--format", "json"]).expect_code(0);
    assert!(!local.stdout.contains("machine-a"), "{}", local.stdout);
}

#[test]
fn gc_on_the_remote_removes_what_no_recent_run_used() {
    let Some(s) = setup("gc_on_the_remote_removes_what_no_recent_run_used") else { return };
    let remote = s.remote("gc");
    let a = machine(&s.url);
    let old = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote]).expect_code(0);
    let old_head = old.json()["steps"][1]["key"].as_str().unwrap().to_string();
    // An orphan file, as a killed push leaves.
    let orphan = format!("gc/files/{}", "0".repeat(64));
    s.moto.put(BUCKET, &orphan, b"orphan");
    // Everything of the old run is older than this.
    let old_done = Instant::now();
    // A gap between the two runs' objects (3 s: S3 times may be whole seconds).
    while old_done.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let new_started = Instant::now();
    // The newer run shares fetch, and writes the bytes the old tail wrote (header + 2 rows).
    let new = s.pipe(&a, &["run", "p.yaml", "--json", "--remote", &remote, "--set", "params.rows=2"]).expect_code(0);
    let new_keys: Vec<String> = (0..3).map(|i| new.json()["steps"][i]["key"].as_str().unwrap().to_string()).collect();
    // gc's own markers (gc/gc/<id>.json) aside.
    let results = || s.objects("gc").into_iter().filter(|o| !o.starts_with("gc/gc/")).collect::<Vec<_>>();
    let before = results();
    // A period that ends in the middle of the gap, however long each call takes: what the old
    // run left is older, what the new one wrote younger (no window of wall time to fit in).
    let between = || {
        let (to_old, to_new) = (old_done.elapsed(), new_started.elapsed());
        format!("{}ms", ((to_old + to_new) / 2).as_millis())
    };

    // A grace period longer than everything's age keeps everything.
    let graced = s.pipe(&a, &["gc", "--remote", &remote, "--older-than", &between(), "--grace", "1h"]).expect_code(0);
    assert!(graced.stdout.contains("removed 0 manifests and 0 files"), "{}", graced.stdout);
    let (period, grace) = (between(), between());
    let dry = s
        .pipe(&a, &["gc", "--remote", &remote, "--older-than", &period, "--grace", &grace, "--dry-run"])
        .expect_code(0);
    assert!(dry.stdout.contains("would remove 2 manifests and 2 files"), "{}", dry.stdout);
    assert_eq!(results(), before, "a dry run removes nothing");

    let (period, grace) = (between(), between());
    let real = s.pipe(&a, &["gc", "--remote", &remote, "--older-than", &period, "--grace", &grace]).expect_code(0);
    assert!(real.stdout.contains("removed 2 manifests and 2 files"), "{}", real.stdout);
    let last_manifest = real.stdout.rfind("removed manifest").unwrap();
    let first_file = real.stdout.find("removed file").unwrap();
    assert!(last_manifest < first_file, "manifests go before files:\n{}", real.stdout);
    let after = s.objects("gc");
    let markers: Vec<&String> = after.iter().filter(|o| o.starts_with("gc/gc/")).collect();
    assert_eq!(markers.len(), 2, "one marker per gc that deleted (dry runs leave none): {after:?}");
    for m in markers {
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&s.moto.get(BUCKET, m)).unwrap()["running"], false);
    }
    assert!(!after.contains(&orphan));
    assert!(!after.contains(&format!("gc/manifests/{old_head}.json")));
    for key in &new_keys {
        assert!(after.contains(&format!("gc/manifests/{key}.json")), "{after:?}");
    }
    // Every file a kept manifest names is still there: another machine takes the newer run.
    let b = machine(&s.url);
    let run = s.pipe(&b, &["run", "p.yaml", "--json", "--remote", &remote, "--set", "params.rows=2"]).expect_code(0);
    assert_eq!(steps(&run), expect(&[("fetch", "cached", true), ("head", "cached", true), ("tail", "cached", true)]));
}

/// A shared directory as the remote, named in the pipeline, and two machines' projects.
fn shared_directory_machines() -> (tempfile::TempDir, Server, Project, Project) {
    let shared = tempfile::tempdir().unwrap();
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let url = format!("file://{}", shared.path().display());
    let yaml = format!("{}remote: {url}\n", pipeline(&server.url("/data.tsv")));
    let (a, b) = (Project::new(), Project::new());
    a.write("p.yaml", &yaml);
    b.write("p.yaml", &yaml);
    (shared, server, a, b)
}

#[test]
fn a_shared_directory_works_as_a_remote_named_in_the_pipeline() {
    let (shared, server, a, b) = shared_directory_machines();
    let first = a.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(steps(&first), expect(&[("fetch", "ran", false), ("head", "ran", false), ("tail", "ran", false)]));
    assert_eq!(fs::read_dir(shared.path().join("manifests")).unwrap().count(), 3);
    assert_eq!(fs::read_dir(shared.path().join("files")).unwrap().count(), 3);
    // --remote-mode off ignores the pipeline's remote.
    let off = b.run(&["run", "p.yaml", "--json", "--dry-run", "--remote-mode", "off"]).expect_code(0);
    assert!(steps(&off).iter().all(|(_, status, _)| status == "would-run"));
    drop(server);
    let second = b.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(
        steps(&second),
        expect(&[("fetch", "cached", true), ("head", "cached", true), ("tail", "cached", true)])
    );
    assert_eq!(output_of(&b, &second, 2), output_of(&a, &first, 2));
    // A directory that is not there is a configuration error with the fix.
    let missing = b.run(&["run", "p.yaml", "--remote", "file:///no/such/dir"]).expect_code(2);
    assert!(missing.stderr.contains("help: create it (`mkdir -p /no/such/dir`)"), "{}", missing.stderr);
}

#[test]
fn credentials_and_endpoint_can_come_from_an_aws_profile() {
    let Some(s) = setup("credentials_and_endpoint_can_come_from_an_aws_profile") else { return };
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let config = dir.path().join("config");
    fs::write(&credentials, format!("[default]\naws_access_key_id = nope\n\n[team]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")).unwrap();
    fs::write(&config, format!("[profile team]\nregion = us-east-1\nendpoint_url = {}\n", s.moto.endpoint())).unwrap();
    let a = machine(&s.url);
    let mut cmd = s.cmd(&a, &["run", "p.yaml", "--json", "--remote", &s.remote("profile")]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_REGION")
        .env("AWS_PROFILE", "team")
        .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
        .env("AWS_CONFIG_FILE", &config);
    let run = Run::from(cmd.output().unwrap()).expect_code(0);
    assert_eq!(steps(&run).len(), 3);
    assert_eq!(s.objects("profile/manifests").len(), 3);
    assert!(!format!("{}{}", run.stdout, run.stderr).contains(SECRET_KEY));
}

/// The read-only commands need no remote to show what the local cache holds: with the remote
/// down they warn and go on (a run still fails: it would write there).
#[test]
fn status_and_report_with_the_remote_down_warn_and_show_the_local_state() {
    let server = Server::start();
    server.route("/data.tsv", Behavior::Serve(TABLE.as_bytes().to_vec()));
    let a = machine(&server.url("/data.tsv"));
    a.run(&["run", "p.yaml"]).expect_code(0);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = |args: &[&str]| {
        let mut cmd = a.command(args);
        aws_env(&mut cmd, &format!("http://127.0.0.1:{port}"));
        Run::from(cmd.output().unwrap())
    };
    let status = down(&["status", "p.yaml", "--json", "--remote", "s3://team/cache"]).expect_code(0);
    assert!(status.stderr.contains("warning: remote s3://team/cache: reaching the store"), "{}", status.stderr);
    assert!(status.stderr.contains("showing the local cache only"), "{}", status.stderr);
    let states: Vec<String> =
        status.json()["steps"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["up-to-date"; 3], "{}", status.stdout);
    let report = down(&["report", "p.yaml", "--remote", "s3://team/cache"]).expect_code(0);
    assert!(report.stderr.contains("warning: remote s3://team/cache: reaching the store"), "{}", report.stderr);
    assert!(report.stdout.contains("Report: remote"), "{}", report.stdout);
    down(&["run", "p.yaml", "--remote", "s3://team/cache"]).expect_code(1);
}

/// No credentials anywhere (and no instance role answering): said so, with how to give them,
/// not "refused" and not the metadata service's address.
#[test]
fn no_credentials_at_all_says_so_and_how_to_give_them() {
    let a = machine("http://127.0.0.1:9/data.tsv");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = a.command(&["run", "p.yaml", "--remote", "s3://team/cache"]);
    aws_env(&mut cmd, &format!("http://127.0.0.1:{port}"));
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("HOME", a.path());
    let run = Run::from(cmd.output().unwrap()).expect_code(2);
    assert!(run.stderr.contains("no AWS credentials found"), "{}", run.stderr);
    assert!(run.stderr.contains("help: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{}", run.stderr);
    assert!(!run.stderr.contains("refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("127.0.0.1:9") && !run.stderr.contains("169.254"), "{}", run.stderr);
}

/// A push that reuses a file the store holds while a `pipe gc --remote` runs (or ran since the
/// push began) uploads it again: gc may be deleting it, since no manifest named it when gc
/// listed them, and a file written since gc began is one gc leaves alone. Shown on a shared
/// directory, whose file times are the files'.
#[test]
fn a_push_that_reuses_a_file_during_a_remote_gc_uploads_it_again() {
    let (shared, _server, a, b) = shared_directory_machines();
    a.run(&["run", "p.yaml"]).expect_code(0);
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    let files: Vec<std::path::PathBuf> =
        fs::read_dir(shared.path().join("files")).unwrap().flatten().map(|e| e.path()).collect();
    for f in &files {
        fs::File::options().write(true).open(f).unwrap().set_modified(old).unwrap();
    }
    let modified = |f: &std::path::Path| fs::metadata(f).unwrap().modified().unwrap();
    // tail with 3 rows (or more) keeps all of head's 3: a new key whose file is head's, reused.
    let reuse = |p: &Project, rows: &str| p.run(&["run", "p.yaml", "--set", rows, "--json"]).expect_code(0);
    reuse(&b, "tail.rows=3");
    assert!(files.iter().all(|f| modified(f) == old), "no gc: the reused file is trusted as it is");
    // A gc in progress (its marker says so): the same kind of push uploads the reused file again.
    fs::create_dir_all(shared.path().join("gc")).unwrap();
    fs::write(shared.path().join("gc").join("1-1.json"), r#"{"host":"elsewhere","running":true}"#).unwrap();
    let c = Project::new();
    fs::copy(b.path().join("p.yaml"), c.path().join("p.yaml")).unwrap();
    reuse(&c, "tail.rows=4");
    let refreshed = files.iter().filter(|f| modified(f) > old).count();
    assert_eq!(refreshed, 1, "head's file, reused by tail, is written again");
}

/// Uploads run beside the steps after them (fault 14): `big`'s upload is held by the proxy
/// until `after`, which reads `big`'s output, opens the gate. Were uploads to hold up dependent
/// steps, `after` could not start before the proxy gave up waiting (released by patience, not
/// by the gate). The run still waits for every upload before it ends, and each transfer is
/// shown on its own step's lines.
#[test]
fn uploads_run_beside_the_steps_after_them_and_report_on_their_own_step() {
    let Some(s) = setup("uploads_run_beside_the_steps_after_them") else { return };
    let p = Project::new();
    let gate = p.path().join("gate");
    p.write(
        "p.yaml",
        &format!(
            "name: overlap
steps:
  big:
    kind: command
    outputs: {{blob: blob.bin}}
    run: yes pipe | head -c 3000000 > {{outputs.blob}}
  after:
    kind: command
    inputs: {{data: big.blob}}
    params: {{gate: '{}'}}
    outputs: {{n: n.txt}}
    run: wc -c < {{inputs.data}} > {{outputs.n}} && touch {{params.gate}}
",
            gate.display()
        ),
    );
    let proxy = GatedProxy::start(s.moto.port, gate.clone(), Duration::from_secs(15));
    let mut cmd = p.command(&["run", "p.yaml", "--remote", &s.remote("overlap")]);
    aws_env(&mut cmd, &proxy.endpoint());
    let run = Run::from(cmd.output().unwrap()).expect_code(0);
    let released = proxy.released();
    assert!(!released.is_empty(), "no upload went through the proxy\n{}\n{}", run.stdout, run.stderr);
    assert!(released.iter().all(|&gate| gate), "an upload waited out its patience: `after` did not run beside it");
    // The run ended only after the uploads: both results are on the remote.
    assert_eq!(s.objects("overlap/manifests").len(), 2, "{}\n{}", run.stdout, run.stderr);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(text.contains("pushed 2 results to the remote"), "{text}");
    // The upload overlapped `after`, so its progress came as lines labelled with its step.
    let labelled = |what: &str| {
        text.lines().any(|l| l.trim_start().strip_prefix("big").is_some_and(|r| r.trim_start().starts_with(what)))
    };
    assert!(labelled("| push big ...") && labelled("| push big 100%"), "{text}");
}
