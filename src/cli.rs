//! The command line: global options and one subcommand per file in [`crate::commands`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{self, GlobalArgs};
use crate::error::Error;
use crate::reporter::Reporter;

/// `pipe --version`: the version, the commit built from (`-dirty`: with changes to its sources;
/// `unknown`: built outside git) and the enabled cargo features (build.rs sets both).
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PIPE_COMMIT"), ", features: ", env!("PIPE_FEATURES"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "pipe",
    version = VERSION,
    about = "Declarative, content-cached pipelines for fine-tuning BERT classifiers",
    long_about = "Declarative, content-cached pipelines for fine-tuning BERT classifiers.\n\n\
        A YAML file describes steps (download, train-tokenizer, tokenize, split, pretrain, fine-tune, \
        evaluate, report). Every result is cached under a key made of the step's kind, the parameters \
        that affect its output and the content of its inputs, so a rerun repeats only what changed.",
    after_help = "Examples:\n  pipe run pipelines/nsmc-tiny.yaml\n  pipe run pipelines/nsmc.yaml --set finetune.lr=3e-5 --mirror ../shared/nsmc\n  pipe run pipelines/nsmc-tiny.yaml --sweep finetune.lr=3e-4,5e-4,1e-3\n  pipe status\n  pipe report --format html --output report.html\n  pipe show finetune --path\n  pipe predict pipelines/nsmc-tiny.yaml:finetune --text \"재밌어요\"\n  pipe kinds tokenize\n  pipe run pipelines/nsmc.yaml --remote s3://team-bucket/pipe\n  pipe run pipelines/nsmc.yaml --jobs 4\n  pipe run pipelines/nsmc.yaml --executor slurm --cache-dir /shared/pipe-cache\n\nExit codes: 0 success, 1 a step or the remote cache failed, 2 bad input, usage or remote configuration (nothing was run)."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a pipeline: reuse cached steps, run the rest in dependency order.
    Run(commands::run::RunArgs),
    /// Show, per step, whether it is up-to-date, stale (and why) or never run.
    Status(commands::status::StatusArgs),
    /// The step graph: steps, kinds, inputs, up-to-date or stale; as text, Mermaid or DOT.
    Dag(commands::dag::DagArgs),
    /// Accuracy per epoch of the latest run, its final evaluation, and runs compared.
    Report(commands::report::ReportArgs),
    /// Remove cached results that no recent run references (`--remote`: on the remote).
    Gc(commands::gc::GcArgs),
    /// Upload the pipeline's cached results and run records to the remote cache.
    Push(commands::push::PushArgs),
    /// Download the pipeline's results (or STEPs and what they need) from the remote cache.
    Pull(commands::pull::PullArgs),
    /// Classify raw text with a fine-tuned model: a pipeline's cached step, a directory or a hub id.
    Predict(commands::predict::PredictArgs),
    /// Print a step's cached output folder and its files (`--path`: the folder alone).
    Show(commands::show::ShowArgs),
    /// List the step kinds, or describe one: parameters, inputs, outputs.
    Kinds(commands::kinds::KindsArgs),
    /// Compute one step from a job file (what a Slurm job runs on its node).
    #[command(hide = true)]
    Worker(commands::worker::WorkerArgs),
}

/// Parses the command line, runs the command and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Run(a) => a.json,
        Command::Status(a) => a.json,
        Command::Pull(a) => a.json,
        _ => false,
    };
    let reporter = if matches!(cli.command, Command::Worker(_)) { Reporter::plain() } else { Reporter::new(json) };
    let result = match cli.command {
        Command::Run(args) => commands::run::execute(&args, &cli.global, &reporter),
        Command::Status(args) => commands::status::execute(&args, &cli.global, &reporter),
        Command::Dag(args) => commands::dag::execute(&args, &cli.global, &reporter),
        Command::Report(args) => commands::report::execute(&args, &cli.global, &reporter),
        Command::Gc(args) => commands::gc::execute(&args, &cli.global, &reporter),
        Command::Push(args) => commands::push::execute(&args, &cli.global, &reporter),
        Command::Pull(args) => commands::pull::execute(&args, &cli.global, &reporter),
        Command::Predict(args) => commands::predict::execute(&args, &cli.global, &reporter),
        Command::Show(args) => commands::show::execute(&args, &cli.global, &reporter),
        Command::Kinds(args) => commands::kinds::execute(&args, &reporter),
        Command::Worker(args) => commands::worker::execute(&args, &cli.global, &reporter),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match &e {
                Error::Spec(errors) => reporter.note(errors.render().trim_end()),
                Error::Usage { message, help } => reporter.error(message, help.as_deref()),
                Error::Remote(e) => reporter.error(&e.to_string(), e.help.as_deref()),
                Error::Cache(e) => reporter.error(&e.to_string(), e.help),
                Error::Step(e) => reporter.error(&e.to_string(), e.help()),
                other => reporter.error(&other.to_string(), None),
            }
            ExitCode::from(e.exit_code())
        }
    }
}
