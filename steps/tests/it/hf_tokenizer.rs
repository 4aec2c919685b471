//! Model directories written by `pretrain` and `fine-tune` tokenize in Python `transformers`
//! exactly as `tokenize` tokenized their training data: real NSMC rows (plus a few rows with
//! accents, upper case, CJK, full-width letters, special-token text and an over-long word) go
//! through `train-tokenizer` (cased and lowercased), `tokenize` and a tiny `pretrain` /
//! `fine-tune`, and the MiniLM vocabulary (uncased English) through `tokenize` and `pretrain`;
//! then steps/tests/reference/hf_tokenizer_ids.py loads each model directory with
//! `AutoTokenizer.from_pretrained`, tokenizes the raw table with `truncation=True` (the
//! tokenizer's own `model_max_length`) and compares the ids with the tensor set row by row; it
//! also checks `tokenizers.Tokenizer.from_file` on the written `tokenizer.json` and the slow
//! (pure-Python) BERT tokenizer on `vocab.txt` and the config.
//!
//! Python is `$PIPE_PYTHON`, else `python3`. Without `transformers` the tests print a notice
//! and pass, except under CI (`CI` set), where that is a failure (.ci/run installs it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipe_steps::bert::{FineTune, Pretrain};
use pipe_steps::text::train_tokenizer::TrainTokenizer;
use pipe_steps::text::Tokenize;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::text_support::{minilm_dir, run};

/// Data rows of NSMC used (the first ones of the training file).
const NSMC_ROWS: usize = 400;
/// `tokenize`'s `max_len`: small, so that many rows are cut and `model_max_length` matters.
const MAX_LEN: usize = 24;

/// Rows that exercise the normalizer: casing, accents, CJK, full-width forms, compatibility
/// jamo, control and zero-width characters, special tokens written in the text, a word over
/// WordPiece's 100 characters, an empty text.
fn extra_rows() -> Vec<String> {
    let long_word = "가".repeat(120);
    [
        "Café RÉSUMÉ naïve façade Ångström Ελληνικά",
        "THE Movie Was GREAT!!! 10/10 McDonald's",
        "中文字符 漢字 and 日本語のテキスト",
        "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３ ！？",
        "ㅋㅋㅋㅋㅋ ㅠㅠ ㅎㅎ",
        "bell\u{7}char zero\u{200b}width soft\u{ad}hyphen",
        "[MASK] literal [CLS] and [UNK] [sep]",
        long_word.as_str(),
        "😀👍🏽 이모지",
        "",
    ]
    .iter()
    .enumerate()
    .map(|(i, text)| format!("{}\t{text}\t{}", 9_000_000 + i, i % 2))
    .collect()
}

/// The first `NSMC_ROWS` rows of NSMC's training file and the extra rows, as a TSV table.
fn nsmc_table(dir: &Path) -> Option<PathBuf> {
    let source = pipe_steps::shared_data::shared_path("nsmc/ratings_train.txt")?;
    let text = fs::read_to_string(&source).unwrap();
    let mut lines: Vec<String> = text.lines().take(NSMC_ROWS + 1).map(str::to_string).collect();
    lines.extend(extra_rows());
    let path = dir.join("nsmc_head.tsv");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    Some(path)
}

/// The Python interpreter with `transformers`, or `None` (with a notice) outside CI.
fn python() -> Option<String> {
    let python = std::env::var("PIPE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python).args(["-c", "import transformers, tokenizers, numpy"]).output();
    let why = match probe {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string(),
        Err(e) => e.to_string(),
    };
    let message = format!(
        "`{python}` cannot import transformers, tokenizers and numpy ({why}); set PIPE_PYTHON to a Python with \
         `pip install transformers tokenizers numpy`"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message} (CI is set, so this is an error)");
    }
    pipe_steps::shared_data::skipped(&message);
    None
}

/// Runs the reference script on a model directory and the tensor set and table behind it.
fn check_in_transformers(python: &str, model: &Path, tensors: &Path, table: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/hf_tokenizer_ids.py");
    let out = Command::new(python).arg(&script).arg(model).arg(tensors).arg(table).arg("--slow").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} disagrees with pipe on {}:\n{stdout}\n{stderr}",
        script.display(),
        model.display()
    );
    assert!(stdout.contains(&format!("OK: {} rows", NSMC_ROWS + extra_rows().len())), "{stdout}");
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn tokenize(table: &Path, tokenizer: Value, tokenizer_input: Option<&Path>) -> TempDir {
    let mut params = json!({"max_len": MAX_LEN});
    if !tokenizer.is_null() {
        params["tokenizer"] = tokenizer;
    }
    let mut inputs = vec![("data", table)];
    inputs.extend(tokenizer_input.map(|t| ("tokenizer", t)));
    run(&Tokenize, params, &inputs).unwrap()
}

fn pretrain(tensors: &Path) -> TempDir {
    let params = json!({"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32, "max_positions": MAX_LEN,
                        "batch_size": 64, "epochs": 1, "log_every": 0});
    run(&Pretrain, params, &[("data", tensors)]).unwrap()
}

fn train_tokenizer(table: &Path, lowercase: bool) -> TempDir {
    run(&TrainTokenizer, json!({"vocab_size": 2000, "lowercase": lowercase}), &[("data", table)]).unwrap()
}

#[test]
fn a_cased_korean_vocabulary_round_trips_through_pretrain_and_fine_tune() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(table) = nsmc_table(dir.path()) else { return };
    let tokenizer = train_tokenizer(&table, false);
    let tokenized = tokenize(&table, Value::Null, Some(&tokenizer.path().join("tokenizer")));
    let tensors = tokenized.path().join("tensors");

    let pretrained = pretrain(&tensors);
    let model = pretrained.path().join("model");
    check_in_transformers(&python, &model, &tensors, &table);
    let config = json_file(&model.join("tokenizer_config.json"));
    assert_eq!(config["tokenizer_class"], "BertTokenizer");
    assert_eq!((&config["do_lower_case"], &config["strip_accents"]), (&json!(false), &json!(false)));
    assert_eq!(config["model_max_length"], MAX_LEN);
    assert_eq!(json_file(&model.join("special_tokens_map.json"))["mask_token"], "[MASK]");
    assert!(fs::read_to_string(model.join("vocab.txt")).unwrap().starts_with("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"));

    let params = json!({"epochs": 1, "batch_size": 64, "log_every": 0});
    let tuned = run(&FineTune, params, &[("train", &tensors), ("model", &model)]).unwrap();
    check_in_transformers(&python, &tuned.path().join("model"), &tensors, &table);
}

#[test]
fn a_lowercased_korean_vocabulary_round_trips_through_pretrain() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(table) = nsmc_table(dir.path()) else { return };
    let tokenizer = train_tokenizer(&table, true);
    let tokenized = tokenize(&table, Value::Null, Some(&tokenizer.path().join("tokenizer")));
    let tensors = tokenized.path().join("tensors");
    let pretrained = pretrain(&tensors);
    let model = pretrained.path().join("model");
    check_in_transformers(&python, &model, &tensors, &table);
    let config = json_file(&model.join("tokenizer_config.json"));
    assert_eq!((&config["do_lower_case"], &config["strip_accents"]), (&json!(true), &json!(false)));
}

#[test]
fn the_minilm_uncased_english_vocabulary_round_trips_through_pretrain() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (Some(table), Some(minilm)) = (nsmc_table(dir.path()), minilm_dir()) else { return };
    let tokenized = tokenize(&table, json!(minilm.to_str().unwrap()), None);
    let tensors = tokenized.path().join("tensors");
    let pretrained = pretrain(&tensors);
    let model = pretrained.path().join("model");
    check_in_transformers(&python, &model, &tensors, &table);
    let config = json_file(&model.join("tokenizer_config.json"));
    assert_eq!((&config["do_lower_case"], &config["strip_accents"]), (&json!(true), &Value::Null));
    assert_eq!(config["model_max_length"], MAX_LEN, "not MiniLM's 512, nor its tokenizer.json's 128");
    let written = json_file(&model.join("tokenizer.json"));
    assert_eq!(written["padding"], Value::Null, "MiniLM's tokenizer.json pads to 128; pipe's rows are not padded");
}

/// A normalizer `BertTokenizer` cannot rebuild from its arguments (NFKC before the BERT
/// normalizer: NSMC's compatibility jamo `ㅋ` become conjoining jamo) must still load as it is.
#[test]
fn a_tokenizer_beyond_bert_tokenizers_arguments_loads_as_written() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(table) = nsmc_table(dir.path()) else { return };
    let trained = train_tokenizer(&table, false);
    let mut doc = json_file(&trained.path().join("tokenizer"));
    let bert = doc["normalizer"].take();
    doc["normalizer"] = json!({"type": "Sequence", "normalizers": [{"type": "NFKC"}, bert]});
    let custom = dir.path().join("nfkc-tokenizer.json");
    fs::write(&custom, serde_json::to_vec(&doc).unwrap()).unwrap();
    let tokenized = tokenize(&table, json!(custom.to_str().unwrap()), None);
    let tensors = tokenized.path().join("tensors");
    let pretrained = pretrain(&tensors);
    let model = pretrained.path().join("model");
    check_in_transformers(&python, &model, &tensors, &table);
    assert_eq!(json_file(&model.join("tokenizer_config.json"))["tokenizer_class"], "PreTrainedTokenizerFast");
}
