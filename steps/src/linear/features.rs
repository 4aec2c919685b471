//! TF-IDF features of texts, as scikit-learn's `TfidfVectorizer` computes them: word n-grams
//! and character n-grams in two blocks, each with its own vocabulary fit on the training texts
//! only, each row of each block L2-normalised (sklearn's `hstack` of two vectorizers, or a
//! `FeatureUnion`). Terms of other texts that are not in the training vocabulary are dropped.
//!
//! What is matched, and how:
//! - Preprocessing: optional lowercasing (`str::to_lowercase`, Python's `str.lower`); no accent
//!   stripping.
//! - Words: sklearn's default `token_pattern` `(?u)\b\w\w+\b`, i.e. maximal runs of two or more
//!   word characters, where Python's `\w` is a letter or number (`str.isalnum`: Unicode
//!   categories L and N) or `_`: here the regex `[\p{L}\p{N}_]{2,}`. (Not `char::is_alphanumeric`,
//!   which also takes marks and symbols Unicode calls alphabetic, such as the circled letters a
//!   few NSMC reviews contain, and Indic vowel signs.) N-grams join tokens with one space
//!   (`ngram_range=(1, n)`).
//! - Characters: `analyzer='char'` (runs of two or more whitespace characters become one space,
//!   then every n-gram of the text, spaces included) or `analyzer='char_wb'` (n-grams inside
//!   each whitespace-separated word padded with one space on each side, sklearn's loop exactly).
//!   Whitespace is Python's (`str.isspace`): Unicode `White_Space` and U+001C..U+001F.
//! - Unicode tables are Rust's and the regex crate's, Python's its own version: characters new
//!   in one version may differ.
//! - Weights: term counts (or `1 + ln(count)` with `sublinear_tf`) times the smooth idf
//!   `ln((1 + n) / (1 + df)) + 1`, then the row's L2 norm is 1 (empty rows stay zero).
//! - `min_df` drops terms in fewer training documents; `max_features` keeps the most frequent
//!   terms of a block (by count over the corpus, as sklearn; ties by first occurrence where
//!   sklearn breaks them alphabetically).
//!
//! Column order is the order of first occurrence in the training texts (sklearn sorts terms
//! alphabetically); it changes no result beyond the last bits of float sums.

use std::sync::OnceLock;

use rayon::prelude::*;
use regex::Regex;
use rustc_hash::FxHashMap;

use super::sparse::Csr;

/// How character n-grams are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharAnalyzer {
    /// Over the whole (whitespace-normalised) text, sklearn's `analyzer='char'`.
    Char,
    /// Within words padded with spaces, sklearn's `analyzer='char_wb'`.
    CharWb,
}

/// The vectorizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureOptions {
    pub lowercase: bool,
    /// Word n-grams of 1 to this many words (0: no word block).
    pub word_ngrams: usize,
    /// Character n-grams of `char_min` to `char_max` characters (`char_max` 0: no char block).
    pub char_min: usize,
    pub char_max: usize,
    pub char_analyzer: CharAnalyzer,
    pub min_df: usize,
    /// Per block.
    pub max_features: Option<usize>,
    pub sublinear_tf: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Words(usize),
    Chars(usize, usize, CharAnalyzer),
}

/// sklearn's default `token_pattern` in Rust's regex syntax (see the module documentation).
fn token_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| Regex::new(r"[\p{L}\p{N}_]{2,}").expect("a valid pattern"))
}

/// Python's `str.isspace` (and so `\s` and `str.split()`).
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()`: runs of whitespace separate, none at either end.
fn split_whitespace(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_space).filter(|w| !w.is_empty())
}

/// Reusable buffers for generating the terms of one text.
#[derive(Default)]
struct Scratch {
    text: String,
    offsets: Vec<usize>,
    tokens: Vec<(usize, usize)>,
    joined: String,
}

impl Kind {
    /// Calls `emit` with every term of `text` (already lowercased if asked), repeats included.
    fn terms(&self, text: &str, s: &mut Scratch, emit: &mut dyn FnMut(&str)) {
        match *self {
            Kind::Words(max_n) => {
                s.tokens.clear();
                s.tokens.extend(token_pattern().find_iter(text).map(|m| (m.start(), m.end())));
                let tokens = &s.tokens;
                for n in 1..=max_n.min(tokens.len()) {
                    for w in tokens.windows(n) {
                        if n == 1 {
                            emit(&text[w[0].0..w[0].1]);
                        } else {
                            s.joined.clear();
                            for (k, &(a, b)) in w.iter().enumerate() {
                                if k > 0 {
                                    s.joined.push(' ');
                                }
                                s.joined.push_str(&text[a..b]);
                            }
                            emit(&s.joined);
                        }
                    }
                }
            }
            Kind::Chars(min_n, max_n, CharAnalyzer::Char) => {
                // sklearn: `re.sub(r"\s\s+", " ", text)` (a lone whitespace character stays).
                s.text.clear();
                let mut chars = text.chars().peekable();
                while let Some(c) = chars.next() {
                    if is_space(c) && chars.peek().is_some_and(|&n| is_space(n)) {
                        while chars.peek().is_some_and(|&n| is_space(n)) {
                            chars.next();
                        }
                        s.text.push(' ');
                    } else {
                        s.text.push(c);
                    }
                }
                s.offsets.clear();
                s.offsets.extend(s.text.char_indices().map(|(i, _)| i));
                s.offsets.push(s.text.len());
                let len = s.offsets.len() - 1;
                for n in min_n.max(1)..=max_n.min(len) {
                    for i in 0..=len - n {
                        emit(&s.text[s.offsets[i]..s.offsets[i + n]]);
                    }
                }
            }
            Kind::Chars(min_n, max_n, CharAnalyzer::CharWb) => {
                for word in split_whitespace(text) {
                    s.text.clear();
                    s.text.push(' ');
                    s.text.push_str(word);
                    s.text.push(' ');
                    s.offsets.clear();
                    s.offsets.extend(s.text.char_indices().map(|(i, _)| i));
                    s.offsets.push(s.text.len());
                    let len = s.offsets.len() - 1;
                    // sklearn's loop, short words (fewer characters than n) counted once.
                    for n in min_n.max(1)..=max_n {
                        let mut offset = 0;
                        emit(&s.text[..s.offsets[n.min(len)]]);
                        while offset + n < len {
                            offset += 1;
                            emit(&s.text[s.offsets[offset]..s.offsets[offset + n]]);
                        }
                        if offset == 0 {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// One block's vocabulary: term → provisional id (first occurrence) → column, and the idf of
/// each column.
struct Block {
    kind: Kind,
    index: FxHashMap<Box<str>, u32>,
    /// Provisional id → column, `u32::MAX` for terms `min_df`/`max_features` dropped.
    column: Vec<u32>,
    idf: Vec<f32>,
}

/// Counts of one text: `(id, count)` with distinct ids, in any order.
type Counts = Vec<(u32, u32)>;

fn count(ids: &mut [u32]) -> Counts {
    ids.sort_unstable();
    let mut out: Counts = Vec::new();
    for &id in ids.iter() {
        match out.last_mut() {
            Some((last, n)) if *last == id => *n += 1,
            _ => out.push((id, 1)),
        }
    }
    out
}

impl Block {
    /// Fits the vocabulary on `texts`; returns it with each text's counts (in provisional ids).
    fn fit(kind: Kind, texts: &[String], options: &FeatureOptions) -> (Block, Vec<Counts>) {
        let mut index: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut df: Vec<u32> = Vec::new();
        let mut total: Vec<u64> = Vec::new();
        let mut scratch = Scratch::default();
        let mut ids: Vec<u32> = Vec::new();
        let mut all = Vec::with_capacity(texts.len());
        for text in texts {
            ids.clear();
            kind.terms(text, &mut scratch, &mut |term| {
                let id = match index.get(term) {
                    Some(&id) => id,
                    None => {
                        let id = index.len() as u32;
                        index.insert(term.into(), id);
                        df.push(0);
                        total.push(0);
                        id
                    }
                };
                ids.push(id);
            });
            let counts = count(&mut ids);
            for &(id, n) in &counts {
                df[id as usize] += 1;
                total[id as usize] += u64::from(n);
            }
            all.push(counts);
        }
        let mut kept: Vec<u32> =
            (0..df.len() as u32).filter(|&id| df[id as usize] as usize >= options.min_df).collect();
        if let Some(max) = options.max_features {
            if kept.len() > max {
                let mut by_count = kept.clone();
                by_count.sort_by_key(|&id| (std::cmp::Reverse(total[id as usize]), id));
                by_count.truncate(max);
                by_count.sort_unstable();
                kept = by_count;
            }
        }
        let mut column = vec![u32::MAX; df.len()];
        let n = texts.len() as f64;
        let mut idf = Vec::with_capacity(kept.len());
        for (col, &id) in kept.iter().enumerate() {
            column[id as usize] = col as u32;
            idf.push((((1.0 + n) / (1.0 + f64::from(df[id as usize]))).ln() + 1.0) as f32);
        }
        (Block { kind, index, column, idf }, all)
    }

    fn columns(&self) -> usize {
        self.idf.len()
    }

    /// The counts of `text` in columns (terms outside the vocabulary dropped).
    fn counts(&self, text: &str, scratch: &mut Scratch) -> Counts {
        let mut ids = Vec::new();
        self.kind.terms(text, scratch, &mut |term| {
            if let Some(&id) = self.index.get(term) {
                let col = self.column[id as usize];
                if col != u32::MAX {
                    ids.push(col);
                }
            }
        });
        count(&mut ids)
    }

    /// The TF-IDF entries of a text's column counts, L2-normalised, columns offset by `offset`.
    fn weights(&self, counts: &Counts, sublinear: bool, offset: u32, out: &mut Vec<(u32, f32)>) {
        let start = out.len();
        let mut sq = 0.0f64;
        for &(col, n) in counts {
            let tf = if sublinear { 1.0 + f64::from(n).ln() } else { f64::from(n) };
            let v = tf * f64::from(self.idf[col as usize]);
            sq += v * v;
            out.push((col + offset, v as f32));
        }
        if sq > 0.0 {
            let inv = 1.0 / sq.sqrt();
            for e in &mut out[start..] {
                e.1 = (f64::from(e.1) * inv) as f32;
            }
        }
    }
}

/// A fitted vectorizer: the word block's columns, then the char block's.
pub struct Vectorizer {
    blocks: Vec<Block>,
    options: FeatureOptions,
}

/// Texts per parallel task when transforming.
const TEXTS_PER_TASK: usize = 512;

impl Vectorizer {
    /// Fits the vocabularies on `texts` and returns the vectorizer with the texts' features.
    /// The blocks fit in parallel.
    pub fn fit_transform(texts: &[String], options: &FeatureOptions) -> (Vectorizer, Csr) {
        let prepared = prepare(texts, options);
        let mut kinds = Vec::new();
        if options.word_ngrams > 0 {
            kinds.push(Kind::Words(options.word_ngrams));
        }
        if options.char_max > 0 {
            kinds.push(Kind::Chars(options.char_min, options.char_max, options.char_analyzer));
        }
        let fitted: Vec<(Block, Vec<Counts>)> =
            kinds.into_par_iter().map(|k| Block::fit(k, &prepared, options)).collect();
        let (blocks, counts): (Vec<Block>, Vec<Vec<Counts>>) = fitted.into_iter().unzip();
        let vectorizer = Vectorizer { blocks, options: *options };
        // Provisional ids → columns, then weights.
        let rows = build_rows(texts.len(), |i, entries| {
            let mut offset = 0;
            for (block, counts) in vectorizer.blocks.iter().zip(&counts) {
                let cols: Counts = counts[i]
                    .iter()
                    .filter_map(|&(id, n)| {
                        let c = block.column[id as usize];
                        (c != u32::MAX).then_some((c, n))
                    })
                    .collect();
                block.weights(&cols, options.sublinear_tf, offset, entries);
                offset += block.columns() as u32;
            }
        });
        let x = assemble(vectorizer.columns(), rows);
        (vectorizer, x)
    }

    /// The features of other texts with the training vocabulary (unknown terms dropped).
    pub fn transform(&self, texts: &[String]) -> Csr {
        let prepared = prepare(texts, &self.options);
        let rows = build_rows(texts.len(), |i, entries| {
            let mut scratch = Scratch::default();
            let mut offset = 0;
            for block in &self.blocks {
                let counts = block.counts(&prepared[i], &mut scratch);
                block.weights(&counts, self.options.sublinear_tf, offset, entries);
                offset += block.columns() as u32;
            }
        });
        assemble(self.columns(), rows)
    }

    /// Columns in all: the word block's then the char block's.
    pub fn columns(&self) -> usize {
        self.blocks.iter().map(Block::columns).sum()
    }

    /// Columns of each block, word block first (absent blocks left out).
    pub fn block_columns(&self) -> Vec<(&'static str, usize)> {
        self.blocks
            .iter()
            .map(|b| (if matches!(b.kind, Kind::Words(_)) { "word" } else { "char" }, b.columns()))
            .collect()
    }
}

/// The texts after preprocessing (lowercasing).
fn prepare(texts: &[String], options: &FeatureOptions) -> Vec<String> {
    texts.par_iter().map(|t| if options.lowercase { t.to_lowercase() } else { t.clone() }).collect()
}

/// Each row's entries, built in parallel tasks of fixed size, in row order.
fn build_rows(n: usize, row: impl Fn(usize, &mut Vec<(u32, f32)>) + Sync) -> Vec<Vec<Vec<(u32, f32)>>> {
    (0..n.div_ceil(TEXTS_PER_TASK))
        .into_par_iter()
        .map(|task| {
            (task * TEXTS_PER_TASK..((task + 1) * TEXTS_PER_TASK).min(n))
                .map(|i| {
                    let mut entries = Vec::new();
                    row(i, &mut entries);
                    entries
                })
                .collect()
        })
        .collect()
}

fn assemble(cols: usize, tasks: Vec<Vec<Vec<(u32, f32)>>>) -> Csr {
    let mut x = Csr::new(cols);
    for mut row in tasks.into_iter().flatten() {
        x.push_row(&mut row);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(kind: Kind, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        kind.terms(text, &mut Scratch::default(), &mut |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn words_follow_sklearns_token_pattern() {
        // `(?u)\b\w\w+\b`: one-character words are not tokens; punctuation separates.
        assert_eq!(terms(Kind::Words(1), "a bc, d_e! 영화가 x"), ["bc", "d_e", "영화가"]);
        assert_eq!(terms(Kind::Words(2), "ab cd ef"), ["ab", "cd", "ef", "ab cd", "cd ef"]);
        assert_eq!(terms(Kind::Words(3), "ab"), ["ab"]);
        assert!(terms(Kind::Words(2), "").is_empty());
        // Circled letters are alphabetic to Unicode but not word characters to Python.
        assert_eq!(terms(Kind::Words(1), "ⓒab xⓞy"), ["ab"]);
    }

    #[test]
    fn chars_follow_sklearns_char_analyzer() {
        // Whitespace runs become one space; a lone tab stays.
        assert_eq!(terms(Kind::Chars(1, 2, CharAnalyzer::Char), "ab  c"), ["a", "b", " ", "c", "ab", "b ", " c"]);
        assert_eq!(terms(Kind::Chars(2, 2, CharAnalyzer::Char), "a\tb"), ["a\t", "\tb"]);
        // U+001F is whitespace to Python.
        assert_eq!(terms(Kind::Chars(1, 1, CharAnalyzer::Char), "a\u{1f}\u{1f}b"), ["a", " ", "b"]);
        assert_eq!(terms(Kind::Chars(1, 3, CharAnalyzer::Char), "영화"), ["영", "화", "영화"]);
    }

    #[test]
    fn char_wb_follows_sklearns_loop() {
        // sklearn 1.9.1: TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3)).build_analyzer()("ab c")
        assert_eq!(
            terms(Kind::Chars(1, 3, CharAnalyzer::CharWb), "ab c"),
            [" ", "a", "b", " ", " a", "ab", "b ", " ab", "ab ", " ", "c", " ", " c", "c ", " c "]
        );
        // A word shorter than n is counted once.
        assert_eq!(terms(Kind::Chars(4, 5, CharAnalyzer::CharWb), "a"), [" a "]);
        assert_eq!(terms(Kind::Chars(3, 3, CharAnalyzer::CharWb), "\u{1c}a\u{3000}"), [" a "]);
    }

    fn options() -> FeatureOptions {
        FeatureOptions {
            lowercase: true,
            word_ngrams: 1,
            char_min: 1,
            char_max: 0,
            char_analyzer: CharAnalyzer::Char,
            min_df: 1,
            max_features: None,
            sublinear_tf: false,
        }
    }

    #[test]
    fn tfidf_matches_sklearn_and_drops_unknown_terms() {
        let train: Vec<String> = ["ab ab cd", "cd ef", "AB"].iter().map(|s| s.to_string()).collect();
        let (v, x) = Vectorizer::fit_transform(&train, &options());
        assert_eq!(v.columns(), 3);
        // Columns in order of first occurrence: ab (df 2), cd (df 2), ef (df 1); n = 3.
        let idf2 = (4.0f64 / 3.0).ln() + 1.0;
        let idf1 = (4.0f64 / 2.0).ln() + 1.0;
        let (cols, vals) = x.row(0);
        assert_eq!(cols, [0, 1]);
        let norm = ((2.0 * idf2).powi(2) + idf2.powi(2)).sqrt();
        assert!((f64::from(vals[0]) - 2.0 * idf2 / norm).abs() < 1e-6);
        assert!((f64::from(vals[1]) - idf2 / norm).abs() < 1e-6);
        let (cols, vals) = x.row(1);
        assert_eq!(cols, [1, 2]);
        let norm = (idf2.powi(2) + idf1.powi(2)).sqrt();
        assert!((f64::from(vals[1]) - idf1 / norm).abs() < 1e-6);
        // Lowercased: "AB" is "ab".
        assert_eq!(x.row(2).0, [0]);
        // Unknown terms are dropped; a text of none is a zero row.
        let t = v.transform(&["zz ef".to_string(), "qq".to_string()]);
        assert_eq!((t.row(0).0, t.row(0).1), (&[2u32][..], &[1.0f32][..]));
        assert!(t.row(1).0.is_empty());
    }

    #[test]
    fn sublinear_tf_min_df_and_max_features() {
        let train: Vec<String> = ["ab ab ab ab cd", "cd ef", "gh"].iter().map(|s| s.to_string()).collect();
        let sub = FeatureOptions { sublinear_tf: true, ..options() };
        let (_, x) = Vectorizer::fit_transform(&train, &sub);
        let (w_ab, w_cd) = (f64::from(x.row(0).1[0]), f64::from(x.row(0).1[1]));
        let ratio = (1.0 + 4.0f64.ln()) * ((4.0f64 / 2.0).ln() + 1.0) / ((4.0f64 / 3.0).ln() + 1.0);
        assert!((w_ab / w_cd - ratio).abs() < 1e-5, "{w_ab} / {w_cd}");
        let (v, _) = Vectorizer::fit_transform(&train, &FeatureOptions { min_df: 2, ..options() });
        assert_eq!(v.columns(), 1, "only `cd` is in two texts");
        let (v, x) = Vectorizer::fit_transform(&train, &FeatureOptions { max_features: Some(2), ..options() });
        // Most frequent: ab (4), cd (2).
        assert_eq!(v.columns(), 2);
        assert!(x.row(2).0.is_empty(), "gh was dropped");
    }

    #[test]
    fn two_blocks_are_normalised_separately() {
        let train: Vec<String> = vec!["ab cd".into()];
        let (v, x) = Vectorizer::fit_transform(&train, &FeatureOptions { char_max: 1, ..options() });
        assert_eq!(v.block_columns(), [("word", 2), ("char", 5)]);
        let (cols, vals) = x.row(0);
        let sq = |r: std::ops::Range<usize>| -> f64 { r.map(|k| f64::from(vals[k]).powi(2)).sum() };
        assert_eq!(cols.len(), 7);
        assert!((sq(0..2) - 1.0).abs() < 1e-6 && (sq(2..7) - 1.0).abs() < 1e-6);
    }
}
