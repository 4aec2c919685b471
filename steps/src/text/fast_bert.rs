//! BERT tokenization of space-free pieces without the tokenizer's per-call machinery.
//!
//! `BertNormalizer` (without accent stripping) and `BertPreTokenizer` act on each character
//! alone: a character is dropped or rewritten (control characters, whitespace, lower-casing)
//! and either joins the word around it or ends it (whitespace; punctuation and CJK ideographs,
//! which become words of their own). So each distinct character is put through the real
//! normalizer and pre-tokenizer once, between two `a`s, and its behaviour is remembered; words
//! are then built from those behaviours and split by the same greedy longest-match-first
//! WordPiece as the `tokenizers` crate. A character whose behaviour does not fit this picture,
//! or a piece holding an added token (`[CLS]`...), is left to the tokenizer itself.
//!
//! [`super::encode`] checks the result against the tokenizer on all of NSMC in its tests.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;
use tokenizers::{
    ModelWrapper, NormalizedString, Normalizer, NormalizerWrapper, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

/// What one character does to the text around it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CharClass {
    /// Joins the current word as this text (empty when the normalizer drops it).
    Join(String),
    /// Ends the current word and adds these words (none for whitespace).
    Break(Vec<String>),
    /// Anything else: the piece goes to the tokenizer.
    Other,
}

/// The tables of the fast path for one tokenizer.
pub struct FastBert {
    vocab: HashMap<Box<str>, u32, FxBuildHasher>,
    unk_id: u32,
    prefix: String,
    max_chars: usize,
    added: Vec<String>,
    /// Class index of each BMP character (`u32::MAX`: not seen yet).
    bmp: Vec<u32>,
    other_planes: HashMap<char, u32, FxBuildHasher>,
    classes: Vec<CharClass>,
}

impl FastBert {
    /// The fast path for `tokenizer`, when it is a BERT tokenizer it applies to.
    pub fn new(tokenizer: &Tokenizer) -> Option<FastBert> {
        match tokenizer.get_normalizer() {
            None => {}
            Some(NormalizerWrapper::BertNormalizer(n)) if !n.strip_accents.unwrap_or(n.lowercase) => {}
            Some(_) => return None,
        }
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else { return None };
        let added_tokens = tokenizer.get_added_tokens_decoder();
        if added_tokens.values().any(|t| t.normalized || t.content.is_empty()) {
            return None;
        }
        let vocab: HashMap<Box<str>, u32, FxBuildHasher> =
            tokenizers::Model::get_vocab(model).into_iter().map(|(k, v)| (k.into_boxed_str(), v)).collect();
        let unk_id = *vocab.get(model.unk_token.as_str())?;
        Some(FastBert {
            vocab,
            unk_id,
            prefix: model.continuing_subword_prefix.clone(),
            max_chars: model.max_input_chars_per_word,
            added: added_tokens.into_values().map(|t| t.content).collect(),
            bmp: vec![u32::MAX; 0x10000],
            other_planes: HashMap::default(),
            classes: Vec::new(),
        })
    }

    fn class_index(&self, c: char) -> Option<u32> {
        let code = c as usize;
        if code < 0x10000 {
            Some(self.bmp[code]).filter(|&i| i != u32::MAX)
        } else {
            self.other_planes.get(&c).copied()
        }
    }

    /// Learns the behaviour of every character of `pieces` not seen yet.
    pub fn learn_chars(&mut self, tokenizer: &Tokenizer, pieces: &[&str]) {
        for piece in pieces {
            for c in piece.chars() {
                if self.class_index(c).is_none() {
                    let index = self.classes.len() as u32;
                    self.classes.push(classify(tokenizer, c));
                    if (c as usize) < 0x10000 {
                        self.bmp[c as usize] = index;
                    } else {
                        self.other_planes.insert(c, index);
                    }
                }
            }
        }
    }

    /// The ids of a piece whose characters were learnt, or `None` when the tokenizer must do it.
    pub fn encode_piece(&self, piece: &str, word: &mut String, buf: &mut String) -> Option<Vec<u32>> {
        if self.added.iter().any(|t| piece.contains(t.as_str())) {
            return None;
        }
        let mut ids = Vec::new();
        word.clear();
        for c in piece.chars() {
            match &self.classes[self.class_index(c)? as usize] {
                CharClass::Join(s) => word.push_str(s),
                CharClass::Break(words) => {
                    self.wordpiece(word, &mut ids, buf);
                    word.clear();
                    for w in words {
                        self.wordpiece(w, &mut ids, buf);
                    }
                }
                CharClass::Other => return None,
            }
        }
        self.wordpiece(word, &mut ids, buf);
        Some(ids)
    }

    /// Greedy longest-match-first WordPiece, as `tokenizers::models::wordpiece::WordPiece`.
    fn wordpiece(&self, word: &str, out: &mut Vec<u32>, buf: &mut String) {
        if word.is_empty() {
            return;
        }
        if word.chars().count() > self.max_chars {
            out.push(self.unk_id);
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                let sub = &word[start..end];
                let id = if start > 0 {
                    buf.clear();
                    buf.push_str(&self.prefix);
                    buf.push_str(sub);
                    self.vocab.get(buf.as_str())
                } else {
                    self.vocab.get(sub)
                };
                if let Some(&id) = id {
                    found = Some(id);
                    break;
                }
                end -= sub.chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk_id);
                    return;
                }
            }
        }
    }
}

/// What the tokenizer's normalizer and pre-tokenizer do with `c` between two `a`s.
fn classify(tokenizer: &Tokenizer, c: char) -> CharClass {
    let text = format!("a{c}a");
    let mut normalized = NormalizedString::from(text.as_str());
    if let Some(n) = tokenizer.get_normalizer() {
        if n.normalize(&mut normalized).is_err() {
            return CharClass::Other;
        }
    }
    let mut pre = PreTokenizedString::from(normalized);
    if let Some(p) = tokenizer.get_pre_tokenizer() {
        if p.pre_tokenize(&mut pre).is_err() {
            return CharClass::Other;
        }
    }
    let splits: Vec<&str> =
        pre.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(s, _, _)| s).collect();
    match splits.as_slice() {
        [one] if one.len() >= 2 && one.starts_with('a') && one.ends_with('a') => {
            let inner = &one[1..one.len() - 1];
            if inner.chars().any(char::is_whitespace) {
                CharClass::Other
            } else {
                CharClass::Join(inner.to_string())
            }
        }
        [first, middle @ .., last] if *first == "a" && *last == "a" => {
            if middle.iter().any(|w| w.is_empty() || w.chars().any(char::is_whitespace)) {
                CharClass::Other
            } else {
                CharClass::Break(middle.iter().map(|w| w.to_string()).collect())
            }
        }
        _ => CharClass::Other,
    }
}
