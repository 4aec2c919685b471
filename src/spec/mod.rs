//! Pipeline files: parsing, `${params.NAME}` substitution, `--set` overrides, `--sweep`
//! variants, `kind: command` declarations ([`command_decl`]) and the errors they can produce.

mod command_decl;
mod executor_spec;
mod locate;
mod override_arg;
mod pipeline_spec;
mod spec_error;
mod step_spec;
mod sweep_arg;

pub use command_decl::CommandDecl;
pub use executor_spec::{ExecutorKind, Resources};
pub use override_arg::OverrideArg;
pub use pipeline_spec::{PipelineSpec, UnreadablePipeline};
pub use spec_error::{did_you_mean, SpecError, SpecErrors};
pub use step_spec::{Origin, StepSpec};
pub use sweep_arg::{label as variant_label, variants, SweepArg};
