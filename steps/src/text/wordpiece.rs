//! A deterministic WordPiece vocabulary trainer.
//!
//! It follows the algorithm of the `tokenizers` crate's `WordPieceTrainer` (which is its BPE
//! trainer with the `##` continuing-subword prefix): special tokens first, then the alphabet
//! (the `limit_alphabet` most frequent characters, in code point order), then, repeatedly, the
//! most frequent adjacent pair of symbols is merged into a new token until the vocabulary is
//! full or the best pair is rarer than `min_frequency`.
//!
//! The crate's own trainer keeps its words, pairs and alphabet in randomly seeded hash maps, so
//! token ids (and, on ties, which tokens make it into the vocabulary) change from one run to the
//! next. Here every order is fixed: words are visited sorted, alphabet ties keep the smaller code
//! point, pair ties merge the pair of smaller ids. Training twice on the same text gives the same
//! vocabulary with the same ids.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Settings of the trainer.
#[derive(Debug, Clone)]
pub struct TrainerConfig {
    pub vocab_size: usize,
    pub min_frequency: u64,
    /// Keep at most this many distinct characters (the most frequent); `None`: all.
    pub limit_alphabet: Option<usize>,
    pub special_tokens: Vec<String>,
    pub continuing_subword_prefix: String,
}

/// What training produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainedVocab {
    /// Tokens in id order.
    pub tokens: Vec<String>,
    /// Distinct characters seen in the words.
    pub chars_seen: usize,
    /// Characters kept in the alphabet.
    pub alphabet: usize,
    pub merges: usize,
}

type Pair = (u32, u32);

struct Vocab {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocab {
    fn id_or_insert(&mut self, token: String) -> u32 {
        if let Some(&id) = self.ids.get(&token) {
            return id;
        }
        let id = self.tokens.len() as u32;
        self.tokens.push(token.clone());
        self.ids.insert(token, id);
        id
    }
}

/// Trains a vocabulary on `words` (pre-tokenized words with their counts; any order).
pub fn train(words: &[(String, u64)], config: &TrainerConfig) -> TrainedVocab {
    let mut sorted: Vec<&(String, u64)> = words.iter().filter(|(w, c)| !w.is_empty() && *c > 0).collect();
    sorted.sort_unstable_by(|x, y| x.0.cmp(&y.0));

    let mut vocab = Vocab { tokens: Vec::new(), ids: HashMap::new() };
    for special in &config.special_tokens {
        vocab.id_or_insert(special.clone());
    }

    // The alphabet: the most frequent characters, ties to the smaller code point.
    let mut char_counts: HashMap<char, u64> = HashMap::new();
    for (word, count) in &sorted {
        for c in word.chars() {
            *char_counts.entry(c).or_default() += count;
        }
    }
    let chars_seen = char_counts.len();
    let mut alphabet: Vec<(char, u64)> = char_counts.into_iter().collect();
    alphabet.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    if let Some(limit) = config.limit_alphabet {
        alphabet.truncate(limit);
    }
    alphabet.sort_unstable_by_key(|&(c, _)| c);
    let kept: HashMap<char, ()> = alphabet.iter().map(|&(c, _)| (c, ())).collect();
    for &(c, _) in &alphabet {
        vocab.id_or_insert(c.to_string());
    }

    // Words as symbol ids: a character after the first gets the prefix; characters outside
    // the alphabet are left out (as the crate's trainer does).
    let prefix = &config.continuing_subword_prefix;
    let mut symbols: Vec<Vec<u32>> = Vec::with_capacity(sorted.len());
    let mut counts: Vec<i64> = Vec::with_capacity(sorted.len());
    for (word, count) in &sorted {
        let mut ids = Vec::with_capacity(word.len());
        for (i, c) in word.chars().enumerate() {
            if !kept.contains_key(&c) {
                continue;
            }
            let token = if i == 0 { c.to_string() } else { format!("{prefix}{c}") };
            ids.push(vocab.id_or_insert(token));
        }
        symbols.push(ids);
        counts.push(*count as i64);
    }

    // Pair counts and where each pair occurs.
    let mut pair_counts: HashMap<Pair, i64> = HashMap::new();
    let mut positions: HashMap<Pair, Vec<usize>> = HashMap::new();
    for (w, ids) in symbols.iter().enumerate() {
        for p in ids.windows(2) {
            let pair = (p[0], p[1]);
            *pair_counts.entry(pair).or_default() += counts[w];
            let at = positions.entry(pair).or_default();
            if at.last() != Some(&w) {
                at.push(w);
            }
        }
    }
    // Max count first, then the smaller pair (the crate's order).
    let mut queue: BinaryHeap<(i64, Reverse<Pair>)> =
        pair_counts.iter().filter(|(_, &c)| c > 0).map(|(&p, &c)| (c, Reverse(p))).collect();

    let mut merges = 0;
    let mut changes: Vec<(Pair, i64)> = Vec::new();
    let mut touched: Vec<Pair> = Vec::new();
    while vocab.tokens.len() < config.vocab_size {
        let Some((count, Reverse(pair))) = queue.pop() else { break };
        let current = pair_counts.get(&pair).copied().unwrap_or(0);
        if count != current {
            if current > 0 {
                queue.push((current, Reverse(pair)));
            }
            continue;
        }
        if count < 1 || (count as u64) < config.min_frequency {
            break;
        }
        let left = &vocab.tokens[pair.0 as usize];
        let right = &vocab.tokens[pair.1 as usize];
        let right = right.strip_prefix(prefix.as_str()).unwrap_or(right);
        let new_id = vocab.id_or_insert(format!("{left}{right}"));
        merges += 1;

        let mut at = positions.remove(&pair).unwrap_or_default();
        at.sort_unstable();
        at.dedup();
        touched.clear();
        for w in at {
            changes.clear();
            if !merge_word(&mut symbols[w], pair, new_id, &mut changes) {
                continue;
            }
            for &(p, delta) in &changes {
                *pair_counts.entry(p).or_default() += delta * counts[w];
                if delta > 0 {
                    positions.entry(p).or_default().push(w);
                    touched.push(p);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for p in &touched {
            let c = pair_counts.get(p).copied().unwrap_or(0);
            if c > 0 {
                queue.push((c, Reverse(*p)));
            }
        }
    }
    TrainedVocab { tokens: vocab.tokens, chars_seen, alphabet: alphabet.len(), merges }
}

/// Merges every occurrence of `pair` (left to right) in `word` into `new_id`, writing the net
/// change of each adjacent pair's count into `changes`. False when the word has no occurrence.
fn merge_word(word: &mut Vec<u32>, pair: Pair, new_id: u32, changes: &mut Vec<(Pair, i64)>) -> bool {
    let mut merged = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && word[i] == pair.0 && word[i + 1] == pair.1 {
            merged.push(new_id);
            i += 2;
        } else {
            merged.push(word[i]);
            i += 1;
        }
    }
    if merged.len() == word.len() {
        return false;
    }
    let mut raw: Vec<(Pair, i64)> = Vec::with_capacity(word.len() + merged.len());
    raw.extend(word.windows(2).map(|p| ((p[0], p[1]), -1)));
    raw.extend(merged.windows(2).map(|p| ((p[0], p[1]), 1)));
    raw.sort_unstable_by_key(|&(p, _)| p);
    for (p, d) in raw {
        match changes.last_mut() {
            Some((last, sum)) if *last == p => *sum += d,
            _ => changes.push((p, d)),
        }
    }
    changes.retain(|&(_, d)| d != 0);
    *word = merged;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vocab_size: usize) -> TrainerConfig {
        TrainerConfig {
            vocab_size,
            min_frequency: 1,
            limit_alphabet: None,
            special_tokens: vec!["[PAD]".into(), "[UNK]".into()],
            continuing_subword_prefix: "##".into(),
        }
    }

    #[test]
    fn merges_the_most_frequent_pairs_first() {
        let words = vec![("hug".to_string(), 10), ("pug".to_string(), 5), ("hugs".to_string(), 5)];
        let v = train(&words, &config(100));
        assert_eq!(&v.tokens[..2], &["[PAD]", "[UNK]"]);
        // alphabet in code point order, then continuing pieces in word order
        assert_eq!(&v.tokens[2..7], &["g", "h", "p", "s", "u"]);
        assert!(v.tokens.contains(&"##ug".to_string()));
        assert!(v.tokens.contains(&"hug".to_string()));
        assert!(v.tokens.contains(&"hugs".to_string()));
        assert_eq!(v.tokens, train(&words, &config(100)).tokens);
    }

    #[test]
    fn overlapping_pairs_are_counted_once_per_merge() {
        let mut w = vec![1, 1, 1];
        let mut changes = Vec::new();
        assert!(merge_word(&mut w, (1, 1), 9, &mut changes));
        assert_eq!(w, vec![9, 1]);
        assert_eq!(changes, vec![((1, 1), -2), ((9, 1), 1)]);
    }

    #[test]
    fn limit_alphabet_keeps_the_most_frequent_characters() {
        let words = vec![("ab".to_string(), 3), ("c".to_string(), 1)];
        let mut c = config(100);
        c.limit_alphabet = Some(2);
        let v = train(&words, &c);
        assert!(!v.tokens.contains(&"c".to_string()));
        assert_eq!(v.alphabet, 2);
        assert_eq!(v.chars_seen, 3);
    }
}
