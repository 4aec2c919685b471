//! The on-disk cache: step results by key, written atomically, locked per key.
//!
//! ```text
//! cache/                          --cache-dir, PIPE_CACHE_DIR (default ./cache)
//! ├── steps/
//! │   └── <key>/                  one step result; <key> is 64 hex digits (see fingerprint.rs)
//! │       ├── out-<id>/<output>   each declared output: a file or a directory of files
//! │       └── manifest.json       written last (temp file + rename): the cache format, the
//! │                               out-<id> it names, every file with size and blake3, the
//! │                               fingerprint, the time taken; no manifest = no result
//! ├── tmp/<key>.<pid>.<n>/out/    a step running; renamed to steps/<key>/out-<id> when it
//! │                               succeeds, removed when it fails; leftovers of killed runs: gc
//! ├── checkpoints/<key>/          resumable state of a long step (fine-tune epochs), kept
//! │                               across interrupted runs, removed when the step succeeds
//! ├── locks/<key>.lock            held (exclusive) while a run computes <key>: a second run
//! │                               waits, then finds the result; gc skips a key it cannot take
//! ├── locks/<key>.use             held (shared) by runs whose running step reads <key>; gc and
//! │                               the cleanup of superseded outputs need it exclusively
//! ├── jobs/<key>/                 a cluster job of <key> (job.json, job.sh, its log and
//! │                               <job id>.result.json: executor/slurm.rs); gc removes it
//! │                               once no kept run references <key> (commands/gc.rs)
//! ├── runs/<id>.json              one record per `pipe run` (see run_record.rs)
//! └── runs/<id>.lock              held (exclusive) by that run's process while it lives: a
//!                                 record still `running` whose lock is free is of a run that
//!                                 died, and pins nothing (gc)
//! ```
//!
//! A lookup is a hit only when the manifest parses and every file it lists has the recorded
//! size and blake3; anything else is a miss with the reason, and the entry is recomputed.
//! Recomputing a key that is stored (`--force`) writes a new `out-<id>` and replaces the
//! manifest in one rename: until then the old result stays whole, and a run still reading the
//! old files keeps them (they are removed when nobody uses them, or by `pipe gc`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fingerprint::CACHE_FORMAT;
use crate::manifest::{Manifest, OutputEntry};
use crate::step_key::StepKey;

/// A cache operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cache: {action} {}: {source}", path.display())]
pub struct CacheError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
    /// What to do, when the cache's set-up is wrong (its filesystem) rather than this run.
    pub help: Option<&'static str>,
}

impl CacheError {
    pub fn new(action: &'static str, path: PathBuf, source: std::io::Error) -> CacheError {
        CacheError { action, path, source, help: None }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::new(action, path.to_path_buf(), source)
}

/// The result of looking a key up.
#[derive(Debug)]
// A hit is the common case and is used at once: boxing its manifest would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    Hit(Manifest),
    /// Nothing complete is stored under the key.
    Missing,
    /// A manifest exists but the files do not match it (the detail says how).
    Corrupt(String),
}

/// A step's scratch directory; removed on drop unless committed.
pub struct Scratch {
    dir: PathBuf,
    committed: bool,
}

impl Scratch {
    /// Where the step writes its outputs.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A lock on one key (exclusive for computing, shared for reading), released on drop.
pub struct KeyLock {
    _file: fs::File,
}

/// Which of a key's two locks.
#[derive(Debug, Clone, Copy)]
enum LockKind {
    /// `<key>.lock`: computing the key.
    Compute,
    /// `<key>.use`: reading the key's files.
    Use,
}

pub struct Cache {
    root: PathBuf,
}

static SCRATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating if needed) the cache at `root`, and checks once that its filesystem
    /// supports the locks everything here relies on.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for sub in ["steps", "tmp", "checkpoints", "locks", "runs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let cache = Cache { root: root.to_path_buf() };
        cache.probe_locks()?;
        Ok(cache)
    }

    /// Takes and releases an `flock` on `locks/.probe`. A filesystem without `flock` (Lustre
    /// mounted without `-o flock`, NFS v3 without its lock manager, some FUSE mounts) fails here
    /// with what to do rather than on the first step. Not detectable here: NFS mounted with
    /// `local_lock=flock` or `local_lock=all`, whose locks never reach the other machines (the
    /// README's cluster section says to avoid it).
    fn probe_locks(&self) -> Result<(), CacheError> {
        let path = self.root.join("locks").join(".probe");
        let file = open_lock(&path)?;
        file.lock().map_err(|source| CacheError {
            action: "locking (its filesystem does not support flock)",
            path: path.clone(),
            source,
            help: Some(
                "mount Lustre with `-o flock` and NFS v3 with its lock manager (nlockmgr), or put the cache on \
                 another filesystem (--cache-dir or PIPE_CACHE_DIR)",
            ),
        })?;
        file.unlock().map_err(io_err("unlocking", &path))
    }

    /// The cache at `root`, created or not, for commands that only read (a missing cache is
    /// an empty one).
    pub fn at(root: &Path) -> Cache {
        Cache { root: root.to_path_buf() }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    fn entry_dir(&self, key: &StepKey) -> PathBuf {
        self.root.join("steps").join(key.as_str())
    }

    /// The directory holding the outputs of a stored result.
    pub fn out_dir(&self, manifest: &Manifest) -> PathBuf {
        self.entry_dir(&manifest.key).join(&manifest.dir)
    }

    /// Where output `output` of a stored result is.
    pub fn output_path(&self, manifest: &Manifest, output: &str) -> PathBuf {
        self.out_dir(manifest).join(output)
    }

    pub fn checkpoint_dir(&self, key: &StepKey) -> PathBuf {
        self.root.join("checkpoints").join(key.as_str())
    }

    /// Reads and verifies the result stored under `key`.
    pub fn lookup(&self, key: &StepKey) -> Lookup {
        let path = self.entry_dir(key).join("manifest.json");
        let Ok(bytes) = fs::read(&path) else { return Lookup::Missing };
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return Lookup::Corrupt(format!("manifest.json unreadable: {e}")),
        };
        if &manifest.key != key {
            return Lookup::Corrupt("manifest.json belongs to another key".into());
        }
        if manifest.format != CACHE_FORMAT {
            return Lookup::Corrupt(format!("cache format {} (this pipe writes {CACHE_FORMAT})", manifest.format));
        }
        if !valid_out_dir(&manifest.dir) {
            return Lookup::Corrupt(format!("manifest.json names `{}`, not an output directory", manifest.dir));
        }
        match manifest.verify(&self.out_dir(&manifest)) {
            Ok(()) => Lookup::Hit(manifest),
            Err(detail) => Lookup::Corrupt(detail),
        }
    }

    /// Waits for, then holds, the exclusive lock for computing `key`.
    pub fn lock(&self, key: &StepKey) -> Result<KeyLock, CacheError> {
        let (file, path) = self.lock_file(key, LockKind::Compute)?;
        file.lock().map_err(io_err("locking", &path))?;
        Ok(KeyLock { _file: file })
    }

    /// Holds `key`'s files in use (shared) while a step reads them, so gc and the cleanup after
    /// a `--force` rerun leave them alone.
    pub fn hold(&self, key: &StepKey) -> Result<KeyLock, CacheError> {
        let (file, path) = self.lock_file(key, LockKind::Use)?;
        file.lock_shared().map_err(io_err("locking", &path))?;
        Ok(KeyLock { _file: file })
    }

    /// Held by a `pipe run` for as long as its process lives (released by the OS when it dies).
    pub fn run_lock(&self, id: &str) -> Result<KeyLock, CacheError> {
        let path = self.runs_dir().join(format!("{id}.lock"));
        let file = open_lock(&path)?;
        file.lock().map_err(io_err("locking", &path))?;
        Ok(KeyLock { _file: file })
    }

    /// Removes the run lock of a run that ended (its record says how), releasing it.
    pub fn end_run(&self, lock: KeyLock, id: &str) {
        drop(lock);
        let _ = fs::remove_file(self.runs_dir().join(format!("{id}.lock")));
    }

    /// Whether the run `id` (whose record says it is running) is alive: its process holds its
    /// run lock. `None` when it has no lock file (a run of a pipe from before run locks).
    pub fn run_is_alive(&self, id: &str) -> Option<bool> {
        let path = self.runs_dir().join(format!("{id}.lock"));
        let file = fs::OpenOptions::new().read(true).open(&path).ok()?;
        Some(matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock)))
    }

    /// Whether some run (a thread, a process, a cluster job on a shared cache) computes `key`
    /// now: its compute lock is taken.
    /// Creates nothing: without a lock file nobody computes `key` (read-only commands such as
    /// `pipe status` leave the cache as they found it).
    pub fn is_computing(&self, key: &StepKey) -> bool {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let Ok(file) = fs::OpenOptions::new().read(true).open(&path) else { return false };
        matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
    }

    /// Both locks of `key` when nobody computes or reads it, without waiting (for removal).
    pub fn try_lock_idle(&self, key: &StepKey) -> Result<Option<(KeyLock, KeyLock)>, CacheError> {
        let compute = match self.try_lock(key, LockKind::Compute)? {
            Some(l) => l,
            None => return Ok(None),
        };
        Ok(self.try_lock(key, LockKind::Use)?.map(|u| (compute, u)))
    }

    fn try_lock(&self, key: &StepKey, kind: LockKind) -> Result<Option<KeyLock>, CacheError> {
        let (file, path) = self.lock_file(key, kind)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(KeyLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err("locking", &path)(e)),
        }
    }

    fn lock_file(&self, key: &StepKey, kind: LockKind) -> Result<(fs::File, PathBuf), CacheError> {
        let ext = match kind {
            LockKind::Compute => "lock",
            LockKind::Use => "use",
        };
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let path = dir.join(format!("{key}.{ext}"));
        let file = open_lock(&path)?;
        Ok((file, path))
    }

    /// A fresh scratch directory for computing `key`.
    pub fn scratch(&self, key: &StepKey) -> Result<Scratch, CacheError> {
        let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("tmp").join(format!("{key}.{}.{n}", std::process::id()));
        let out = dir.join("out");
        fs::create_dir_all(&out).map_err(io_err("creating", &out))?;
        Ok(Scratch { dir, committed: false })
    }

    /// Makes a finished scratch directory the result of `key`: hashes the declared outputs,
    /// renames them into a new `out-<id>` of the entry, then writes the manifest naming it
    /// (temp file + rename). A result stored before under the key stays valid until that
    /// rename; its files are removed after it unless a run is reading them. Call with the
    /// key's compute lock held.
    pub fn commit(
        &self,
        mut scratch: Scratch,
        mut manifest: Manifest,
        outputs: &[&str],
    ) -> Result<Manifest, CommitError> {
        let out = scratch.out_dir();
        for name in outputs {
            let path = out.join(name);
            if !path.exists() {
                return Err(CommitError::MissingOutput(name.to_string()));
            }
            let entry = OutputEntry::scan(&path).map_err(|e| CommitError::Cache(io_err("hashing", &path)(e)))?;
            manifest.outputs.insert(name.to_string(), entry);
        }
        let entry = self.entry_dir(&manifest.key);
        fs::create_dir_all(&entry).map_err(|e| CommitError::Cache(io_err("creating", &entry)(e)))?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
        manifest.dir = format!("out-{}{:09}-{}-{n}", stamp.as_secs(), stamp.subsec_nanos(), std::process::id());
        manifest.format = CACHE_FORMAT;
        let final_out = entry.join(&manifest.dir);
        fs::rename(&out, &final_out).map_err(|e| CommitError::Cache(io_err("moving result to", &final_out)(e)))?;
        scratch.committed = true;
        let _ = fs::remove_dir_all(&scratch.dir);
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        let tmp = entry.join(format!("manifest.json.{}-{n}.tmp", std::process::id()));
        let path = entry.join("manifest.json");
        write_synced(&tmp, &bytes).map_err(|e| CommitError::Cache(io_err("writing", &tmp)(e)))?;
        fs::rename(&tmp, &path).map_err(|e| CommitError::Cache(io_err("renaming", &path)(e)))?;
        sync_dir(&entry);
        if let Ok(Some(_idle)) = self.try_lock(&manifest.key, LockKind::Use) {
            let _ = self.remove_superseded(&manifest);
        }
        Ok(manifest)
    }

    /// Removes the output directories and temp files of `manifest`'s entry that it does not
    /// name (left by a `--force` rerun while a run read them, or by a killed commit). Call with
    /// the key's use lock held exclusively. Returns the bytes removed.
    pub fn remove_superseded(&self, manifest: &Manifest) -> Result<u64, CacheError> {
        let entry = self.entry_dir(&manifest.key);
        let mut bytes = 0;
        for item in fs::read_dir(&entry).map_err(io_err("listing", &entry))?.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let stale = (valid_out_dir(&name) && name != manifest.dir) || name.ends_with(".tmp");
            if stale {
                let path = item.path();
                bytes += Cache::disk_usage(&path);
                let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                removed.map_err(io_err("removing", &path))?;
            }
        }
        Ok(bytes)
    }

    /// Removes whatever is stored under `key` (a corrupt or partial entry). Call with the lock.
    pub fn discard(&self, key: &StepKey) -> Result<(), CacheError> {
        let entry = self.entry_dir(key);
        match fs::remove_dir_all(&entry) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &entry)(e)),
            _ => Ok(()),
        }
    }

    /// Removes a finished step's checkpoints.
    pub fn clear_checkpoints(&self, key: &StepKey) {
        let _ = fs::remove_dir_all(self.checkpoint_dir(key));
    }

    /// Keys of every stored result (complete or not).
    pub fn keys(&self) -> Result<Vec<StepKey>, CacheError> {
        list_keys(&self.root.join("steps"), StepKey::parse)
    }

    /// The directory of `key`'s cluster jobs (written by the Slurm executor, read by its worker).
    pub fn job_dir(&self, key: &StepKey) -> PathBuf {
        self.root.join("jobs").join(key.as_str())
    }

    /// Keys with a job directory (none when no job was ever submitted).
    pub fn job_keys(&self) -> Result<Vec<StepKey>, CacheError> {
        let dir = self.root.join("jobs");
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        list_keys(&dir, StepKey::parse)
    }

    /// Keys with checkpoints.
    pub fn checkpoint_keys(&self) -> Result<Vec<StepKey>, CacheError> {
        list_keys(&self.root.join("checkpoints"), StepKey::parse)
    }

    /// Scratch directories left behind (by killed runs, or runs in progress), with the key
    /// each one computes.
    pub fn scratch_dirs(&self) -> Result<Vec<(PathBuf, Option<StepKey>)>, CacheError> {
        let dir = self.root.join("tmp");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let path = entry.map_err(io_err("listing", &dir))?.path();
            let key = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.get(..64)).and_then(StepKey::parse);
            out.push((path, key));
        }
        Ok(out)
    }

    /// Bytes on disk under `path`.
    pub fn disk_usage(path: &Path) -> u64 {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                fs::read_dir(path).map(|rd| rd.flatten().map(|e| Cache::disk_usage(&e.path())).sum()).unwrap_or(0)
            }
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }

    /// Removes a result and its checkpoints. Call holding [`Cache::try_lock_idle`]'s locks;
    /// lock files stay (removing a lock file someone waits on would let two runs hold it).
    pub fn remove(&self, key: &StepKey) -> Result<(), CacheError> {
        self.discard(key)?;
        self.clear_checkpoints(key);
        Ok(())
    }

    /// The path of a result entry (for gc's byte counts).
    pub fn entry_path(&self, key: &StepKey) -> PathBuf {
        self.entry_dir(key)
    }

    /// Content hash of a local file or directory named by a parameter.
    pub fn hash_local(path: &Path) -> Result<String, CacheError> {
        OutputEntry::scan(path).map(|e| e.hash).map_err(io_err("hashing", path))
    }
}

fn list_keys(dir: &Path, parse: impl Fn(&str) -> Option<StepKey>) -> Result<Vec<StepKey>, CacheError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        if let Some(key) = entry.file_name().to_str().and_then(&parse) {
            keys.push(key);
        }
    }
    keys.sort();
    Ok(keys)
}

/// `out-<digits and dashes>`: an output directory of an entry (not a path elsewhere).
fn valid_out_dir(name: &str) -> bool {
    name.strip_prefix("out-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
}

/// Flushes a directory's entries (a rename into it) to disk; best effort.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` and flushes them to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Committing a step's result failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the step did not write its declared output `{0}`")]
    MissingOutput(String),
    #[error(transparent)]
    Cache(CacheError),
}

/// Opens (creating) a lock file, to take an `flock` on.
fn open_lock(path: &Path) -> Result<fs::File, CacheError> {
    fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io_err("opening lock", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps run on threads of one process (`pipe run --jobs`): the key locks must exclude
    /// each other there as between processes. They do because each lock opens its own file
    /// handle, and `flock` locks belong to the open file, not to the process.
    #[test]
    fn key_locks_exclude_threads_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let key = StepKey::from_hash(blake3::hash(b"k"));
        let held = cache.lock(&key).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| assert!(cache.try_lock(&key, LockKind::Compute).unwrap().is_none(), "a second thread got it"));
        });
        drop(held);
        std::thread::scope(|s| {
            s.spawn(|| assert!(cache.try_lock(&key, LockKind::Compute).unwrap().is_some(), "released, yet not free"));
        });
        // Readers share the use lock; a remover (exclusive) waits for them.
        let reading = cache.hold(&key).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _also = cache.hold(&key).unwrap();
                assert!(cache.try_lock(&key, LockKind::Use).unwrap().is_none(), "removed while read");
            });
        });
        drop(reading);
        assert!(cache.try_lock(&key, LockKind::Use).unwrap().is_some());
    }
}
