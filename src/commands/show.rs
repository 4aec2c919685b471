//! `pipe show STEP [PIPELINE.yaml] [--path]`: where a step's cached result is (its output
//! folder) and its files with sizes and hashes from the manifest, so nobody reads manifests by
//! hand; `--path` prints the folder alone, for `$(pipe show finetune --path)`. The step is
//! decided as `pipe status` decides it (the pipeline as it is now, with `--set`); a step that
//! is not in the local cache exits 1 with how to make it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cache::{Cache, Lookup};
use crate::commands::push::select;
use crate::commands::{environment, load_pipeline, pipeline_file, GlobalArgs};
use crate::error::Error;
use crate::executor::{Executor, RunOptions};
use crate::reporter::{human_bytes, Reporter};
use crate::run_record::{RunRecord, StepStatus};
use crate::spec::OverrideArg;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The step (in a sweep: every variant of it).
    pub step: String,
    /// The pipeline file (default: the one most recently run with this cache).
    pub pipeline: Option<PathBuf>,
    /// Print only the output folder's path.
    #[arg(long)]
    pub path: bool,
    /// Show the step as the pipeline is with this override: STEP.PARAM=VALUE.
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
}

pub fn execute(args: &ShowArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let cache = Cache::at(&global.cache_dir);
    let file =
        pipeline_file(args.pipeline.as_deref(), global, &format!("pipe show {} pipelines/nsmc-tiny.yaml", args.step))?;
    let (_, graph) = load_pipeline(&file, &args.set)?;
    let selected = select(&graph, std::slice::from_ref(&args.step), &file)?;
    let env = environment(global);
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let quiet = Reporter::quiet();
    let store = crate::tiered_cache::TieredCache::new(&cache, None, &quiet);
    let executor = Executor::new(&store, &graph, &env, &quiet, &history);
    let outcomes = executor.run(&RunOptions { dry_run: true, ..RunOptions::default() }, &mut |_, _| {});
    let mut missing = false;
    for i in selected {
        let name = &graph.steps[i].name;
        let manifest = match (&outcomes[i].key, outcomes[i].status) {
            (Some(key), StepStatus::WouldUseCache) => match cache.lookup(key) {
                Lookup::Hit(m) => Some(m),
                _ => None,
            },
            _ => None,
        };
        let Some(manifest) = manifest else {
            missing = true;
            let why: Vec<String> = outcomes[i]
                .reasons
                .iter()
                .map(ToString::to_string)
                .chain(outcomes[i].failure.as_ref().map(|f| f.message.clone()))
                .collect();
            let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) };
            reporter.error(
                &format!("{name} is not in the cache{why}"),
                Some(&format!("run it: `pipe run {}`", file.display())),
            );
            continue;
        };
        let dir = cache.out_dir(&manifest);
        if args.path {
            reporter.line(&dir.display().to_string());
            continue;
        }
        reporter.line(&format!(
            "{name} ({}), key {}, made {}",
            graph.steps[i].kind.spec().kind,
            manifest.key.short(),
            manifest.created
        ));
        reporter.line(&dir.display().to_string());
        let rows: Vec<(String, String, String)> = manifest
            .outputs
            .iter()
            .flat_map(|(output, entry)| {
                entry.files.iter().map(move |f| {
                    let path = if f.path.is_empty() { output.clone() } else { format!("{output}/{}", f.path) };
                    (path, human_bytes(f.size), f.blake3[..12.min(f.blake3.len())].to_string())
                })
            })
            .collect();
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let size_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        for (path, size, hash) in rows {
            reporter.line(&format!("  {path:<width$}  {size:>size_width$}  blake3 {hash}"));
        }
    }
    Ok(if missing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
