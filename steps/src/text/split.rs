//! The `split` step kind: a seeded, optionally stratified split of a tensor set into `train`
//! and `valid` tensor sets.
//!
//! Rows are shuffled with a seeded generator (per class when stratified, classes in label
//! order), the first `round(n * valid_fraction)` go to `valid` (at least one row and at most all
//! but one on each side), and each side keeps the original row order. The same input, fraction
//! and seed always give the same split. Both sides keep the input's `meta.json` (so class
//! indices agree) and a copy of its `tokenizer.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{StepError, StepResult};
use crate::step::{Default, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec};
use crate::tensor_set::{TensorSet, TOKENIZER_FILE};

pub struct Split;

static SPEC: StepSpec = StepSpec {
    kind: "split",
    all_cores: false,
    version: 1,
    summary: "seeded, optionally stratified split of a tensor set into train and validation sets",
    params: &[
        ParamSpec::optional(
            "valid_fraction",
            ParamType::Float,
            Default::Float(0.1),
            "share of rows for validation, in (0, 1)",
        ),
        ParamSpec::optional("seed", ParamType::Uint, Default::Int(42), "seed of the shuffle"),
        ParamSpec::optional(
            "stratify",
            ParamType::Bool,
            Default::Bool(true),
            "keep each label's share equal on both sides",
        ),
    ],
    inputs: &[InputSpec::required("data", "the tensor set to split")],
    outputs: &[
        OutputSpec { name: "train", help: "tensor set of the training rows" },
        OutputSpec { name: "valid", help: "tensor set of the validation rows" },
    ],
    reported: &[],
};

impl Step for Split {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        let fraction = params.f64("valid_fraction")?;
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(StepError::param(
                "valid_fraction",
                format!("must be between 0 and 1 (exclusive), got {fraction}"),
            ));
        }
        params.usize("seed")?;
        params.bool("stratify")?;
        Ok(())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        self.validate(ctx.params)?;
        let fraction = ctx.params.f64("valid_fraction")?;
        let seed = ctx.params.usize("seed")? as u64;
        let stratify = ctx.params.bool("stratify")?;
        let data = ctx.input("data")?;
        let set = TensorSet::load(data)?;
        let (train, valid) = split_rows(&set.labels, fraction, seed, stratify)?;
        for (name, rows) in [("train", &train), ("valid", &valid)] {
            let out = ctx.output(name);
            fs::create_dir_all(&out).map_err(StepError::io("creating", &out))?;
            set.select(rows).save(&out)?;
            copy_tokenizer(data, &out)?;
        }
        ctx.events.log(&format!(
            "{} rows: {} train, {} valid ({}seed {seed})",
            set.len(),
            train.len(),
            valid.len(),
            if stratify { "stratified, " } else { "" }
        ));
        Ok(())
    }
}

/// The row indices of each side, `(train, valid)`, each in ascending order.
pub fn split_rows(labels: &[i64], fraction: f64, seed: u64, stratify: bool) -> StepResult<(Vec<usize>, Vec<usize>)> {
    let mut groups: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        groups.entry(if stratify { label } else { 0 }).or_default().push(i);
    }
    if groups.is_empty() {
        return Err(StepError::input("the tensor set has no rows to split"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (label, mut rows) in groups {
        let n = rows.len();
        if n < 2 {
            let message = if stratify {
                format!(
                    "label {label} has {n} row; a stratified split needs at least 2 rows of each label (one per side)"
                )
            } else {
                format!("the tensor set has {n} row; a split needs at least 2 (one per side)")
            };
            let help = if stratify { "set `stratify: false`, or give more data" } else { "give more data" };
            return Err(StepError::input_with_help(message, help));
        }
        let n_valid = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        rows.shuffle(&mut rng);
        valid.extend_from_slice(&rows[..n_valid]);
        train.extend_from_slice(&rows[n_valid..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    Ok((train, valid))
}

fn copy_tokenizer(from: &Path, to: &Path) -> StepResult<()> {
    let source = from.join(TOKENIZER_FILE);
    if source.is_file() {
        let target = to.join(TOKENIZER_FILE);
        fs::copy(&source, &target).map_err(StepError::io("copying", &source))?;
    }
    Ok(())
}
