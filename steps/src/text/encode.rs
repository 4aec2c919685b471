//! Turning texts into token ids (without special tokens), in parallel.
//!
//! [`Encoder::encode_all`] calls the tokenizer on every text. [`Encoder::encode_batch`] gives
//! the same ids faster for BERT tokenizers (`BertNormalizer`, `BertPreTokenizer`, `WordPiece`):
//! with them the ids of a text are the ids of its space-separated pieces, one after the other
//! (every normalizer step works character by character, an ASCII space always ends a word and
//! yields no token, and no added token contains a space). Reviews repeat many pieces (NSMC's
//! 1.5 million pieces hold 450,000 distinct ones), so each distinct piece is tokenized once and
//! cached for the rest of the run. New pieces are tokenized in groups (joined by spaces, split
//! back by token offsets), which saves the per-call cost of the tokenizer; for BERT tokenizers
//! without accent stripping, [`super::fast_bert`] tokenizes new pieces without the tokenizer's
//! per-call machinery at all. Other tokenizers fall back to one call per text.

use std::collections::HashMap;
use std::ops::Range;

use rayon::prelude::{IntoParallelIterator, IntoParallelRefIterator, ParallelIterator, ParallelSlice};
use rustc_hash::FxBuildHasher;
use tokenizers::{ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

use super::fast_bert::FastBert;
use crate::error::{StepError, StepResult};

/// New pieces tokenized per call of the tokenizer.
const GROUP: usize = 256;

/// A tokenizer prepared for bulk encoding: its own truncation and padding settings (a
/// `tokenizer.json` may carry some) are switched off, since the sentence transform does both.
pub struct Encoder {
    tokenizer: Tokenizer,
    /// Whether texts may be encoded piece by piece (see the module documentation).
    by_pieces: bool,
    /// Tokenizes new pieces without the tokenizer, when it applies.
    fast: Option<FastBert>,
    /// Piece → its number; piece `n` has the ids `arena[ranges[n]]`.
    cache: HashMap<Box<str>, u32, FxBuildHasher>,
    ranges: Vec<Range<u32>>,
    arena: Vec<u32>,
}

impl Encoder {
    pub fn new(mut tokenizer: Tokenizer) -> StepResult<Self> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| StepError::failed(format!("switching off the tokenizer's truncation: {e}")))?;
        tokenizer.with_padding(None);
        let by_pieces = splits_on_spaces(&tokenizer);
        let fast = if by_pieces { FastBert::new(&tokenizer) } else { None };
        Ok(Encoder { tokenizer, by_pieces, fast, cache: HashMap::default(), ranges: Vec::new(), arena: Vec::new() })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Whether [`Encoder::encode_batch`] takes the piece cache path.
    pub fn uses_piece_cache(&self) -> bool {
        self.by_pieces
    }

    /// Whether new pieces are tokenized by [`FastBert`].
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Switches the [`FastBert`] path off (to compare or measure).
    pub fn without_fast_path(mut self) -> Self {
        self.fast = None;
        self
    }

    /// The ids of one text.
    pub fn encode(&self, text: &str) -> StepResult<Vec<u32>> {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| StepError::failed(format!("tokenizing `{}`: {e}", preview(text))))
    }

    /// The ids of each text, one tokenizer call per text, on the current rayon pool.
    pub fn encode_all<S: AsRef<str> + Sync>(&self, texts: &[S]) -> StepResult<Vec<Vec<u32>>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// The ids of each text (the same as [`Encoder::encode_all`]), on the current rayon pool,
    /// reusing and growing the piece cache.
    pub fn encode_batch<S: AsRef<str> + Sync>(&mut self, texts: &[S]) -> StepResult<Vec<Vec<u32>>> {
        if !self.by_pieces {
            return self.encode_all(texts);
        }
        // Number every piece (new ones after the cached ones) and remember each text's pieces.
        let mut new_pieces: Vec<&str> = Vec::new();
        let mut text_pieces: Vec<u32> = Vec::new();
        let mut text_ends: Vec<usize> = Vec::with_capacity(texts.len());
        for text in texts {
            for piece in pieces(text.as_ref()) {
                let n = match self.cache.get(piece) {
                    Some(&n) => n,
                    None => {
                        let n = (self.ranges.len() + new_pieces.len()) as u32;
                        self.cache.insert(Box::from(piece), n);
                        new_pieces.push(piece);
                        n
                    }
                };
                text_pieces.push(n);
            }
            text_ends.push(text_pieces.len());
        }
        let encoded = match self.encode_new(&new_pieces) {
            Ok(encoded) => encoded,
            Err(e) => {
                let known = self.ranges.len() as u32;
                self.cache.retain(|_, n| *n < known);
                return Err(e);
            }
        };
        for ids in encoded {
            let start = self.arena.len() as u32;
            self.arena.extend_from_slice(&ids);
            self.ranges.push(start..self.arena.len() as u32);
        }
        let (ranges, arena) = (&self.ranges, &self.arena);
        Ok((0..texts.len())
            .into_par_iter()
            .map(|t| {
                let first = if t == 0 { 0 } else { text_ends[t - 1] };
                let mut ids = Vec::new();
                for &n in &text_pieces[first..text_ends[t]] {
                    let r = &ranges[n as usize];
                    ids.extend_from_slice(&arena[r.start as usize..r.end as usize]);
                }
                ids
            })
            .collect())
    }
}

impl Encoder {
    /// The ids of each of `pieces` (none in the cache), on the current rayon pool.
    fn encode_new(&mut self, pieces: &[&str]) -> StepResult<Vec<Vec<u32>>> {
        let tokenizer = &self.tokenizer;
        let Some(fast) = self.fast.as_mut() else {
            let groups: Vec<Vec<Vec<u32>>> =
                pieces.par_chunks(GROUP).map(|group| encode_group(tokenizer, group)).collect::<StepResult<_>>()?;
            return Ok(groups.into_iter().flatten().collect());
        };
        fast.learn_chars(tokenizer, pieces);
        let fast = &*fast;
        let mut out: Vec<Option<Vec<u32>>> = pieces
            .par_chunks(GROUP)
            .flat_map_iter(|group| {
                let (mut word, mut buf) = (String::new(), String::new());
                group.iter().map(move |p| fast.encode_piece(p, &mut word, &mut buf)).collect::<Vec<_>>()
            })
            .collect();
        let left: Vec<usize> = (0..pieces.len()).filter(|&i| out[i].is_none()).collect();
        if !left.is_empty() {
            let left_pieces: Vec<&str> = left.iter().map(|&i| pieces[i]).collect();
            let groups: Vec<Vec<Vec<u32>>> =
                left_pieces.par_chunks(GROUP).map(|group| encode_group(tokenizer, group)).collect::<StepResult<_>>()?;
            for (i, ids) in left.into_iter().zip(groups.into_iter().flatten()) {
                out[i] = Some(ids);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }
}

/// The non-empty pieces of `text` between ASCII spaces.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split(' ').filter(|p| !p.is_empty())
}

/// Whether the ids of a text are the ids of its space-separated pieces concatenated.
fn splits_on_spaces(tokenizer: &Tokenizer) -> bool {
    let bert_normalizer = matches!(tokenizer.get_normalizer(), None | Some(NormalizerWrapper::BertNormalizer(_)));
    let bert_pre_tokenizer = matches!(tokenizer.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_)));
    let wordpiece = matches!(tokenizer.get_model(), ModelWrapper::WordPiece(_));
    let added_without_spaces =
        tokenizer.get_added_tokens_decoder().values().all(|t| !t.content.chars().any(char::is_whitespace));
    bert_normalizer && bert_pre_tokenizer && wordpiece && added_without_spaces
}

/// Tokenizes `group` in one call (pieces joined by spaces) and splits the ids back by offsets.
fn encode_group(tokenizer: &Tokenizer, group: &[&str]) -> StepResult<Vec<Vec<u32>>> {
    let mut joined = String::with_capacity(group.iter().map(|p| p.len() + 1).sum());
    let mut starts = Vec::with_capacity(group.len());
    for piece in group {
        starts.push(joined.len());
        joined.push_str(piece);
        joined.push(' ');
    }
    let encoding = tokenizer.encode(joined.as_str(), false).map_err(|e| {
        StepError::failed(format!("tokenizing `{}`: {e}", preview(group.first().copied().unwrap_or_default())))
    })?;
    let mut out = vec![Vec::new(); group.len()];
    for (&id, &(start, _)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
        let piece = starts.partition_point(|&s| s <= start).saturating_sub(1);
        out[piece].push(id);
    }
    Ok(out)
}

/// The start of a text, for error messages.
pub fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}
