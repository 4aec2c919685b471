//! A real MLflow tracking server for the tracking tests: `mlflow server` (PyPI `mlflow`,
//! installed by .ci/run into the venv of `$PIPE_PYTHON`) on 127.0.0.1 on a free port, with a
//! SQLite backend and proxied artifacts in a temporary directory, and MLflow's own Python
//! client to read back what pipe logged.
//!
//! Lifetime: the server runs in its own process group (it starts uvicorn and a job runner as
//! children) with a parent-death signal; dropping it sends the group SIGTERM, then SIGKILL if
//! it has not ended within 10 s, and removes the directory.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MlflowServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    python: PathBuf,
}

/// `$PIPE_PYTHON` and the `mlflow` next to it, if installed; else a skip notice (a failure
/// under CI, where .ci/run installs it).
fn mlflow_binary(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = std::env::var_os("PIPE_PYTHON").map(PathBuf::from).and_then(|python| {
        let bin = python.parent()?.join("mlflow");
        bin.is_file().then_some((python, bin))
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: mlflow not found next to $PIPE_PYTHON (.ci/run installs it)");
        }
        eprintln!("skipped {test}: mlflow not found next to $PIPE_PYTHON (pip install mlflow)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl MlflowServer {
    /// Starts a server and waits until it answers (`None`: skipped, see [`mlflow_binary`]).
    pub fn start(test: &str) -> Option<MlflowServer> {
        let (python, bin) = mlflow_binary(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("mlflow.db").display()))
            .arg("--serve-artifacts")
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .current_dir(dir.path())
            .env_remove("MLFLOW_TRACKING_URI")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).expect("log"))
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start mlflow server");
        let server = MlflowServer { child, port, dir, python };
        let started = Instant::now();
        while !server.healthy() {
            if started.elapsed() > Duration::from_secs(180) {
                let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
                panic!("{test}: mlflow server did not answer within 180 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(server)
    }

    fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let request = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.port);
        let mut answer = String::new();
        s.write_all(request.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `script` in `$PIPE_PYTHON` with `client`, an `MlflowClient` of this server, and
    /// `out`, a scratch directory, defined; returns what it prints as JSON.
    pub fn query(&self, script: &str) -> serde_json::Value {
        let out = tempfile::tempdir().expect("tempdir");
        let prelude = format!(
            "import json, sys\nfrom mlflow.tracking import MlflowClient\nclient = MlflowClient(tracking_uri={:?})\nout = {:?}\n",
            self.uri(),
            out.path().display().to_string()
        );
        let o = Command::new(&self.python).arg("-c").arg(prelude + script).output().expect("run python");
        assert!(o.status.success(), "python failed:\n{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: signals to the process group this struct started.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above; whatever of the group is left.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
