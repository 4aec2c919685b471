//! The remote cache: step results shared between machines through an object store (S3 or an
//! S3-compatible server, or a shared directory as `file:///path`).
//!
//! ```text
//! <remote>/                       s3://bucket/prefix, file:///shared/dir
//! ├── files/<blake3>              the bytes of one file of some output, named by their blake3;
//! │                               a file shared by many results is stored once
//! ├── manifests/<key>.json        one step result: the local manifest (outputs, every file with
//! │                               path, size and blake3, fingerprint, seconds) plus the host
//! │                               that pushed it; written LAST and CREATE-ONLY (If-None-Match: *)
//! └── runs/<pipeline>/<id>.json   the record of a `pipe run` on some machine, with its host
//! ```
//!
//! The contract:
//! - A push uploads every file the manifest names that the remote lacks, then creates the
//!   manifest. Until the manifest exists nothing of the push is visible, so a push killed
//!   halfway leaves only unnamed files (removed by `pipe gc --remote` after the grace period).
//! - Two machines pushing the same key: the first manifest wins; the other finds it, adopts it
//!   (its outputs replace the local ones, so downstream keys agree across machines) and warns
//!   when the bytes differ, a sign that the step is not deterministic.
//! - A pull reads the manifest, checks it (the key, the cache format, the declared outputs,
//!   relative file paths, hex hashes), streams every file into a scratch directory of the local
//!   cache while hashing it, and commits the result with the local cache's normal commit. A
//!   manifest whose files are missing or do not match their hash is a miss with a warning,
//!   never a hit; a file found corrupt is uploaded again by this machine's next push of it.
//! - Large files go up as multipart uploads; every request is retried with backoff by the
//!   object store client.
//! - Credentials come only from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, or a profile of `~/.aws/credentials`
//!   and `~/.aws/config` chosen by `AWS_PROFILE`). A URL that embeds a secret is refused, and
//!   the values of those variables are scrubbed from every message this module produces, so
//!   they reach no log, run record, `--json` document or error.
//!
//! Not in it: deleting (see [`Remote::gc`]: manifests first, files that no kept manifest names
//! and older than a grace period after); locking across machines (create-only manifests make it
//! unnecessary); incomplete multipart uploads on S3 (invisible, and removed by a bucket
//! lifecycle rule, `AbortIncompleteMultipartUpload`).
//!
//! object_store is async: a [`Remote`] owns a current-thread tokio runtime and every public
//! method blocks on it, so the executor stays synchronous.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use pipe_steps::Events;
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CommitError};
use crate::fingerprint::CACHE_FORMAT;
use crate::manifest::{FileEntry, Manifest};
use crate::reporter::Reporter;
use crate::run_record::RunRecord;
use crate::step_key::StepKey;

/// Files up to this size go up in one request; larger ones as multipart uploads.
const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// The part size of multipart uploads (S3 wants at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Files transferred at once.
const FILES_IN_FLIGHT: usize = 8;

/// How a run uses the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RemoteMode {
    /// Pull what the local cache lacks, push what runs; a failing remote is an error.
    #[default]
    ReadWrite,
    /// Pull only (a laptop that must not write).
    ReadOnly,
    /// Read-write, but a remote that cannot be reached is a warning and the work is local.
    Fallback,
    /// Ignore any configured remote.
    Off,
}

/// What went wrong with the remote. `config` errors (a bad URL, refused credentials, a missing
/// bucket) exit with 2; a failing store (down, timing out, erroring) with 1.
#[derive(Debug, thiserror::Error)]
#[error("remote {url}: {message}")]
pub struct RemoteError {
    /// The remote as shown to users: never with credentials.
    pub url: String,
    pub message: String,
    pub help: Option<String>,
    pub config: bool,
}

impl RemoteError {
    fn config(url: &str, message: impl Into<String>, help: impl Into<Option<String>>) -> RemoteError {
        RemoteError { url: url.to_string(), message: redact(message.into()), help: help.into(), config: true }
    }

    fn store(url: &str, message: impl Into<String>, help: impl Into<Option<String>>) -> RemoteError {
        RemoteError { url: url.to_string(), message: redact(message.into()), help: help.into(), config: false }
    }
}

/// A remote manifest read for a key: it and who pushed it, or why it cannot be used.
pub type Peeked = Result<(Manifest, String), String>;

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

/// The remote's form of a manifest: the local one (without its local directory) and where it
/// came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoteManifest {
    #[serde(flatten)]
    manifest: Manifest,
    /// The machine that pushed it.
    #[serde(default)]
    host: String,
    #[serde(default)]
    pushed: String,
}

/// A remote cache, opened.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    mode: RemoteMode,
    /// S3: credentials were given (environment, profile, web identity, container); without
    /// them the client asks the instance metadata service, and its failure means "none found".
    credentials_given: bool,
    /// Set after a failure in fallback mode: the rest of the command works locally.
    disabled: AtomicBool,
    /// Files found corrupt on the remote by this process: its pushes upload them again.
    bad_files: Mutex<HashSet<String>>,
}

/// Where a remote URL points.
#[derive(Debug, PartialEq)]
enum Location {
    S3 { bucket: String, prefix: String },
    File { dir: PathBuf },
}

impl Remote {
    /// Parses `url` and builds the client (nothing is sent yet; see [`Remote::check`]).
    pub fn open(url: &str, mode: RemoteMode) -> Result<Remote, RemoteError> {
        let (location, shown) = parse_url(url)?;
        let mut credentials_given = true;
        let (store, root): (Arc<dyn ObjectStore>, Path) = match &location {
            Location::S3 { bucket, prefix } => {
                let (store, configured) = s3_store(bucket, &shown)?;
                credentials_given = configured;
                (Arc::new(store), Path::from(prefix.as_str()))
            }
            Location::File { dir } => {
                if !dir.is_dir() {
                    return Err(RemoteError::config(
                        &shown,
                        format!("directory {} does not exist", dir.display()),
                        Some(format!(
                            "create it (`mkdir -p {}`) or check that the shared filesystem is mounted",
                            dir.display()
                        )),
                    ));
                }
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| RemoteError::config(&shown, e.to_string(), None))?
                    .with_automatic_cleanup(true);
                (Arc::new(store), Path::default())
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RemoteError::store(&shown, format!("starting the I/O runtime: {e}"), None))?;
        Ok(Remote {
            rt,
            store,
            root,
            url: shown,
            mode,
            credentials_given,
            disabled: AtomicBool::new(false),
            bad_files: Mutex::new(HashSet::new()),
        })
    }

    /// The remote as shown to users (no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this command may write to the remote.
    pub fn writable(&self) -> bool {
        !matches!(self.mode, RemoteMode::ReadOnly | RemoteMode::Off) && !self.is_disabled()
    }

    /// Whether a failure in fallback mode switched the remote off for this command.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Handles a failure: in fallback mode a warning (once) and local-only work from now on;
    /// otherwise the error.
    pub fn failed(&self, error: RemoteError, reporter: &Reporter) -> Result<(), RemoteError> {
        if self.mode != RemoteMode::Fallback {
            return Err(error);
        }
        if !self.disabled.swap(true, Ordering::Relaxed) {
            reporter.warning(&format!("{error}; working locally (--remote-mode fallback)"));
        }
        Ok(())
    }

    /// For the executor, after a local miss with the key's compute lock held: the remote's
    /// result committed to the local cache and a note of what came from where, or `None` (no
    /// result there, an unusable one — with a warning — or a failure in fallback mode).
    pub fn fetch_for_step(
        &self,
        cache: &Cache,
        key: &StepKey,
        outputs: &[&str],
        step: &str,
        reporter: &Reporter,
    ) -> Result<Option<(Manifest, String)>, RemoteError> {
        if self.is_disabled() {
            return Ok(None);
        }
        match self.pull(cache, key, outputs, step, reporter) {
            Ok(Pulled::Hit { manifest, bytes, host }) => {
                Ok(Some((manifest, format!("{} from {host}", crate::reporter::human_bytes(bytes)))))
            }
            Ok(Pulled::Missing) => Ok(None),
            Ok(Pulled::Unusable(reason)) => {
                reporter.warning(&format!("{step}: the remote's result for key {} is not used: {reason}", key.short()));
                Ok(None)
            }
            Err(e) => self.failed(e, reporter).map(|()| None),
        }
    }

    /// For dry runs and `pipe status`: whether the remote holds a result for the key that
    /// looks usable (its files are not read), with a note naming who pushed it.
    pub fn peek_for_step(
        &self,
        key: &StepKey,
        outputs: &[&str],
        step: &str,
        reporter: &Reporter,
    ) -> Result<Option<(Manifest, String)>, RemoteError> {
        if self.is_disabled() {
            return Ok(None);
        }
        match self.peek(key, Some(outputs)) {
            Ok(Some(Ok((manifest, host)))) => Ok(Some((manifest, format!("on the remote, from {host}")))),
            Ok(None) => Ok(None),
            Ok(Some(Err(reason))) => {
                reporter
                    .warning(&format!("{step}: the remote's result for key {} is not usable: {reason}", key.short()));
                Ok(None)
            }
            Err(e) => self.failed(e, reporter).map(|()| None),
        }
    }

    /// For the executor, after a step ran and committed (compute lock held): pushes the result
    /// unless read-only. When the remote already holds other bytes for the key, warns and
    /// adopts them (the returned manifest), so that every machine continues with the same
    /// inputs downstream.
    pub fn publish_for_step(
        &self,
        cache: &Cache,
        manifest: &Manifest,
        outputs: &[&str],
        step: &str,
        reporter: &Reporter,
    ) -> Result<Option<Manifest>, RemoteError> {
        if !self.writable() {
            return Ok(None);
        }
        match self.push(cache, manifest, reporter) {
            Ok(Pushed::Written { .. } | Pushed::Present) => Ok(None),
            Ok(Pushed::Differs { host, .. }) => {
                reporter.warning(&format!(
                    "{step} is not deterministic: the remote already holds different bytes for key {} (pushed by \
                     {host}); using those, so that machines agree downstream",
                    manifest.key.short()
                ));
                match self.pull(cache, &manifest.key, outputs, step, reporter) {
                    Ok(Pulled::Hit { manifest, .. }) => Ok(Some(manifest)),
                    Ok(Pulled::Missing) => Ok(None),
                    Ok(Pulled::Unusable(reason)) => {
                        reporter
                            .warning(&format!("{step}: keeping the local result: the remote's is unusable: {reason}"));
                        Ok(None)
                    }
                    Err(e) => self.failed(e, reporter).map(|()| None),
                }
            }
            Err(e) => self.failed(e, reporter).map(|()| None),
        }
    }

    /// Asks the store something cheap (a listing under an unused prefix), so that a remote that
    /// is down, refuses the credentials or names a missing bucket is reported before any work.
    pub fn check(&self) -> Result<(), RemoteError> {
        let probe = self.root.clone().join("manifests").join("probe");
        self.rt.block_on(self.store.list_with_delimiter(Some(&probe))).map(|_| ()).map_err(|e| match e {
            object_store::Error::NotFound { .. } => RemoteError::config(
                &self.url,
                "reaching the store: the bucket does not exist",
                Some("create it, or check the bucket name and AWS_ENDPOINT_URL".to_string()),
            ),
            e => self.error("reaching the store", e),
        })
    }

    fn path(&self, dir: &str, name: &str) -> Path {
        self.root.clone().join(dir).join(name)
    }

    fn manifest_path(&self, key: &StepKey) -> Path {
        self.path("manifests", &format!("{key}.json"))
    }

    fn file_path(&self, blake3: &str) -> Path {
        self.path("files", blake3)
    }

    /// An object store error as a [`RemoteError`] with what to check.
    fn error(&self, action: &str, e: object_store::Error) -> RemoteError {
        // The causes, down to the one that says what happened ("Connection refused").
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let line = cause.to_string();
            if !text.contains(&line) {
                text = format!("{text}: {line}");
            }
            source = cause.source();
        }
        let text = shorten_xml(&text);
        if text.contains("NoSuchBucket") {
            return RemoteError::config(
                &self.url,
                format!("{action}: the bucket does not exist"),
                Some("create it, or check the bucket name and AWS_ENDPOINT_URL".to_string()),
            );
        }
        // No credentials given, and the instance metadata service (an EC2 role) did not answer:
        // the client never reached the store. Said so, without the service's address.
        if !self.credentials_given && (text.contains("/latest/api/token") || text.contains("/latest/meta-data")) {
            return RemoteError::config(
                &self.url,
                format!("{action}: no AWS credentials found (none in the environment or ~/.aws, and no instance role)"),
                Some(
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or \
                     AWS_PROFILE with ~/.aws/credentials"
                        .to_string(),
                ),
            );
        }
        // Listings report HTTP statuses inside a generic error.
        let refused = text.contains(" 403 Forbidden") || text.contains(" 401 Unauthorized");
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                self.refused(action, &text)
            }
            _ if refused => self.refused(action, &text),
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
                RemoteError::config(
                    &self.url,
                    format!("{action}: {text}"),
                    Some("the store must support conditional writes (If-None-Match: *)".to_string()),
                )
            }
            _ => {
                let endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|_| self.url.starts_with("s3"));
                let check = match endpoint {
                    Some(e) => format!("check that the store at {e} (AWS_ENDPOINT_URL) is up and reachable"),
                    None if self.url.starts_with("file:") => "check the shared directory and its permissions".into(),
                    None => "check the network, AWS_REGION and AWS_ENDPOINT_URL".to_string(),
                };
                RemoteError::store(
                    &self.url,
                    format!("{action}: {text}"),
                    Some(format!("{check}, or pass --remote-mode fallback to work locally when it is not")),
                )
            }
        }
    }

    fn refused(&self, action: &str, text: &str) -> RemoteError {
        RemoteError::config(
            &self.url,
            format!("{action}: the store refused the credentials: {text}"),
            Some(
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that they may read and write \
                 this bucket"
                    .to_string(),
            ),
        )
    }

    /// The remote's manifest for `key`, checked against the steps `outputs` when given: `None`
    /// when there is none, `Err(reason)` inside when it cannot be used.
    pub fn peek(&self, key: &StepKey, outputs: Option<&[&str]>) -> Result<Option<Peeked>, RemoteError> {
        self.rt.block_on(self.read_manifest(key, outputs))
    }

    async fn read_manifest(&self, key: &StepKey, outputs: Option<&[&str]>) -> Result<Option<Peeked>, RemoteError> {
        let path = self.manifest_path(key);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| self.error(&format!("reading {path}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(&format!("reading {path}"), e)),
        };
        let remote: RemoteManifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return Ok(Some(Err(format!("{path} is not a manifest: {e}")))),
        };
        Ok(Some(check_manifest(&remote.manifest, key, outputs).map(|()| (remote.manifest, remote.host))))
    }

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
    /// manifest (create-only). The caller adopts [`Pushed::Differs`].
    pub fn push(&self, cache: &Cache, manifest: &Manifest, events: &dyn Events) -> Result<Pushed, RemoteError> {
        self.rt.block_on(self.push_async(cache, manifest, events))
    }

    async fn push_async(&self, cache: &Cache, manifest: &Manifest, events: &dyn Events) -> Result<Pushed, RemoteError> {
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
            host: host(),
            pushed: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let body = serde_json::to_vec_pretty(&remote).unwrap_or_default();
        let path = self.manifest_path(&manifest.key);
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let written = self.store.put_opts(&path, PutPayload::from(body), opts).await;
        match written {
            Ok(_) => return Ok(Pushed::Written { files: missing.len(), bytes }),
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

    /// Stores a run record (replacing an earlier version of it), with this machine's name.
    pub fn push_run(&self, record: &RunRecord) -> Result<(), RemoteError> {
        let path = self.root.clone().join("runs").join(record.pipeline.as_str()).join(format!("{}.json", record.id));
        let body = serde_json::to_vec_pretty(record).unwrap_or_default();
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(body)))
            .map(|_| ())
            .map_err(|e| self.error(&format!("writing {path}"), e))
    }

    /// The run records of pipeline `name` on the remote (unreadable ones skipped), oldest
    /// first.
    pub fn runs(&self, name: &str) -> Result<Vec<RunRecord>, RemoteError> {
        let prefix = self.root.clone().join("runs").join(name);
        self.rt.block_on(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| self.error(&format!("listing {prefix}"), e))?;
            let reads: Vec<Option<RunRecord>> = stream::iter(metas.iter().map(|m| async move {
                let bytes = self.store.get(&m.location).await.ok()?.bytes().await.ok()?;
                serde_json::from_slice(&bytes).ok()
            }))
            .buffered(FILES_IN_FLIGHT)
            .collect()
            .await;
            let mut runs: Vec<RunRecord> = reads.into_iter().flatten().collect();
            runs.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(runs)
        })
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
        self.rt.block_on(self.gc_async(older_than, grace, dry_run, line))
    }

    async fn gc_async(
        &self,
        older_than: Duration,
        grace: Duration,
        dry_run: bool,
        line: &mut dyn FnMut(String),
    ) -> Result<RemoteGc, RemoteError> {
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
        Ok(report)
    }
}

/// An S3 error document in a message, as `Code: Message`.
fn shorten_xml(text: &str) -> String {
    let Some(start) = text.find("<?xml") else { return text.to_string() };
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let from = text[start..].find(&open)? + start + open.len();
        let to = text[from..].find(&format!("</{name}>"))? + from;
        Some(text[from..to].to_string())
    };
    let end = text.rfind("</Error>").map(|i| i + "</Error>".len()).unwrap_or(text.len());
    let summary = match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => return text.to_string(),
    };
    format!("{}{summary}{}", &text[..start], &text[end..])
}

/// What a remote gc removed (or would).
#[derive(Debug, Default)]
pub struct RemoteGc {
    pub manifests: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Checks a manifest read from the remote before anything of it is used: it is data from
/// another machine, and its names become local paths.
fn check_manifest(m: &Manifest, key: &StepKey, outputs: Option<&[&str]>) -> Result<(), String> {
    if &m.key != key {
        return Err("the manifest belongs to another key".into());
    }
    if m.format != CACHE_FORMAT {
        return Err(format!("cache format {} (this pipe reads {CACHE_FORMAT})", m.format));
    }
    if let Some(outputs) = outputs {
        let declared: BTreeSet<&str> = outputs.iter().copied().collect();
        let stored: BTreeSet<&str> = m.outputs.keys().map(String::as_str).collect();
        if declared != stored {
            return Err(format!(
                "its outputs ({}) are not the step's ({})",
                stored.into_iter().collect::<Vec<_>>().join(", "),
                declared.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for (name, output) in &m.outputs {
        if !safe_name(name) {
            return Err(format!("output name `{name}` is not a plain name"));
        }
        if output.files.iter().any(|f| f.path.is_empty()) && output.files.len() != 1 {
            return Err(format!("output `{name}` is both a file and a directory"));
        }
        for f in &output.files {
            if !f.path.is_empty() && !f.path.split('/').all(safe_name) {
                return Err(format!("output `{name}` names the path `{}`", f.path));
            }
            if f.blake3.len() != 64 || !f.blake3.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("output `{name}` names `{}`, not a blake3 hash", f.blake3));
            }
        }
    }
    Ok(())
}

/// A path component that stays where it is put: not empty, `.`, `..`, and no separators.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Where the remote is, and the URL as shown to users. Refuses URLs with credentials in them.
fn parse_url(text: &str) -> Result<(Location, String), RemoteError> {
    let shown_raw = text.split(['?', '#']).next().unwrap_or(text);
    let url = url::Url::parse(text).map_err(|e| {
        let help = if text.starts_with('/') {
            Some(format!("a shared directory is a file URL: file://{text}"))
        } else {
            Some("use s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH".to_string())
        };
        RemoteError::config(&strip_userinfo(shown_raw), format!("not a URL: {e}"), help)
    })?;
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        if url.path() == "/" && url.scheme() != "file" { "" } else { url.path() }
    );
    let env_hint = "give credentials in the environment instead: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY \
                    (and AWS_SESSION_TOKEN), or a profile in ~/.aws/credentials chosen with AWS_PROFILE";
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RemoteError::config(
            &shown,
            "the URL contains credentials (user:password@); refused",
            Some(env_hint.into()),
        ));
    }
    if let Some(query) = url.query() {
        let secretish = url.query_pairs().any(|(k, _)| {
            let k = k.to_ascii_lowercase();
            ["x-amz-", "signature", "token", "secret", "credential", "key", "sig", "password"]
                .iter()
                .any(|s| k.contains(s))
        });
        return Err(if secretish || query.to_ascii_lowercase().contains("x-amz") {
            RemoteError::config(&shown, "the URL contains credentials in its query; refused", Some(env_hint.into()))
        } else {
            RemoteError::config(&shown, "a remote URL takes no query parameters", None)
        });
    }
    if url.fragment().is_some() {
        return Err(RemoteError::config(&shown, "a remote URL takes no #fragment", None));
    }
    match url.scheme() {
        "s3" | "s3a" => {
            let Some(bucket) = url.host_str().filter(|b| !b.is_empty()) else {
                return Err(RemoteError::config(&shown, "no bucket", Some("use s3://BUCKET/PREFIX".into())));
            };
            let prefix = url.path().trim_matches('/').to_string();
            Ok((Location::S3 { bucket: bucket.to_string(), prefix }, shown))
        }
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(RemoteError::config(
                    &shown,
                    "a file URL names a local directory: file:///ABSOLUTE/PATH",
                    Some(format!("did you mean file:///{}{}?", url.host_str().unwrap_or(""), url.path())),
                ));
            }
            let dir = url.to_file_path().map_err(|()| {
                RemoteError::config(&shown, "not a directory path", Some("use file:///ABSOLUTE/PATH".into()))
            })?;
            Ok((Location::File { dir }, shown))
        }
        other => Err(RemoteError::config(
            &shown,
            format!("unsupported scheme `{other}://`"),
            Some(
                "this build of pipe reads s3:// (and S3-compatible servers through AWS_ENDPOINT_URL) and file://"
                    .into(),
            ),
        )),
    }
}

/// `scheme://user:pass@host/...` without the `user:pass@`, for messages about unparsable URLs.
fn strip_userinfo(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => text.to_string(),
    }
}

/// The S3 client: settings from the `AWS_*` environment (object_store reads them), else from
/// the `~/.aws` profile; retries bounded so that a store that is down is reported in seconds.
/// The S3 client, and whether credentials were given (else it asks the instance metadata).
fn s3_store(bucket: &str, shown: &str) -> Result<(object_store::aws::AmazonS3, bool), RemoteError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        if endpoint.contains('@') || endpoint.contains('?') {
            return Err(RemoteError::config(
                shown,
                "AWS_ENDPOINT_URL contains credentials or a query; refused",
                Some(
                    "set AWS_ENDPOINT_URL to scheme://host:port only, and credentials in AWS_ACCESS_KEY_ID / \
                      AWS_SECRET_ACCESS_KEY"
                        .to_string(),
                ),
            ));
        }
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let profile = AwsProfile::load();
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        if let (Some(id), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &profile.session_token {
                builder = builder.with_token(token);
            }
        }
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        if let Some(region) = &profile.region {
            builder = builder.with_region(region);
        }
    } else if std::env::var_os("AWS_REGION").is_none() {
        if let Ok(region) = std::env::var("AWS_DEFAULT_REGION") {
            builder = builder.with_region(region);
        }
    }
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        if let Some(endpoint) = &profile.endpoint_url {
            builder = builder.with_endpoint(endpoint);
        }
    }
    let configured = std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        || profile.access_key_id.is_some()
        || [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
        || env_true("AWS_SKIP_SIGNATURE");
    // Without any, the client asks the EC2 instance metadata service (an instance role);
    // AWS_EC2_METADATA_DISABLED says not to, as in the AWS tools.
    if !configured && env_true("AWS_EC2_METADATA_DISABLED") {
        return Err(RemoteError::config(
            shown,
            "no AWS credentials: none in the environment or ~/.aws, and AWS_EC2_METADATA_DISABLED is set",
            Some("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials".into()),
        ));
    }
    // An http:// endpoint (a local S3-compatible server) is allowed when it is the one given.
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint).unwrap_or_default();
    if endpoint.starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(120),
    };
    let mut builder = builder.with_retry(retry);
    if std::env::var_os("AWS_CONNECT_TIMEOUT").is_none() {
        builder = builder.with_config(AmazonS3ConfigKey::Client(object_store::ClientConfigKey::ConnectTimeout), "5s");
    }
    let store = builder.build().map_err(|e| {
        RemoteError::config(
            shown,
            format!("cannot set up the S3 client: {e}"),
            Some("check AWS_REGION, AWS_ENDPOINT_URL and the bucket name".to_string()),
        )
    })?;
    Ok((store, configured))
}

fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The settings of one profile of `~/.aws/credentials` and `~/.aws/config` (`AWS_PROFILE`,
/// else `default`; `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` move the files).
#[derive(Debug, Default)]
struct AwsProfile {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

impl AwsProfile {
    fn load() -> AwsProfile {
        let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials"));
        let config = std::env::var_os("AWS_CONFIG_FILE").map(PathBuf::from).unwrap_or_else(|| home.join(".aws/config"));
        let mut values = ini_section(&credentials, &name);
        let config_section = if name == "default" { name.clone() } else { format!("profile {name}") };
        for (k, v) in ini_section(&config, &config_section) {
            values.entry(k).or_insert(v);
        }
        AwsProfile {
            access_key_id: values.remove("aws_access_key_id"),
            secret_access_key: values.remove("aws_secret_access_key"),
            session_token: values.remove("aws_session_token"),
            region: values.remove("region"),
            endpoint_url: values.remove("endpoint_url"),
        }
    }
}

/// `key = value` lines of section `[name]` of an INI file (none when it cannot be read).
fn ini_section(path: &FsPath, name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = fs::read_to_string(path) else { return out };
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == name;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// `text` with the values of credential variables (and of the profile) replaced.
pub fn redact(text: String) -> String {
    let mut secrets: Vec<String> = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    let profile = AwsProfile::load();
    secrets.extend([profile.secret_access_key, profile.session_token, profile.access_key_id].into_iter().flatten());
    let mut text = text;
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s.as_str(), "[redacted]");
    }
    text
}

/// The name of this machine for records and manifests: `PIPE_HOST`, else the hostname.
pub fn host() -> String {
    if let Ok(h) = std::env::var("PIPE_HOST") {
        if !h.is_empty() {
            return h;
        }
    }
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(h) = fs::read_to_string(path) {
            let h = h.trim();
            if !h.is_empty() {
                return h.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").or_else(|_| std::env::var("COMPUTERNAME")).unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_locations() {
        let (loc, shown) = parse_url("s3://bucket/team/cache/").unwrap();
        assert_eq!(loc, Location::S3 { bucket: "bucket".into(), prefix: "team/cache".into() });
        assert_eq!(shown, "s3://bucket/team/cache/");
        let (loc, _) = parse_url("s3://bucket").unwrap();
        assert_eq!(loc, Location::S3 { bucket: "bucket".into(), prefix: String::new() });
        let (loc, shown) = parse_url("file:///mnt/shared/pipe").unwrap();
        assert_eq!(loc, Location::File { dir: PathBuf::from("/mnt/shared/pipe") });
        assert_eq!(shown, "file:///mnt/shared/pipe");
    }

    #[test]
    fn urls_with_secrets_are_refused_without_showing_them() {
        for url in [
            "s3://AKIAEXAMPLE:supersecret@bucket/prefix",
            "s3://bucket/prefix?X-Amz-Credential=AKIA&X-Amz-Signature=supersecret",
            "s3://bucket/prefix?token=supersecret",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.config, "{url}");
            let text = format!("{e} {:?}", e.help);
            assert!(!text.contains("supersecret"), "{text}");
            assert!(text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");
        }
        let e = parse_url("gs://bucket/x").unwrap_err();
        assert!(e.message.contains("unsupported scheme"), "{}", e.message);
        let e = parse_url("/mnt/shared").unwrap_err();
        assert_eq!(e.help.as_deref(), Some("a shared directory is a file URL: file:///mnt/shared"));
        let e = parse_url("file://mnt/shared").unwrap_err();
        assert!(e.help.unwrap_or_default().contains("file:///mnt/shared"));
    }

    #[test]
    fn manifests_from_elsewhere_are_checked_before_use() {
        let key = StepKey::parse(&"a".repeat(64)).unwrap();
        let entry = |path: &str, hash: &str| crate::manifest::OutputEntry {
            hash: String::new(),
            files: vec![FileEntry { path: path.into(), size: 1, blake3: hash.into() }],
        };
        let manifest = |name: &str, path: &str, hash: &str| Manifest {
            format: CACHE_FORMAT,
            key: key.clone(),
            dir: String::new(),
            step: "s".into(),
            fingerprint: crate::fingerprint::Fingerprint {
                format: CACHE_FORMAT,
                kind: "k".into(),
                version: 1,
                params: BTreeMap::new(),
                pin: None,
                inputs: BTreeMap::new(),
                sources: BTreeMap::new(),
            },
            outputs: BTreeMap::from([(name.to_string(), entry(path, hash))]),
            seconds: 0.0,
            created: String::new(),
        };
        let good = "b".repeat(64);
        assert_eq!(check_manifest(&manifest("file", "", &good), &key, Some(&["file"])), Ok(()));
        assert_eq!(check_manifest(&manifest("dir", "a/b.txt", &good), &key, Some(&["dir"])), Ok(()));
        assert!(check_manifest(&manifest("file", "", &good), &key, Some(&["other"])).is_err());
        assert!(check_manifest(&manifest("dir", "../../etc/passwd", &good), &key, None).is_err());
        assert!(check_manifest(&manifest("dir", "/etc/passwd", &good), &key, None).is_err());
        assert!(check_manifest(&manifest("..", "", &good), &key, None).is_err());
        assert!(check_manifest(&manifest("file", "", "../x"), &key, None).is_err());
        let other = StepKey::parse(&"c".repeat(64)).unwrap();
        assert!(check_manifest(&manifest("file", "", &good), &other, None).is_err());
    }

    #[test]
    fn profiles_are_read_from_ini_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        fs::write(
            &path,
            "[default]\naws_access_key_id = A\n\n[team]\n# comment\naws_access_key_id=B\nregion = eu-west-1\n",
        )
        .unwrap();
        assert_eq!(ini_section(&path, "team").get("aws_access_key_id").map(String::as_str), Some("B"));
        assert_eq!(ini_section(&path, "team").get("region").map(String::as_str), Some("eu-west-1"));
        assert_eq!(ini_section(&path, "default").len(), 1);
        assert!(ini_section(&path, "missing").is_empty());
    }
}
