//! Moving results between the local cache and the store: a pull streams every file into a
//! scratch directory of the local cache while hashing it; a push uploads the files the store
//! lacks, then creates (or, forced, replaces) the manifest.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use pipe_steps::{Events, NoEvents};

use super::{Remote, RemoteError, RemoteManifest};
use crate::cache::{Cache, CommitError};
use crate::manifest::{FileEntry, Manifest};
use crate::step_key::StepKey;

/// Files up to this size go up in one request; larger ones as multipart uploads.
const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// The part size of multipart uploads (S3 wants at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Files transferred at once.
pub(super) const FILES_IN_FLIGHT: usize = 8;

/// What a pull found.
#[derive(Debug)]
// Hit is the common case, returned once per pull: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Pulled {
    /// Downloaded, verified and committed to the local cache.
    Hit { manifest: Manifest, bytes: u64, host: String },
    /// The remote has no result for the key.
    Missing,
    /// The remote has a result that cannot be used (the reason, for a warning).
    Unusable(String),
}

/// What a push did.
#[derive(Debug)]
pub enum Pushed {
    /// The manifest was written by this push (`files` uploaded, `bytes` in them).
    Written { files: usize, bytes: u64 },
    /// The remote already held the same result.
    Present,
    /// The remote holds another result for the key (pushed first by `host`).
    Differs { host: String },
}

impl Remote {
    /// Downloads the result of `key` into the local cache (its compute lock held by the
    /// caller), verifying every file while it streams; `outputs` are the step's declared ones.
    pub fn pull(
        &self,
        cache: &Cache,
        key: &StepKey,
        outputs: &[&str],
        label: &str,
        events: &dyn Events,
    ) -> Result<Pulled, RemoteError> {
        let (manifest, host) = match self.peek(key, Some(outputs))? {
            None => return Ok(Pulled::Missing),
            Some(Err(reason)) => return Ok(Pulled::Unusable(reason)),
            Some(Ok(found)) => found,
        };
        let scratch = cache.scratch(key).map_err(|e| RemoteError::store(&self.url, e.to_string(), None))?;
        let out = scratch.out_dir();
        let mut jobs = Vec::new();
        for (name, output) in &manifest.outputs {
            let single = output.files.len() == 1 && output.files[0].path.is_empty();
            if !single {
                let dir = out.join(name);
                fs::create_dir_all(&dir)
                    .map_err(|e| RemoteError::store(&self.url, format!("creating {}: {e}", dir.display()), None))?;
            }
            for f in &output.files {
                let dest = if f.path.is_empty() { out.join(name) } else { out.join(name).join(&f.path) };
                let shown = if f.path.is_empty() { name.clone() } else { format!("{name}/{}", f.path) };
                jobs.push((f.clone(), dest, shown));
            }
        }
        let total: u64 = jobs.iter().map(|(f, _, _)| f.size).sum();
        events.progress_start(&format!("pull {label}"), Some(total), "bytes");
        let results: Vec<Result<Option<String>, RemoteError>> = self.rt.block_on(
            stream::iter(jobs.iter().map(|(f, dest, shown)| self.download(f, dest, shown, events)))
                .buffer_unordered(FILES_IN_FLIGHT)
                .collect(),
        );
        events.progress_finish();
        let mut problems = Vec::new();
        for r in results {
            if let Some(problem) = r? {
                problems.push(problem);
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Ok(Pulled::Unusable(problems.join("; ")));
        }
        let template = Manifest { outputs: BTreeMap::new(), dir: String::new(), ..manifest.clone() };
        let committed = match cache.commit(scratch, template, outputs) {
            Ok(m) => m,
            Err(CommitError::MissingOutput(name)) => {
                return Ok(Pulled::Unusable(format!("the remote result has no output `{name}`")))
            }
            Err(CommitError::Cache(e)) => return Err(RemoteError::store(&self.url, e.to_string(), None)),
        };
        if committed.outputs != manifest.outputs {
            // Only possible for files the manifest does not name (there are none in scratch) or
            // empty directories: report it rather than hide a difference.
            return Ok(Pulled::Unusable("the downloaded outputs hash differently from the manifest".into()));
        }
        Ok(Pulled::Hit { manifest: committed, bytes: total, host })
    }

    /// Streams one file to `dest`, hashing it: `Some(problem)` when it is missing or does not
    /// match.
    async fn download(
        &self,
        f: &FileEntry,
        dest: &FsPath,
        shown: &str,
        events: &dyn Events,
    ) -> Result<Option<String>, RemoteError> {
        let path = self.file_path(&f.blake3);
        let result = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(Some(format!("{shown}: {path} is missing"))),
            Err(e) => return Err(self.error(&format!("reading {path}"), e)),
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| RemoteError::store(&self.url, format!("creating {}: {e}", parent.display()), None))?;
        }
        let mut file = fs::File::create(dest)
            .map_err(|e| RemoteError::store(&self.url, format!("creating {}: {e}", dest.display()), None))?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut chunks = result.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.error(&format!("reading {path}"), e))?;
            size += chunk.len() as u64;
            if size > f.size {
                break;
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| RemoteError::store(&self.url, format!("writing {}: {e}", dest.display()), None))?;
            events.progress_inc(chunk.len() as u64);
        }
        if size != f.size || hasher.finalize().to_hex().as_str() != f.blake3 {
            self.bad_files.lock().unwrap_or_else(|e| e.into_inner()).insert(f.blake3.clone());
            return Ok(Some(format!("{shown}: {path} does not match its hash")));
        }
        Ok(None)
    }

    /// Uploads the files of a committed local result that the remote lacks, then creates its
    /// manifest: create-only, so the first machine's result for a key wins and the caller
    /// decides what to do with [`Pushed::Differs`]; `replace` (a forced rerun, `pipe push
    /// --force`) overwrites the remote's manifest instead, so the rerun's result wins there too.
    pub fn push(
        &self,
        cache: &Cache,
        manifest: &Manifest,
        replace: bool,
        events: &dyn Events,
    ) -> Result<Pushed, RemoteError> {
        self.rt.block_on(self.push_async(cache, manifest, replace, events))
    }

    async fn push_async(
        &self,
        cache: &Cache,
        manifest: &Manifest,
        replace: bool,
        events: &dyn Events,
    ) -> Result<Pushed, RemoteError> {
        // Store time may differ from this clock: a gc marker written up to this much before the
        // push began still counts as overlapping it.
        let began = SystemTime::now() - Duration::from_secs(300);
        let began_ms = began.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let out = cache.out_dir(manifest);
        let mut unique: BTreeMap<&str, (u64, PathBuf)> = BTreeMap::new();
        for (name, output) in &manifest.outputs {
            for f in &output.files {
                let path = if f.path.is_empty() { out.join(name) } else { out.join(name).join(&f.path) };
                unique.entry(f.blake3.as_str()).or_insert((f.size, path));
            }
        }
        // Which files the remote lacks (or holds corrupt, as found by this process's pulls).
        let bad = self.bad_files.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let present: Vec<Result<bool, RemoteError>> = stream::iter(unique.iter().map(|(hash, (size, _))| async {
            if bad.contains(*hash) {
                return Ok(false);
            }
            let path = self.file_path(hash);
            match self.store.head(&path).await {
                Ok(meta) => Ok(meta.size == *size),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.error(&format!("checking {path}"), e)),
            }
        }))
        .buffered(FILES_IN_FLIGHT * 2)
        .collect()
        .await;
        let mut missing = Vec::new();
        for ((hash, (size, path)), there) in unique.iter().zip(present) {
            if !there? {
                missing.push((*hash, *size, path.clone()));
            }
        }
        let bytes: u64 = missing.iter().map(|(_, size, _)| size).sum();
        if !missing.is_empty() {
            events.progress_start(&format!("push {}", manifest.step), Some(bytes), "bytes");
            let uploads: Vec<Result<(), RemoteError>> =
                stream::iter(missing.iter().map(|(hash, size, path)| self.upload(hash, *size, path, events)))
                    .buffer_unordered(FILES_IN_FLIGHT)
                    .collect()
                    .await;
            events.progress_finish();
            uploads.into_iter().collect::<Result<Vec<()>, RemoteError>>()?;
            let mut bad = self.bad_files.lock().unwrap_or_else(|e| e.into_inner());
            for (hash, _, _) in &missing {
                bad.remove(*hash);
            }
        }
        let remote = RemoteManifest {
            manifest: Manifest { dir: String::new(), ..manifest.clone() },
            host: crate::provenance::host(),
            pushed: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let body = serde_json::to_vec_pretty(&remote).unwrap_or_default();
        let path = self.manifest_path(&manifest.key);
        let mode = if replace { PutMode::Overwrite } else { PutMode::Create };
        let opts = PutOptions { mode, ..PutOptions::default() };
        let written = self.store.put_opts(&path, PutPayload::from(body), opts).await;
        match written {
            Ok(_) => {
                // Files reused from the store, which a concurrent gc may have deleted meanwhile:
                // [`Remote::settle`] uploads them again if a gc overlapped (see remote/gc.rs).
                let mut reused = self.reused.lock().unwrap_or_else(|e| e.into_inner());
                for (hash, (size, path)) in &unique {
                    if !missing.iter().any(|(m, _, _)| m == hash) {
                        reused.push((hash.to_string(), *size, path.clone()));
                    }
                }
                let mut since = self.pushes_since.lock().unwrap_or_else(|e| e.into_inner());
                *since = Some(since.map_or(began_ms, |s| s.min(began_ms)));
                return Ok(Pushed::Written { files: missing.len(), bytes });
            }
            // Another machine was first; a store that answers a concurrent conditional write with
            // another error (409) is treated the same when the manifest is there afterwards.
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => {
                if !matches!(self.read_manifest(&manifest.key, None).await, Ok(Some(Ok(_)))) {
                    return Err(self.error(&format!("writing {path}"), e));
                }
            }
        }
        match self.read_manifest(&manifest.key, None).await? {
            Some(Ok((theirs, _))) if theirs.outputs == manifest.outputs => Ok(Pushed::Present),
            Some(Ok((_, host))) => Ok(Pushed::Differs { host }),
            Some(Err(reason)) => Err(RemoteError::store(
                &self.url,
                format!("{path} exists but cannot be used ({reason})"),
                Some("remove it (`pipe gc --remote` does not: it is not old) and push again".to_string()),
            )),
            None => Err(RemoteError::store(&self.url, format!("writing {path}: refused, yet it is not there"), None)),
        }
    }

    /// After this command's last push: if a `pipe gc --remote` ran at some time since the first
    /// push began, uploads again every file those pushes reused instead of uploading (gc may
    /// have deleted it before the new manifests named it). One listing of the gc markers per
    /// command, not per push. Returns the files uploaded again.
    pub fn settle(&self) -> Result<usize, RemoteError> {
        let reused = std::mem::take(&mut *self.reused.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(since) = self.pushes_since.lock().unwrap_or_else(|e| e.into_inner()).take() else { return Ok(0) };
        if reused.is_empty() {
            return Ok(0);
        }
        self.rt.block_on(async {
            if !self.gc_overlapped(since).await? {
                return Ok(0);
            }
            let again: Vec<Result<(), RemoteError>> =
                stream::iter(reused.iter().map(|(hash, size, path)| self.upload(hash, *size, path, &NoEvents)))
                    .buffer_unordered(FILES_IN_FLIGHT)
                    .collect()
                    .await;
            again.into_iter().collect::<Result<Vec<()>, RemoteError>>()?;
            Ok(reused.len())
        })
    }

    /// Whether this process found one of the manifest's files corrupt on the remote (its push
    /// then uploads them again).
    pub fn found_corrupt(&self, manifest: &Manifest) -> bool {
        let bad = self.bad_files.lock().unwrap_or_else(|e| e.into_inner());
        manifest.outputs.values().flat_map(|o| &o.files).any(|f| bad.contains(&f.blake3))
    }

    /// Uploads one local file under its hash, checking the bytes against it as they are read.
    async fn upload(&self, hash: &str, size: u64, local: &FsPath, events: &dyn Events) -> Result<(), RemoteError> {
        let path = self.file_path(hash);
        let local_err =
            |e: std::io::Error| RemoteError::store(&self.url, format!("reading {}: {e}", local.display()), None);
        let changed = || {
            RemoteError::store(
                &self.url,
                format!("{} changed in the local cache since it was stored; not pushed", local.display()),
                Some("run the pipeline again: the local cache replaces the corrupt result".to_string()),
            )
        };
        let mut file = fs::File::open(local).map_err(local_err)?;
        let mut hasher = blake3::Hasher::new();
        if size <= MULTIPART_THRESHOLD {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(local_err)?;
            hasher.update(&bytes);
            if hasher.finalize().to_hex().as_str() != hash {
                return Err(changed());
            }
            let n = bytes.len() as u64;
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| self.error(&format!("writing {path}"), e))?;
            events.progress_inc(n);
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await.map_err(|e| self.error(&format!("writing {path}"), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; PART_SIZE];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(local_err(e));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(self.error(&format!("writing {path}"), e));
            }
            hasher.update(&buf[..n]);
            writer.write(&buf[..n]);
            events.progress_inc(n as u64);
        }
        if hasher.finalize().to_hex().as_str() != hash {
            let _ = writer.abort().await;
            return Err(changed());
        }
        writer.finish().await.map(|_| ()).map_err(|e| self.error(&format!("writing {path}"), e))
    }

    /// The bytes of output `output` of the remote result `key` when it is a single file,
    /// verified against its hash (for reports of runs made elsewhere).
    pub fn read_output(&self, key: &StepKey, output: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let Some(Ok((manifest, _))) = self.peek(key, None)? else { return Ok(None) };
        let Some(entry) = manifest.outputs.get(output) else { return Ok(None) };
        let [file] = entry.files.as_slice() else { return Ok(None) };
        let path = self.file_path(&file.blake3);
        let bytes = match self.rt.block_on(async { self.store.get(&path).await?.bytes().await }) {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(&format!("reading {path}"), e)),
        };
        Ok((blake3::hash(&bytes).to_hex().as_str() == file.blake3).then(|| bytes.to_vec()))
    }
}
