//! The step kinds' integration tests: one binary (each test binary links candle, polars and
//! tokenizers), one module per step family.

mod bert_electra;
mod bert_fine_tune;
mod bert_gpu_path;
mod bert_model;
mod bert_optimizer;
mod bert_steps;
mod class_weights;
mod ensemble;
mod hf_tokenizer;
mod hub;
mod labels;
mod linear;
mod report;
mod tasks;
mod text_encode;
mod text_nsmc;
mod text_split;
mod text_support;
mod text_table;
mod text_tokenize;
mod text_train_tokenizer;
