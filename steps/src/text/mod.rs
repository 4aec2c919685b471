//! Text to tensors: the `train-tokenizer`, `tokenize` and `split` step kinds.
//!
//! - [`table`] reads TSV/CSV tables with polars, quoting off (NSMC's documents hold raw `"`).
//! - [`wordpiece`] trains WordPiece vocabularies deterministically; [`bert_tokenizer`] turns a
//!   vocabulary into a Hugging Face `tokenizer.json`; [`source`] loads tokenizers from files,
//!   model directories or the hub.
//! - [`encode`] encodes texts in parallel (with [`fast_bert`] for BERT tokenizers); [`sentence_transform`] is GluonNLP's
//!   `BERTSentenceTransform` on the ids; [`stats`] is the `stats.json` of a tokenized table.

pub mod bert_tokenizer;
pub mod encode;
pub(crate) mod fast_bert;
pub mod sentence_transform;
pub(crate) mod source;
pub mod split;
pub(crate) mod stats;
pub mod table;
pub(crate) mod tokenize;
pub mod train_tokenizer;
pub(crate) mod wordpiece;

use rayon::{ThreadPool, ThreadPoolBuilder};

pub use split::Split;
pub use tokenize::Tokenize;
pub use train_tokenizer::TrainTokenizer;

use crate::error::{StepError, StepResult};
use crate::step::Environment;

/// A rayon pool of the threads the run allows (`Environment::threads`, at least one).
pub(crate) fn thread_pool(env: &Environment) -> StepResult<ThreadPool> {
    ThreadPoolBuilder::new()
        .num_threads(env.threads.max(1))
        .build()
        .map_err(|e| StepError::failed(format!("starting {} worker threads: {e}", env.threads)))
}
