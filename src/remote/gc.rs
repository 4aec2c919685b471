//! Deleting from the remote what nobody used: manifests first, then files no kept manifest
//! names and older than a grace period.
//!
//! A push may reuse a file (the store has it) that a concurrent gc is about to delete, because
//! no manifest named it when gc listed them. Two rules close that race without a lock: a gc
//! announces itself with a marker (`gc/<id>.json`, running or finished) and deletes a file only
//! if it was not written since the gc began (checked right before the delete); a push that
//! finds a gc marker it overlapped uploads the files it reused once more ([`super::transfer`]),
//! which either restores a deleted file or makes it too young to be deleted.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use futures_util::stream::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{Remote, RemoteError};
use crate::run_record::RunRecord;
use crate::step_key::StepKey;

/// What a remote gc removed (or would).
#[derive(Debug, Default)]
pub struct RemoteGc {
    pub manifests: usize,
    pub files: usize,
    pub bytes: u64,
}

impl Remote {
    /// Removes from the remote the results that nobody used for `older_than`: manifests
    /// created before then that no run record of that period names, deleted first; then the
    /// files that no remaining manifest names, unless younger than `grace` (a push in progress
    /// uploads files before its manifest). `line` hears one line per removal.
    pub fn gc(
        &self,
        older_than: Duration,
        grace: Duration,
        dry_run: bool,
        line: &mut dyn FnMut(String),
    ) -> Result<RemoteGc, RemoteError> {
        self.rt.block_on(async {
            if dry_run {
                return self.gc_async(older_than, grace, None, line).await;
            }
            let marker = self.path("gc", &format!("{}-{}.json", now_ms(), std::process::id()));
            let started = self.write_marker(&marker, true).await?;
            let result = self.gc_async(older_than, grace, Some(started), line).await;
            // Finished (or failed): pushes from now on need not refresh for this gc.
            let finished = self.write_marker(&marker, false).await;
            let report = result?;
            finished?;
            Ok(report)
        })
    }

    /// Writes a gc marker and returns the store's time of it (machines' clocks may differ).
    async fn write_marker(&self, marker: &object_store::path::Path, running: bool) -> Result<i64, RemoteError> {
        let body = serde_json::json!({ "host": crate::provenance::host(), "running": running }).to_string();
        self.store
            .put(marker, PutPayload::from(body))
            .await
            .map_err(|e| self.error(&format!("writing {marker}"), e))?;
        let meta = self.store.head(marker).await.map_err(|e| self.error(&format!("reading {marker}"), e))?;
        Ok(meta.last_modified.timestamp_millis())
    }

    /// Whether a gc ran at some time since `since_ms` (store time, milliseconds) or runs now.
    pub(super) async fn gc_overlapped(&self, since_ms: i64) -> Result<bool, RemoteError> {
        let prefix = self.root.clone().join("gc");
        let markers: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.error(&format!("listing {prefix}"), e))?;
        for meta in markers {
            // A marker is rewritten when its gc finishes: written since then means it overlapped.
            if meta.last_modified.timestamp_millis() >= since_ms {
                return Ok(true);
            }
            let Ok(got) = self.store.get(&meta.location).await else { continue };
            let Ok(bytes) = got.bytes().await else { continue };
            let running = serde_json::from_slice::<serde_json::Value>(&bytes)
                .map(|v| v["running"].as_bool().unwrap_or(true))
                .unwrap_or(true);
            if running {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a file gc listed is still there and was not written since the gc began
    /// (`started`, store time): one a push reused meanwhile, and so rewrote, stays (see the
    /// module doc). Asked right before the delete.
    async fn untouched_since(&self, listed: &object_store::ObjectMeta, started: i64) -> Result<bool, RemoteError> {
        match self.store.head(&listed.location).await {
            Ok(now) => Ok(now.last_modified.timestamp_millis() < started),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(&format!("checking {}", listed.location), e)),
        }
    }

    async fn gc_async(
        &self,
        older_than: Duration,
        grace: Duration,
        // When this gc began (store time, ms); `None` for a dry run.
        started: Option<i64>,
        line: &mut dyn FnMut(String),
    ) -> Result<RemoteGc, RemoteError> {
        let dry_run = started.is_none();
        let now = SystemTime::now();
        let age = |meta: &object_store::ObjectMeta| {
            let modified = meta.last_modified.timestamp_millis().max(0) as u64;
            let now_ms = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
            Duration::from_millis(now_ms.saturating_sub(modified))
        };
        let list = |dir: &str| {
            let prefix = self.root.clone().join(dir);
            async move {
                let metas: Vec<object_store::ObjectMeta> = self
                    .store
                    .list(Some(&prefix))
                    .try_collect()
                    .await
                    .map_err(|e| self.error(&format!("listing {prefix}"), e))?;
                Ok::<_, RemoteError>(metas)
            }
        };
        // Keys that runs of the period used (ran or took from a cache) stay.
        let mut used: BTreeSet<StepKey> = BTreeSet::new();
        for meta in list("runs").await? {
            if age(&meta) >= older_than {
                continue;
            }
            let Ok(bytes) = self.store.get(&meta.location).await else { continue };
            let Ok(bytes) = bytes.bytes().await else { continue };
            if let Ok(run) = serde_json::from_slice::<RunRecord>(&bytes) {
                used.extend(run.steps.iter().filter_map(|s| s.key.clone()));
            }
        }
        let mut report = RemoteGc::default();
        let manifests = list("manifests").await?;
        let mut kept: Vec<StepKey> = Vec::new();
        let mut doomed: Vec<(StepKey, object_store::ObjectMeta)> = Vec::new();
        for meta in manifests {
            let Some(key) = meta.location.filename().and_then(|n| n.strip_suffix(".json")).and_then(StepKey::parse)
            else {
                continue;
            };
            if used.contains(&key) || age(&meta) < older_than.max(grace) {
                kept.push(key);
            } else {
                doomed.push((key, meta));
            }
        }
        let verb = if dry_run { "would remove" } else { "removed" };
        for (key, meta) in &doomed {
            line(format!("{verb} manifest {}", key.short()));
            if !dry_run {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.error(&format!("deleting {}", meta.location), e)),
                }
            }
            report.manifests += 1;
        }
        // The files every remaining manifest names (listed again: one may have been pushed
        // meanwhile). A manifest that cannot be read keeps nothing, but its key stays listed.
        let mut names: Vec<StepKey> = if dry_run {
            kept
        } else {
            list("manifests")
                .await?
                .iter()
                .filter_map(|m| m.location.filename().and_then(|n| n.strip_suffix(".json")).and_then(StepKey::parse))
                .collect()
        };
        names.sort();
        let mut referenced: HashSet<String> = HashSet::new();
        for key in &names {
            match self.read_manifest(key, None).await? {
                Some(Ok((m, _))) => {
                    referenced.extend(m.outputs.values().flat_map(|o| o.files.iter().map(|f| f.blake3.clone())))
                }
                // A manifest that is there but cannot be read: keep every file (cannot tell).
                Some(Err(_)) => {
                    return Err(RemoteError::store(
                        &self.url,
                        format!("manifests/{key}.json cannot be read; no file removed"),
                        Some("remove or repair that manifest, then run gc again".to_string()),
                    ))
                }
                None => {}
            }
        }
        for meta in list("files").await? {
            let Some(name) = meta.location.filename() else { continue };
            if referenced.contains(name) || age(&meta) < grace {
                continue;
            }
            if let Some(started) = started {
                if !self.untouched_since(&meta, started).await? {
                    continue;
                }
            }
            line(format!("{verb} file {}  {}", &name[..name.len().min(12)], crate::reporter::human_bytes(meta.size)));
            if !dry_run {
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.error(&format!("deleting {}", meta.location), e)),
                }
            }
            report.files += 1;
            report.bytes += meta.size;
        }
        // Markers of gcs that finished a day ago tell pushes nothing any more.
        if !dry_run {
            for meta in list("gc").await? {
                if age(&meta) > Duration::from_secs(86400) {
                    let _ = self.store.delete(&meta.location).await;
                }
            }
        }
        Ok(report)
    }
}

/// Now, in milliseconds since the epoch (names markers; ordering comes from the store's times).
fn now_ms() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteMode;

    /// The gc side of the race with a push that reuses a file: a file listed before the gc
    /// began is deleted only if nothing wrote it since (a push's refresh rewrites it).
    #[test]
    fn gc_keeps_a_listed_file_that_a_push_rewrote_since_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote::open(&format!("file://{}", dir.path().display()), RemoteMode::ReadWrite).unwrap();
        let file = remote.path("files", &"a".repeat(64));
        remote.rt.block_on(async {
            remote.store.put(&file, PutPayload::from_static(b"bytes")).await.unwrap();
            let listed = remote.store.head(&file).await.unwrap();
            // Store times are in milliseconds: the gc begins strictly after the file was written.
            std::thread::sleep(Duration::from_millis(20));
            let marker = remote.path("gc", "test.json");
            let started = remote.write_marker(&marker, true).await.unwrap();
            assert!(remote.untouched_since(&listed, started).await.unwrap(), "an old file nobody touched may go");
            std::thread::sleep(Duration::from_millis(20));
            // A push reuses the file: it uploads it again (the refresh of `Remote::settle`).
            remote.store.put(&file, PutPayload::from_static(b"bytes")).await.unwrap();
            assert!(!remote.untouched_since(&listed, started).await.unwrap(), "a file a push rewrote must stay");
            remote.store.delete(&file).await.unwrap();
            assert!(!remote.untouched_since(&listed, started).await.unwrap(), "a file already gone is not deleted");
        });
    }
}
