//! One step as written in a pipeline file: its name, kind, inputs and raw parameters.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::spec::executor_spec::{ExecutorKind, Resources};

/// A reference to another step's output: `STEP` or `STEP.OUTPUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub step: String,
    pub output: Option<String>,
}

impl InputRef {
    pub fn parse(text: &str) -> InputRef {
        match text.split_once('.') {
            Some((step, output)) => InputRef { step: step.to_string(), output: Some(output.to_string()) },
            None => InputRef { step: text.to_string(), output: None },
        }
    }
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}.{o}", self.step),
            None => write!(f, "{}", self.step),
        }
    }
}

/// Where a parameter value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File,
    /// `--set STEP.PARAM=VALUE`, with the text as typed.
    Override(String),
}

/// A parameter value as written, after `${params.NAME}` substitution.
#[derive(Debug, Clone, PartialEq)]
pub struct RawParam {
    pub value: Value,
    pub origin: Origin,
}

/// One step of a pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub name: String,
    pub kind: String,
    pub inputs: BTreeMap<String, InputRef>,
    pub params: BTreeMap<String, RawParam>,
    /// `executor: local|slurm`: where this step runs, whatever the pipeline's executor.
    pub executor: Option<ExecutorKind>,
    /// `resources:` of the step's jobs (not part of its key).
    pub resources: Resources,
}
