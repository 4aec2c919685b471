//! Where a tokenizer comes from: a `tokenizer.json` file, a BERT `vocab.txt`, a directory
//! holding either (a Hugging Face model directory), or a model id on the Hugging Face hub.
//!
//! A `vocab.txt` becomes a BERT WordPiece tokenizer ([`super::bert_tokenizer`]); whether it is
//! cased is the `lowercase` parameter, else `do_lower_case` of a `tokenizer_config.json` beside
//! it, else a guess from the vocabulary (no ASCII upper-case letters outside `[...]` tokens:
//! uncased).
//!
//! Hub references (`id[@revision]`, pinned to a commit sha before the key is computed) are
//! fetched with [`crate::hub::fetch`] into the run's hub cache (`tokenizer.json`, else
//! `vocab.txt` and `tokenizer_config.json`, all of the same commit); a commit's file already in
//! that cache is used without the network.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use super::bert_tokenizer::{self, Normalization};
use crate::error::{StepError, StepResult};
use crate::hub::{self, HubRef};
use crate::step::Environment;
use crate::tensor_set::TOKENIZER_FILE;

/// A tokenizer ready to use, with the `tokenizer.json` bytes to copy beside the tensors.
pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    pub json: Vec<u8>,
    /// Where it came from, for logs.
    pub description: String,
}

/// What kind of file a tokenizer path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Json(PathBuf),
    Vocab(PathBuf),
}

/// Loads the tokenizer at `path` (a file or a directory). `lowercase` only applies to a
/// `vocab.txt`.
pub fn load_path(path: &Path, lowercase: Option<bool>) -> StepResult<LoadedTokenizer> {
    match find(path)? {
        Found::Json(file) => {
            if lowercase.is_some() {
                return Err(StepError::param(
                    "lowercase",
                    format!(
                        "only applies to a vocab.txt; {} is a tokenizer.json, which has its own normalizer",
                        file.display()
                    ),
                ));
            }
            load_json(&file)
        }
        Found::Vocab(file) => load_vocab(&file, lowercase),
    }
}

fn find(path: &Path) -> StepResult<Found> {
    if path.is_dir() {
        let json = path.join(TOKENIZER_FILE);
        if json.is_file() {
            return Ok(Found::Json(json));
        }
        let vocab = path.join("vocab.txt");
        if vocab.is_file() {
            return Ok(Found::Vocab(vocab));
        }
        return Err(StepError::input(format!(
            "{} has neither {TOKENIZER_FILE} nor vocab.txt, so it holds no tokenizer",
            path.display()
        )));
    }
    if !path.exists() {
        return Err(StepError::input(format!("tokenizer {} does not exist", path.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".json") {
        return Ok(Found::Json(path.to_path_buf()));
    }
    if name.ends_with(".txt") {
        return Ok(Found::Vocab(path.to_path_buf()));
    }
    // No telling extension (e.g. the `tokenizer` output of train-tokenizer): look inside.
    let head = fs::read(path).map_err(StepError::io("reading", path))?;
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    Ok(if first == Some(&b'{') { Found::Json(path.to_path_buf()) } else { Found::Vocab(path.to_path_buf()) })
}

fn load_json(file: &Path) -> StepResult<LoadedTokenizer> {
    let bytes = fs::read(file).map_err(StepError::io("reading", file))?;
    let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| {
        StepError::input(format!("{} is not a tokenizer.json the tokenizers library can read: {e}", file.display()))
    })?;
    Ok(LoadedTokenizer { tokenizer, json: bytes, description: file.display().to_string() })
}

fn load_vocab(file: &Path, lowercase: Option<bool>) -> StepResult<LoadedTokenizer> {
    let bytes = fs::read(file).map_err(StepError::io("reading", file))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| StepError::input(format!("{} is not a UTF-8 vocab.txt", file.display())))?;
    let tokens = bert_tokenizer::parse_vocab(&text);
    let (lowercase, why) = match lowercase {
        Some(l) => (l, "parameter lowercase"),
        None => match config_lowercase(file)? {
            Some(l) => (l, "do_lower_case in tokenizer_config.json"),
            None => (
                !tokens.iter().any(|t| !t.starts_with('[') && t.chars().any(|c| c.is_ascii_uppercase())),
                "guessed from the vocabulary",
            ),
        },
    };
    let doc = bert_tokenizer::bert_tokenizer_json(&tokens, Normalization { lowercase, strip_accents: None })
        .map_err(|e| StepError::input(format!("{}: {e}", file.display())))?;
    let (tokenizer, json) = bert_tokenizer::build(&doc)?;
    let cased = if lowercase { "uncased" } else { "cased" };
    Ok(LoadedTokenizer {
        tokenizer,
        json: json.into_bytes(),
        description: format!("{} ({} tokens, {cased}: {why})", file.display(), tokens.len()),
    })
}

/// `do_lower_case` from a `tokenizer_config.json` beside `vocab`, when there is one.
fn config_lowercase(vocab: &Path) -> StepResult<Option<bool>> {
    let Some(dir) = vocab.parent() else { return Ok(None) };
    let config = dir.join("tokenizer_config.json");
    if !config.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(&config).map_err(StepError::io("reading", &config))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| StepError::input(format!("{} is not JSON: {e}", config.display())))?;
    Ok(value.get("do_lower_case").and_then(Value::as_bool))
}

/// Fetches the tokenizer of the hub model `value` (`id[@revision]`, pinned to a sha by the
/// runner) with [`hub::fetch`] and loads it: `tokenizer.json`, else `vocab.txt` with the
/// optional `tokenizer_config.json` of the same commit.
pub fn load_hub(value: &str, env: &Environment, lowercase: Option<bool>) -> StepResult<LoadedTokenizer> {
    let hub_ref = HubRef::parse(value).ok_or_else(|| {
        StepError::param("tokenizer", format!("`{value}` is neither an existing path nor a hub model id"))
    })?;
    let fetch = |file: &str| hub::fetch(&hub_ref, file, env);
    match fetch(TOKENIZER_FILE) {
        Ok(path) => {
            if lowercase.is_some() {
                return Err(StepError::param(
                    "lowercase",
                    format!("only applies to a vocab.txt; hub model `{hub_ref}` has a tokenizer.json"),
                ));
            }
            let mut loaded = load_json(&path)?;
            loaded.description = format!("hub model {hub_ref} ({})", path.display());
            Ok(loaded)
        }
        Err(e) if e.is_not_found() => match fetch("vocab.txt") {
            Ok(vocab) => {
                // tokenizer_config.json is optional; it lands beside vocab.txt in the cache.
                if let Err(e) = fetch("tokenizer_config.json") {
                    if !e.is_not_found() {
                        return Err(e.into_step_error("tokenizer"));
                    }
                }
                let mut loaded = load_vocab(&vocab, lowercase)?;
                loaded.description = format!("hub model {hub_ref}: {}", loaded.description);
                Ok(loaded)
            }
            Err(e) if e.is_not_found() => Err(StepError::input(format!(
                "hub model `{hub_ref}` has neither {TOKENIZER_FILE} nor vocab.txt (or does not exist)"
            ))),
            Err(e) => Err(e.into_step_error("tokenizer")),
        },
        Err(e) => Err(e.into_step_error("tokenizer")),
    }
}
