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
//! It does not cover:
//!
//! - parameters declared `in_key: false` (log interval, retries, timeouts): they cannot change
//!   the output;
//! - the run's environment: `--threads`, `--mirror`, `--cache-dir`, the pipeline file's name or
//!   location, step names, and the order of steps in the file;
//! - for a download pinned by `sha256`: anything but the checksum. The URL may move or be
//!   served by a mirror and the cached file is still a hit.
//!
//! Building a fingerprint is pure: the executor hashes inputs and local files (I/O lives in
//! [`crate::cache`]) and passes the hashes in.

use std::collections::BTreeMap;

use pipe_steps::{ParamType, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::graph::GraphStep;
use crate::step_key::StepKey;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
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
    /// `inputs`: content hash per input; `sources`: content hash per local path returned by
    /// [`local_paths`].
    pub fn new(step: &GraphStep, inputs: BTreeMap<String, String>, sources: BTreeMap<String, String>) -> Fingerprint {
        let kind = step.kind;
        let spec = kind.spec();
        let pin = kind.content_pin(&step.params);
        let mut params = BTreeMap::new();
        if pin.is_none() {
            for (name, value) in step.params.values() {
                let Some(ps) = spec.param(name) else { continue };
                if !ps.in_key || sources.contains_key(name) {
                    continue;
                }
                let canonical = match (ps.ty, value) {
                    (ParamType::Float, Json::Number(n)) => n.as_f64().map(Json::from).unwrap_or_else(|| value.clone()),
                    _ => value.clone(),
                };
                params.insert(name.clone(), canonical);
            }
        }
        Fingerprint { kind: spec.kind.to_string(), version: spec.version, params, pin, inputs, sources }
    }

    pub fn key(&self) -> StepKey {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        StepKey::from_hash(blake3::hash(&bytes))
    }
}

/// Local files and directories whose content belongs in the step's key, by the name they take
/// in [`Fingerprint::sources`]: parameters of path type (by parameter name; a hub id is not a
/// local path) and the kind's own [`Step::local_sources`] (by path).
pub fn local_paths(step: &GraphStep) -> BTreeMap<String, std::path::PathBuf> {
    let kind: &dyn Step = step.kind;
    let mut out = BTreeMap::new();
    if kind.content_pin(&step.params).is_some() {
        return out;
    }
    for ps in kind.spec().params.iter().filter(|p| p.in_key) {
        if !matches!(ps.ty, ParamType::Path | ParamType::PathOrHubId) {
            continue;
        }
        if let Some(s) = step.params.get(ps.name).and_then(Json::as_str) {
            let path = std::path::PathBuf::from(s);
            if path.is_absolute() && path.exists() {
                out.insert(ps.name.to_string(), path);
            }
        }
    }
    out.extend(kind.local_sources(&step.params));
    out
}
