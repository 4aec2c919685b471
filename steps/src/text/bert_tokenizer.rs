//! A BERT WordPiece tokenizer in the Hugging Face `tokenizer.json` format, built from a
//! vocabulary: `BertNormalizer`, `BertPreTokenizer`, a `WordPiece` model with `[UNK]` and the
//! `##` prefix, the `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1 [SEP]:1` template and the
//! `WordPiece` decoder. Used for trained vocabularies and for `vocab.txt` files.
//!
//! The JSON is assembled here and parsed by the `tokenizers` crate, so what is written is
//! exactly what Python `tokenizers.Tokenizer.from_file` (and `transformers`' fast BERT
//! tokenizers) read.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use crate::error::{StepError, StepResult};

/// The special tokens of BERT, in the order a trained vocabulary gives them ids 0..5.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// How the normalizer treats text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalization {
    pub lowercase: bool,
    /// `None`: strip accents exactly when lowercasing (BERT's convention).
    pub strip_accents: Option<bool>,
}

/// The `tokenizer.json` document of a BERT tokenizer over `tokens` (token `i` has id `i`; when
/// a token repeats, its last line wins, as in `transformers`).
pub fn bert_tokenizer_json(tokens: &[String], norm: Normalization) -> StepResult<Value> {
    let mut vocab: BTreeMap<&str, u32> = BTreeMap::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(token.as_str(), id as u32);
    }
    let id_of = |t: &str| -> StepResult<u32> {
        vocab
            .get(t)
            .copied()
            .ok_or_else(|| StepError::input(format!("the vocabulary has no `{t}` token, which a BERT tokenizer needs")))
    };
    id_of("[UNK]")?;
    let (cls, sep) = (id_of("[CLS]")?, id_of("[SEP]")?);
    let mut added: Vec<(u32, &str)> = SPECIAL_TOKENS.iter().filter_map(|t| vocab.get(t).map(|&id| (id, *t))).collect();
    added.sort_unstable();
    let added_tokens: Vec<Value> = added
        .iter()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let strip_accents = match norm.strip_accents {
        Some(b) => Value::Bool(b),
        None => Value::Null,
    };
    let vocab_json: Map<String, Value> = vocab.iter().map(|(t, id)| (t.to_string(), Value::from(*id))).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": true,
            "handle_chinese_chars": true,
            "strip_accents": strip_accents,
            "lowercase": norm.lowercase,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [cls], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [sep], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": vocab_json,
        },
    }))
}

/// Parses a `tokenizer.json` document and returns the tokenizer with its canonical
/// serialization (what the `tokenizers` crate writes for it, pretty-printed).
pub fn build(document: &Value) -> StepResult<(Tokenizer, String)> {
    let text = serde_json::to_string(document).map_err(|e| StepError::failed(format!("serializing tokenizer: {e}")))?;
    let tokenizer = Tokenizer::from_str(&text).map_err(|e| StepError::failed(format!("building tokenizer: {e}")))?;
    let canonical = tokenizer.to_string(true).map_err(|e| StepError::failed(format!("serializing tokenizer: {e}")))?;
    Ok((tokenizer, canonical))
}

/// Reads a `vocab.txt` (one token per line, id = line number).
pub fn parse_vocab(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end().to_string()).collect()
}
