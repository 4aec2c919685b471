//! The `sample` step kind: the header and the first (or a seeded random choice of) N rows of a
//! line-oriented table. It makes small pipelines from big files (`nsmc-tiny.yaml`).

use std::fs;
use std::io::Write;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::error::{StepError, StepResult};
use crate::step::{Default, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec};

pub struct Sample;

static SPEC: StepSpec = StepSpec {
    kind: "sample",
    version: 1,
    summary: "keep the header and N rows of a line-oriented table (first N, or a seeded random choice)",
    params: &[
        ParamSpec::required("rows", ParamType::Uint, "how many rows to keep"),
        ParamSpec::optional(
            "seed",
            ParamType::Uint,
            Default::Absent,
            "pick rows at random with this seed (keeps file order)",
        ),
        ParamSpec::optional(
            "header",
            ParamType::Bool,
            Default::Bool(true),
            "the first line is a header and is always kept",
        ),
        ParamSpec::optional("log_every", ParamType::Uint, Default::Int(0), "log every N rows kept (0: never)")
            .not_in_key(),
    ],
    inputs: &[InputSpec::required("data", "the table to sample")],
    outputs: &[OutputSpec { name: "file", help: "the sampled table" }],
};

impl Step for Sample {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        match params.usize("rows")? {
            0 => Err(StepError::param("rows", "must be at least 1")),
            _ => Ok(()),
        }
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let path = ctx.input("data")?;
        let text = fs::read(path).map_err(StepError::io("reading", path))?;
        let text = String::from_utf8(text).map_err(|e| {
            StepError::input(format!("{}: not UTF-8 text (byte {})", path.display(), e.utf8_error().valid_up_to()))
        })?;
        let mut lines: Vec<&str> = text.lines().collect();
        let header = if ctx.params.bool("header")? && !lines.is_empty() { Some(lines.remove(0)) } else { None };
        let wanted = ctx.params.usize("rows")?;
        let picked: Vec<usize> = match ctx.params.opt_usize("seed")? {
            Some(seed) if wanted < lines.len() => {
                let mut rng = StdRng::seed_from_u64(seed as u64);
                let mut idx = sample(&mut rng, lines.len(), wanted).into_vec();
                idx.sort_unstable();
                idx
            }
            _ => (0..wanted.min(lines.len())).collect(),
        };
        let out_path = ctx.output("file");
        let mut out = fs::File::create(&out_path).map_err(StepError::io("creating", &out_path))?;
        let log_every = ctx.params.opt_usize("log_every")?.unwrap_or(0);
        let mut write = |line: &str| writeln!(out, "{line}").map_err(StepError::io("writing", &out_path));
        if let Some(h) = header {
            write(h)?;
        }
        for (n, &i) in picked.iter().enumerate() {
            write(lines[i])?;
            if log_every > 0 && (n + 1) % log_every == 0 {
                ctx.events.log(&format!("{} rows", n + 1));
            }
        }
        ctx.events.log(&format!("kept {} of {} rows", picked.len(), lines.len()));
        Ok(())
    }
}
