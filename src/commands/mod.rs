//! One file per command, each with its explicit arguments.

pub mod dag;
pub mod gc;
pub mod kinds;
pub mod predict;
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
use crate::reporter::{Interrupted, Reporter};
use crate::spec::{variant_label, variants, OverrideArg, PipelineSpec, SweepArg};

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

/// Where `pipe run` tracks its runs besides the cache (nothing by default; not part of any key).
#[derive(Debug, Clone, Args)]
pub struct TrackArgs {
    /// Track each run (each sweep variant) in MLflow: the tracking server's http(s) URI.
    /// Credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD.
    #[arg(long = "track", env = "MLFLOW_TRACKING_URI", hide_env_values = true, value_name = "URI")]
    pub track: Option<String>,
    /// The MLflow experiment [default: the pipeline's name].
    #[arg(long, env = "MLFLOW_EXPERIMENT_NAME", value_name = "NAME")]
    pub experiment: Option<String>,
    /// Write TensorBoard event files of the training steps to DIR/<run>/<step>/
    /// (`tensorboard --logdir DIR`).
    #[arg(long, env = "PIPE_TENSORBOARD", value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
}

impl TrackArgs {
    pub fn tracking(&self) -> crate::tracking::Tracking {
        crate::tracking::Tracking {
            mlflow: self.track.clone().filter(|u| !u.trim().is_empty()).map(|u| (u, self.experiment.clone())),
            tensorboard: self.tensorboard.clone().filter(|d| !d.as_os_str().is_empty()),
        }
    }
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

/// The pipeline a command names, else the one most recently run with this cache; `example` is
/// the command line the help offers when there is neither.
pub fn pipeline_file(given: Option<&Path>, global: &GlobalArgs, example: &str) -> Result<PathBuf, Error> {
    if let Some(file) = given {
        return Ok(file.to_path_buf());
    }
    match crate::run_record::RunRecord::latest(&crate::cache::Cache::at(&global.cache_dir), None) {
        Some(r) => Ok(r.file),
        None => Err(Error::usage(
            format!("no pipeline given and no run recorded in {}", global.cache_dir.display()),
            Some(format!("name a pipeline: `{example}`")),
        )),
    }
}

/// Reads, parses and checks a pipeline file with its overrides.
pub fn load_pipeline(file: &Path, overrides: &[OverrideArg]) -> Result<(PipelineSpec, PipelineGraph), Error> {
    let spec = PipelineSpec::load(file, overrides)??;
    let graph = PipelineGraph::build(&spec)?;
    Ok((spec, graph))
}

/// A pipeline run once per `--sweep` variant, as one graph in which the steps the variants
/// share appear once.
pub struct Swept {
    pub spec: PipelineSpec,
    pub graph: PipelineGraph,
    /// Each variant's overrides (the sweep's values; one empty variant without a sweep).
    pub variants: Vec<Vec<OverrideArg>>,
    /// Each variant's label (`lr=3e-5`).
    pub labels: Vec<String>,
    /// Per variant, the index in `graph` of each of the pipeline's steps.
    pub maps: Vec<Vec<usize>>,
}

/// Reads, parses and checks a pipeline file with its `--set`s, once per `--sweep` variant.
pub fn load_swept(file: &Path, set: &[OverrideArg], sweep: &[SweepArg]) -> Result<Swept, Error> {
    let variants = variants(sweep);
    let labels: Vec<String> = variants.iter().map(|v| variant_label(v)).collect();
    let mut graphs = Vec::new();
    let mut spec = None;
    for variant in &variants {
        let overrides: Vec<OverrideArg> = set.iter().chain(variant).cloned().collect();
        let (s, g) = load_pipeline(file, &overrides)?;
        spec.get_or_insert(s);
        graphs.push(g);
    }
    let Some(spec) = spec else { return Err(Error::usage("nothing to run", None)) };
    let (graph, maps) = if sweep.is_empty() {
        let graph = graphs.remove(0);
        let map = (0..graph.steps.len()).collect();
        (graph, vec![map])
    } else {
        PipelineGraph::merge(graphs, &labels)
    };
    Ok(Swept { spec, graph, variants, labels, maps })
}

/// The run environment from the global options.
pub fn environment(global: &GlobalArgs) -> Environment {
    environment_for(global.mirror.clone(), global.threads, Interrupted::Run)
}

/// The run environment with a mirror and a number of threads (default: every CPU).
/// `who` says what a first Ctrl-C (or SIGTERM) does, for its notice.
pub fn environment_for(mirror: Option<PathBuf>, threads: Option<usize>, who: Interrupted) -> Environment {
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
        crate::reporter::interrupt_notice(who);
    });
    env
}
