//! One file per command, each with its explicit arguments.

pub mod gc;
pub mod kinds;
pub mod run;
pub mod status;

use std::path::Path;

use pipe_steps::Environment;

use crate::cli::GlobalArgs;
use crate::error::Error;
use crate::graph::PipelineGraph;
use crate::spec::{OverrideArg, PipelineSpec};

/// Reads, parses and checks a pipeline file with its overrides.
pub fn load_pipeline(file: &Path, overrides: &[OverrideArg]) -> Result<(PipelineSpec, PipelineGraph), Error> {
    let spec = PipelineSpec::load(file, overrides)??;
    let graph = PipelineGraph::build(&spec)?;
    Ok((spec, graph))
}

/// The run environment from the global options.
pub fn environment(global: &GlobalArgs) -> Environment {
    let threads = global
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    let hub_cache = std::env::var_os("HF_HOME").map(std::path::PathBuf::from);
    Environment { mirror: global.mirror.clone(), threads, hub_cache, ..Environment::default() }
}
