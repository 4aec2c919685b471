//! The `tokenize` step: BERTSentenceTransform semantics against golden data and the Hugging Face
//! tokenizer's own special tokens and truncation, output files, and every error.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::text_support::{message, minilm_dir, run, run_env, table};
use pipe_steps::tensor_set::{TensorSet, TOKENIZER_FILE};
use pipe_steps::text::encode::Encoder;
use pipe_steps::text::sentence_transform::{truncate_pair, SentenceTransform};
use pipe_steps::text::Tokenize;
use pipe_steps::{Environment, StepError};
use serde_json::{json, Value};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

fn minilm_json() -> Option<PathBuf> {
    minilm_dir().map(|d| d.join("tokenizer.json"))
}

fn golden() -> Option<Value> {
    let path = pipe_steps::shared_data::shared_path("golden/sentence_transform_minilm.json")?;
    Some(serde_json::from_slice(&fs::read(path).unwrap()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn types(v: &Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect()
}

fn transform_for(encoder: &Encoder, max_len: usize, pad: bool, pair: bool) -> SentenceTransform {
    let t = encoder.tokenizer();
    let id = |s: &str| t.token_to_id(s).unwrap();
    SentenceTransform::new(max_len, pad, pair, id("[CLS]"), id("[SEP]"), id("[PAD]")).unwrap()
}

#[test]
fn golden_cases_match_the_pure_transform() {
    let (Some(tok), Some(golden)) = (minilm_json(), golden()) else { return };
    let encoder = Encoder::new(Tokenizer::from_file(&tok).unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 300);
    for (i, case) in cases.iter().enumerate() {
        let a = encoder.encode(case["text_a"].as_str().unwrap()).unwrap();
        let b = case["text_b"].as_str().map(|b| encoder.encode(b).unwrap());
        let max_len = case["max_len"].as_u64().unwrap() as usize;
        let pad = case["pad"].as_bool().unwrap();
        let t = transform_for(&encoder, max_len, pad, b.is_some());
        let (got_ids, got_types, info) = t.apply(&a, b.as_deref());
        assert_eq!(got_ids, ids(&case["input_ids"]), "case {i} ids");
        assert_eq!(got_types, types(&case["token_type_ids"]), "case {i} types");
        assert_eq!(info.valid_length as u64, case["valid_length"].as_u64().unwrap(), "case {i} valid_length");
    }
}

#[test]
fn golden_cases_match_the_step_end_to_end() {
    let (Some(tok), Some(golden)) = (minilm_json(), golden()) else { return };
    // One table per (pair, max_len, pad) group, as the step has one setting per run.
    let mut groups: BTreeMap<(bool, u64, bool), Vec<&Value>> = BTreeMap::new();
    for case in golden["cases"].as_array().unwrap() {
        let key = (!case["text_b"].is_null(), case["max_len"].as_u64().unwrap(), case["pad"].as_bool().unwrap());
        groups.entry(key).or_default().push(case);
    }
    assert_eq!(groups.len(), 8);
    for ((pair, max_len, pad), cases) in groups {
        let mut text = String::from(if pair { "a\tb\tlabel\n" } else { "a\tlabel\n" });
        for (i, c) in cases.iter().enumerate() {
            let a = c["text_a"].as_str().unwrap();
            match c["text_b"].as_str() {
                Some(b) => text.push_str(&format!("{a}\t{b}\t{}\n", i % 2)),
                None => text.push_str(&format!("{a}\t{}\n", i % 2)),
            }
        }
        let (_dir, path) = table("golden.tsv", &text);
        let mut params =
            json!({"tokenizer": tok.to_str().unwrap(), "text_column": "a", "max_len": max_len, "pad": pad});
        if pair {
            params["text_b_column"] = json!("b");
        }
        let out = run(&Tokenize, params, &[("data", &path)]).unwrap();
        let set = TensorSet::load(&out.path().join("tensors")).unwrap();
        assert_eq!(set.len(), cases.len());
        assert_eq!(set.meta.pair, pair);
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(set.ids(i), ids(&c["input_ids"]).as_slice(), "group {pair} {max_len} {pad} row {i}");
            assert_eq!(set.types(i), types(&c["token_type_ids"]).as_slice());
            assert_eq!(u64::from(set.valid_length[i]), c["valid_length"].as_u64().unwrap());
            assert_eq!(set.labels[i], (i % 2) as i64);
        }
    }
}

#[test]
fn published_example_pair_with_max_len_10() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("pair.tsv", "a\tb\n나 보기가 역겨워\t김소월\n");
    let params = json!({"tokenizer": tok.to_str().unwrap(), "text_column": "a", "text_b_column": "b",
                        "label_column": "", "max_len": 10});
    let out = run(&Tokenize, params, &[("data", &path)]).unwrap();
    let set = TensorSet::load(&out.path().join("tensors")).unwrap();
    assert_eq!(set.ids(0).len(), 10);
    assert_eq!(set.types(0), &[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(set.valid_length[0], 10);
    assert_eq!(set.labels, vec![-1]);
    assert!(set.meta.label_values.is_empty());
}

/// The first `n` documents of NSMC's training file (non-empty ones).
fn nsmc_docs(n: usize) -> Option<Vec<String>> {
    let path = pipe_steps::shared_data::shared_path("nsmc/ratings_train.txt")?;
    let text = fs::read_to_string(path).unwrap();
    Some(
        text.lines()
            .skip(1)
            .map(|l| l.split('\t').nth(1).unwrap().to_string())
            .filter(|d| !d.is_empty())
            .take(n)
            .collect(),
    )
}

/// What the Hugging Face library makes of a text or pair with `longest_first` truncation to
/// `max_len`: each text encoded, `truncate_encodings` with the special tokens' room taken
/// off, then its template. (The crate's `encode` with truncation switched on is not used as
/// the reference: tokenizers 0.23.2 cuts each text of a pair to the limit before the
/// longest-first split, which changes the split; Python's tokenizers 0.23.3 does not.)
fn hf_reference(hf: &Tokenizer, a: &str, b: Option<&str>, max_len: usize) -> (Vec<u32>, Vec<u8>) {
    let ea = hf.encode(a, false).unwrap();
    let eb = b.map(|b| hf.encode(b, false).unwrap());
    let added = if b.is_some() { 3 } else { 2 };
    let params = TruncationParams {
        max_length: max_len - added,
        strategy: TruncationStrategy::LongestFirst,
        ..TruncationParams::default()
    };
    let (ea, eb) = tokenizers::truncate_encodings(ea, eb, &params).unwrap();
    let e = hf.post_process(ea, eb, true).unwrap();
    (e.get_ids().to_vec(), e.get_type_ids().iter().map(|&t| t as u8).collect())
}

#[test]
fn agrees_with_the_hf_tokenizers_own_template_and_truncation_on_nsmc() {
    let (Some(tok), Some(docs)) = (minilm_json(), nsmc_docs(600)) else { return };
    let encoder = Encoder::new(Tokenizer::from_file(&tok).unwrap()).unwrap();
    let mut hf = Tokenizer::from_file(&tok).unwrap();
    hf.with_padding(None);
    hf.with_truncation(None).unwrap();
    let mut ties = 0;
    for max_len in [8usize, 10, 16, 33, 64] {
        let single = transform_for(&encoder, max_len, false, false);
        let pair = transform_for(&encoder, max_len, false, true);
        for w in docs.windows(2) {
            let (a_text, b_text) = (w[0].as_str(), w[1].as_str());
            let a = encoder.encode(a_text).unwrap();
            let b = encoder.encode(b_text).unwrap();

            let (ids, types) = hf_reference(&hf, a_text, None, max_len);
            let (got, got_types, info) = single.apply(&a, None);
            assert!(got == ids && got_types == types, "single `{a_text}` max_len {max_len}");
            assert_eq!(info.valid_length as usize, ids.len());

            let (ids, types) = hf_reference(&hf, a_text, Some(b_text), max_len);
            let (got, got_types, _) = pair.apply(&a, Some(&b));
            let budget = max_len - 3;
            let tie = a.len() <= b.len() && 2 * a.len() > budget && budget % 2 == 1;
            if tie {
                // Both sides are cut and the budget is odd: GluonNLP gives the odd token to `a`,
                // Hugging Face to the longer (or, on equal length, the second) text.
                ties += 1;
                assert_eq!(truncate_pair(a.len(), b.len(), budget), (budget / 2 + 1, budget / 2));
                assert_eq!(types.iter().filter(|&&t| t == 0).count() - 2, budget / 2);
                assert_eq!(got.len(), ids.len());
            } else {
                assert!(got == ids && got_types == types, "pair `{a_text}` / `{b_text}` max_len {max_len}");
            }
        }
    }
    assert!(ties > 0, "the sample should exercise the odd-budget tie");
}

fn small_table() -> (tempfile::TempDir, PathBuf) {
    table("small.tsv", "id\tdocument\tlabel\n1\thello world\t7\n2\t\t3\n3\tsay \"\"\"hi\"\"\" there\t7\n4\ta much longer text that will be cut somewhere\t-1\n")
}

#[test]
fn writes_ragged_tensors_meta_tokenizer_copy_and_stats() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = small_table();
    let out = run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap(), "max_len": 6}), &[("data", &path)]).unwrap();
    let dir = out.path().join("tensors");
    let set = TensorSet::load(&dir).unwrap();
    assert_eq!(set.len(), 4);
    assert_eq!(set.meta.label_values, vec![-1, 3, 7]);
    assert_eq!(set.labels, vec![7, 3, 7, -1]);
    assert_eq!((set.meta.cls_id, set.meta.sep_id, set.meta.pad_id), (101, 102, 0));
    assert_eq!((set.meta.mask_id, set.meta.unk_id, set.meta.vocab_size), (Some(103), Some(100), 30522));
    assert_eq!(set.ids(0), &[101, 7592, 2088, 102]);
    assert_eq!(set.ids(1), &[101, 102], "an empty document is kept as [CLS] [SEP]");
    assert_eq!(set.ids(3).len(), 6);
    assert_eq!(set.valid_length, vec![4, 2, 6, 6]);
    assert_eq!(fs::read(dir.join(TOKENIZER_FILE)).unwrap(), fs::read(&tok).unwrap());
    let stats: Value = serde_json::from_slice(&fs::read(dir.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rows"], 4);
    assert_eq!(stats["truncated"], 2);
    assert_eq!(stats["dropped"], json!({}));
    assert_eq!(stats["length_histogram"], json!({"2": 1, "4": 1, "6": 2}));
    assert_eq!(stats["unk_rate"], 0.0);
}

#[test]
fn pad_fills_rows_to_max_len_with_type_zero() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = small_table();
    let out =
        run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap(), "max_len": 8, "pad": true}), &[("data", &path)])
            .unwrap();
    let set = TensorSet::load(&out.path().join("tensors")).unwrap();
    for i in 0..set.len() {
        assert_eq!(set.ids(i).len(), 8);
        assert!(set.types(i).iter().all(|&t| t == 0));
    }
    assert_eq!(set.ids(0), &[101, 7592, 2088, 102, 0, 0, 0, 0]);
    assert_eq!(set.valid_length[0], 4);
}

#[test]
fn empty_rows_can_be_dropped_or_refused() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = small_table();
    let out = run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap(), "empty": "drop"}), &[("data", &path)]).unwrap();
    let dir = out.path().join("tensors");
    assert_eq!(TensorSet::load(&dir).unwrap().len(), 3);
    let stats: Value = serde_json::from_slice(&fs::read(dir.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["dropped"], json!({"empty": 1}));

    let e =
        run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap(), "empty": "error"}), &[("data", &path)]).unwrap_err();
    assert!(e.is_bad_input());
    assert!(message(&e).contains("line 3: the text is empty"), "{}", message(&e));
}

#[test]
fn tokenizer_from_a_step_output_directory_and_vocab_txt_agree() {
    let (Some(dir), Some(docs)) = (minilm_dir(), nsmc_docs(300)) else { return };
    let mut text = String::from("document\tlabel\n");
    for (i, d) in docs.iter().enumerate() {
        text.push_str(&format!("{d}\t{}\n", i % 2));
    }
    let (_t, path) = table("docs.tsv", &text);
    let json_file = dir.join("tokenizer.json");
    let from_input = run(&Tokenize, json!({}), &[("data", &path), ("tokenizer", &json_file)]).unwrap();
    let from_dir = run(&Tokenize, json!({"tokenizer": dir.to_str().unwrap()}), &[("data", &path)]).unwrap();
    // vocab.txt alone: copy it without tokenizer_config.json, so casing is guessed (uncased).
    let vocab_dir = tempfile::tempdir().unwrap();
    let vocab = vocab_dir.path().join("vocab.txt");
    fs::copy(dir.join("vocab.txt"), &vocab).unwrap();
    let from_vocab = run(&Tokenize, json!({"tokenizer": vocab.to_str().unwrap()}), &[("data", &path)]).unwrap();
    let load = |d: &tempfile::TempDir| TensorSet::load(&d.path().join("tensors")).unwrap();
    let reference = load(&from_input);
    assert_eq!(reference.len(), 300);
    assert!(load(&from_dir) == reference, "a model directory uses its tokenizer.json");
    assert!(load(&from_vocab).input_ids == reference.input_ids, "vocab.txt (guessed uncased) gives the same ids");
    // The copied tokenizer of a vocab.txt is a full tokenizer.json the library reads back.
    let copied = from_vocab.path().join("tensors").join(TOKENIZER_FILE);
    assert!(Tokenizer::from_file(copied).is_ok());
    // A cased reading of the same vocabulary gives different ids for cased text.
    let cased = run(&Tokenize, json!({"tokenizer": vocab.to_str().unwrap(), "lowercase": false}), &[("data", &path)]);
    assert!(cased.is_ok());
}

#[test]
fn comma_separated_tables_and_pairs() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("pairs.csv", "q,p,label\nwhat is it,a thing,1\nwho,nobody at all,0\n");
    let params =
        json!({"tokenizer": tok.to_str().unwrap(), "separator": ",", "text_column": "q", "text_b_column": "p"});
    let out = run(&Tokenize, params, &[("data", &path)]).unwrap();
    let set = TensorSet::load(&out.path().join("tensors")).unwrap();
    assert!(set.meta.pair);
    assert_eq!(set.types(1), &[0, 0, 0, 1, 1, 1, 1]);
}

fn err(params: Value, data: &Path) -> StepError {
    run(&Tokenize, params, &[("data", data)]).unwrap_err()
}

#[test]
fn unknown_columns_list_the_available_ones() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = small_table();
    let e = err(json!({"tokenizer": tok.to_str().unwrap(), "text_column": "documnet"}), &path);
    assert!(e.is_bad_input());
    let m = message(&e);
    assert!(m.contains("no column `documnet` (parameter `text_column`)"), "{m}");
    assert!(m.contains("`id`, `document`, `label`"), "{m}");
    assert!(m.contains("did you mean `document`?"), "{m}");

    let e = err(json!({"tokenizer": tok.to_str().unwrap(), "label_column": "sentiment"}), &path);
    assert!(e.is_bad_input());
    assert!(message(&e).contains("unlabelled"), "{}", message(&e));
}

#[test]
fn a_non_integer_label_makes_every_label_a_name() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("mixed.tsv", "document\tlabel\ngood\t1\nbad\tpositive\nfine\t 0 \n");
    let out = run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap()}), &[("data", &path)]).unwrap();
    let set = TensorSet::load(&out.path().join("tensors")).unwrap();
    assert_eq!(set.meta.label_names, ["0", "1", "positive"]);
    assert_eq!((set.meta.label_values.clone(), set.labels.clone()), (vec![0, 1, 2], vec![1, 2, 0]));
}

#[test]
fn empty_labels_name_the_line_or_are_dropped() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("bad.tsv", "document\tlabel\ngood\t1\nbad\t \nfine\t0\n");
    let e = err(json!({"tokenizer": tok.to_str().unwrap()}), &path);
    assert!(e.is_bad_input());
    assert!(message(&e).contains("line 3: the label ` ` in column `label` is empty"), "{}", message(&e));
    let out =
        run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap(), "malformed": "drop"}), &[("data", &path)]).unwrap();
    let dir = out.path().join("tensors");
    assert_eq!(TensorSet::load(&dir).unwrap().labels, vec![1, 0]);
    let stats: Value = serde_json::from_slice(&fs::read(dir.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["dropped"], json!({"bad_label": 1}));
}

#[test]
fn malformed_lines_are_reported_with_their_number_or_dropped() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("ragged.tsv", "document\tlabel\nok\t1\ntoo\tmany\t1\nmissing\nfine\t0\n");
    let e = err(json!({"tokenizer": tok.to_str().unwrap()}), &path);
    assert!(e.is_bad_input());
    let m = message(&e);
    assert!(m.contains("line 3 has 3 fields, the header has 2"), "{m}");
    assert!(m.contains("2 malformed lines in all"), "{m}");
    let out =
        run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap(), "malformed": "drop"}), &[("data", &path)]).unwrap();
    let dir = out.path().join("tensors");
    assert_eq!(TensorSet::load(&dir).unwrap().labels, vec![1, 0]);
    let stats: Value = serde_json::from_slice(&fs::read(dir.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["dropped"], json!({"malformed": 2}));
}

#[test]
fn files_that_are_not_tables_are_bad_input() {
    let Some(tok) = minilm_json() else { return };
    let p = json!({"tokenizer": tok.to_str().unwrap()});
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("model.bin");
    fs::write(&binary, [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
    let e = err(p.clone(), &binary);
    assert!(e.is_bad_input());
    assert!(message(&e).contains("cannot tell the table format of a `.bin` file"), "{}", message(&e));
    let binary_tsv = dir.path().join("model.tsv");
    fs::write(&binary_tsv, [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
    let e = err(p.clone(), &binary_tsv);
    assert!(e.is_bad_input());
    assert!(message(&e).contains("is not a text table"), "{}", message(&e));

    let empty = dir.path().join("empty.tsv");
    fs::write(&empty, "").unwrap();
    let e = err(p.clone(), &empty);
    assert!(e.is_bad_input());
    assert!(message(&e).contains("is empty"), "{}", message(&e));

    // A comma table in a .tsv file, read with the default tab separator: one column, named
    // after the header.
    let (_d, csv) = table("t.tsv", "document,label\nhello,1\n");
    let e = err(p, &csv);
    assert!(e.is_bad_input());
    assert!(message(&e).contains("`document,label`"), "{}", message(&e));
}

#[test]
fn windows_line_ends_and_a_byte_order_mark_are_accepted() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("crlf.tsv", "\u{feff}document\tlabel\r\nhello world\t1\r\n\t0\r\n");
    let out = run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap()}), &[("data", &path)]).unwrap();
    let set = TensorSet::load(&out.path().join("tensors")).unwrap();
    assert_eq!(set.labels, vec![1, 0]);
    assert_eq!(set.ids(0), &[101, 7592, 2088, 102]);
    assert_eq!(set.ids(1), &[101, 102]);
}

#[test]
fn a_table_without_rows_is_bad_input() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = table("header.tsv", "document\tlabel\n");
    let e = err(json!({"tokenizer": tok.to_str().unwrap()}), &path);
    assert!(e.is_bad_input());
    assert!(e.to_string().contains("has no rows to tokenize (0 data rows, 0 dropped)"), "{e}");
    let (_dir, path) = table("blank.tsv", "document\tlabel\n\t1\n");
    let e = err(json!({"tokenizer": tok.to_str().unwrap(), "empty": "drop"}), &path);
    assert!(e.to_string().contains("(1 data rows, 1 dropped)"), "{e}");
}

#[test]
fn tokenizer_must_be_given_exactly_once() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = small_table();
    let e = run(&Tokenize, json!({"tokenizer": tok.to_str().unwrap()}), &[("data", &path), ("tokenizer", &tok)])
        .unwrap_err();
    assert!(e.is_bad_input());
    assert!(message(&e).contains("given twice"), "{}", message(&e));
    let e = run(&Tokenize, json!({}), &[("data", &path)]).unwrap_err();
    assert!(e.is_bad_input());
    assert!(message(&e).contains("is required"), "{}", message(&e));
}

#[test]
fn bad_parameters_are_refused_before_running() {
    let (_dir, path) = small_table();
    let cases = [
        (json!({"tokenizer": "x", "max_len": 1}), "max_len"),
        (json!({"tokenizer": "x", "max_len": 2, "text_b_column": "b"}), "max_len"),
        (json!({"tokenizer": "x", "separator": ";"}), "separator"),
        (json!({"tokenizer": "./no/such/vocab.txt"}), "tokenizer"),
    ];
    for (params, name) in cases {
        let e = err(params, &path);
        assert!(e.is_bad_input(), "{e}");
        assert!(e.to_string().contains(&format!("`{name}`")), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let e = err(json!({"tokenizer": dir.path().to_str().unwrap()}), &path);
    assert!(e.is_bad_input());
    assert!(e.to_string().contains("neither tokenizer.json nor vocab.txt"), "{e}");
}

#[test]
fn an_unreachable_hub_is_a_clear_failure() {
    let (_dir, path) = small_table();
    let cache = tempfile::tempdir().unwrap();
    // An endpoint that refuses connections at once, so the test does not depend on DNS; set in
    // the environment, not process-wide, so it cannot reach other tests of this binary.
    let env = Environment {
        hub_cache: Some(cache.path().to_path_buf()),
        hub_endpoint: Some("http://127.0.0.1:9".into()),
        ..Environment::default()
    };
    let e =
        run_env(&Tokenize, json!({"tokenizer": "bert-base-multilingual-cased"}), &[("data", &path)], &env).unwrap_err();
    assert!(!e.is_bad_input());
    let m = message(&e);
    assert!(m.contains("could not fetch tokenizer.json of hub model `bert-base-multilingual-cased`"), "{m}");
    assert!(m.contains("help: the Hugging Face hub is unreachable"), "{m}");
}

#[test]
fn a_hub_model_already_in_the_hub_cache_is_used_offline() {
    let Some(dir) = minilm_dir() else { return };
    let (_t, path) = small_table();
    let cache = tempfile::tempdir().unwrap();
    // The layout hf-hub writes: models--owner--name/{refs/main, snapshots/<rev>/file}.
    let repo = cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2");
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "abc123").unwrap();
    fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
    fs::copy(dir.join("tokenizer.json"), repo.join("snapshots/abc123/tokenizer.json")).unwrap();
    let env = Environment { hub_cache: Some(cache.path().to_path_buf()), ..Environment::default() };
    let out =
        run_env(&Tokenize, json!({"tokenizer": "sentence-transformers/all-MiniLM-L6-v2"}), &[("data", &path)], &env)
            .unwrap();
    assert_eq!(TensorSet::load(&out.path().join("tensors")).unwrap().ids(0), &[101, 7592, 2088, 102]);
}

#[test]
fn cancellation_stops_between_chunks() {
    let Some(tok) = minilm_json() else { return };
    let (_dir, path) = small_table();
    let env = Environment::default();
    env.cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = run_env(&Tokenize, json!({"tokenizer": tok.to_str().unwrap()}), &[("data", &path)], &env).unwrap_err();
    assert!(matches!(e, StepError::Cancelled));
}
