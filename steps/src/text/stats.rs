//! `stats.json` of a tokenized table: what came through, what was dropped and why, how long
//! rows are and how often the tokenizer fell back to `[UNK]`.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counters filled while tokenizing.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TokenizeStats {
    /// Rows written.
    pub rows: usize,
    /// Rows left out, by reason (`empty`, `malformed`, `bad_label`).
    pub dropped: BTreeMap<String, usize>,
    /// Rows cut to fit `max_len`.
    pub truncated: usize,
    /// Valid length (special tokens included) → number of rows.
    pub length_histogram: BTreeMap<u32, usize>,
    /// Share of text tokens (before truncation, special tokens excluded) that are `[UNK]`.
    pub unk_rate: f64,
    /// Rows with at least one `[UNK]`.
    pub rows_with_unk: usize,
    /// Mean text tokens per row before truncation (special tokens excluded).
    pub mean_tokens: f64,
    /// Mean valid length after the transform (special tokens included).
    pub mean_valid_length: f64,
    /// Longest row before truncation, in text tokens.
    pub max_tokens: usize,
    #[serde(skip)]
    text_tokens: u64,
    #[serde(skip)]
    unk_tokens: u64,
    #[serde(skip)]
    valid_tokens: u64,
}

impl TokenizeStats {
    pub fn drop_row(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_string()).or_default() += 1;
    }

    pub fn add_dropped(&mut self, reason: &str, n: usize) {
        if n > 0 {
            *self.dropped.entry(reason.to_string()).or_default() += n;
        }
    }

    /// Records one written row: its text tokens before truncation and what the transform made.
    pub fn add_row(&mut self, text_tokens: usize, unk_tokens: usize, valid_length: u32, truncated: bool) {
        self.rows += 1;
        self.text_tokens += text_tokens as u64;
        self.unk_tokens += unk_tokens as u64;
        self.valid_tokens += u64::from(valid_length);
        self.max_tokens = self.max_tokens.max(text_tokens);
        if unk_tokens > 0 {
            self.rows_with_unk += 1;
        }
        if truncated {
            self.truncated += 1;
        }
        *self.length_histogram.entry(valid_length).or_default() += 1;
    }

    /// Computes the rates and means from the counters.
    pub fn finish(&mut self) {
        let rows = self.rows.max(1) as f64;
        self.unk_rate = if self.text_tokens == 0 { 0.0 } else { self.unk_tokens as f64 / self.text_tokens as f64 };
        self.mean_tokens = self.text_tokens as f64 / rows;
        self.mean_valid_length = self.valid_tokens as f64 / rows;
    }
}
