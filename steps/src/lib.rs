//! The step kinds of `pipe`. Each kind declares its parameters, inputs and outputs and turns
//! input files into output files; none knows of YAML, keys or the cache (see [`step`]).

// Steps never print: they report through `Events` (shared_data.rs, a test helper, may).
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod bert;
pub mod command;
pub(crate) mod download;
pub mod ensemble;
pub mod error;
pub mod hub;
pub mod labels;
pub mod linear;
pub mod predictions;
pub mod report;
pub mod runtime;
pub(crate) mod sample;
#[doc(hidden)]
pub mod shared_data;
pub mod step;
pub mod suggest;
pub mod task;
pub mod tensor_set;
pub mod text;

pub use error::{StepError, StepResult};
pub use step::{
    Default, Environment, Events, InputSource, InputSpec, NoEvents, OutputSpec, ParamSpec, ParamType, Params, Reported,
    ReportedOutput, Step, StepContext, StepSpec, Timing,
};

/// Every step kind, in the order `pipe kinds` lists them.
pub fn registry() -> Vec<&'static dyn Step> {
    vec![
        &download::Download,
        &sample::Sample,
        &text::TrainTokenizer,
        &text::Tokenize,
        &text::Split,
        &bert::Pretrain,
        &bert::FineTune,
        &bert::Evaluate,
        &bert::Predict,
        &linear::Linear,
        &ensemble::Ensemble,
        &report::ReportStep,
        &command::TEMPLATE,
    ]
}

/// The step kind named `kind`.
pub fn find(kind: &str) -> Option<&'static dyn Step> {
    registry().into_iter().find(|s| s.spec().kind == kind)
}
