//! BERT in candle: our own differentiable BERT module and the `fine-tune`, `evaluate` and
//! `pretrain` step kinds (masked-language modelling, or ELECTRA's replaced-token detection
//! with [`electra`]), and `predict` (a model on raw text; [`predictor`], shared with
//! `pipe predict`).
//!
//! The model and the training loop take tensors and configs ([`model`], [`train`],
//! [`optimizer`]); reading checkpoints and writing Hugging Face model directories happen at the
//! edges ([`weights`], [`model_dir`], [`checkpoint`]) and in the step kinds. Speed on CPU comes
//! from fused kernels with their own backward passes ([`ops`], [`dense_ops`]), data parallelism
//! over shards of a batch ([`shard`]) and sparse word-embedding gradients ([`gradients`]).

pub mod batch;
pub(crate) mod checkpoint;
pub(crate) mod classify;
pub mod config;
pub(crate) mod dense_ops;
pub mod device;
pub mod electra;
pub(crate) mod evaluate;
pub(crate) mod fine_tune;
pub mod gradients;
pub mod model;
pub mod model_dir;
pub(crate) mod ops;
pub mod optimizer;
pub(crate) mod outputs;
pub mod predict;
pub mod predictor;
pub(crate) mod pretrain;
pub(crate) mod shard;
pub(crate) mod tokenizer_files;
pub mod train;
pub mod weights;

pub use evaluate::Evaluate;
pub use fine_tune::{classify_batch, FineTune};
pub use predict::Predict;
pub use pretrain::Pretrain;
