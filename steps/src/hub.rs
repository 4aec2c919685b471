//! The Hugging Face hub: model ids, revisions, and fetching files at a pinned revision.
//!
//! A hub reference is `id[@revision]`: `id` is `name` or `owner/name`, `revision` a branch, a
//! tag or a commit sha (default `main`). Branches and tags move, so a step's key never holds
//! one: [`pin_param`] (called by [`crate::step::Step::resolve`] before the key is computed)
//! asks the hub which commit the revision names now and replaces the value by `id@<sha>`. What
//! is keyed is therefore the id and the full 40-hex commit sha; `pipe status` reports a
//! different sha as the hub model having moved. A value already pinned to a full sha is left
//! as it is, without the network.
//!
//! Files are fetched with `hf-hub` (the real client: [`fetch`]) at exactly the pinned commit
//! into the hub cache ([`Environment::hub_cache`], else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`, in the layout `huggingface_hub` uses:
//! `models--owner--name/snapshots/<sha>/<file>`). Offline use needs two things: the value
//! pinned to a full sha (`id@<sha>`; an unpinned id needs the hub to say which commit it is),
//! and that commit's files in the hub cache. A file the hub said the commit lacks is recorded
//! in `.no_exist/<sha>/<file>` (as `huggingface_hub` does), so optional files are not asked for
//! again. The endpoint is [`Environment::hub_endpoint`], else `$HF_ENDPOINT`, else
//! `https://huggingface.co`.
//!
//! Not here: what the files mean (model directories: [`crate::bert::model_dir`]; tokenizers:
//! [`crate::text::source`]).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{StepError, StepResult};
use crate::step::{Environment, Params};

/// The hub used when neither the environment nor `HF_ENDPOINT` names one.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A parsed `id[@revision]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `name` or `owner/name`.
    pub id: String,
    /// As written; `None` means `main`.
    pub revision: Option<String>,
}

impl HubRef {
    /// Parses `id[@revision]`; `None` when `s` does not read as a hub reference.
    pub fn parse(s: &str) -> Option<HubRef> {
        let (id, revision) = match s.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (s, None),
        };
        if !is_id(id) || !revision.is_none_or(is_revision) {
            return None;
        }
        Some(HubRef { id: id.to_string(), revision: revision.map(str::to_string) })
    }

    /// The revision to ask for (`main` when none was given).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The commit sha when the revision is one (lower-cased).
    pub fn sha(&self) -> Option<String> {
        self.revision.as_deref().filter(|r| is_commit_sha(r)).map(str::to_ascii_lowercase)
    }

    /// The same model pinned to commit `sha`.
    pub fn pinned(&self, sha: &str) -> HubRef {
        HubRef { id: self.id.clone(), revision: Some(sha.to_ascii_lowercase()) }
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(rev) => write!(f, "{}@{rev}", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// `owner/name` or `name`, made of the characters the hub allows.
fn is_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// A branch, tag or sha as git allows them (the hub's `refs/pr/1` included).
fn is_revision(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.contains("..")
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// A full 40-hex commit sha: the only revision that cannot move.
pub fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether `s` reads as a hub reference (`name`, `owner/name`, optionally `@revision`) rather
/// than a path. The runner and the loaders share this one check.
pub fn looks_like_hub_id(s: &str) -> bool {
    HubRef::parse(s).is_some()
}

/// Pins parameter `name` when it holds a hub model id without a full revision: replaces it by
/// `id@<commit sha>` the hub serves now. Local paths and already pinned ids are left alone
/// (a pinned sha is only lower-cased, without the network). An unreachable hub or an unknown
/// model or revision is bad input naming the parameter, with a `help:` line.
pub fn pin_param(params: &mut Params, name: &str, env: &Environment) -> StepResult<()> {
    let Some(value) = params.opt_str(name)? else { return Ok(()) };
    // The runner made existing local paths absolute; anything else that reads as an id is one.
    if Path::new(value).exists() {
        return Ok(());
    }
    let Some(hub_ref) = HubRef::parse(value) else { return Ok(()) };
    let pinned = match hub_ref.sha() {
        Some(sha) => hub_ref.pinned(&sha),
        None => {
            let asked = format!("{}@{}", hub_ref.id, hub_ref.revision());
            let known = env.hub_pins.lock().unwrap_or_else(|e| e.into_inner()).get(&asked).cloned();
            let sha = match known {
                Some(sha) => sha,
                None => {
                    let sha = resolve_revision(&hub_ref, name, env)?;
                    env.hub_pins.lock().unwrap_or_else(|e| e.into_inner()).insert(asked, sha.clone());
                    sha
                }
            };
            hub_ref.pinned(&sha)
        }
    };
    params.set(name, pinned.to_string().into());
    Ok(())
}

/// The commit sha revision `hub_ref.revision()` names on the hub now (`/api/models/{id}/revision/{rev}`).
/// `param` names the parameter in errors.
pub fn resolve_revision(hub_ref: &HubRef, param: &str, env: &Environment) -> StepResult<String> {
    let endpoint = endpoint(env);
    let revision = hub_ref.revision();
    let asked = || format!("`{param}`: hub model `{}` (revision `{revision}`)", hub_ref.id);
    let info = api(env)
        .and_then(|api| api.repo(Repo::with_revision(hub_ref.id.clone(), RepoType::Model, revision.into())).info());
    match info {
        Ok(info) if is_commit_sha(&info.sha) => Ok(info.sha.to_ascii_lowercase()),
        Ok(info) => Err(StepError::input(format!(
            "{}: the hub at {endpoint} answered `{}`, which is not a commit sha",
            asked(),
            info.sha
        ))),
        Err(e) if is_not_found(&e) => Err(StepError::input_with_help(
            format!("{} was not found on the hub at {endpoint}: {e}", asked()),
            "check the model id and revision; a private or gated model needs a token (`huggingface-cli login`)",
        )),
        Err(e) => Err(StepError::input_with_help(
            format!("{}: could not ask the hub at {endpoint} which commit it is: {e}", asked()),
            offline_help(hub_ref, param, env),
        )),
    }
}

/// What to do when the hub cannot be reached, naming a commit the hub cache already holds.
fn offline_help(hub_ref: &HubRef, param: &str, env: &Environment) -> String {
    let cached = cached_commits(hub_ref, env);
    let pin = match cached.first() {
        Some(sha) => format!("`{}@{sha}` (in the hub cache {})", hub_ref.id, repo_dir(hub_ref, env).display()),
        None => format!("`{}@<sha>` of a commit already in the hub cache", hub_ref.id),
    };
    format!(
        "download the model where the hub is reachable and give its local directory as `{param}`, or pin {pin}; \
         a pinned sha needs no network"
    )
}

/// Commits of the model in the hub cache: the one the revision last named first, then the rest.
fn cached_commits(hub_ref: &HubRef, env: &Environment) -> Vec<String> {
    let dir = repo_dir(hub_ref, env);
    let mut others: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| is_commit_sha(n)).collect())
        .unwrap_or_default();
    others.sort();
    let first = cached_ref(hub_ref, env).filter(|sha| others.contains(sha));
    first.iter().cloned().chain(others.into_iter().filter(|s| Some(s) != first.as_ref())).collect()
}

/// Why [`fetch`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The hub says the model (at that revision) has no such file, or there is no such model.
    #[error("hub model `{model}` has no {file} (or does not exist)")]
    NotFound { model: String, file: String },
    /// The hub could not be reached or answered something unusable.
    #[error("could not fetch {file} of hub model `{model}` from {endpoint}: {source}")]
    Failed { model: String, file: String, endpoint: String, source: ApiError },
    /// The hub served another commit than the pinned one.
    #[error("the hub served {file} of `{model}` at commit {served}, not the pinned one")]
    WrongCommit { model: String, file: String, served: String },
}

impl FetchError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }

    /// As a step error; `param` names the parameter a local directory can replace.
    pub fn into_step_error(self, param: &str) -> StepError {
        match self {
            FetchError::NotFound { .. } => StepError::input(self.to_string()),
            FetchError::Failed { .. } => StepError::failed_with_help(
                self.to_string(),
                format!(
                    "the Hugging Face hub is unreachable from here: download the model where it is reachable and \
                     give its local directory as `{param}`"
                ),
            ),
            FetchError::WrongCommit { .. } => StepError::failed(self.to_string()),
        }
    }
}

/// The local path of `file` of the model at `hub_ref`'s revision: from the hub cache when that
/// commit's file is there (no network), else downloaded by `hf-hub` into it. With a pinned sha
/// the file is exactly that commit's.
pub fn fetch(hub_ref: &HubRef, file: &str, env: &Environment) -> Result<PathBuf, FetchError> {
    let model = hub_ref.to_string();
    let dir = repo_dir(hub_ref, env);
    let commit = hub_ref.sha().or_else(|| cached_ref(hub_ref, env));
    if let Some(sha) = &commit {
        let cached = dir.join("snapshots").join(sha).join(file);
        if cached.is_file() {
            return Ok(cached);
        }
        if hub_ref.sha().is_some() && dir.join(".no_exist").join(sha).join(file).exists() {
            return Err(FetchError::NotFound { model, file: file.into() });
        }
    }
    let failed = |source: ApiError| FetchError::Failed {
        model: model.clone(),
        file: file.into(),
        endpoint: endpoint(env),
        source,
    };
    let repo = Repo::with_revision(hub_ref.id.clone(), RepoType::Model, hub_ref.revision().into());
    let path = match api(env).and_then(|api| api.repo(repo).download(file)) {
        Ok(path) => path,
        Err(e) if is_not_found(&e) => {
            if let Some(sha) = hub_ref.sha() {
                // Best effort, as huggingface_hub does: an absent optional file needs no network next time.
                let marker = dir.join(".no_exist").join(&sha);
                if fs::create_dir_all(&marker).is_ok() {
                    let _ = fs::write(marker.join(file), b"");
                }
            }
            return Err(FetchError::NotFound { model, file: file.into() });
        }
        Err(e) => return Err(failed(e)),
    };
    if let Some(sha) = hub_ref.sha() {
        // hf-hub files the download under the commit the hub named (x-repo-commit).
        let served = path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
        if served.as_deref() != Some(sha.as_str()) {
            return Err(FetchError::WrongCommit { model, file: file.into(), served: served.unwrap_or_default() });
        }
    }
    Ok(path)
}

/// The hub's address: the environment's, else `HF_ENDPOINT`, else the public hub.
pub fn endpoint(env: &Environment) -> String {
    let endpoint = match &env.hub_endpoint {
        Some(e) => e.clone(),
        None => std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
    };
    endpoint.trim_end_matches('/').to_string()
}

fn cache(env: &Environment) -> Cache {
    match &env.hub_cache {
        Some(dir) => Cache::new(dir.clone()),
        None => Cache::from_env(),
    }
}

fn api(env: &Environment) -> Result<Api, ApiError> {
    // from_env: the token of `huggingface-cli login` ($HF_HOME/token); cache and endpoint are
    // then set from the environment explicitly, so in-process callers need no process-wide vars.
    ApiBuilder::from_env()
        .with_cache_dir(cache(env).path().clone())
        .with_endpoint(endpoint(env))
        .with_progress(false)
        .with_retries(2)
        .build()
}

/// `models--owner--name` in the hub cache.
fn repo_dir(hub_ref: &HubRef, env: &Environment) -> PathBuf {
    cache(env).path().join(Repo::model(hub_ref.id.clone()).folder_name())
}

/// The commit the cache last saw the (branch or tag) revision at: `refs/<revision>` (read as
/// hf-hub reads it; only kept from climbing out of `snapshots/`).
fn cached_ref(hub_ref: &HubRef, env: &Environment) -> Option<String> {
    let text = fs::read_to_string(repo_dir(hub_ref, env).join("refs").join(hub_ref.revision())).ok()?;
    let commit = text.trim();
    (!commit.is_empty() && !commit.contains(['/', '\\']) && commit != "..").then(|| commit.to_string())
}

/// A 404 or 401 (the hub's answer for a repository it does not show) rather than a failure.
fn is_not_found(e: &ApiError) -> bool {
    match e {
        ApiError::RequestError(inner) => matches!(**inner, ureq::Error::Status(404 | 401, _)),
        ApiError::TooManyRetries(inner) => is_not_found(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn references_parse_with_and_without_a_revision() {
        let r = HubRef::parse("sentence-transformers/all-MiniLM-L6-v2").unwrap();
        assert_eq!((r.id.as_str(), r.revision()), ("sentence-transformers/all-MiniLM-L6-v2", "main"));
        assert_eq!(r.sha(), None);
        let r = HubRef::parse("bert-base-multilingual-cased@v1.0").unwrap();
        assert_eq!((r.id.as_str(), r.revision()), ("bert-base-multilingual-cased", "v1.0"));
        assert_eq!(HubRef::parse("a/b@refs/pr/1").unwrap().revision(), "refs/pr/1");
        let r = HubRef::parse(&format!("a/b@{}", SHA.to_uppercase())).unwrap();
        assert_eq!(r.sha().as_deref(), Some(SHA));
        assert_eq!(r.pinned(SHA).to_string(), format!("a/b@{SHA}"));
        // A short sha is a revision to resolve, not a pin.
        assert_eq!(HubRef::parse("a/b@0123456").unwrap().sha(), None);
    }

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(looks_like_hub_id("bert-base-multilingual-cased"));
        assert!(looks_like_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        for not_an_id in ["./vocab.txt", "/abs/path", "a/b/c", ".hidden", "", "a@", "@main", "a@b@c", "a@../x", "a b"] {
            assert!(!looks_like_hub_id(not_an_id), "{not_an_id:?}");
        }
    }

    #[test]
    fn a_pinned_sha_is_left_alone_without_the_network() {
        // An endpoint that refuses connections: any request would fail.
        let env = Environment { hub_endpoint: Some("http://127.0.0.1:9".into()), ..Environment::default() };
        let mut params = Params::default();
        params.set("model", format!("a/b@{}", SHA.to_uppercase()).into());
        pin_param(&mut params, "model", &env).unwrap();
        assert_eq!(params.str("model").unwrap(), format!("a/b@{SHA}"));
    }

    #[test]
    fn the_endpoint_comes_from_the_environment_first() {
        let env = Environment { hub_endpoint: Some("http://127.0.0.1:1234/".into()), ..Environment::default() };
        assert_eq!(endpoint(&env), "http://127.0.0.1:1234");
    }
}
