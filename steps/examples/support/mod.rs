//! What the benchmark examples share: running one step kind outside the runner.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pipe_steps::{Environment, NoEvents, Params, Step, StepContext, StepError};
use serde_json::Value;

/// The step's defaults with `given` on top.
pub fn params(step: &dyn Step, given: Value) -> Params {
    let mut values = BTreeMap::new();
    for p in step.spec().params {
        if let Some(v) = p.default.to_value() {
            values.insert(p.name.to_string(), v);
        }
    }
    if let Value::Object(map) = given {
        values.extend(map);
    }
    Params::new(values)
}

/// Runs `step` into a fresh `out` directory and returns the seconds it took.
pub fn run(
    step: &dyn Step,
    given: Value,
    inputs: &[(&str, &Path)],
    out: &Path,
    env: &Environment,
) -> Result<f64, StepError> {
    let params = params(step, given);
    let inputs: BTreeMap<String, PathBuf> = inputs.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
    if out.exists() {
        fs::remove_dir_all(out).map_err(StepError::io("removing", out))?;
    }
    let checkpoint = out.join(".checkpoint");
    fs::create_dir_all(&checkpoint).map_err(StepError::io("creating", &checkpoint))?;
    let ctx = StepContext {
        name: "bench",
        params: &params,
        inputs: &inputs,
        sources: &std::collections::BTreeMap::new(),
        out_dir: out,
        checkpoint_dir: &checkpoint,
        env,
        events: &NoEvents,
    };
    let start = Instant::now();
    step.validate(&params)?;
    step.run(&ctx)?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
