//! What a step's cache key is made of.
//!
//! A step's [`Fingerprint`] holds, and its key ([`StepKey`], a blake3 hash of the fingerprint's
//! canonical JSON) therefore covers:
//!
//! - the step **kind** and its implementation **version** (bumped when a kind's output for the
//!   same inputs could change);
//! - the **parameters that affect the output**, after defaults and `--set`, as canonical JSON
//!   (integers given for float parameters are stored as floats, so `lr: 1` and `lr: 1.0` agree);
//! - the **content hashes of its inputs**: for each input, the hash of the upstream output's
//!   files, not the upstream key, so an upstream step that reruns and writes identical bytes
//!   leaves this key unchanged (early cutoff);
//! - the **content hashes of local files** named by path parameters (a local tokenizer or model
//!   directory): editing the file changes the key, moving it does not.
//!
//! - the **cache format** ([`CACHE_FORMAT`]): a change of the layout on disk or of what a key
//!   means changes every key, and `pipe status` says "cache format changed" rather than
//!   reporting artifacts as corrupt;
//! - what a parameter **resolves to** on this machine ([`pipe_steps::Step::resolve`]): `device:
//!   auto` is keyed as the device it picks (cpu, cuda, metal), a hub model id as `id@<commit>`.
//!
//! It does not cover:
//!
//! - parameters declared `in_key: false` (log interval, retries, timeouts): they cannot change
//!   the output;
//! - the run's environment: `--threads`, `--mirror`, `--cache-dir`, the pipeline file's name or
//!   location, step names, and the order of steps in the file;
//! - for a download pinned by `sha256`: anything but the checksum. The URL may move or be
//!   served by a mirror and the cached file is still a hit;
//! - where anything is: a local file is keyed by its content under the parameter's name, never
//!   by its path, so a project moved or cloned next to its cache keeps every hit;
//! - the versions of the libraries a step is built on (candle, tokenizers). A step kind's
//!   `version` is bumped when its output changes, including when a dependency upgrade changes
//!   it (a new tokenizers normalising differently, a new candle kernel summing in another
//!   order); an upgrade that keeps outputs equal keeps keys, so caches survive a rebuild.
//!
//! Building a fingerprint is pure: the executor hashes inputs and local files (I/O lives in
//! [`crate::cache`]) and passes the hashes in.

use std::collections::BTreeMap;

use pipe_steps::{ParamType, Params, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::step_key::StepKey;

/// The version of the cache's layout and of what keys mean; bump it when either changes.
pub const CACHE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// [`CACHE_FORMAT`] when it was computed (0: written before formats were recorded).
    #[serde(default)]
    pub format: u32,
    pub kind: String,
    pub version: u32,
    /// Output-affecting parameters (empty when the step is pinned by content).
    pub params: BTreeMap<String, Json>,
    /// A content checksum that replaces the parameters (a pinned download).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Input name → content hash of the upstream output.
    pub inputs: BTreeMap<String, String>,
    /// Parameter name or local path → content hash of the local file or directory it names.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

impl Fingerprint {
    /// `params`: the step's parameters after [`pipe_steps::Step::resolve`]; `inputs`: content
    /// hash per input; `sources`: content hash per local path returned by [`local_paths`].
    pub fn new(
        kind: &dyn Step,
        resolved: &Params,
        inputs: BTreeMap<String, String>,
        sources: BTreeMap<String, String>,
    ) -> Fingerprint {
        let spec = kind.spec();
        let pin = kind.content_pin(resolved);
        let mut params = BTreeMap::new();
        if pin.is_none() {
            for (name, value) in resolved.values() {
                let Some(ps) = spec.param(name) else { continue };
                if !ps.in_key || sources.contains_key(name) {
                    continue;
                }
                let canonical = match (ps.ty, value) {
                    (ParamType::Float, Json::Number(n)) => n.as_f64().map(Json::from).unwrap_or_else(|| value.clone()),
                    _ => value.clone(),
                };
                // A renamed parameter keeps its old name in the key (see `ParamSpec::old_name`).
                params.insert(ps.key_name().to_string(), canonical);
            }
        }
        Fingerprint {
            format: CACHE_FORMAT,
            kind: spec.kind.to_string(),
            version: spec.version,
            params,
            pin,
            inputs,
            sources,
        }
    }

    pub fn key(&self) -> StepKey {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        StepKey::from_hash(blake3::hash(&bytes))
    }
}

/// Local files and directories whose content belongs in the step's key, by the parameter that
/// names them (the name they take in [`Fingerprint::sources`]; the parameter's value, a path,
/// then stays out of the key): parameters of path type (a hub id is not a local path) and the
/// kind's own [`Step::local_sources`].
pub fn local_paths(kind: &dyn Step, params: &Params) -> BTreeMap<String, std::path::PathBuf> {
    let mut out = BTreeMap::new();
    if kind.content_pin(params).is_some() {
        return out;
    }
    for ps in kind.spec().params.iter().filter(|p| p.in_key) {
        if !matches!(ps.ty, ParamType::Path | ParamType::PathOrHubId) {
            continue;
        }
        if let Some(s) = params.get(ps.name).and_then(Json::as_str) {
            let path = std::path::PathBuf::from(s);
            if path.is_absolute() && path.exists() {
                out.insert(ps.name.to_string(), path);
            }
        }
    }
    out.extend(kind.local_sources(params));
    out
}
