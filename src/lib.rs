//! `pipe`: declarative, content-cached pipelines for fine-tuning BERT classifiers.
//!
//! A pipeline file ([`spec`]) becomes a step graph ([`graph`]); each step's key
//! ([`fingerprint`]) decides whether its result is in the [`cache`] (locally, or on a shared [`remote`]: [`tiered_cache`]); the [`executor`] runs what
//! is missing, the [`reporter`] prints, and [`run_record`]s keep the history for `status` and
//! `report`. The step kinds themselves live in the `pipe-steps` crate.

// Only the reporter prints (reporter.rs allows it).
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub(crate) mod cache;
pub mod cli;
pub(crate) mod commands;
pub(crate) mod dirty_reason;
pub(crate) mod error;
pub(crate) mod executor;
pub(crate) mod fingerprint;
pub(crate) mod graph;
pub(crate) mod manifest;
pub(crate) mod plan;
pub(crate) mod provenance;
pub(crate) mod remote;
pub(crate) mod reporter;
pub(crate) mod run_record;
pub(crate) mod spec;
pub(crate) mod step_key;
pub(crate) mod step_outcome;
pub(crate) mod tiered_cache;
pub(crate) mod tracking;
