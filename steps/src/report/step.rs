//! The `report` step kind: the run's training and evaluation metrics rendered as report.md,
//! .csv, .json and .html in its output — what `pipe report` renders for the latest run in a
//! cache, through the same [`RunCollector`]: every fine-tune with its epochs, the first
//! evaluation as the final one, every model compared. Not in it: what only a cache's run
//! records know (other runs, who ran it, the epochs' timings).
//!
//! The steps to report on are named in `steps` (each one's outputs that mean something to a
//! report become inputs, [`Reported::input_name`]); the inputs `training` and `evaluation` of
//! versions before 6 still work, named by the input.

use std::fs;
use std::path::Path;

use super::{chosen_line, Format, Report, RunCollector};
use crate::error::{StepError, StepResult};
use crate::step::{
    Default, InputSource, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Reported, ReportedOutput, Step,
    StepContext, StepSpec,
};

/// The `report` step kind: renders one run's results.
pub struct ReportStep;

/// What the `steps` parameter takes of each step named, in this order.
const READS: &[Reported] = &[
    Reported::Training,
    Reported::Evaluation,
    Reported::Baseline,
    Reported::Ensemble,
    Reported::ValidScores,
    Reported::Weights,
];

static SPEC: StepSpec = StepSpec {
    kind: "report",
    all_cores: false,
    // 2: the epoch is chosen by validation accuracy, not test accuracy. 3: the HTML report's
    // charts (training loss, accuracy with reference lines, confusion grid). 4: weighted F1
    // beside macro F1, class names (string labels); or the saved epoch, the selection figure,
    // early stopping and class weights (two branches). 5: both. Multi-label and regression runs
    // are new; single-label reports are unchanged by them. 6: `steps`: every fine-tune and
    // model of the run, compared (the JSON lists the fine-tunes and models, by step).
    version: 6,
    summary: "the run's report, as `pipe report` renders it: every fine-tune's accuracy-per-epoch table, the final \
              evaluation, the models compared (Markdown, CSV, JSON, HTML)",
    params: &[ParamSpec::optional(
        "steps",
        ParamType::Steps(READS),
        Default::Absent,
        "the steps to report on, in order: fine-tunes, evaluations, linear baselines, ensembles (each one's \
         metrics, validation metrics and weights are read)",
    )],
    inputs: &[
        InputSpec::optional("training", "the `metrics` output of a fine-tune step (without `steps`)")
            .expecting(Reported::Training),
        InputSpec::optional("evaluation", "the `metrics` output of an evaluate step (without `steps`)")
            .expecting(Reported::Evaluation),
    ],
    outputs: &[OutputSpec { name: "report", help: "report.md, report.csv, report.json, report.html" }],
    reported: &[ReportedOutput::new("report", Reported::Files)],
};

fn read_json(path: &Path, input: &str, source: &InputSource) -> StepResult<serde_json::Value> {
    let bytes = fs::read(path).map_err(StepError::io("reading", path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StepError::input(format!("input `{input}` ({}): not a metrics file: {e}", source.display)))
}

impl Step for ReportStep {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve_inputs(
        &self,
        params: &Params,
        sources: &std::collections::BTreeMap<String, InputSource>,
    ) -> StepResult<Params> {
        if params.str_list("steps")?.is_empty() && !sources.contains_key("training") {
            return Err(StepError::input_with_help(
                "nothing to report: no `steps` and no input `training`",
                "name the steps: `steps: [finetune, evaluate, linear]`",
            ));
        }
        Ok(params.clone())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let mut collector = RunCollector::new();
        let mut add = |step: &str, input: &str, is: Reported| -> StepResult<()> {
            let Some(path) = ctx.opt_input(input) else { return Ok(()) };
            let source = ctx.source(input);
            collector
                .add(step, is, read_json(path, input, &source)?)
                .map_err(|e| StepError::input(format!("input `{input}` ({}): {e}", source.display)))
        };
        // The inputs of versions before 6, named by the input.
        add("training", "training", Reported::Training)?;
        add("evaluation", "evaluation", Reported::Evaluation)?;
        for step in ctx.params.str_list("steps")? {
            for is in READS {
                add(&step, &is.input_name(&step), *is)?;
            }
        }
        let latest = collector.run_report(ctx.name.to_string(), "succeeded".into());
        let report = Report { pipeline: ctx.name.to_string(), latest, comparison: Vec::new() };
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
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let (tunes, models) =
            (count(report.latest.fine_tunes.len(), "fine-tune"), count(report.latest.models.len(), "model"));
        ctx.events.log(&format!(
            "{summary}; {tunes}, {models}; wrote report.md, .csv, .json and .html (`pipe report` shows them)"
        ));
        Ok(())
    }
}
