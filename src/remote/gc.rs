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
                // Written since this gc began: a push reused it (see the module doc).
                match self.store.head(&meta.location).await {
                    Ok(now) if now.last_modified.timestamp_millis() >= started => continue,
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(self.error(&format!("checking {}", meta.location), e)),
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
