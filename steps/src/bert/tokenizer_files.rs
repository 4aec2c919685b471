//! The tokenizer files of a model directory written by `fine-tune` and `pretrain`, so that
//! Python `transformers` (`AutoTokenizer.from_pretrained(dir)`) tokenizes text exactly as the
//! `tokenize` step did for the model's training data.
//!
//! What is written, all derived from the tensor set's `tokenizer.json` and its `meta.json`:
//!
//! - `tokenizer.json`: the tensor set's tokenizer, with the post-processor set to what
//!   `tokenize` did (`[CLS] a [SEP]`, pairs `[CLS] a [SEP] b [SEP]` with types 0 0 0 1 1, using
//!   the tensor set's `cls_id` and `sep_id`), truncation to the set's `max_len` and no padding
//!   (rows were ragged), so `tokenizers.Tokenizer.from_file` alone also gives pipe's ids;
//! - `tokenizer_config.json`: the tokenizer class, the special tokens as they are in the
//!   vocabulary, `model_max_length` = `max_len`, the added tokens, and for BERT-shaped
//!   tokenizers `do_lower_case`, `strip_accents` and `tokenize_chinese_chars` read from the
//!   `BertNormalizer`;
//! - `special_tokens_map.json`: the special tokens again (older `transformers` read them here);
//! - `vocab.txt`, when the model is a WordPiece vocabulary with ids `0..n` (the slow
//!   `BertTokenizer` reads it).
//!
//! Why the config must be complete: `transformers` 5 builds a `BertTokenizer` from the
//! vocabulary and the config's arguments, not from the `tokenizer.json` pipeline, and its
//! defaults are `do_lower_case: true` and accent stripping, which decomposes Hangul into
//! jamo; `transformers` 4's `BertTokenizerFast` replaces the file's normalizer whenever those
//! arguments differ from it. A tokenizer that `BertTokenizer` cannot rebuild exactly (another
//! normalizer or pre-tokenizer, a WordPiece other than `##`/100 characters, added tokens
//! outside the vocabulary) gets the generic `PreTrainedTokenizerFast`, which both versions load
//! from `tokenizer.json` as it is.
//!
//! Not covered: pairs cut to `max_len` by `transformers`' `longest_first` differ from
//! `tokenize` in one corner case (see [`crate::text::sentence_transform`]).

use std::fs;
use std::path::Path;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use crate::error::{StepError, StepResult};
use crate::tensor_set::TensorSetMeta;
use crate::text::bert_tokenizer;

pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
pub const VOCAB_TXT: &str = "vocab.txt";

/// The `transformers` class that rebuilds a BERT-shaped tokenizer from the config.
pub const BERT_CLASS: &str = "BertTokenizer";
/// The class that loads any `tokenizer.json` unchanged.
pub const GENERIC_CLASS: &str = "PreTrainedTokenizerFast";

/// The special tokens of a tokenizer, as strings of its vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub cls: String,
    pub sep: String,
    pub pad: Option<String>,
    pub mask: Option<String>,
    pub unk: Option<String>,
}

/// The files to write, in memory.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    pub tokenizer_json: String,
    pub config: Value,
    pub special_tokens_map: Value,
    pub vocab_txt: Option<String>,
}

/// Builds the files from the `tokenizer.json` that tokenized a tensor set (read from `source`,
/// named in errors) and the set's `meta`.
pub fn build(bytes: &[u8], source: &Path, meta: &TensorSetMeta) -> StepResult<TokenizerFiles> {
    let not_tokenizer = |e: String| StepError::input(format!("{} is not a tokenizer.json: {e}", source.display()));
    let mut doc: Value = serde_json::from_slice(bytes).map_err(|e| not_tokenizer(e.to_string()))?;
    let tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| not_tokenizer(e.to_string()))?;
    let special = special_tokens(&doc, &tokenizer, meta, source)?;

    doc["post_processor"] = post_processor(&special, meta);
    doc["truncation"] =
        json!({"direction": "Right", "max_length": meta.max_len, "strategy": "LongestFirst", "stride": 0});
    doc["padding"] = Value::Null;
    let (_, tokenizer_json) = bert_tokenizer::build(&doc)?;

    let mut config = Map::new();
    let bert = bert_normalizer(&doc).filter(|_| rebuildable_as_bert(&doc, &special));
    config.insert("tokenizer_class".into(), json!(if bert.is_some() { BERT_CLASS } else { GENERIC_CLASS }));
    if let Some(n) = bert {
        config.insert("do_lower_case".into(), json!(n.lowercase));
        config.insert("strip_accents".into(), json!(n.strip_accents));
        config.insert("tokenize_chinese_chars".into(), json!(n.handle_chinese_chars));
        config.insert("do_basic_tokenize".into(), json!(true));
        config.insert("never_split".into(), Value::Null);
    }
    let map = special_tokens_map(&special);
    for (k, v) in map.as_object().into_iter().flatten() {
        config.insert(k.clone(), v.clone());
    }
    config.insert("model_max_length".into(), json!(meta.max_len));
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("added_tokens_decoder".into(), added_tokens_decoder(&doc));

    Ok(TokenizerFiles {
        tokenizer_json,
        config: Value::Object(config),
        special_tokens_map: map,
        vocab_txt: vocab_txt(&doc),
    })
}

/// Writes the files of [`build`] for the tokenizer at `source` into `dir`.
pub fn write(dir: &Path, source: &Path, meta: &TensorSetMeta) -> StepResult<()> {
    let bytes = fs::read(source).map_err(StepError::io("reading", source))?;
    let files = build(&bytes, source, meta)?;
    let put = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).map_err(StepError::io("writing", &path))
    };
    let pretty = |v: &Value| serde_json::to_string_pretty(v).map_err(|e| StepError::failed(e.to_string()));
    put(TOKENIZER_JSON, &files.tokenizer_json)?;
    put(TOKENIZER_CONFIG, &pretty(&files.config)?)?;
    put(SPECIAL_TOKENS_MAP, &pretty(&files.special_tokens_map)?)?;
    if let Some(vocab) = &files.vocab_txt {
        put(VOCAB_TXT, vocab)?;
    }
    Ok(())
}

/// The tokens behind the tensor set's special ids. `[CLS]` and `[SEP]` must exist; the pad id
/// only names a pad token when that token is `[PAD]` or an added special token (`tokenize`
/// records id 0 when the vocabulary has no `[PAD]`); `[UNK]` is the WordPiece model's own
/// unknown token, the one encoding emits.
fn special_tokens(doc: &Value, tok: &Tokenizer, meta: &TensorSetMeta, source: &Path) -> StepResult<SpecialTokens> {
    let need = |id: u32, what: &str| {
        tok.id_to_token(id).ok_or_else(|| {
            StepError::input_with_help(
                format!("{} has no token with id {id}, the tensor set's {what}", source.display()),
                "the tokenizer.json beside a tensor set must be the one that tokenized it; tokenize the data again",
            )
        })
    };
    let added_special = |t: &str| {
        doc["added_tokens"].as_array().into_iter().flatten().any(|a| a["content"] == t && a["special"] == true)
    };
    let pad = tok.id_to_token(meta.pad_id).filter(|t| t == "[PAD]" || added_special(t));
    let model_unk = doc["model"]["unk_token"].as_str().filter(|t| tok.token_to_id(t).is_some()).map(str::to_string);
    Ok(SpecialTokens {
        cls: need(meta.cls_id, "cls_id")?,
        sep: need(meta.sep_id, "sep_id")?,
        pad,
        mask: meta.mask_id.and_then(|id| tok.id_to_token(id)),
        unk: model_unk.or_else(|| meta.unk_id.and_then(|id| tok.id_to_token(id))),
    })
}

/// What `tokenize` puts around the text ([`crate::text::sentence_transform`]).
fn post_processor(s: &SpecialTokens, meta: &TensorSetMeta) -> Value {
    let special = |t: &str, ty: u32| json!({"SpecialToken": {"id": t, "type_id": ty}});
    let sequence = |id: &str, ty: u32| json!({"Sequence": {"id": id, "type_id": ty}});
    let mut tokens = Map::new();
    tokens.insert(s.cls.clone(), json!({"id": s.cls, "ids": [meta.cls_id], "tokens": [s.cls]}));
    tokens.insert(s.sep.clone(), json!({"id": s.sep, "ids": [meta.sep_id], "tokens": [s.sep]}));
    json!({
        "type": "TemplateProcessing",
        "single": [special(&s.cls, 0), sequence("A", 0), special(&s.sep, 0)],
        "pair": [special(&s.cls, 0), sequence("A", 0), special(&s.sep, 0), sequence("B", 1), special(&s.sep, 1)],
        "special_tokens": tokens,
    })
}

/// The settings of a top-level `BertNormalizer`.
#[derive(Debug, Clone, PartialEq)]
struct BertNormalizerSettings {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: Option<bool>,
    lowercase: bool,
}

fn bert_normalizer(doc: &Value) -> Option<BertNormalizerSettings> {
    let n = &doc["normalizer"];
    if n["type"] != "BertNormalizer" {
        return None;
    }
    // Absent fields take the `tokenizers` defaults.
    Some(BertNormalizerSettings {
        clean_text: n["clean_text"].as_bool().unwrap_or(true),
        handle_chinese_chars: n["handle_chinese_chars"].as_bool().unwrap_or(true),
        strip_accents: n["strip_accents"].as_bool(),
        lowercase: n["lowercase"].as_bool().unwrap_or(true),
    })
}

/// Whether `transformers`' `BertTokenizer`, which rebuilds the tokenizer as
/// `BertNormalizer(clean_text=True, ...)`, `BertPreTokenizer`, `WordPiece(vocab, unk_token)`
/// (prefix `##`, 100 characters a word) plus the special tokens as added tokens, gives the
/// same tokenizer as `doc`.
fn rebuildable_as_bert(doc: &Value, special: &SpecialTokens) -> bool {
    let model = &doc["model"];
    let vocab = model["vocab"].as_object();
    let in_vocab = |t: &Value| vocab.and_then(|v| v.get(t["content"].as_str()?)) == Some(&t["id"]);
    bert_normalizer(doc).is_some_and(|n| n.clean_text)
        && doc["pre_tokenizer"]["type"] == "BertPreTokenizer"
        && model["type"] == "WordPiece"
        && model["continuing_subword_prefix"] == "##"
        && model["max_input_chars_per_word"] == 100
        && special.unk.is_some()
        && model["unk_token"].as_str() == special.unk.as_deref()
        && doc["added_tokens"].as_array().into_iter().flatten().all(in_vocab)
}

fn special_tokens_map(s: &SpecialTokens) -> Value {
    let mut map = Map::new();
    map.insert("cls_token".into(), json!(s.cls));
    map.insert("sep_token".into(), json!(s.sep));
    for (key, token) in [("pad_token", &s.pad), ("mask_token", &s.mask), ("unk_token", &s.unk)] {
        if let Some(t) = token {
            map.insert(key.into(), json!(t));
        }
    }
    Value::Object(map)
}

/// The `added_tokens` of `tokenizer.json` in `tokenizer_config.json`'s form (id → token).
fn added_tokens_decoder(doc: &Value) -> Value {
    let mut out = Map::new();
    for t in doc["added_tokens"].as_array().into_iter().flatten() {
        let Some(id) = t["id"].as_u64() else { continue };
        let flag = |k: &str, default: bool| t[k].as_bool().unwrap_or(default);
        out.insert(
            id.to_string(),
            json!({
                "content": t["content"],
                "lstrip": flag("lstrip", false),
                "normalized": flag("normalized", true),
                "rstrip": flag("rstrip", false),
                "single_word": flag("single_word", false),
                "special": flag("special", false),
            }),
        );
    }
    Value::Object(out)
}

/// The WordPiece vocabulary as `vocab.txt` (token `i` on line `i`), when ids are exactly
/// `0..n` and no token holds a line break.
fn vocab_txt(doc: &Value) -> Option<String> {
    if doc["model"]["type"] != "WordPiece" {
        return None;
    }
    let vocab = doc["model"]["vocab"].as_object()?;
    let mut lines: Vec<Option<&str>> = vec![None; vocab.len()];
    for (token, id) in vocab {
        let slot = lines.get_mut(usize::try_from(id.as_u64()?).ok()?)?;
        if slot.is_some() || token.contains(['\n', '\r']) {
            return None;
        }
        *slot = Some(token);
    }
    let mut text = String::new();
    for line in lines {
        text.push_str(line?);
        text.push('\n');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::bert_tokenizer::{bert_tokenizer_json, Normalization};

    fn meta(max_len: usize) -> TensorSetMeta {
        TensorSetMeta {
            max_len,
            pad_id: 0,
            cls_id: 2,
            sep_id: 3,
            mask_id: Some(4),
            unk_id: Some(1),
            vocab_size: 9,
            pair: false,
            label_values: vec![],
            label_names: vec![],
            task: crate::task::Task::SingleLabel,
        }
    }

    fn doc(lowercase: bool, strip_accents: Option<bool>) -> Value {
        let tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "영화", "정말", "a", "##b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        bert_tokenizer_json(&tokens, Normalization { lowercase, strip_accents }).unwrap()
    }

    fn files(doc: &Value, max_len: usize) -> TokenizerFiles {
        build(&serde_json::to_vec(doc).unwrap(), Path::new("t.json"), &meta(max_len)).unwrap()
    }

    #[test]
    fn a_cased_bert_tokenizer_gets_its_own_casing_and_the_tensor_sets_max_len() {
        let f = files(&doc(false, Some(false)), 24);
        let c = &f.config;
        assert_eq!(c["tokenizer_class"], BERT_CLASS);
        assert_eq!(c["do_lower_case"], false);
        assert_eq!(c["strip_accents"], false);
        assert_eq!(c["tokenize_chinese_chars"], true);
        assert_eq!(c["model_max_length"], 24);
        assert_eq!(
            (&c["cls_token"], &c["sep_token"], &c["pad_token"]),
            (&json!("[CLS]"), &json!("[SEP]"), &json!("[PAD]"))
        );
        assert_eq!((&c["mask_token"], &c["unk_token"]), (&json!("[MASK]"), &json!("[UNK]")));
        assert_eq!(c["added_tokens_decoder"]["4"]["content"], "[MASK]");
        assert_eq!(c["added_tokens_decoder"]["4"]["special"], true);
        assert_eq!(f.special_tokens_map["unk_token"], "[UNK]");
        assert_eq!(f.vocab_txt.as_deref().unwrap().lines().nth(5), Some("영화"));
        let written: Value = serde_json::from_str(&f.tokenizer_json).unwrap();
        assert_eq!(written["truncation"]["max_length"], 24);
        assert_eq!(written["padding"], Value::Null);
        let tok = Tokenizer::from_bytes(f.tokenizer_json.as_bytes()).unwrap();
        assert_eq!(tok.encode("영화 정말 영화 정말", true).unwrap().get_ids().len(), 4 + 2);
        assert_eq!(tok.encode("영화 ".repeat(40), true).unwrap().get_ids().len(), 24, "truncated to max_len");
    }

    #[test]
    fn an_uncased_tokenizer_keeps_strip_accents_unset() {
        let c = files(&doc(true, None), 64).config;
        assert_eq!(c["do_lower_case"], true);
        assert_eq!(c["strip_accents"], Value::Null);
    }

    #[test]
    fn the_post_processor_is_what_tokenize_did_whatever_the_file_had() {
        let mut d = doc(false, Some(false));
        d["post_processor"] = Value::Null;
        let f = files(&d, 16);
        let tok = Tokenizer::from_bytes(f.tokenizer_json.as_bytes()).unwrap();
        let pair = tok.encode(("영화", "정말"), true).unwrap();
        assert_eq!(pair.get_ids(), &[2, 5, 3, 6, 3]);
        assert_eq!(pair.get_type_ids(), &[0, 0, 0, 1, 1]);
    }

    #[test]
    fn a_tokenizer_bert_tokenizer_cannot_rebuild_gets_the_generic_class() {
        let mut d = doc(false, Some(false));
        let bert = d["normalizer"].clone();
        d["normalizer"] = json!({"type": "Sequence", "normalizers": [{"type": "NFKC"}, bert]});
        let c = files(&d, 16).config;
        assert_eq!(c["tokenizer_class"], GENERIC_CLASS);
        assert!(c.get("do_lower_case").is_none());
        assert_eq!(c["cls_token"], "[CLS]");

        let mut d = doc(false, Some(false));
        d["model"]["max_input_chars_per_word"] = json!(10);
        assert_eq!(files(&d, 16).config["tokenizer_class"], GENERIC_CLASS);
    }

    #[test]
    fn no_pad_token_is_named_when_the_vocabulary_has_none() {
        let tokens: Vec<String> = ["x", "[UNK]", "[CLS]", "[SEP]"].iter().map(|s| s.to_string()).collect();
        let d = bert_tokenizer_json(&tokens, Normalization { lowercase: false, strip_accents: Some(false) }).unwrap();
        let m = TensorSetMeta { mask_id: None, ..meta(8) };
        let f = build(&serde_json::to_vec(&d).unwrap(), Path::new("t.json"), &m).unwrap();
        assert!(f.config.get("pad_token").is_none() && f.config.get("mask_token").is_none());
    }

    #[test]
    fn a_tensor_set_id_outside_the_vocabulary_is_an_input_error_naming_the_file() {
        let m = TensorSetMeta { cls_id: 99, ..meta(8) };
        let e =
            build(&serde_json::to_vec(&doc(false, None)).unwrap(), Path::new("set/tokenizer.json"), &m).unwrap_err();
        assert!(e.to_string().contains("set/tokenizer.json") && e.to_string().contains("cls_id"), "{e}");
    }
}
