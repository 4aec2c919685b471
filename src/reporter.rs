//! Everything `pipe` prints goes through the [`Reporter`]: one line per step as it is decided,
//! step logs and progress bars on stderr, the `--json` document on stdout, status tables and
//! errors. With `--json`, stdout carries only the JSON document; the lines go to stderr.
//!
//! Steps may run at once (`pipe run --jobs`, Slurm jobs). When more than one may, every line
//! stays one line about one step: step lines name their step anyway, and log lines get the
//! step's name as a prefix (`      finetune | [Epoch 1 ...]`) all along, also while only one
//! runs, so a saved log has no unlabelled lines. While one step is in flight it has one
//! progress bar; while several are, bars give way to a progress line per step at most every
//! [`PROGRESS_EVERY`]. With `--jobs 1` the output is as it always was: log lines indented.
//!
//! `pipe worker` (a step run as a cluster job) prints in plain form: the step's log lines as
//! they are, progress as occasional lines, on stdout, which is the job's log file; `pipe run`
//! forwards those lines as the step's log lines.
//!
//! A closed stdout or stderr (`pipe report | head -1`) is not an error: what cannot be
//! written is dropped, and the command ends normally.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipe_steps::Events;
use serde_json::json;

use crate::dirty_reason::DirtyReason;
use crate::run_record::StepStatus;
use crate::step_outcome::StepOutcome;

/// How often a step's progress is printed as a line when bars cannot be used.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub struct Reporter {
    json: bool,
    /// Prints nothing about steps (status decides steps silently, then prints a table).
    quiet: bool,
    /// `pipe worker`: log lines as they are, on stdout, and progress as lines.
    plain: bool,
    width: AtomicUsize,
    /// Steps in flight now (set by the executor): above one, progress bars give way to lines.
    in_flight: AtomicUsize,
    /// Background uploads under way: they overlap the steps in flight.
    uploads: AtomicUsize,
    /// More than one step may be in flight in this run (set by the executor): log lines name
    /// their step all along, so that a saved log has no unlabelled lines.
    parallel: AtomicBool,
    bar: Mutex<Bar>,
}

/// The progress bar (one at a time, for the step that owns it) and the progress of every step
/// that reported some (for progress lines).
#[derive(Default)]
struct Bar {
    shown: Option<(String, ProgressBar)>,
    steps: BTreeMap<String, Progress>,
}

struct Progress {
    label: String,
    total: Option<u64>,
    bytes: bool,
    pos: u64,
    message: String,
    printed: Instant,
    /// Reported in lines whatever else runs (a background upload).
    lines: bool,
}

impl Progress {
    fn text(&self) -> String {
        let amount = |n: u64| if self.bytes { human_bytes(n) } else { n.to_string() };
        let mut text = match self.total {
            Some(t) if t > 0 => {
                format!("{} {}% ({}/{})", self.label, (self.pos.min(t) * 100) / t, amount(self.pos), amount(t))
            }
            _ => format!("{} {}", self.label, amount(self.pos)),
        };
        if !self.message.is_empty() {
            text.push_str(&format!(" {}", self.message));
        }
        text
    }
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        Reporter {
            json,
            quiet: false,
            plain: false,
            width: AtomicUsize::new(8),
            in_flight: AtomicUsize::new(0),
            uploads: AtomicUsize::new(0),
            parallel: AtomicBool::new(false),
            bar: Mutex::new(Bar::default()),
        }
    }

    /// A reporter that prints no step lines.
    pub fn quiet() -> Reporter {
        Reporter { quiet: true, ..Reporter::new(false) }
    }

    /// The reporter of `pipe worker`: plain lines on stdout (the job's log).
    pub fn plain() -> Reporter {
        Reporter { plain: true, ..Reporter::new(false) }
    }

    /// Sets how many steps are in flight. From two on, a progress bar in view gives way to
    /// progress lines.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Ordering::SeqCst);
        self.lines_if_concurrent();
    }

    /// A background upload began (see [`Reporter::upload_finished`]): while it overlaps a
    /// step, both report in lines labelled with their step, as two steps in flight do.
    pub fn upload_started(&self) {
        self.uploads.fetch_add(1, Ordering::SeqCst);
        self.lines_if_concurrent();
    }

    pub fn upload_finished(&self) {
        self.uploads.fetch_sub(1, Ordering::SeqCst);
    }

    fn lines_if_concurrent(&self) {
        if self.concurrent() {
            let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, bar)) = guard.shown.take() {
                bar.finish_and_clear();
            }
        }
    }

    /// Says whether more than one step may run at once in this run (`--jobs` above one and
    /// more than one step): then every log line is prefixed with its step.
    pub fn set_parallel(&self, parallel: bool) {
        self.parallel.store(parallel, Ordering::SeqCst);
    }

    fn concurrent(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) + self.uploads.load(Ordering::SeqCst) > 1
    }

    /// The events of step `name`: its logs and progress, attributed to it.
    pub fn for_step<'a>(&'a self, name: &str) -> StepEvents<'a> {
        StepEvents { reporter: self, step: name.to_string(), lines: false }
    }

    /// The events of step `name`'s background upload: its progress is always in lines
    /// labelled with the step (which has printed `done` already, and others may run).
    pub fn for_upload<'a>(&'a self, name: &str) -> StepEvents<'a> {
        StepEvents { reporter: self, step: name.to_string(), lines: true }
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
        match guard.shown.as_ref() {
            Some((_, bar)) => bar.suspend(f),
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

    /// `running`, with where (`slurm job 12 on node1`) before the reasons when not here.
    pub fn step_started(
        &self,
        position: usize,
        total: usize,
        name: &str,
        reasons: &[DirtyReason],
        place: Option<&str>,
    ) {
        let why: Vec<String> = place
            .map(str::to_string)
            .into_iter()
            .chain(reasons.iter().filter(|r| **r != DirtyReason::NeverRun).map(ToString::to_string))
            .collect();
        self.step_line(position, total, name, &format!("running     {}", why.join("; ")));
    }

    /// A step submitted to a cluster, waiting there (`slurm job 12`).
    pub fn step_queued(&self, position: usize, total: usize, name: &str, place: &str) {
        self.step_line(position, total, name, &format!("queued      {place}"));
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
        if let Some((_, bar)) = guard.shown.take() {
            bar.finish_and_clear();
        }
    }

    /// A log line of step `step` (`""`: of no step in particular).
    fn step_log(&self, step: &str, line: &str) {
        if self.plain {
            self.suspend(|| to_stdout(line));
        } else if (self.concurrent() || self.parallel.load(Ordering::SeqCst)) && !step.is_empty() {
            let width = self.width.load(Ordering::Relaxed);
            self.note(&format!("      {step:<width$} | {line}"));
        } else {
            self.note(&format!("      {line}"));
        }
    }

    fn step_progress_start(&self, step: &str, label: &str, total: Option<u64>, unit: &str, lines: bool) {
        let lines = lines || self.plain || self.concurrent();
        let progress = Progress {
            label: label.to_string(),
            total,
            bytes: unit == "bytes",
            pos: 0,
            message: String::new(),
            printed: Instant::now(),
            lines,
        };
        {
            let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
            guard.steps.insert(step.to_string(), progress);
            if let Some((_, bar)) = guard.shown.take() {
                bar.finish_and_clear();
            }
            if !lines {
                guard.shown = Some((step.to_string(), new_bar(label, total, unit)));
            }
        }
        if lines {
            self.step_log(step, &format!("{label} ..."));
        }
    }

    fn step_progress_inc(&self, step: &str, delta: u64) {
        let line = {
            let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, bar)) = guard.shown.as_ref().filter(|(o, _)| o == step) {
                bar.inc(delta);
            }
            let bar_shown = guard.shown.as_ref().is_some_and(|(o, _)| o == step);
            match guard.steps.get_mut(step) {
                Some(p) => {
                    p.pos += delta;
                    (!bar_shown && p.printed.elapsed() >= PROGRESS_EVERY).then(|| {
                        p.printed = Instant::now();
                        p.text()
                    })
                }
                None => None,
            }
        };
        if let Some(line) = line {
            self.step_log(step, &line);
        }
    }

    fn step_progress_message(&self, step: &str, message: &str) {
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, bar)) = guard.shown.as_ref().filter(|(o, _)| o == step) {
            bar.set_message(message.to_string());
        }
        if let Some(p) = guard.steps.get_mut(step) {
            p.message = message.to_string();
        }
    }

    fn step_progress_finish(&self, step: &str) {
        let line = {
            let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
            if guard.shown.as_ref().is_some_and(|(o, _)| o == step) {
                if let Some((_, bar)) = guard.shown.take() {
                    bar.finish_and_clear();
                }
            }
            let progress = guard.steps.remove(step);
            // A step that printed progress as lines says where it ended.
            progress.filter(|p| p.lines || self.plain || self.concurrent()).map(|p| p.text())
        };
        if let Some(line) = line {
            self.step_log(step, &line);
        }
    }
}

fn new_bar(label: &str, total: Option<u64>, unit: &str) -> ProgressBar {
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
    bar
}

/// The [`Events`] of one step: what it logs and its progress, attributed to it.
pub struct StepEvents<'a> {
    reporter: &'a Reporter,
    step: String,
    lines: bool,
}

impl Events for StepEvents<'_> {
    fn log(&self, line: &str) {
        self.reporter.step_log(&self.step, line);
    }

    fn progress_start(&self, label: &str, total: Option<u64>, unit: &str) {
        self.reporter.step_progress_start(&self.step, label, total, unit, self.lines);
    }

    fn progress_inc(&self, delta: u64) {
        self.reporter.step_progress_inc(&self.step, delta);
    }

    fn progress_message(&self, message: &str) {
        self.reporter.step_progress_message(&self.step, message);
    }

    fn progress_finish(&self) {
        self.reporter.step_progress_finish(&self.step);
    }
}

/// Who is interrupted, for the notice of the first Ctrl-C or SIGTERM.
#[derive(Debug, Clone, Copy)]
pub enum Interrupted {
    /// `pipe run` and the other commands: what runs stops at its next check.
    Run,
    /// `pipe worker`, a cluster job: `scancel` (or the cluster) sent SIGTERM. The line goes to
    /// the job's log with the worker's prefix, so the submitting run does not forward it.
    Worker,
}

/// The notice printed from the Ctrl-C handler (which has no reporter).
pub fn interrupt_notice(who: Interrupted) {
    to_stderr(match who {
        Interrupted::Run => {
            "interrupting: the running steps stop at their next check, their Slurm jobs are cancelled, nothing \
             new starts (Ctrl-C again to quit at once)"
        }
        Interrupted::Worker => {
            "pipe worker: cancelled (SIGTERM, from scancel or the cluster): the step stops at its next check and \
             commits nothing"
        }
    });
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

/// `text` coloured for step state `state` (as `pipe status` names it: up-to-date green, stale
/// yellow, never-run dim, unknown red) when stdout is a colour terminal and `NO_COLOR` is not
/// set; else `text` as it is.
pub fn paint_state(state: &str, text: &str) -> String {
    let style = match state {
        "up-to-date" => console::Style::new().green(),
        "stale" => console::Style::new().yellow(),
        "never-run" => console::Style::new().dim(),
        _ => console::Style::new().red(),
    };
    style.apply_to(text).to_string()
}

/// A size for people: `512 B`, `3.40 MiB` (indicatif's binary units).
pub fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
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
    let mut doc = json!({
        "name": name,
        "kind": kind,
        "status": outcome.status.as_str(),
        "key": outcome.key.as_ref().map(|k| k.as_str()),
        "seconds": (outcome.seconds * 1000.0).round() / 1000.0,
        "reason": reason,
        "error": outcome.failure.as_ref().map(|f| f.message.as_str()),
        "remote": outcome.from_remote.is_some(),
    });
    if let Some(job) = &outcome.job {
        doc["job"] = json!(job);
    }
    doc
}

/// Events of no step in particular (transfers of `pipe push`/`pull`, the remote cache).
impl Events for Reporter {
    fn log(&self, line: &str) {
        self.step_log("", line);
    }

    fn progress_start(&self, label: &str, total: Option<u64>, unit: &str) {
        self.step_progress_start("", label, total, unit, false);
    }

    fn progress_inc(&self, delta: u64) {
        self.step_progress_inc("", delta);
    }

    fn progress_message(&self, message: &str) {
        self.step_progress_message("", message);
    }

    fn progress_finish(&self) {
        self.step_progress_finish("");
    }
}
