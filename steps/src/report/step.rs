//! The `report` step kind: one run's training and evaluation metrics rendered as report.md,
//! .csv, .json and .html in its output (what `pipe report` renders for the runs in a cache).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::{chosen_line, EvalMetrics, Format, RegressionMetrics, Report, RunReport, TrainingMetrics};
use crate::error::{StepError, StepResult};
use crate::step::{InputSpec, OutputSpec, Step, StepContext, StepSpec};
use crate::task::Task;

/// The `report` step kind: renders one run's training and evaluation metrics.
pub struct ReportStep;

static SPEC: StepSpec = StepSpec {
    kind: "report",
    all_cores: false,
    // 2: the epoch is chosen by validation accuracy, not test accuracy. 3: the HTML report's
    // charts (training loss, accuracy with reference lines, confusion grid). 4: weighted F1
    // beside macro F1, class names (string labels); or the saved epoch, the selection figure,
    // early stopping and class weights (two branches). 5: both. Multi-label and regression runs
    // are new; single-label reports are unchanged by them.
    version: 5,
    summary: "assemble the accuracy-per-epoch table and the final evaluation (Markdown, CSV, JSON, HTML)",
    params: &[],
    inputs: &[
        InputSpec::required("training", "the `metrics` output of a fine-tune step"),
        InputSpec::optional("evaluation", "the `metrics` output of an evaluate step"),
    ],
    outputs: &[OutputSpec { name: "report", help: "report.md, report.csv, report.json, report.html" }],
};

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> StepResult<T> {
    let bytes = fs::read(path).map_err(StepError::io("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| StepError::input(format!("{}: not a metrics file: {e}", path.display())))
}

impl Step for ReportStep {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let training: TrainingMetrics = read_json(ctx.input("training")?)?;
        let evaluated: Option<serde_json::Value> = ctx.opt_input("evaluation").map(read_json).transpose()?;
        let (mut evaluation, mut regression) = (None, None);
        if let (Some(value), Some(path)) = (evaluated, ctx.opt_input("evaluation")) {
            let bad = |e: serde_json::Error| StepError::input(format!("{}: not a metrics file: {e}", path.display()));
            if value.get("task") == Some(&serde_json::json!(Task::Regression.name())) {
                regression = Some(serde_json::from_value::<RegressionMetrics>(value).map_err(bad)?);
            } else {
                evaluation = Some(serde_json::from_value::<EvalMetrics>(value).map_err(bad)?);
            }
        }
        let report = Report {
            pipeline: ctx.name.to_string(),
            latest: RunReport {
                label: ctx.name.to_string(),
                state: "succeeded".into(),
                by: None,
                commit: None,
                params: BTreeMap::new(),
                training: Some(training),
                evaluation,
                regression,
                note: None,
                models: Vec::new(),
            },
            comparison: Vec::new(),
        };
        let summary = match report.latest.training.as_ref().and_then(chosen_line) {
            Some(line) => line,
            None => "no epochs in the training metrics".to_string(),
        };
        let dir = ctx.output("report");
        fs::create_dir_all(&dir).map_err(StepError::io("creating", &dir))?;
        for (name, format) in [
            ("report.md", Format::Markdown),
            ("report.csv", Format::Csv),
            ("report.json", Format::Json),
            ("report.html", Format::Html),
        ] {
            let path = dir.join(name);
            fs::write(&path, report.render(format)).map_err(StepError::io("writing", &path))?;
        }
        ctx.events.log(&format!("{summary}; wrote report.md, .csv, .json and .html (`pipe report` shows them)"));
        Ok(())
    }
}
