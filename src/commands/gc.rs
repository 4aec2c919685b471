//! `pipe gc`: remove cached results, checkpoints and scratch directories that none of the
//! most recent runs references. Nothing a live run holds is removed: a key some run computes
//! or reads has its lock taken (see cache.rs), and gc skips any key whose locks it cannot take
//! at once; the young-file grace period is a second guard for runs of older versions.
//!
//! Cluster job directories (`jobs/<key>/`: job file, batch script, the job's log, its result
//! file) follow the results' rule: one goes when no kept run references its key (the last N
//! runs, and every run still in progress, whose queued or running jobs need their files; a
//! record left `running` by a run that died, told by its free run lock, keeps nothing), nothing in it was modified within the grace period, and the key's locks are free
//! (a worker holds the compute lock while the job runs). The logs of a kept run's failed jobs
//! stay, so the path its error names still holds the log. A run killed without ending its
//! record keeps its jobs' directories, as it keeps its results: gc does not ask the cluster.
//!
//! `pipe gc --remote [URL] --older-than 30d` collects the remote cache instead (see
//! [`crate::remote::Remote::gc`]): results no run used for that long, manifests before files,
//! never a file a kept manifest names, nothing younger than the grace period (default 1 day
//! there: a push uploads its files before its manifest, and a large one takes a while).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::cache::{Cache, CacheError, Lookup};
use crate::commands::GlobalArgs;
use crate::error::Error;
use crate::remote::{Remote, RemoteMode};
use crate::reporter::{human_bytes, Reporter};
use crate::run_record::{RunRecord, RunState};
use crate::step_key::StepKey;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep what the last N runs reference (runs in progress are always kept; a record left
    /// `running` by a run that died is not).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub keep_runs: usize,
    /// Report what would be removed and how many bytes, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep anything modified more recently than this (e.g. 10m, 2h, 0s; default 10m, 1d
    /// with --remote). What a live run holds is kept whatever its age: gc skips keys whose
    /// locks it cannot take.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// Collect the remote cache (URL, default PIPE_REMOTE) instead of the local one.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub remote: Option<String>,
    /// With --remote: remove the results that no run used for this long (default 30d).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
}

pub fn execute(args: &GcArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    if let Some(url) = &args.remote {
        return remote_gc(args, url, reporter);
    }
    if args.older_than.is_some() {
        return Err(Error::usage(
            "--older-than applies to the remote cache",
            Some("add --remote, or use --keep-runs for the local cache".into()),
        ));
    }
    let grace = args.grace.unwrap_or(Duration::from_secs(600));
    let cache = Cache::at(&global.cache_dir);
    if !cache.runs_dir().is_dir() {
        reporter.line(&format!("nothing to collect: no cache at {}", global.cache_dir.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let runs = RunRecord::all(&cache);
    let recent = runs.len().saturating_sub(args.keep_runs);
    let mut keep: BTreeSet<StepKey> = BTreeSet::new();
    let now = SystemTime::now();
    for (i, run) in runs.iter().enumerate() {
        if i >= recent || (run.state == RunState::Running && alive(&cache, run, now, grace)) {
            keep.extend(run.steps.iter().filter_map(|s| s.key.clone()));
        }
    }
    let young = |path: &std::path::Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < grace)
    };
    let verb = if args.dry_run { "would remove" } else { "removed" };
    let (mut count, mut bytes) = (0usize, 0u64);
    let mut in_use = 0usize;
    for key in cache.keys()? {
        let entry = cache.entry_path(&key);
        let Some(_idle) = cache.try_lock_idle(&key)? else {
            in_use += 1;
            continue;
        };
        if keep.contains(&key) || young(&entry) {
            // Kept, but the outputs a `--force` rerun replaced while a run read them can go.
            if let Lookup::Hit(manifest) = cache.lookup(&key) {
                if !args.dry_run {
                    let freed = cache.remove_superseded(&manifest)?;
                    if freed > 0 {
                        reporter.line(&format!("{verb} superseded outputs of {}  {}", key.short(), human_bytes(freed)));
                        count += 1;
                        bytes += freed;
                    }
                }
            }
            continue;
        }
        let size = Cache::disk_usage(&entry) + Cache::disk_usage(&cache.checkpoint_dir(&key));
        reporter.line(&format!("{verb} {}  {}", key.short(), human_bytes(size)));
        if !args.dry_run {
            cache.remove(&key)?;
        }
        count += 1;
        bytes += size;
    }
    for key in cache.checkpoint_keys()? {
        let dir = cache.checkpoint_dir(&key);
        if keep.contains(&key) || young(&dir) || cache.entry_path(&key).exists() {
            continue;
        }
        let Some(_idle) = cache.try_lock_idle(&key)? else {
            in_use += 1;
            continue;
        };
        let size = Cache::disk_usage(&dir);
        reporter.line(&format!("{verb} checkpoints {}  {}", key.short(), human_bytes(size)));
        if !args.dry_run {
            cache.clear_checkpoints(&key);
        }
        count += 1;
        bytes += size;
    }
    for (dir, key) in cache.scratch_dirs()? {
        if young(&dir) {
            continue;
        }
        let idle = match &key {
            Some(key) => cache.try_lock_idle(key)?,
            None => None,
        };
        if key.is_some() && idle.is_none() {
            in_use += 1;
            continue;
        }
        let size = Cache::disk_usage(&dir);
        reporter.line(&format!("{verb} scratch {}  {}", dir.display(), human_bytes(size)));
        if !args.dry_run {
            let _ = std::fs::remove_dir_all(&dir);
        }
        count += 1;
        bytes += size;
    }
    for key in cache.job_keys()? {
        let dir = cache.job_dir(&key);
        if keep.contains(&key)
            || newest_modified(&dir).is_none_or(|t| now.duration_since(t).unwrap_or_default() < grace)
        {
            continue;
        }
        let Some(_idle) = cache.try_lock_idle(&key)? else {
            in_use += 1;
            continue;
        };
        let size = Cache::disk_usage(&dir);
        reporter.line(&format!("{verb} job files {}  {}", key.short(), human_bytes(size)));
        if !args.dry_run {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CacheError::new("removing", dir, e).into());
                }
                _ => {}
            }
        }
        count += 1;
        bytes += size;
    }
    let busy = if in_use > 0 { format!("; {in_use} in use by a running pipe, left alone") } else { String::new() };
    reporter.line(&format!(
        "{verb} {count} entries, {} (kept what the last {} runs use{busy})",
        human_bytes(bytes),
        args.keep_runs
    ));
    Ok(ExitCode::SUCCESS)
}

/// `pipe gc --remote`.
fn remote_gc(args: &GcArgs, url: &str, reporter: &Reporter) -> Result<ExitCode, Error> {
    let from_env = std::env::var("PIPE_REMOTE").ok();
    let Some(url) = Some(url).filter(|u| !u.is_empty()).or(from_env.as_deref().filter(|u| !u.is_empty())) else {
        return Err(Error::usage(
            "--remote without a URL and no PIPE_REMOTE",
            Some("name it: `pipe gc --remote s3://BUCKET/PREFIX --older-than 30d`".into()),
        ));
    };
    let remote = Remote::open(url, RemoteMode::ReadWrite)?;
    remote.check()?;
    let older_than = args.older_than.unwrap_or(Duration::from_secs(30 * 86400));
    let grace = args.grace.unwrap_or(Duration::from_secs(86400));
    let verb = if args.dry_run { "would remove" } else { "removed" };
    let report = remote.gc(older_than, grace, args.dry_run, &mut |line| reporter.line(&line))?;
    reporter.line(&format!(
        "{verb} {} manifest{} and {} file{}, {} from {} (kept what runs used in the last {})",
        report.manifests,
        if report.manifests == 1 { "" } else { "s" },
        report.files,
        if report.files == 1 { "" } else { "s" },
        human_bytes(report.bytes),
        remote.url(),
        humantime::format_duration(older_than)
    ));
    Ok(ExitCode::SUCCESS)
}

/// Whether a run whose record says `running` still runs: its process holds the run's lock. A
/// record without a lock file (a pipe from before run locks) counts as alive while it changed
/// within the grace period. A record of a run that died pins nothing, however recent.
fn alive(cache: &Cache, run: &RunRecord, now: SystemTime, grace: Duration) -> bool {
    cache.run_is_alive(&run.id).unwrap_or_else(|| {
        let record = cache.runs_dir().join(format!("{}.json", run.id));
        newest_modified(&record).is_none_or(|t| now.duration_since(t).unwrap_or_default() < grace)
    })
}

/// The latest modification time of `path` or anything under it (a job's log grows while its
/// directory's own time stays put). `None` when some of it cannot be read: gc keeps it.
fn newest_modified(path: &std::path::Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    let inner = std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest_modified(&e.path())).max();
    own.max(inner)
}
