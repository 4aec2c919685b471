//! The runner's integration tests: one binary (each test binary links candle, polars and
//! tokenizers), one module per behaviour, all through the real `pipe` binary.

mod cache_contract;
mod download;
mod fine_tune;
mod hub;
mod jobs;
mod model_keys;
mod nsmc_tiny;
mod pipelines;
mod remote;
mod report;
mod slurm;
mod slurm_cluster;
mod spec_errors;
mod support;
mod sweep;
