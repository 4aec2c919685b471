//! `pipe`: declarative, content-cached pipelines for fine-tuning BERT classifiers.
//!
//! A pipeline file ([`spec`]) becomes a step graph ([`graph`]); each step's key
//! ([`fingerprint`]) decides whether its result is in the [`cache`]; the [`executor`] runs what
//! is missing, the [`reporter`] prints, and [`run_record`]s keep the history for `status` and
//! `report`. The step kinds themselves live in the `pipe-steps` crate.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod dirty_reason;
pub mod error;
pub mod executor;
pub mod fingerprint;
pub mod graph;
pub mod manifest;
pub mod reporter;
pub mod run_record;
pub mod spec;
pub mod step_key;
