//! The runner's integration tests: one binary (each test binary links candle, polars and
//! tokenizers), one module per behaviour, all through the real `pipe` binary.

mod cache_contract;
mod command;
mod dag;
mod download;
mod fine_tune;
mod hub;
mod jobs;
mod model_keys;
mod nsmc_tiny;
mod pipelines;
mod predict;
mod predict_tasks;
mod remote;
mod report;
mod run_records;
mod show;
mod slurm;
mod slurm_cluster;
mod spec_errors;
mod support;
mod sweep;
mod tables;
mod tracking;
mod version;
