//! What the benchmark examples share: running one step kind outside the runner.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use pipe_steps::{Environment, Events, NoEvents, Params, Step, StepContext, StepError, Timing};
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
    run_with(step, given, inputs, out, env, &NoEvents)
}

/// Keeps the timings a step reports ([`Events::timing`]: they are in no output), nothing else.
#[allow(dead_code)] // bench_train's
#[derive(Default)]
pub struct Timings(pub Mutex<Vec<Timing>>);

impl Events for Timings {
    fn log(&self, _line: &str) {}
    fn progress_start(&self, _label: &str, _total: Option<u64>, _unit: &str) {}
    fn progress_inc(&self, _delta: u64) {}
    fn progress_message(&self, _message: &str) {}
    fn progress_finish(&self) {}
    fn timing(&self, timing: &Timing) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(timing.clone());
    }
}

/// [`run`], returning the timings the step reported.
#[allow(dead_code)] // bench_train's
pub fn run_timed(
    step: &dyn Step,
    given: Value,
    inputs: &[(&str, &Path)],
    out: &Path,
    env: &Environment,
) -> Result<Vec<Timing>, StepError> {
    let timings = Timings::default();
    run_with(step, given, inputs, out, env, &timings)?;
    Ok(timings.0.into_inner().unwrap_or_else(|e| e.into_inner()))
}

fn run_with(
    step: &dyn Step,
    given: Value,
    inputs: &[(&str, &Path)],
    out: &Path,
    env: &Environment,
    events: &dyn Events,
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
        events,
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
