//! The `train-tokenizer` step: determinism, the tokenizer it writes, Korean handling and errors.

use std::collections::HashSet;
use std::fs;

use crate::text_support::{message, run, table};
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::text::train_tokenizer::TrainTokenizer;
use pipe_steps::text::Tokenize;
use serde_json::{json, Value};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Model, Tokenizer, TokenizerBuilder};

const SMALL: &str = "id\tdocument\tlabel\n\
1\t영화 정말 재미있어요\t1\n\
2\t영화가 너무 지루했다\t0\n\
3\t정말 최고의 영화!!\t1\n\
4\t배우들 연기가 정말 좋았어요\t1\n\
5\t\t0\n\
6\t스토리가 너무 뻔하다 \"최악\"\t0\n";

fn train(text: &str, params: Value) -> Vec<u8> {
    let (_dir, path) = table("t.tsv", text);
    let out = run(&TrainTokenizer, params, &[("data", &path)]).unwrap();
    fs::read(out.path().join("tokenizer")).unwrap()
}

#[test]
fn training_twice_gives_identical_bytes() {
    let first = train(SMALL, json!({"vocab_size": 60, "min_frequency": 1}));
    for _ in 0..3 {
        assert_eq!(train(SMALL, json!({"vocab_size": 60, "min_frequency": 1})), first);
    }
}

#[test]
fn the_output_is_a_bert_tokenizer_json() {
    let bytes = train(SMALL, json!({"vocab_size": 80, "min_frequency": 1}));
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["normalizer"]["type"], "BertNormalizer");
    assert_eq!(doc["normalizer"]["lowercase"], false);
    assert_eq!(doc["normalizer"]["strip_accents"], false);
    assert_eq!(doc["pre_tokenizer"]["type"], "BertPreTokenizer");
    assert_eq!(doc["post_processor"]["type"], "TemplateProcessing");
    assert_eq!(doc["decoder"]["type"], "WordPiece");
    assert_eq!(doc["model"]["type"], "WordPiece");
    let tok = Tokenizer::from_bytes(&bytes).unwrap();
    for (id, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(id as u32));
    }
    assert!(tok.get_vocab_size(true) <= 80);
    // Hangul stays in syllables (no NFD): `영화` is one token, not jamo.
    let enc = tok.encode("영화 정말", true).unwrap();
    assert_eq!(enc.get_tokens(), &["[CLS]", "영화", "정말", "[SEP]"]);
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "영화 정말");
    let pair = tok.encode(("영화", "정말"), true).unwrap();
    assert_eq!(pair.get_type_ids(), &[0, 0, 0, 1, 1]);
}

#[test]
fn strip_accents_splits_hangul_into_jamo() {
    let bytes = train(SMALL, json!({"vocab_size": 200, "min_frequency": 1, "strip_accents": true}));
    let tok = Tokenizer::from_bytes(&bytes).unwrap();
    let tokens = tok.encode("영화", false).unwrap().get_tokens().to_vec();
    assert!(tokens.iter().all(|t| !t.contains('영')), "{tokens:?}");
}

#[test]
fn limit_alphabet_turns_rare_characters_into_unk() {
    let bytes = train(SMALL, json!({"vocab_size": 200, "min_frequency": 1, "limit_alphabet": 10}));
    let tok = Tokenizer::from_bytes(&bytes).unwrap();
    let ids = tok.encode("뻔하다", false).unwrap().get_ids().to_vec();
    assert_eq!(ids, vec![1], "a word with a character outside the alphabet is [UNK]");
}

#[test]
fn bad_parameters_and_columns_are_bad_input() {
    let (_dir, path) = table("t.tsv", SMALL);
    let e = run(&TrainTokenizer, json!({"vocab_size": 5}), &[("data", &path)]).unwrap_err();
    assert!(e.is_bad_input());
    assert!(e.to_string().contains("`vocab_size`"), "{e}");
    let e = run(&TrainTokenizer, json!({"text_column": "text"}), &[("data", &path)]).unwrap_err();
    assert!(e.is_bad_input());
    assert!(message(&e).contains("no column `text` (parameter `text_column`)"), "{}", message(&e));
}

fn nsmc_train() -> Option<std::path::PathBuf> {
    pipe_steps::shared_data::shared_path("nsmc/ratings_train.txt")
}

#[test]
fn full_nsmc_training_is_deterministic_and_feeds_tokenize() {
    let Some(path) = nsmc_train() else { return };
    let first = run(&TrainTokenizer, json!({}), &[("data", &path)]).unwrap();
    let second = run(&TrainTokenizer, json!({}), &[("data", &path)]).unwrap();
    let tokenizer = first.path().join("tokenizer");
    let bytes = fs::read(&tokenizer).unwrap();
    assert_eq!(bytes, fs::read(second.path().join("tokenizer")).unwrap());
    let tok = Tokenizer::from_bytes(&bytes).unwrap();
    assert_eq!(tok.get_vocab_size(true), 16000);

    let (_dir, pair) = table("pair.tsv", "a\tb\n나 보기가 역겨워\t김소월\n");
    let params = json!({"text_column": "a", "text_b_column": "b", "label_column": "", "max_len": 10, "pad": true});
    let out = run(&Tokenize, params, &[("data", &pair), ("tokenizer", &tokenizer)]).unwrap();
    let set = TensorSet::load(&out.path().join("tensors")).unwrap();
    assert_eq!(set.meta.vocab_size, 16000);
    assert_eq!(
        (set.meta.pad_id, set.meta.unk_id, set.meta.cls_id, set.meta.sep_id, set.meta.mask_id),
        (0, Some(1), 2, 3, Some(4))
    );
    assert_eq!(set.ids(0).len(), 10);
    // Types follow the segments, then padding (type 0, pad id 0) fills the row to 10.
    let (ids, types, valid) = (set.ids(0), set.types(0), set.valid_length[0] as usize);
    let n_a = types.iter().take_while(|&&t| t == 0).count();
    assert!(n_a >= 3 && n_a < valid, "{types:?}");
    assert!(types[n_a..valid].iter().all(|&t| t == 1));
    assert!(types[valid..].iter().all(|&t| t == 0) && ids[valid..].iter().all(|&t| t == 0));
    assert_eq!((ids[0], ids[n_a - 1], ids[valid - 1]), (2, 3, 3), "[CLS] a [SEP] b [SEP]");
}

#[test]
fn the_vocabulary_is_close_to_the_tokenizers_library_trainer() {
    let Some(path) = nsmc_train() else { return };
    let text = fs::read_to_string(&path).unwrap();
    let docs: Vec<&str> = text.lines().skip(1).take(5000).map(|l| l.split('\t').nth(1).unwrap()).collect();
    let mut small = String::from("document\n");
    for d in &docs {
        small.push_str(d);
        small.push('\n');
    }
    let ours = Tokenizer::from_bytes(train(&small, json!({"vocab_size": 3000}))).unwrap();
    let specials: Vec<AddedToken> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| AddedToken::from(*s, true)).collect();
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(3000)
        .min_frequency(2)
        .limit_alphabet(3000)
        .special_tokens(specials)
        .show_progress(false)
        .build();
    let mut theirs = TokenizerBuilder::<
        WordPiece,
        BertNormalizer,
        BertPreTokenizer,
        tokenizers::processors::PostProcessorWrapper,
        tokenizers::decoders::DecoderWrapper,
    >::new()
    .with_model(WordPiece::default())
    .with_normalizer(Some(BertNormalizer::new(true, true, Some(false), false)))
    .with_pre_tokenizer(Some(BertPreTokenizer))
    .build()
    .unwrap();
    theirs.train(&mut trainer, docs.iter()).unwrap();
    let ours: HashSet<String> = ours.get_vocab(false).into_keys().collect();
    let theirs: HashSet<String> = theirs.get_model().get_vocab().into_keys().collect();
    let common = ours.intersection(&theirs).count();
    assert!(common as f64 >= 0.97 * theirs.len() as f64, "{common} of {} in common", theirs.len());
}
