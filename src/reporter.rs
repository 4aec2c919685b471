//! Everything `pipe` prints goes through the [`Reporter`]: one line per step as it is decided,
//! step logs and progress bars on stderr, the `--json` document on stdout, status tables and
//! errors. With `--json`, stdout carries only the JSON document; the lines go to stderr.
//!
//! A closed stdout or stderr (`pipe report | head -1`) is not an error: what cannot be
//! written is dropped, and the command ends normally.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipe_steps::Events;
use serde_json::json;

use crate::dirty_reason::DirtyReason;
use crate::run_record::StepStatus;
use crate::step_outcome::StepOutcome;

pub struct Reporter {
    json: bool,
    /// Prints nothing about steps (status decides steps silently, then prints a table).
    quiet: bool,
    width: AtomicUsize,
    bar: Mutex<Option<ProgressBar>>,
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        Reporter { json, quiet: false, width: AtomicUsize::new(8), bar: Mutex::new(None) }
    }

    /// A reporter that prints no step lines.
    pub fn quiet() -> Reporter {
        Reporter { quiet: true, ..Reporter::new(false) }
    }

    /// A line of the human output: stdout, or stderr under `--json`.
    pub fn line(&self, text: &str) {
        self.suspend(|| {
            if self.json {
                to_stderr(text);
            } else {
                to_stdout(text);
            }
        });
    }

    /// Prints `doc` as the single JSON document on stdout.
    pub fn document(&self, doc: &serde_json::Value) {
        to_stdout(&serde_json::to_string_pretty(doc).unwrap_or_default());
    }

    /// A line on stderr.
    pub fn note(&self, text: &str) {
        self.suspend(|| to_stderr(text));
    }

    pub fn warning(&self, text: &str) {
        self.note(&format!("warning: {text}"));
    }

    /// An error with an optional `help:` line, on stderr.
    pub fn error(&self, message: &str, help: Option<&str>) {
        self.suspend(|| {
            to_stderr(&format!("error: {message}"));
            if let Some(help) = help {
                to_stderr(&format!("  help: {help}"));
            }
        });
    }

    fn suspend(&self, f: impl FnOnce()) {
        let guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Sets the width step names are padded to.
    pub fn set_names<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let width = names.into_iter().map(str::len).max().unwrap_or(8);
        self.width.store(width, Ordering::Relaxed);
    }

    fn step_line(&self, position: usize, total: usize, name: &str, what: &str) {
        if self.quiet {
            return;
        }
        let width = self.width.load(Ordering::Relaxed);
        let counter = format!("[{}/{total}]", position + 1);
        self.line(format!("{counter} {name:<width$}  {what}").trim_end());
    }

    pub fn step_decided(&self, position: usize, total: usize, name: &str, outcome: &StepOutcome) {
        let what = match (outcome.status, &outcome.from_remote) {
            (StepStatus::Cached, Some(note)) => format!("cached (remote) {}  {note}", short_key(outcome)),
            (StepStatus::WouldUseCache, Some(note)) => format!("would-use-cache  {}  {note}", short_key(outcome)),
            (StepStatus::Cached, None) => format!("cached      {}", short_key(outcome)),
            (StepStatus::WouldUseCache, None) => format!("would-use-cache  {}", short_key(outcome)),
            (StepStatus::WouldRun, _) => format!("would-run   {}", reasons_text(outcome)),
            (other, _) => other.as_str().to_string(),
        };
        self.step_line(position, total, name, &what);
    }

    pub fn step_started(&self, position: usize, total: usize, name: &str, reasons: &[DirtyReason]) {
        let why: Vec<String> =
            reasons.iter().filter(|r| **r != DirtyReason::NeverRun).map(ToString::to_string).collect();
        self.step_line(position, total, name, &format!("running     {}", why.join("; ")));
    }

    pub fn step_done(&self, position: usize, total: usize, name: &str, outcome: &StepOutcome) {
        self.step_line(position, total, name, &format!("done in {}", seconds(outcome.seconds)));
    }

    pub fn step_failed(&self, position: usize, total: usize, name: &str, outcome: &StepOutcome) {
        self.finish_bar();
        let failure = outcome.failure.as_ref();
        let message = failure.map(|f| f.message.as_str()).unwrap_or("failed");
        self.step_line(position, total, name, &format!("failed      {message}"));
        if let Some(help) = failure.and_then(|f| f.help.as_deref()).filter(|_| !self.quiet) {
            self.line(&format!("      help: {help}"));
        }
    }

    pub fn step_skipped(&self, position: usize, total: usize, name: &str, why: &str) {
        self.step_line(position, total, name, &format!("skipped     {why}"));
    }

    fn finish_bar(&self) {
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = guard.take() {
            bar.finish_and_clear();
        }
    }
}

/// The notice printed from the Ctrl-C handler (which has no reporter).
pub fn interrupt_notice() {
    to_stderr("interrupting: stopping after the current step (Ctrl-C again to quit at once)");
}

/// A line on stdout, flushed; dropped if stdout is closed.
fn to_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// A line on stderr; dropped if stderr is closed.
fn to_stderr(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn short_key(outcome: &StepOutcome) -> String {
    outcome.key.as_ref().map(|k| k.short().to_string()).unwrap_or_default()
}

fn reasons_text(outcome: &StepOutcome) -> String {
    outcome
        .reasons
        .iter()
        .filter(|r| **r != DirtyReason::NeverRun)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `0.4s`, `12.3s`, `4m05s`.
pub fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let total = s.round() as u64;
        if total < 3600 {
            format!("{}m{:02}s", total / 60, total % 60)
        } else {
            format!("{}h{:02}m", total / 3600, (total % 3600) / 60)
        }
    }
}

/// The `--json` entry of one step.
pub fn step_json(name: &str, kind: &str, outcome: &StepOutcome) -> serde_json::Value {
    let reason = Some(reasons_text(outcome)).filter(|r| !r.is_empty());
    json!({
        "name": name,
        "kind": kind,
        "status": outcome.status.as_str(),
        "key": outcome.key.as_ref().map(|k| k.as_str()),
        "seconds": (outcome.seconds * 1000.0).round() / 1000.0,
        "reason": reason,
        "error": outcome.failure.as_ref().map(|f| f.message.as_str()),
        "remote": outcome.from_remote.is_some(),
    })
}

impl Events for Reporter {
    fn log(&self, line: &str) {
        self.note(&format!("      {line}"));
    }

    fn progress_start(&self, label: &str, total: Option<u64>, unit: &str) {
        self.finish_bar();
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = match (unit, total.is_some()) {
            ("bytes", true) => "      {prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            ("bytes", false) => "      {prefix} {spinner} {bytes} {bytes_per_sec} {msg}",
            (_, true) => "      {prefix} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta} {msg}",
            (_, false) => "      {prefix} {spinner} {human_pos} {per_sec} {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn progress_inc(&self, delta: u64) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.inc(delta);
        }
    }

    fn progress_message(&self, message: &str) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_message(message.to_string());
        }
    }

    fn progress_finish(&self) {
        self.finish_bar();
    }
}
