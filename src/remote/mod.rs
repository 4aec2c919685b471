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
//! Not in it: the policy of combining this store with the local cache (when to pull, push,
//! adopt, or carry on locally after a failure: [`crate::tiered_cache`]); deleting (see [`Remote::gc`]: manifests first, files that no kept manifest names
//! and older than a grace period after); locking across machines (create-only manifests make it
//! unnecessary); incomplete multipart uploads on S3 (invisible, and removed by a bucket
//! lifecycle rule, `AbortIncompleteMultipartUpload`).
//!
//! object_store is async: a [`Remote`] owns a current-thread tokio runtime and every public
//! method blocks on it, so the executor stays synchronous.
//!
//! The files of this module, by concept: [`location`] (the URL and what it may not contain),
//! [`credentials`] (AWS credentials and the S3 client), [`transfer`] (pulling and pushing
//! results), [`records`] (run records), [`gc`] (deleting what nobody used).

mod credentials;
pub mod gc;
mod location;
mod records;
pub mod transfer;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::fingerprint::CACHE_FORMAT;
use crate::manifest::Manifest;
use crate::step_key::StepKey;

pub use credentials::redact;
use credentials::s3_store;
use location::{parse_url, Location};
pub use transfer::{Pulled, Pushed};

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
    /// Files found corrupt on the remote by this process: its pushes upload them again.
    bad_files: Mutex<HashSet<String>>,
    /// Files this process's pushes reused rather than uploaded: `(hash, size, local path)`.
    reused: Mutex<Vec<(String, u64, std::path::PathBuf)>>,
    /// When the first of this process's pushes since the last [`Remote::settle`] began
    /// (milliseconds, with a margin for clocks).
    pushes_since: Mutex<Option<i64>>,
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
            bad_files: Mutex::new(HashSet::new()),
            reused: Mutex::new(Vec::new()),
            pushes_since: Mutex::new(None),
        })
    }

    /// The remote as shown to users (no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How this command uses the remote.
    pub fn mode(&self) -> RemoteMode {
        self.mode
    }

    /// Whether the remote holds a manifest for each key (asked concurrently; the manifests are
    /// not read).
    pub fn has_manifests(&self, keys: &[StepKey]) -> Result<Vec<bool>, RemoteError> {
        self.rt.block_on(async {
            let found: Vec<Result<bool, RemoteError>> = stream::iter(keys.iter().map(|key| async move {
                let path = self.manifest_path(key);
                match self.store.head(&path).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.error(&format!("checking {path}"), e)),
                }
            }))
            .buffered(16)
            .collect()
            .await;
            found.into_iter().collect()
        })
    }

    /// Whether this command may write to the remote.
    pub fn writable(&self) -> bool {
        !matches!(self.mode, RemoteMode::ReadOnly | RemoteMode::Off)
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

/// Checks a manifest read from the remote before anything of it is used: it is data from
/// another machine, and its names become local paths.
fn check_manifest(m: &Manifest, key: &StepKey, outputs: Option<&[&str]>) -> Result<(), String> {
    if &m.key != key {
        return Err("the manifest belongs to another key".into());
    }
    if m.format != CACHE_FORMAT {
        return Err(format!("cache format {} (this pipe reads {CACHE_FORMAT})", m.format));
    }
    // The key is the hash of the fingerprint: a manifest whose fingerprint says otherwise was
    // not computed for this key (edited, or written by a faulty client).
    if &m.fingerprint.key() != key {
        return Err(format!("its fingerprint hashes to key {}, not to its own", m.fingerprint.key().short()));
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::manifest::FileEntry;

    #[test]
    fn manifests_from_elsewhere_are_checked_before_use() {
        let fingerprint = crate::fingerprint::Fingerprint {
            format: CACHE_FORMAT,
            kind: "k".into(),
            version: 1,
            params: BTreeMap::new(),
            pin: None,
            inputs: BTreeMap::new(),
            sources: BTreeMap::new(),
        };
        let key = fingerprint.key();
        let entry = |path: &str, hash: &str| crate::manifest::OutputEntry {
            hash: String::new(),
            files: vec![FileEntry { path: path.into(), size: 1, blake3: hash.into() }],
        };
        let manifest = |name: &str, path: &str, hash: &str| Manifest {
            format: CACHE_FORMAT,
            key: key.clone(),
            dir: String::new(),
            step: "s".into(),
            fingerprint: fingerprint.clone(),
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
        // A manifest under its own key whose fingerprint hashes to another is refused.
        let mut forged = manifest("file", "", &good);
        forged.fingerprint.version = 2;
        let e = check_manifest(&forged, &key, None).unwrap_err();
        assert!(e.contains("fingerprint hashes to key"), "{e}");
    }
}
