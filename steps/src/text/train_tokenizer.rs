//! The `train-tokenizer` step kind: a BERT WordPiece tokenizer trained on a text column.
//!
//! Text is normalized by `BertNormalizer` (control characters removed, whitespace unified, CJK
//! ideographs split apart, optional lower-casing and accent stripping) and split by
//! `BertPreTokenizer` (whitespace and punctuation), exactly as the `tokenizers` library does
//! when it tokenizes; the vocabulary is then trained by [`super::wordpiece`], which gives the
//! same vocabulary with the same ids on every run (the library's trainer does not).
//!
//! `strip_accents` is off by default: it decomposes text to NFD and drops combining marks, and
//! NFD splits every Hangul syllable into its jamo (`한` → `ᄒ ᅡ ᆫ`), so Korean would be learnt
//! as letters rather than syllables. `lowercase` is off by default too (cased, like
//! `bert-base-multilingual-cased`).
//!
//! `limit_alphabet` bounds the characters kept as single-character tokens; a character outside
//! the alphabet can only be encoded as `[UNK]`. NSMC's reviews use about 3,000 distinct
//! characters: a limit of 1,000 leaves roughly 15% of reviews with an `[UNK]`, hence the
//! default of 3,000. The `[UNK]` rate on the training text is logged after training.
//!
//! The output is one `tokenizer.json` file (named `tokenizer` in the step's output directory),
//! readable by Python `tokenizers.Tokenizer.from_file` and `transformers`'
//! `PreTrainedTokenizerFast(tokenizer_file=...)`.

use std::collections::{BTreeMap, HashMap};
use std::fs;

use rayon::prelude::{ParallelIterator, ParallelSlice};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use super::bert_tokenizer::{self, Normalization, SPECIAL_TOKENS};
use super::encode::Encoder;
use super::table::{resolve_formats, validate_params, Reading, Table, FORMAT_PARAM, QUOTING_PARAM, SEPARATOR_PARAM};
use super::thread_pool;
use super::wordpiece::{self, TrainerConfig};
use crate::error::{StepError, StepResult};
use crate::step::{
    Default, InputSource, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};

pub struct TrainTokenizer;

static SPEC: StepSpec = StepSpec {
    kind: "train-tokenizer",
    all_cores: true,
    version: 1,
    summary:
        "train a BERT WordPiece tokenizer (tokenizer.json) on a text column of a table (CSV, TSV, JSON Lines, Parquet)",
    params: &[
        // Named `column` before every kind called it `text_column`; the key keeps the old name.
        ParamSpec::optional("text_column", ParamType::Str, Default::Str("document"), "the text column")
            .renamed_from("column"),
        ParamSpec::optional(
            "vocab_size",
            ParamType::Uint,
            Default::Int(16000),
            "tokens in the vocabulary, special tokens included",
        ),
        ParamSpec::optional("min_frequency", ParamType::Uint, Default::Int(2), "least count of a pair to merge"),
        ParamSpec::optional(
            "lowercase",
            ParamType::Bool,
            Default::Bool(false),
            "lower-case text (an uncased tokenizer)",
        ),
        ParamSpec::optional(
            "strip_accents",
            ParamType::Bool,
            Default::Bool(false),
            "NFD and drop combining marks (splits Hangul into jamo: keep off for Korean)",
        ),
        ParamSpec::optional(
            "limit_alphabet",
            ParamType::Uint,
            Default::Int(3000),
            "most frequent characters kept as tokens (0: all); others become [UNK]",
        ),
        FORMAT_PARAM,
        QUOTING_PARAM,
        SEPARATOR_PARAM,
        ParamSpec::optional(
            "malformed",
            ParamType::Choice(&["drop", "error"]),
            Default::Str("error"),
            "lines with the wrong number of fields: drop or fail",
        ),
    ],
    inputs: &[InputSpec::required("data", "the table whose text column is learnt")],
    outputs: &[OutputSpec { name: "tokenizer", help: "tokenizer.json (Hugging Face format)" }],
    reported: &[],
};

/// Texts fed to one parallel job when counting words.
const COUNT_CHUNK: usize = 2048;

impl Step for TrainTokenizer {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        let vocab_size = params.usize("vocab_size")?;
        if vocab_size <= SPECIAL_TOKENS.len() {
            return Err(StepError::param(
                "vocab_size",
                format!("must be more than the {} special tokens, got {vocab_size}", SPECIAL_TOKENS.len()),
            ));
        }
        validate_params(params)
    }

    fn resolve_inputs(&self, params: &Params, sources: &BTreeMap<String, InputSource>) -> StepResult<Params> {
        resolve_formats(params, &["data"], sources)
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        self.validate(ctx.params)?;
        let p = ctx.params;
        let column = p.str("text_column")?;
        let norm = Normalization { lowercase: p.bool("lowercase")?, strip_accents: Some(p.bool("strip_accents")?) };
        let config = TrainerConfig {
            vocab_size: p.usize("vocab_size")?,
            min_frequency: p.usize("min_frequency")? as u64,
            limit_alphabet: Some(p.usize("limit_alphabet")?).filter(|&l| l > 0),
            special_tokens: SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
            continuing_subword_prefix: "##".into(),
        };
        let data = ctx.input("data")?;
        let source = ctx.source("data");
        let table = Table::open(data, &source, Reading::of(p, "data", &source)?)?;
        if table.malformed_dropped > 0 {
            ctx.events.log(&format!("dropped {} malformed lines", table.malformed_dropped));
        }
        let texts = table.column(column, "text_column")?;
        let pool = thread_pool(ctx.env)?;

        ctx.events.progress_start("count words", Some(texts.len() as u64), "rows");
        let counts = pool.install(|| count_words(&texts, norm, ctx))?;
        ctx.events.progress_finish();
        if ctx.env.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let words: Vec<(String, u64)> = counts.into_iter().collect();
        ctx.events.log(&format!("{} texts, {} distinct words", texts.len(), words.len()));

        let trained = wordpiece::train(&words, &config);
        ctx.events.log(&format!(
            "vocabulary of {} tokens: {} of {} distinct characters kept, {} merges",
            trained.tokens.len(),
            trained.alphabet,
            trained.chars_seen,
            trained.merges
        ));
        let document = bert_tokenizer::bert_tokenizer_json(&trained.tokens, norm)?;
        let (tokenizer, json) = bert_tokenizer::build(&document)?;
        let out = ctx.output("tokenizer");
        fs::write(&out, json.as_bytes()).map_err(StepError::io("writing", &out))?;

        let mut encoder = Encoder::new(tokenizer)?;
        let unk = encoder.tokenizer().token_to_id("[UNK]");
        let encoded = pool.install(|| encoder.encode_batch(&texts))?;
        let total: usize = encoded.iter().map(Vec::len).sum();
        let unk_tokens: usize = encoded.iter().map(|ids| ids.iter().filter(|&&id| Some(id) == unk).count()).sum();
        let unk_rows = encoded.iter().filter(|ids| ids.iter().any(|&id| Some(id) == unk)).count();
        ctx.events.log(&format!(
            "[UNK] on the training text: {:.3}% of {} tokens, in {:.2}% of texts ({} of {})",
            100.0 * unk_tokens as f64 / total.max(1) as f64,
            total,
            100.0 * unk_rows as f64 / texts.len().max(1) as f64,
            unk_rows,
            texts.len()
        ));
        Ok(())
    }
}

/// Counts the pre-tokenized words of `texts` (normalized and split as the tokenizer will).
fn count_words(texts: &[String], norm: Normalization, ctx: &StepContext<'_>) -> StepResult<HashMap<String, u64>> {
    let normalizer = BertNormalizer::new(true, true, norm.strip_accents, norm.lowercase);
    let pre_tokenizer = BertPreTokenizer;
    texts
        .par_chunks(COUNT_CHUNK)
        .map(|chunk| -> StepResult<HashMap<String, u64>> {
            if ctx.env.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            let mut counts: HashMap<String, u64> = HashMap::new();
            for text in chunk {
                let mut normalized = NormalizedString::from(text.as_str());
                normalizer
                    .normalize(&mut normalized)
                    .map_err(|e| StepError::failed(format!("normalizing text: {e}")))?;
                let mut pre = PreTokenizedString::from(normalized);
                pre_tokenizer
                    .pre_tokenize(&mut pre)
                    .map_err(|e| StepError::failed(format!("splitting text into words: {e}")))?;
                for (word, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                    match counts.get_mut(word) {
                        Some(c) => *c += 1,
                        None => {
                            counts.insert(word.to_string(), 1);
                        }
                    }
                }
            }
            ctx.events.progress_inc(chunk.len() as u64);
            Ok(counts)
        })
        .try_reduce(HashMap::new, |x, y| {
            let (mut big, small) = if x.len() >= y.len() { (x, y) } else { (y, x) };
            for (w, c) in small {
                *big.entry(w).or_default() += c;
            }
            Ok(big)
        })
}
