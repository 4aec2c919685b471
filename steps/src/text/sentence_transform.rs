//! GluonNLP's `BERTSentenceTransform` on token ids, as a pure function.
//!
//! Given the ids of text `a` (and optionally `b`) encoded *without* special tokens:
//!
//! - singles become `[CLS] a [SEP]`, with `a` cut to `max_len - 2` tokens;
//! - pairs become `[CLS] a [SEP] b [SEP]`, truncated longest-first to `max_len - 3` tokens:
//!   a token is removed from the longer side until the pair fits, from `b` when both are as
//!   long (GluonNLP's `_truncate_seq_pair`);
//! - token types are 0 for `[CLS]`, `a` and its `[SEP]`, 1 for `b` and the last `[SEP]`;
//! - `valid_length` is the number of real tokens; with `pad` the row is filled to `max_len`
//!   with the pad id (type 0).
//!
//! Hugging Face's `longest_first` truncation differs in one case: when both sides must be cut,
//! the budget is odd and `a` is not longer than `b`, it gives the extra token to `b` where
//! GluonNLP gives it to `a`. This module follows GluonNLP.

use crate::error::{StepError, StepResult};

/// The settings of the transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentenceTransform {
    pub max_len: usize,
    pub pad: bool,
    pub pair: bool,
    pub cls_id: u32,
    pub sep_id: u32,
    pub pad_id: u32,
}

/// What the transform did to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowInfo {
    pub valid_length: u32,
    /// Whether tokens were cut to fit `max_len`.
    pub truncated: bool,
}

impl SentenceTransform {
    /// Checks that `max_len` leaves room for the special tokens (2 for singles, 3 for pairs).
    pub fn new(max_len: usize, pad: bool, pair: bool, cls_id: u32, sep_id: u32, pad_id: u32) -> StepResult<Self> {
        let least = if pair { 3 } else { 2 };
        if max_len < least {
            let what = if pair { "pairs need [CLS] a [SEP] b [SEP]" } else { "[CLS] and [SEP] take 2" };
            return Err(StepError::param("max_len", format!("must be at least {least} ({what}), got {max_len}")));
        }
        if max_len > u32::MAX as usize {
            return Err(StepError::param("max_len", format!("is too large: {max_len}")));
        }
        Ok(SentenceTransform { max_len, pad, pair, cls_id, sep_id, pad_id })
    }

    /// Appends one transformed row to `ids` and `types`.
    ///
    /// `b` must be given exactly when the transform is for pairs.
    pub fn apply_into(&self, a: &[u32], b: Option<&[u32]>, ids: &mut Vec<u32>, types: &mut Vec<u8>) -> RowInfo {
        let start = ids.len();
        let truncated;
        ids.push(self.cls_id);
        match b {
            Some(b) => {
                let (keep_a, keep_b) = truncate_pair(a.len(), b.len(), self.max_len - 3);
                truncated = keep_a < a.len() || keep_b < b.len();
                ids.extend_from_slice(&a[..keep_a]);
                ids.push(self.sep_id);
                types.resize(types.len() + keep_a + 2, 0);
                ids.extend_from_slice(&b[..keep_b]);
                ids.push(self.sep_id);
                types.resize(types.len() + keep_b + 1, 1);
            }
            None => {
                let keep_a = a.len().min(self.max_len - 2);
                truncated = keep_a < a.len();
                ids.extend_from_slice(&a[..keep_a]);
                ids.push(self.sep_id);
                types.resize(types.len() + keep_a + 2, 0);
            }
        }
        let valid_length = ids.len() - start;
        if self.pad && valid_length < self.max_len {
            ids.resize(start + self.max_len, self.pad_id);
            types.resize(start + self.max_len, 0);
        }
        RowInfo { valid_length: valid_length as u32, truncated }
    }

    /// One transformed row: `(input_ids, token_type_ids, info)`.
    pub fn apply(&self, a: &[u32], b: Option<&[u32]>) -> (Vec<u32>, Vec<u8>, RowInfo) {
        let mut ids = Vec::with_capacity(self.max_len);
        let mut types = Vec::with_capacity(self.max_len);
        let info = self.apply_into(a, b, &mut ids, &mut types);
        (ids, types, info)
    }
}

/// How many tokens of `a` and `b` GluonNLP's longest-first truncation keeps so that together
/// they fit `budget`: pop from the longer side, from `b` on ties.
pub fn truncate_pair(len_a: usize, len_b: usize, budget: usize) -> (usize, usize) {
    if len_a + len_b <= budget {
        return (len_a, len_b);
    }
    let short = len_a.min(len_b);
    if budget >= 2 * short {
        // Only the longer side is cut, down to what the shorter one leaves.
        return if len_a > len_b { (budget - short, short) } else { (short, budget - short) };
    }
    // Both are cut down to equal lengths, then alternately; the tie pops from `b` first.
    (budget.div_ceil(2), budget / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(mut a: usize, mut b: usize, budget: usize) -> (usize, usize) {
        while a + b > budget {
            if a > b {
                a -= 1;
            } else {
                b -= 1;
            }
        }
        (a, b)
    }

    #[test]
    fn closed_form_truncation_matches_the_gluonnlp_loop() {
        for a in 0..30 {
            for b in 0..30 {
                for budget in 0..40 {
                    assert_eq!(truncate_pair(a, b, budget), reference(a, b, budget), "a={a} b={b} budget={budget}");
                }
            }
        }
    }

    #[test]
    fn pair_layout_types_and_padding() {
        let t = SentenceTransform::new(10, true, true, 101, 102, 0).unwrap();
        let (ids, types, info) = t.apply(&[1, 2], Some(&[3]));
        assert_eq!(ids, vec![101, 1, 2, 102, 3, 102, 0, 0, 0, 0]);
        assert_eq!(types, vec![0, 0, 0, 0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(info, RowInfo { valid_length: 6, truncated: false });
    }

    #[test]
    fn too_small_max_len_is_a_param_error() {
        assert!(SentenceTransform::new(2, false, true, 1, 2, 0).is_err());
        assert!(SentenceTransform::new(1, false, false, 1, 2, 0).is_err());
        assert!(SentenceTransform::new(2, false, false, 1, 2, 0).is_ok());
    }
}
