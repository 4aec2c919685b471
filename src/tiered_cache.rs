//! The two tiers of the cache as one: the local [`Cache`] and, when one is configured, the
//! [`Remote`] store shared between machines. Every command that looks results up or stores
//! them (plan, compute on this machine or on a cluster node, status, push, pull) goes through
//! a [`TieredCache`] and never to the remote directly, so the policy lives here alone:
//!
//! - Lookup: the local tier first, then the remote. A dry run (and `pipe status`) only peeks at
//!   the remote's manifest; a real run pulls under the key's compute lock, verifying every
//!   file into a scratch directory before the local commit.
//! - Publish: a result that ran is pushed once committed locally. The first machine's manifest
//!   for a key wins; a result another machine pushed first with other bytes is adopted (its
//!   outputs replace ours, so downstream keys agree across machines), except after `--force`:
//!   the rerun's result then replaces the remote's, as it replaced the local one. In `pipe run`
//!   the upload itself happens in the background ([`TieredCache::upload_in_background`]): the
//!   remote's manifest is checked at once (so a result pushed first elsewhere is still adopted
//!   before anything reads ours), the files go up while dependent steps run, and the run waits
//!   for the uploads before it ends. A result pushed by another machine in that window is not
//!   adopted any more (its dependents have read ours): a warning says so.
//! - Catching up: a run pushes the results it used that the remote lacks (a killed push, a
//!   fallback or read-only run, an outage earlier), so no one has to remember `pipe push`.
//! - Failures: a failing read fails the step in read-write mode, and warns and goes local in
//!   fallback mode. A failing write never fails a step whose result is committed: it warns,
//!   and the breaker stops writing for the rest of the command (the next run catches up).
//! - Modes: read-write, read-only (never writes), fallback, off ([`RemoteMode`]).
//! - Progress: every transfer reports to the events of the step it is for, so concurrent
//!   transfers have their own counters.
//!
//! Not in it: the store protocol (how files and manifests are laid out and moved: remote/),
//! the local layout, locks and commits (cache.rs), deciding what runs (plan.rs).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use pipe_steps::Events;

use crate::cache::{Cache, CacheError, KeyLock, Lookup};
use crate::manifest::Manifest;
use crate::remote::{Pulled, Pushed, Remote, RemoteError, RemoteMode};
use crate::reporter::{human_bytes, Reporter};
use crate::run_record::RunRecord;
use crate::step_key::StepKey;

/// A result found on the remote, with a note for the user of where it came from.
pub type FromRemote = (Manifest, String);

/// The local cache and the remote, combined by one policy (see the module doc).
pub struct TieredCache<'a> {
    local: &'a Cache,
    remote: Option<&'a Remote>,
    /// Warnings (an unusable remote result, a failed write, fallback).
    reporter: &'a Reporter,
    /// Fallback mode after a failure: the rest of the command does not ask the remote.
    reads_off: AtomicBool,
    /// The outage breaker: a write failed, so the rest of the command does not write.
    writes_off: AtomicBool,
    /// Uploads waiting for [`TieredCache::upload_worker`], when publishing is in the background.
    background: Option<Queue>,
}

/// One result to upload.
struct Upload {
    step: String,
    manifest: Manifest,
    replace: bool,
}

/// Uploads waiting, and whether more may come.
#[derive(Default)]
struct Queue {
    state: Mutex<(VecDeque<Upload>, bool)>,
    /// Local hits whose presence on the remote the worker asks about while the run goes on
    /// (for [`TieredCache::catch_up`]), and the answers.
    checks: Mutex<Vec<StepKey>>,
    present: Mutex<std::collections::HashMap<StepKey, bool>>,
    changed: Condvar,
    /// Keys queued or being uploaded now, and a signal when one is done.
    pending: Mutex<std::collections::BTreeSet<StepKey>>,
    done: Condvar,
    /// Results uploaded, and their bytes (for the run's summary).
    uploaded: AtomicUsize,
    bytes: std::sync::atomic::AtomicU64,
}

impl<'a> TieredCache<'a> {
    pub fn new(local: &'a Cache, remote: Option<&'a Remote>, reporter: &'a Reporter) -> TieredCache<'a> {
        let remote = remote.filter(|r| r.mode() != RemoteMode::Off);
        TieredCache {
            local,
            remote,
            reporter,
            reads_off: AtomicBool::new(false),
            writes_off: AtomicBool::new(false),
            background: None,
        }
    }

    /// Publishing queues the uploads for [`TieredCache::upload_worker`] (run it on a thread,
    /// then call [`TieredCache::finish_uploads`]) instead of uploading before the step ends.
    pub fn upload_in_background(mut self) -> TieredCache<'a> {
        self.background = Some(Queue::default());
        self
    }

    /// Uploads queued results until [`TieredCache::finish_uploads`] is called and the queue is
    /// empty. Failures are warnings (the breaker stops the rest).
    pub fn upload_worker(&self) {
        let Some(queue) = &self.background else { return };
        loop {
            let next = {
                let mut state = queue.state.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let checks = std::mem::take(&mut *queue.checks.lock().unwrap_or_else(|e| e.into_inner()));
                    if !checks.is_empty() {
                        drop(state);
                        self.check_present(queue, checks);
                        state = queue.state.lock().unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    if let Some(job) = state.0.pop_front() {
                        break Some(job);
                    }
                    if state.1 {
                        break None;
                    }
                    state = queue.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some(job) = next else { return };
            self.upload(queue, &job);
            queue.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.manifest.key);
            queue.done.notify_all();
        }
    }

    /// A step found its result in the local tier: in a run that uploads in the background,
    /// the worker asks the remote whether it has the result meanwhile, so that
    /// [`TieredCache::catch_up`] at the end need not (its requests overlap the run's work).
    pub fn local_hit(&self, key: &StepKey) {
        let Some(queue) = &self.background else { return };
        if self.writable().is_none() {
            return;
        }
        queue.checks.lock().unwrap_or_else(|e| e.into_inner()).push(key.clone());
        let _guard = queue.state.lock().unwrap_or_else(|e| e.into_inner());
        queue.changed.notify_all();
    }

    /// Asks the remote about `keys` at once; an error leaves them unknown (catch-up asks again).
    fn check_present(&self, queue: &Queue, keys: Vec<StepKey>) {
        let Some(remote) = self.writable() else { return };
        if let Ok(found) = remote.has_manifests(&keys) {
            queue.present.lock().unwrap_or_else(|e| e.into_inner()).extend(keys.into_iter().zip(found));
        }
    }

    /// Waits until none of `keys` is queued for upload or uploading (a job elsewhere is about
    /// to read them from the remote).
    pub fn wait_uploaded(&self, keys: &[&StepKey]) {
        let Some(queue) = &self.background else { return };
        let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        while keys.iter().any(|k| pending.contains(*k)) {
            pending = queue.done.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// One background upload; failures are warnings.
    fn upload(&self, queue: &Queue, job: &Upload) {
        let Some(remote) = self.writable() else { return };
        // Held in use while its files are read, so no gc or forced rerun removes them.
        let Ok(_using) = self.local.hold(&job.manifest.key) else { return };
        let events = self.reporter.for_upload(&job.step);
        self.reporter.upload_started();
        let pushed = remote.push(self.local, &job.manifest, job.replace, &events);
        self.reporter.upload_finished();
        match pushed {
            Ok(Pushed::Written { bytes, .. }) => {
                queue.uploaded.fetch_add(1, Ordering::Relaxed);
                queue.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(Pushed::Present) => {}
            Ok(Pushed::Differs { host }) => self.reporter.warning(&format!(
                "{} is not deterministic: {host} pushed different bytes for key {} while this run uploaded its own; \
                 keeping both (the steps after it here used this machine's)",
                job.step,
                job.manifest.key.short()
            )),
            Err(e) => self.write_failed(e, &job.step),
        }
    }

    /// No more uploads will be queued: [`TieredCache::upload_worker`] returns once the queue is
    /// empty. Returns the results and bytes uploaded so far.
    pub fn finish_uploads(&self) -> (usize, u64) {
        let Some(queue) = &self.background else { return (0, 0) };
        queue.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        queue.changed.notify_all();
        (queue.uploaded.load(Ordering::Relaxed), queue.bytes.load(Ordering::Relaxed))
    }

    /// The results and bytes the background uploads wrote (after the worker returned).
    pub fn uploaded(&self) -> (usize, u64) {
        self.background
            .as_ref()
            .map_or((0, 0), |q| (q.uploaded.load(Ordering::Relaxed), q.bytes.load(Ordering::Relaxed)))
    }

    /// The local tier (lookups, scratch directories, commits, locks).
    pub fn local(&self) -> &'a Cache {
        self.local
    }

    /// The remote tier, for what is not about step results (its URL, run records, gc).
    pub fn remote(&self) -> Option<&'a Remote> {
        self.remote
    }

    /// The remote, unless a failure in fallback mode turned it off for this command.
    fn readable(&self) -> Option<&'a Remote> {
        self.remote.filter(|_| !self.reads_off.load(Ordering::Relaxed))
    }

    /// The remote, when this command may write to it and its breaker has not tripped.
    fn writable(&self) -> Option<&'a Remote> {
        self.readable().filter(|r| r.writable() && !self.writes_off.load(Ordering::Relaxed))
    }

    /// The key's compute lock: held while the key is looked for again, pulled, computed,
    /// committed and published, so two runs (threads or machines sharing the cache) do the
    /// work once.
    pub fn lock(&self, key: &StepKey) -> Result<KeyLock, CacheError> {
        self.local.lock(key)
    }

    /// A read failed: in fallback mode a warning (once) and local work from now on; otherwise
    /// the error.
    fn read_failed(&self, error: RemoteError) -> Result<(), RemoteError> {
        let Some(remote) = self.remote else { return Err(error) };
        if remote.mode() != RemoteMode::Fallback {
            return Err(error);
        }
        if !self.reads_off.swap(true, Ordering::Relaxed) {
            self.reporter.warning(&format!("{error}; working locally (--remote-mode fallback)"));
        }
        Ok(())
    }

    /// A write failed: a warning (once; the result is safe locally) and no more writes.
    fn write_failed(&self, error: RemoteError, what: &str) {
        if !self.writes_off.swap(true, Ordering::Relaxed) {
            let help = error.help.as_deref().map(|h| format!("; {h}")).unwrap_or_default();
            self.reporter.warning(&format!(
                "{error} (while pushing {what}); not pushing anything else in this run: the results are in the local \
                 cache, and the next run (or `pipe push`) uploads what the remote lacks{help}"
            ));
        }
    }

    /// For dry runs and `pipe status`: whether the remote holds a usable-looking result for
    /// the key (its files are not read), with a note naming who pushed it.
    pub fn peek(&self, key: &StepKey, outputs: &[&str], step: &str) -> Result<Option<FromRemote>, RemoteError> {
        let Some(remote) = self.readable() else { return Ok(None) };
        match remote.peek(key, Some(outputs)) {
            Ok(Some(Ok((manifest, host)))) => Ok(Some((manifest, format!("on the remote, from {host}")))),
            Ok(None) => Ok(None),
            Ok(Some(Err(reason))) => {
                self.reporter
                    .warning(&format!("{step}: the remote's result for key {} is not usable: {reason}", key.short()));
                Ok(None)
            }
            Err(e) => self.read_failed(e).map(|()| None),
        }
    }

    /// After a local miss, with the key's compute lock held: the remote's result committed to
    /// the local cache, with a note of what came from where; `None` when the remote has none,
    /// an unusable one (with a warning), or failed in fallback mode.
    pub fn fetch(
        &self,
        _lock: &KeyLock,
        key: &StepKey,
        outputs: &[&str],
        step: &str,
        events: &dyn Events,
    ) -> Result<Option<FromRemote>, RemoteError> {
        let Some(remote) = self.readable() else { return Ok(None) };
        match remote.pull(self.local, key, outputs, step, events) {
            Ok(Pulled::Hit { manifest, bytes, host }) => {
                Ok(Some((manifest, format!("{} from {host}", human_bytes(bytes)))))
            }
            Ok(Pulled::Missing) => Ok(None),
            Ok(Pulled::Unusable(reason)) => {
                self.reporter
                    .warning(&format!("{step}: the remote's result for key {} is not used: {reason}", key.short()));
                Ok(None)
            }
            Err(e) => self.read_failed(e).map(|()| None),
        }
    }

    /// After a step ran and committed, with its compute lock held: pushes the result (unless
    /// read-only or the breaker tripped) and returns the manifest to continue with, which is
    /// the remote's when another machine pushed other bytes for the key first (adopted, with
    /// a warning) and ours otherwise. `forced`: the rerun replaces the remote's result.
    pub fn publish(
        &self,
        _lock: &KeyLock,
        manifest: Manifest,
        outputs: &[&str],
        step: &str,
        forced: bool,
        events: &dyn Events,
    ) -> Manifest {
        let Some(remote) = self.writable() else { return manifest };
        if let Some(queue) = &self.background {
            // Adopt now what another machine pushed first; upload ours later.
            let theirs = if forced { Ok(None) } else { remote.peek(&manifest.key, Some(outputs)) };
            match theirs {
                // The same result is there: nothing to upload, unless this process found one of
                // its files corrupt there (the upload then repairs it).
                Ok(Some(Ok((found, _)))) if found.outputs == manifest.outputs && !remote.found_corrupt(&manifest) => {
                    return manifest
                }
                Ok(Some(Ok((found, _)))) if found.outputs == manifest.outputs => {}
                Ok(Some(Ok((_, host)))) => return self.adopt(remote, manifest, outputs, step, &host, events),
                // An unusable manifest there: the upload's create-only write says what to do.
                Ok(Some(Err(_)) | None) => {}
                Err(e) => {
                    self.write_failed(e, step);
                    return manifest;
                }
            }
            let upload = Upload { step: step.to_string(), manifest: manifest.clone(), replace: forced };
            queue.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(manifest.key.clone());
            queue.state.lock().unwrap_or_else(|e| e.into_inner()).0.push_back(upload);
            queue.changed.notify_one();
            return manifest;
        }
        match remote.push(self.local, &manifest, forced, events) {
            Ok(Pushed::Written { .. } | Pushed::Present) => manifest,
            Ok(Pushed::Differs { host }) => self.adopt(remote, manifest, outputs, step, &host, events),
            Err(e) => {
                self.write_failed(e, step);
                manifest
            }
        }
    }

    /// Continues with the remote's result for the key, which `host` pushed with other bytes than
    /// ours (with a warning), so that machines agree downstream; ours when it cannot be had.
    fn adopt(
        &self,
        remote: &Remote,
        manifest: Manifest,
        outputs: &[&str],
        step: &str,
        host: &str,
        events: &dyn Events,
    ) -> Manifest {
        self.reporter.warning(&format!(
            "{step} is not deterministic: the remote already holds different bytes for key {} (pushed by {host}); \
             using those, so that machines agree downstream",
            manifest.key.short()
        ));
        match remote.pull(self.local, &manifest.key, outputs, step, events) {
            Ok(Pulled::Hit { manifest: theirs, .. }) => theirs,
            Ok(Pulled::Missing) => manifest,
            Ok(Pulled::Unusable(reason)) => {
                self.reporter.warning(&format!("{step}: keeping the local result: the remote's is unusable: {reason}"));
                manifest
            }
            Err(e) => {
                self.reporter.warning(&format!("{step}: keeping the local result: {e}"));
                manifest
            }
        }
    }

    /// After the command's last push: re-uploads the files its pushes reused if a remote gc
    /// overlapped them ([`Remote::settle`]); a failure is a warning.
    pub fn settle(&self) {
        let Some(remote) = self.remote else { return };
        if let Err(e) = remote.settle() {
            self.write_failed(e, "the files a remote gc may have removed");
        }
    }

    /// Whether the remote holds a result for each key (`None`: no remote, or it cannot say).
    pub fn on_remote(&self, keys: &[StepKey]) -> Vec<Option<bool>> {
        let Some(remote) = self.readable() else { return vec![None; keys.len()] };
        match remote.has_manifests(keys) {
            Ok(found) => found.into_iter().map(Some).collect(),
            Err(e) => {
                let _ = self.read_failed(e);
                vec![None; keys.len()]
            }
        }
    }

    /// At the end of a run: uploads the local results it used (`(step, key)`) that the remote
    /// lacks; failures are warnings. Returns how many were pushed. Only the missing ones are
    /// read (and verified) locally, so a run whose results are all on the remote pays one
    /// request per step.
    pub fn catch_up(&self, results: &[(String, StepKey)], reporter: &Reporter) -> usize {
        let Some(remote) = self.writable() else { return 0 };
        // What the background worker learnt already; the rest is asked now, at once.
        let known = match &self.background {
            Some(queue) => std::mem::take(&mut *queue.present.lock().unwrap_or_else(|e| e.into_inner())),
            None => Default::default(),
        };
        let unknown: Vec<StepKey> =
            results.iter().map(|(_, k)| k).filter(|k| !known.contains_key(*k)).cloned().collect();
        let mut asked = match remote.has_manifests(&unknown) {
            Ok(p) => unknown.into_iter().zip(p).collect::<std::collections::HashMap<_, _>>(),
            Err(e) => {
                self.write_failed(e, "the results the remote lacks");
                return 0;
            }
        };
        asked.extend(known);
        let present: Vec<bool> = results.iter().map(|(_, k)| asked.get(k).copied().unwrap_or(false)).collect();
        let mut pushed = 0;
        for ((step, key), there) in results.iter().zip(present) {
            if there || self.writes_off.load(Ordering::Relaxed) {
                continue;
            }
            // Under the key's use lock, so that no gc or forced rerun removes the files meanwhile.
            let Ok(_using) = self.local.hold(key) else { continue };
            let Lookup::Hit(manifest) = self.local.lookup(key) else { continue };
            let events = reporter.for_step(step);
            match remote.push(self.local, &manifest, false, &events) {
                Ok(Pushed::Written { files, bytes }) => {
                    pushed += 1;
                    events.log(&format!(
                        "pushed its result, which the remote lacked ({files} file{}, {})",
                        if files == 1 { "" } else { "s" },
                        human_bytes(bytes)
                    ));
                }
                Ok(Pushed::Present | Pushed::Differs { .. }) => {}
                Err(e) => self.write_failed(e, step),
            }
        }
        pushed
    }

    /// Stores run records on the remote, for `pipe report` elsewhere (a failure is a warning,
    /// and after a failed write none is tried: the records stay local).
    pub fn push_runs(&self, records: &[RunRecord]) {
        let Some(remote) = self.writable() else { return };
        for record in records {
            if let Err(e) = remote.push_run(record) {
                self.write_failed(e, "the run record");
                return;
            }
        }
    }

    /// The bytes of a result's single-file output, from the local tier or else the remote's
    /// (verified against its hash; for reports of runs made elsewhere), and where they came
    /// from, for messages. `None` when neither has it.
    pub fn read_output(&self, key: &StepKey, output: &str, step: &str) -> Option<(Option<Vec<u8>>, String)> {
        if let Lookup::Hit(manifest) = self.local.lookup(key) {
            let path = self.local.output_path(&manifest, output);
            return Some((std::fs::read(&path).ok(), path.display().to_string()));
        }
        match self.readable()?.read_output(key, output) {
            Ok(Some(bytes)) => Some((Some(bytes), format!("the remote's {output} of {step}"))),
            Ok(None) => None,
            Err(e) => {
                let _ = self.read_failed(e);
                None
            }
        }
    }

    /// `pipe pull`: the remote's result for the key into the local cache, under its lock;
    /// `None` when the local cache has it (by now).
    pub fn pull(
        &self,
        key: &StepKey,
        outputs: &[&str],
        step: &str,
        events: &dyn Events,
    ) -> Result<Option<Pulled>, TierError> {
        let remote = self.remote.ok_or(TierError::NoRemote)?;
        let _lock = self.lock(key)?;
        if let Lookup::Hit(_) = self.local.lookup(key) {
            return Ok(None);
        }
        Ok(Some(remote.pull(self.local, key, outputs, step, events)?))
    }

    /// `pipe push`: one local result to the remote (failures are errors: the user asked).
    /// `replace`: overwrite the remote's result for the key with this one.
    pub fn push(&self, manifest: &Manifest, replace: bool, events: &dyn Events) -> Result<Pushed, TierError> {
        let remote = self.remote.ok_or(TierError::NoRemote)?;
        let _using = self.local.hold(&manifest.key)?;
        Ok(remote.push(self.local, manifest, replace, events)?)
    }
}

/// A failure of `pipe push` or `pipe pull`.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("no remote is configured")]
    NoRemote,
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}
