//! Running a command's text with `sh -c`: a clean environment, its output lines streamed to the
//! step's log as they come, the last lines of stderr kept for the error, and the run's
//! cancellation watched (the shell is killed, and so are the programs it started in its
//! process group).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{StepError, StepResult};
use crate::step::{Environment, Events};

/// How many lines of stderr a failure shows.
pub const TAIL_LINES: usize = 20;

/// How the command ended.
pub struct Finished {
    pub status: ExitStatus,
    /// The last [`TAIL_LINES`] lines of its stderr.
    pub stderr_tail: Vec<String>,
}

/// Runs `sh -c text` in `cwd` with exactly `vars` as its environment, to its end.
pub fn run(
    text: &str,
    cwd: &Path,
    vars: &BTreeMap<String, String>,
    env: &Environment,
    events: &dyn Events,
) -> StepResult<Finished> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(text)
        .current_dir(cwd)
        .env_clear()
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that cancelling stops what the shell started too.
        .process_group(0)
        .spawn()
        .map_err(|e| StepError::failed(format!("cannot start `sh`: {e}")))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let tail = Mutex::new(VecDeque::new());
    let status = std::thread::scope(|scope| {
        if let Some(out) = stdout {
            scope.spawn(|| forward(out, events, None));
        }
        if let Some(err) = stderr {
            scope.spawn(|| forward(err, events, Some(&tail)));
        }
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => return Err(StepError::failed(format!("waiting for the command: {e}"))),
            }
            if env.is_cancelled() {
                let pgid = child.id() as libc::pid_t;
                // SAFETY: kill(2) on the child's own process group; no memory is involved.
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
                let _ = child.wait();
                return Err(StepError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })?;
    let stderr_tail = tail.into_inner().unwrap_or_default().into_iter().collect();
    Ok(Finished { status, stderr_tail })
}

/// Passes each line of `stream` to the log; keeps the last lines in `tail` when given.
fn forward(stream: impl Read, events: &dyn Events, tail: Option<&Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        events.log(line);
        if let Some(tail) = tail {
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line.to_string());
            }
        }
        buf.clear();
    }
}

/// `exit code 3` or `killed by signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "an unknown exit status".into(),
    }
}
