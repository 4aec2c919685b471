//! `pipe kinds [KIND]`: the step kinds, or one kind's parameters, inputs and outputs.

use std::process::ExitCode;

use clap::Args;
use pipe_steps::{Default, StepSpec};

use crate::error::Error;
use crate::reporter::Reporter;
use crate::spec::did_you_mean;

#[derive(Debug, Args)]
pub struct KindsArgs {
    /// A step kind to describe.
    pub kind: Option<String>,
}

pub fn execute(args: &KindsArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let kinds = pipe_steps::registry();
    let Some(name) = &args.kind else {
        let width = kinds.iter().map(|k| k.spec().kind.len()).max().unwrap_or(8);
        for k in &kinds {
            let s = k.spec();
            reporter.line(&format!("{:<width$}  {}", s.kind, s.summary));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(kind) = pipe_steps::find(name) else {
        let help = did_you_mean(name, kinds.iter().map(|k| k.spec().kind));
        return Err(Error::usage(format!("unknown step kind `{name}`"), help));
    };
    if kind.spec().kind == pipe_steps::command::KIND {
        // Its inputs, outputs and parameters are the user's: the manual says how to declare them.
        reporter.line(pipe_steps::command::MANUAL);
    } else {
        describe(kind.spec(), reporter);
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &StepSpec, reporter: &Reporter) {
    reporter.line(&format!("{} (version {}): {}", s.kind, s.version, s.summary));
    if !s.inputs.is_empty() {
        reporter.line("\ninputs:");
        for i in s.inputs {
            let req = if i.required { "required" } else { "optional" };
            reporter.line(&format!("  {:<16} {req}. {}", i.name, i.help));
        }
    }
    reporter.line("\nparameters:");
    for p in s.params {
        let default = match p.default {
            Default::Required => "required".to_string(),
            Default::Absent => "optional".to_string(),
            Default::Str(v) => format!("default {v:?}"),
            Default::Int(v) => format!("default {v}"),
            Default::Float(v) => format!("default {v}"),
            Default::Bool(v) => format!("default {v}"),
        };
        let key = if p.in_key { "" } else { " Not part of the cache key." };
        reporter.line(&format!(
            "  {:<16} {}, {default}. {}.{key}",
            p.name,
            p.ty.describe(),
            p.help.trim_end_matches('.')
        ));
    }
    reporter.line("\noutputs:");
    for o in s.outputs {
        reporter.line(&format!("  {:<16} {}", o.name, o.help));
    }
    // What `pipe report` and the `report` step read of it.
    if !s.reported.is_empty() {
        reporter.line("\nto a report:");
        for r in s.reported {
            reporter.line(&format!("  {:<16} {}", r.output, r.is.describe()));
        }
    }
}
