//! Turning texts into token ids (without special tokens), in parallel.

use rayon::prelude::{IntoParallelRefIterator, ParallelIterator};
use tokenizers::Tokenizer;

use crate::error::{StepError, StepResult};

/// A tokenizer prepared for bulk encoding: its own truncation and padding settings (a
/// `tokenizer.json` may carry some) are switched off, since the sentence transform does both.
pub struct Encoder {
    tokenizer: Tokenizer,
}

impl Encoder {
    pub fn new(mut tokenizer: Tokenizer) -> StepResult<Self> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| StepError::failed(format!("switching off the tokenizer's truncation: {e}")))?;
        tokenizer.with_padding(None);
        Ok(Encoder { tokenizer })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The ids of one text.
    pub fn encode(&self, text: &str) -> StepResult<Vec<u32>> {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| StepError::failed(format!("tokenizing `{}`: {e}", preview(text))))
    }

    /// The ids of each text, computed on the current rayon pool.
    pub fn encode_all<S: AsRef<str> + Sync>(&self, texts: &[S]) -> StepResult<Vec<Vec<u32>>> {
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }
}

/// The start of a text, for error messages.
pub fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}
