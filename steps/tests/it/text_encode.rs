//! The piece-cache encoder gives exactly the ids of one tokenizer call per text.

use std::fs;

use crate::text_support::minilm_dir;
use pipe_steps::text::bert_tokenizer::{self, Normalization};
use pipe_steps::text::encode::Encoder;
use tokenizers::Tokenizer;

const TRICKY: &[&str] = &[
    "",
    " ",
    "   leading and  double  spaces ",
    "tab\tinside and\nnewline\r\nand\u{a0}no-break\u{3000}ideographic",
    "[CLS] special [SEP]tokens[MASK] inside [UNK]text[PAD]",
    "Café naïve ÉCOLE résumé",
    "中文字符和English混合",
    "control\u{0}\u{7}\u{fffd}chars",
    "verylongwordverylongwordverylongwordverylongwordverylongwordverylongwordverylongwordverylongwordverylongwordxx",
    "punctuation!!!...,,,???\"\"\"quotes\"\"\"",
    "ㅋㅋㅋㅋ 영화 재밌다 ^^ ♥♥",
    "emoji 😀😀 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "İstanbul ΣΊΣΥΦΟΣ ǅungla Ⅻ ﬁne",
    "fullwidth！？（）ａｂｃ１２３ and half-width ｶﾀｶﾅ",
    "combining e\u{301}\u{323} a\u{30a} ᄒ\u{1161}\u{11ab} jamo",
    "zero\u{200b}width\u{200d}joiner\u{feff}bom\u{2028}sep",
    "[CLS][CLS]x[SEP] [MASK]-[PAD]",
    "𠀀𪚥 cjk ext 丨乙",
];

fn check(tokenizer: Tokenizer, texts: &[String], fast: bool) {
    let mut encoder = Encoder::new(tokenizer).unwrap();
    assert!(encoder.uses_piece_cache());
    assert_eq!(encoder.uses_fast_path(), fast);
    let expected = encoder.encode_all(texts).unwrap();
    // In several batches, so later ones hit the cache filled by earlier ones.
    let mut got = Vec::new();
    for batch in texts.chunks(7919) {
        got.extend(encoder.encode_batch(batch).unwrap());
    }
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g == e, "text {i} `{}`: {g:?} != {e:?}", texts[i]);
    }
}

/// The tricky texts around the first `limit` NSMC documents (train, then test).
fn corpus(limit: usize) -> Vec<String> {
    let mut texts: Vec<String> = TRICKY.iter().map(|s| s.to_string()).collect();
    if let Some(dir) = pipe_steps::shared_data::shared_path("nsmc") {
        for file in ["ratings_train.txt", "ratings_test.txt"] {
            let text = fs::read_to_string(dir.join(file)).unwrap();
            texts.extend(text.lines().skip(1).map(|l| l.split('\t').nth(1).unwrap().to_string()));
            texts.truncate(limit + TRICKY.len());
        }
    }
    texts.extend(TRICKY.iter().map(|s| s.to_string()));
    texts
}

#[test]
fn piece_cache_matches_plain_encoding_uncased_with_accent_stripping() {
    let Some(dir) = minilm_dir() else { return };
    check(Tokenizer::from_file(dir.join("tokenizer.json")).unwrap(), &corpus(40_000), false);
}

fn minilm_vocab_tokenizer(lowercase: bool) -> Option<Tokenizer> {
    let dir = minilm_dir()?;
    let vocab = bert_tokenizer::parse_vocab(&fs::read_to_string(dir.join("vocab.txt")).unwrap());
    let doc =
        bert_tokenizer::bert_tokenizer_json(&vocab, Normalization { lowercase, strip_accents: Some(false) }).unwrap();
    Some(bert_tokenizer::build(&doc).unwrap().0)
}

#[test]
fn fast_path_matches_plain_encoding_cased() {
    let Some(tokenizer) = minilm_vocab_tokenizer(false) else { return };
    check(tokenizer, &corpus(40_000), true);
}

#[test]
fn fast_path_matches_plain_encoding_lowercased() {
    let Some(tokenizer) = minilm_vocab_tokenizer(true) else { return };
    check(tokenizer, &corpus(40_000), true);
}

#[test]
fn fast_path_matches_plain_encoding_with_a_trained_korean_vocabulary() {
    let Some(path) = pipe_steps::shared_data::shared_path("nsmc/ratings_test.txt") else { return };
    let out = crate::text_support::run(
        &pipe_steps::text::TrainTokenizer,
        serde_json::json!({"vocab_size": 8000}),
        &[("data", &path)],
    )
    .unwrap();
    let tokenizer = Tokenizer::from_file(out.path().join("tokenizer")).unwrap();
    check(tokenizer, &corpus(200_000), true);
}
