//! One file per command, each with its explicit arguments.

pub mod gc;
pub mod kinds;
pub mod pull;
pub mod push;
pub mod report;
pub mod run;
pub mod show;
pub mod status;
pub mod worker;

use std::path::{Path, PathBuf};

use clap::Args;
use pipe_steps::{runtime, Environment};

use crate::error::Error;
use crate::graph::PipelineGraph;
use crate::remote::{Remote, RemoteMode};
use crate::reporter::Reporter;
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

/// Where the remote cache is, for the commands that use one.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Remote cache shared between machines: s3://BUCKET/PREFIX or file:///PATH (default: the
    /// pipeline's `remote:`). Credentials come from the AWS environment variables or profile.
    #[arg(long, env = "PIPE_REMOTE", value_name = "URL")]
    pub remote: Option<String>,
    /// read-write: pull what is missing, push what runs; read-only: pull only; fallback:
    /// read-write, but an unreachable remote is a warning and the work is local; off.
    #[arg(long, env = "PIPE_REMOTE_MODE", value_enum, default_value = "read-write", value_name = "MODE")]
    pub remote_mode: RemoteMode,
}

/// The remote named by `--remote`/`PIPE_REMOTE`, else by the pipeline (`configured`), checked
/// to answer. `None` when there is none, it is off, or it cannot be reached in fallback mode
/// (with a warning).
pub fn open_remote(args: &RemoteArgs, configured: Option<&str>, reporter: &Reporter) -> Result<Option<Remote>, Error> {
    let Some(url) = args.remote.as_deref().filter(|u| !u.is_empty()).or(configured) else { return Ok(None) };
    if args.remote_mode == RemoteMode::Off {
        return Ok(None);
    }
    let remote = Remote::open(url, args.remote_mode)?;
    match remote.check() {
        Ok(()) => Ok(Some(remote)),
        Err(e) if args.remote_mode == RemoteMode::Fallback => {
            reporter.warning(&format!("{e}; working locally (--remote-mode fallback)"));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// For the commands that only read (`status`, `report`): [`open_remote`], but a remote that
/// cannot be reached or refuses us is a warning, and the command shows the local cache. (A
/// malformed URL is still an error: that is the user's to fix.) Later failures of the remote
/// are handled the same way, as in fallback mode.
pub fn open_remote_to_read(
    args: &RemoteArgs,
    configured: Option<&str>,
    reporter: &Reporter,
) -> Result<Option<Remote>, Error> {
    let Some(url) = args.remote.as_deref().filter(|u| !u.is_empty()).or(configured) else { return Ok(None) };
    if args.remote_mode == RemoteMode::Off {
        return Ok(None);
    }
    let remote = Remote::open(url, RemoteMode::Fallback)?;
    match remote.check() {
        Ok(()) => Ok(Some(remote)),
        Err(e) => {
            reporter.warning(&format!("{e}; showing the local cache only"));
            if let Some(help) = &e.help {
                reporter.note(&format!("  help: {help}"));
            }
            Ok(None)
        }
    }
}

/// Reads, parses and checks a pipeline file with its overrides.
pub fn load_pipeline(file: &Path, overrides: &[OverrideArg]) -> Result<(PipelineSpec, PipelineGraph), Error> {
    let spec = PipelineSpec::load(file, overrides)??;
    let graph = PipelineGraph::build(&spec)?;
    Ok((spec, graph))
}

/// The run environment from the global options.
pub fn environment(global: &GlobalArgs) -> Environment {
    environment_for(global.mirror.clone(), global.threads)
}

/// The run environment with a mirror and a number of threads (default: every CPU).
pub fn environment_for(mirror: Option<PathBuf>, threads: Option<usize>) -> Environment {
    let threads = threads.unwrap_or_else(runtime::default_threads).max(1);
    runtime::configure(threads);
    // Hub downloads go where hf-hub puts them by default (`HF_HOME`, else ~/.cache/huggingface).
    let env = Environment { mirror, threads, hub_cache: None, ..Environment::default() };
    // First Ctrl-C (or SIGTERM, which is how `scancel` stops a worker): long steps stop at
    // their next check, Slurm jobs are cancelled, and nothing more starts; the cache stays
    // consistent (a step's result is committed whole or not at all). Second: exit now, after
    // cancelling the Slurm jobs this process submitted.
    let cancelled = env.cancelled.clone();
    let _ = ctrlc::set_handler(move || {
        if cancelled.swap(true, std::sync::atomic::Ordering::SeqCst) {
            crate::executor::slurm::cancel_submitted();
            std::process::exit(130);
        }
        crate::reporter::interrupt_notice();
    });
    env
}
