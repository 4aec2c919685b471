//! The `download` step kind.

use crate::error::StepResult;
use crate::step::{Default, OutputSpec, ParamSpec, ParamType, Step, StepContext, StepSpec};

pub struct Download;

static SPEC: StepSpec = StepSpec {
    kind: "download",
    version: 1,
    summary: "fetch a URL (http, https, file) or a local path, verify its sha256",
    params: &[
        ParamSpec::required("url", ParamType::Str, "http(s):// or file:// URL, or a local path"),
        ParamSpec::optional("sha256", ParamType::Str, Default::Absent, "expected SHA-256 of the file (hex)"),
    ],
    inputs: &[],
    outputs: &[OutputSpec { name: "file", help: "the downloaded file" }],
};

impl Step for Download {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }
    fn run(&self, _ctx: &StepContext<'_>) -> StepResult<()> {
        Ok(())
    }
}
