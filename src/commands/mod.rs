//! One file per command, each with its explicit arguments.

pub mod gc;
pub mod kinds;
pub mod report;
pub mod run;
pub mod status;

use std::path::{Path, PathBuf};

use clap::Args;
use pipe_steps::{runtime, Environment};

use crate::error::Error;
use crate::graph::PipelineGraph;
use crate::spec::{OverrideArg, PipelineSpec};

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Cache directory.
    #[arg(long, global = true, env = "PIPE_CACHE_DIR", default_value = "cache", value_name = "DIR")]
    pub cache_dir: PathBuf,
    /// A folder consulted by file name before any URL is fetched (e.g. ../shared/nsmc).
    #[arg(long, global = true, env = "PIPE_MIRROR", value_name = "DIR")]
    pub mirror: Option<PathBuf>,
    /// Compute threads for tokenizing and training (not part of any cache key).
    #[arg(long, global = true, env = "PIPE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
}

/// Reads, parses and checks a pipeline file with its overrides.
pub fn load_pipeline(file: &Path, overrides: &[OverrideArg]) -> Result<(PipelineSpec, PipelineGraph), Error> {
    let spec = PipelineSpec::load(file, overrides)??;
    let graph = PipelineGraph::build(&spec)?;
    Ok((spec, graph))
}

/// The run environment from the global options.
pub fn environment(global: &GlobalArgs) -> Environment {
    let threads = global.threads.unwrap_or_else(runtime::default_threads).max(1);
    runtime::configure(threads);
    // Hub downloads go where hf-hub puts them by default (`HF_HOME`, else ~/.cache/huggingface).
    let env = Environment { mirror: global.mirror.clone(), threads, hub_cache: None, ..Environment::default() };
    // First Ctrl-C: long steps stop at their next check and nothing more starts; the cache
    // stays consistent (a step's result is committed whole or not at all). Second: exit now.
    let cancelled = env.cancelled.clone();
    let _ = ctrlc::set_handler(move || {
        if cancelled.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        crate::reporter::interrupt_notice();
    });
    env
}
