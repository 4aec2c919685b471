//! The interface between the runner and a step kind.
//!
//! A step kind declares its parameters, inputs and outputs ([`StepSpec`] data, checked by the
//! runner before anything runs) and turns resolved inputs into files in an output directory
//! ([`Step::run`]). It knows nothing of YAML, keys or the cache: the runner hands it typed
//! parameters, paths to upstream artifacts and a fresh directory, and makes the result durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StepError;

/// The type a parameter value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Str,
    Int,
    /// A non-negative integer.
    Uint,
    Float,
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of strings.
    StrList,
    /// One of a fixed set of strings, a list of numbers, or a map of names to numbers
    /// (`class_weights: balanced`, `[1.0, 3.5]` or `{law: 3}`).
    NameOrNumbers(&'static [&'static str]),
    /// A local file or directory whose *content* belongs in the step's key.
    Path,
    /// A model or tokenizer source: a local path (content in the key) or a hub id (id in the key).
    PathOrHubId,
    /// An http(s):// or file:// URL, or a local path (made absolute by the runner).
    Url,
    /// A list of names of the pipeline's steps, whose outputs of these meanings to a report
    /// ([`StepSpec::reported`]) become the step's inputs, named [`Reported::input_name`]: the
    /// `report` kind's `steps`. A named step with none of them is bad input.
    Steps(&'static [Reported]),
}

impl ParamType {
    /// How the type is named in error messages.
    pub fn describe(&self) -> String {
        match self {
            ParamType::Str => "a string".into(),
            ParamType::Int => "an integer".into(),
            ParamType::Uint => "a non-negative integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Bool => "true or false".into(),
            ParamType::Choice(options) => format!("one of {}", options.join(", ")),
            ParamType::StrList => "a list of strings".into(),
            ParamType::NameOrNumbers(names) => {
                format!("{}, a list of numbers or a map of names to numbers", names.join(", "))
            }
            ParamType::Path => "a file or directory path".into(),
            ParamType::PathOrHubId => "a local path or a hub model id".into(),
            ParamType::Url => "a URL or a local path".into(),
            ParamType::Steps(_) => "a list of step names".into(),
        }
    }
}

/// A default value for an optional parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// Required: the pipeline must give it.
    Required,
    /// Optional with no value (the step sees it as absent).
    Absent,
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Default {
    pub fn to_value(&self) -> Option<Value> {
        match *self {
            Default::Required | Default::Absent => None,
            Default::Str(s) => Some(Value::from(s)),
            Default::Int(i) => Some(Value::from(i)),
            Default::Float(f) => Some(Value::from(f)),
            Default::Bool(b) => Some(Value::from(b)),
        }
    }
}

/// One parameter a step kind accepts.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: Default,
    /// False for parameters that cannot change the output (log interval, threads, progress):
    /// they are left out of the step's key.
    pub in_key: bool,
    pub help: &'static str,
    /// The name the parameter had before it was renamed: still its name in the key, so cached
    /// results survive the rename, and named in the error when a pipeline still uses it.
    pub old_name: Option<&'static str>,
}

impl ParamSpec {
    pub const fn required(name: &'static str, ty: ParamType, help: &'static str) -> Self {
        ParamSpec { name, ty, default: Default::Required, in_key: true, help, old_name: None }
    }
    pub const fn optional(name: &'static str, ty: ParamType, default: Default, help: &'static str) -> Self {
        ParamSpec { name, ty, default, in_key: true, help, old_name: None }
    }
    /// A parameter renamed from `old`, which stays its name in the key.
    pub const fn renamed_from(mut self, old: &'static str) -> Self {
        self.old_name = Some(old);
        self
    }
    /// The parameter's name in the key.
    pub fn key_name(&self) -> &'static str {
        match self.old_name {
            Some(old) => old,
            None => self.name,
        }
    }
    /// A parameter that cannot change the output, so it is not part of the key.
    pub const fn not_in_key(mut self) -> Self {
        self.in_key = false;
        self
    }
}

/// One input a step kind consumes: an output of another step.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub name: &'static str,
    pub required: bool,
    pub help: &'static str,
    /// What the upstream output must be to a report (`None`: anything): checked before anything
    /// runs, so a report fed a table fails at once, not after the training.
    pub expects: Option<Reported>,
}

impl InputSpec {
    pub const fn required(name: &'static str, help: &'static str) -> Self {
        InputSpec { name, required: true, help, expects: None }
    }
    pub const fn optional(name: &'static str, help: &'static str) -> Self {
        InputSpec { name, required: false, help, expects: None }
    }
    /// An input that must be an output of this meaning ([`StepSpec::reported`]).
    pub const fn expecting(mut self, what: Reported) -> Self {
        self.expects = Some(what);
        self
    }
}

/// What an output of a kind is to a report (`pipe report`, the `report` step, tracking): the
/// framework reads results by these facts, never by kind names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reported {
    /// A fine-tune's training history ([`crate::report::TrainingMetrics`]): epochs, logged
    /// batches, the chosen epoch; a report's per-epoch table.
    Training,
    /// A pre-training history: a JSON list of epochs (tracked; no report table).
    Pretraining,
    /// A trained network's scores on held-out rows ([`crate::report::EvalMetrics`], or
    /// [`crate::report::RegressionMetrics`]): a report's final evaluation, and a model compared.
    Evaluation,
    /// A baseline model's test scores ([`crate::report::EvalMetrics`]): a model compared, a
    /// reference line in the charts.
    Baseline,
    /// An ensemble's test scores ([`crate::report::EvalMetrics`]): a model compared.
    Ensemble,
    /// The validation scores of the step's model (an [`crate::report::EvalMetrics`] file, or
    /// `null` without validation rows): the models table's validation accuracy.
    ValidScores,
    /// An ensemble's members, their weights and its validation accuracy (JSON).
    Weights,
    /// Rendered report files (a folder).
    Files,
}

impl Reported {
    /// How the meaning is named in input names, messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Reported::Training => "training",
            Reported::Pretraining => "pretraining",
            Reported::Evaluation => "evaluation",
            Reported::Baseline => "baseline",
            Reported::Ensemble => "ensemble",
            Reported::ValidScores => "valid_scores",
            Reported::Weights => "weights",
            Reported::Files => "report",
        }
    }

    pub fn from_name(name: &str) -> Option<Reported> {
        Reported::ALL.into_iter().find(|r| r.name() == name)
    }

    pub const ALL: [Reported; 8] = [
        Reported::Training,
        Reported::Pretraining,
        Reported::Evaluation,
        Reported::Baseline,
        Reported::Ensemble,
        Reported::ValidScores,
        Reported::Weights,
        Reported::Files,
    ];

    /// A model's own scores on test rows (what the models-compared table lists).
    pub fn is_model(self) -> bool {
        matches!(self, Reported::Evaluation | Reported::Baseline | Reported::Ensemble)
    }

    /// What a user reads in messages: `a fine-tune's training metrics`.
    pub fn describe(self) -> &'static str {
        match self {
            Reported::Training => "a fine-tune's training metrics (epochs)",
            Reported::Pretraining => "a pre-training history",
            Reported::Evaluation => "an evaluation's metrics",
            Reported::Baseline => "a baseline model's test metrics",
            Reported::Ensemble => "an ensemble's test metrics",
            Reported::ValidScores => "a model's validation metrics",
            Reported::Weights => "an ensemble's weights",
            Reported::Files => "rendered report files",
        }
    }

    /// The input a [`ParamType::Steps`] parameter makes of step `step`'s output of this
    /// meaning: `finetune_seed2.training`, `linear.valid_scores` (step names have no dot).
    pub fn input_name(self, step: &str) -> String {
        format!("{step}.{}", self.name())
    }

    /// The step and meaning of an input named by [`Reported::input_name`].
    pub fn of_input(input: &str) -> Option<(&str, Reported)> {
        let (step, what) = input.rsplit_once('.')?;
        Some((step, Reported::from_name(what)?))
    }
}

/// One output of a kind and what it is to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedOutput {
    pub output: &'static str,
    pub is: Reported,
}

impl ReportedOutput {
    pub const fn new(output: &'static str, is: Reported) -> Self {
        ReportedOutput { output, is }
    }
}

/// One output a step kind produces: a file or a directory at `out_dir/<name>`.
#[derive(Debug, Clone, Copy)]
pub struct OutputSpec {
    pub name: &'static str,
    pub help: &'static str,
}

/// What a step kind declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct StepSpec {
    pub kind: &'static str,
    /// Whether the kind computes on every core (rayon's global pool: training, evaluation,
    /// prediction, the linear model, tokenizing). Run locally, such steps go one at a time,
    /// because two of them in one process share the same pool and gain nothing; the light ones
    /// (downloads, samples, splits, reports, your commands) may run beside them (`--jobs`).
    pub all_cores: bool,
    /// Bump when the step's output for the same key could differ: it invalidates cached results.
    pub version: u32,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
    pub inputs: &'static [InputSpec],
    pub outputs: &'static [OutputSpec],
    /// What its outputs are to a report ([`Reported`]); empty for kinds a report does not read.
    pub reported: &'static [ReportedOutput],
}

impl StepSpec {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }
    /// What output `output` is to a report, if anything.
    pub fn reported(&self, output: &str) -> Option<Reported> {
        self.reported.iter().find(|r| r.output == output).map(|r| r.is)
    }
    /// Which output is `what` to a report, if the kind has one.
    pub fn reported_output(&self, what: Reported) -> Option<&'static str> {
        self.reported.iter().find(|r| r.is == what).map(|r| r.output)
    }
    /// Whether the kind computes on every core ([`StepSpec::all_cores`]).
    pub fn uses_all_cores(&self) -> bool {
        self.all_cores
    }
}

/// Parameter values after validation: every declared parameter with a value or default is
/// present with the declared type.
#[derive(Debug, Clone, PartialEq, std::default::Default)]
pub struct Params {
    values: BTreeMap<String, Value>,
}

impl Params {
    pub fn new(values: BTreeMap<String, Value>) -> Self {
        Params { values }
    }
    pub fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
    /// Replaces (or adds) one value; for [`Step::resolve`].
    pub fn set(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }
    /// Removes one value (the parameter is then absent); for [`Step::resolve_inputs`].
    pub fn remove(&mut self, name: &str) {
        self.values.remove(name);
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }
    fn missing(name: &str) -> StepError {
        StepError::Param { name: name.to_string(), message: "is required".into() }
    }
    fn wrong(name: &str, expected: &str) -> StepError {
        StepError::Param { name: name.to_string(), message: format!("must be {expected}") }
    }
    pub fn str(&self, name: &str) -> Result<&str, StepError> {
        self.opt_str(name)?.ok_or_else(|| Self::missing(name))
    }
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| Self::wrong(name, "a string")),
        }
    }
    pub fn f64(&self, name: &str) -> Result<f64, StepError> {
        self.opt_f64(name)?.ok_or_else(|| Self::missing(name))
    }
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| Self::wrong(name, "a number")),
        }
    }
    pub fn i64(&self, name: &str) -> Result<i64, StepError> {
        match self.get(name) {
            None => Err(Self::missing(name)),
            Some(v) => v.as_i64().ok_or_else(|| Self::wrong(name, "an integer")),
        }
    }
    pub fn usize(&self, name: &str) -> Result<usize, StepError> {
        self.opt_usize(name)?.ok_or_else(|| Self::missing(name))
    }
    pub fn opt_usize(&self, name: &str) -> Result<Option<usize>, StepError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|u| Some(u as usize)).ok_or_else(|| Self::wrong(name, "a non-negative integer")),
        }
    }
    pub fn bool(&self, name: &str) -> Result<bool, StepError> {
        match self.get(name) {
            None => Err(Self::missing(name)),
            Some(v) => v.as_bool().ok_or_else(|| Self::wrong(name, "true or false")),
        }
    }
    pub fn str_list(&self, name: &str) -> Result<Vec<String>, StepError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| Self::wrong(name, "a list of strings")))
                .collect(),
            Some(_) => Err(Self::wrong(name, "a list of strings")),
        }
    }
}

/// Where a step reports what it is doing. The runner's reporter implements it; steps never
/// print. Progress is for long work (bytes downloaded, batches trained).
pub trait Events: Send + Sync {
    /// A line of log (e.g. `[Epoch 1 Batch 50/2344] loss=0.41, lr=4.9e-05, acc=0.81`).
    fn log(&self, line: &str);
    /// Starts a progress bar with a total (`None` when unknown) and a unit (`bytes`, `samples`...).
    fn progress_start(&self, label: &str, total: Option<u64>, unit: &str);
    /// Advances the current progress bar.
    fn progress_inc(&self, delta: u64);
    /// Sets a short message on the current bar (e.g. `loss=0.41`).
    fn progress_message(&self, message: &str);
    /// Ends the current progress bar.
    fn progress_finish(&self);
    /// How long a phase of the step took. Timings never go into an output (outputs are pure
    /// functions of the key, so two computes of one key give the same bytes): the runner keeps
    /// them in the run record, where `pipe report` reads them. The default drops them.
    fn timing(&self, _timing: &Timing) {}
}

/// How long one phase of a step took (see [`Events::timing`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// `epoch 3` ([`Timing::epoch`]), `features`, `fit`...
    pub phase: String,
    pub seconds: f64,
    /// Rows (samples) processed in it, for a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
}

impl Timing {
    pub fn new(phase: impl Into<String>, seconds: f64, samples: Option<u64>) -> Timing {
        Timing { phase: phase.into(), seconds, samples }
    }

    /// The timing of training epoch `epoch` (1-based) over `samples` rows.
    pub fn epoch(epoch: usize, seconds: f64, samples: u64) -> Timing {
        Timing::new(format!("epoch {epoch}"), seconds, Some(samples))
    }

    /// The epoch of an [`Timing::epoch`] timing.
    pub fn epoch_number(&self) -> Option<usize> {
        self.phase.strip_prefix("epoch ")?.parse().ok()
    }

    /// Samples per second, when the samples are known.
    pub fn samples_per_second(&self) -> Option<f64> {
        self.samples.map(|n| n as f64 / self.seconds.max(1e-9))
    }

    /// `1.2s, 340.5 samples/s`, for log lines.
    pub fn describe(&self) -> String {
        match self.samples_per_second() {
            Some(rate) => format!("{:.1}s, {rate:.1} samples/s", self.seconds),
            None => format!("{:.1}s", self.seconds),
        }
    }
}

/// Events that go nowhere, for tests and library use.
pub struct NoEvents;

impl Events for NoEvents {
    fn log(&self, _line: &str) {}
    fn progress_start(&self, _label: &str, _total: Option<u64>, _unit: &str) {}
    fn progress_inc(&self, _delta: u64) {}
    fn progress_message(&self, _message: &str) {}
    fn progress_finish(&self) {}
}

/// Settings of the run that are not parameters of any step and not part of any key.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Folder consulted by file name before any URL is fetched (`--mirror`, `PIPE_MIRROR`).
    pub mirror: Option<PathBuf>,
    /// Compute threads the step may use.
    pub threads: usize,
    /// Directory for downloads of hub models and tokenizers (outside the step cache): the
    /// hub cache itself (`models--owner--name/...` inside). `None`: `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub hub_cache: Option<PathBuf>,
    /// The Hugging Face hub's address (e.g. `http://127.0.0.1:8080`). `None`: `$HF_ENDPOINT`,
    /// else `https://huggingface.co`.
    pub hub_endpoint: Option<String>,
    /// Hub revisions resolved so far (`id@revision` → commit sha): every step of a run that
    /// names the same model gets the same commit, and the hub is asked once.
    pub hub_pins: Arc<Mutex<BTreeMap<String, String>>>,
    /// Set when the user interrupted the run; long steps should check it between batches.
    pub cancelled: Arc<AtomicBool>,
}

impl std::default::Default for Environment {
    fn default() -> Self {
        Environment {
            mirror: None,
            threads: 1,
            hub_cache: None,
            hub_endpoint: None,
            hub_pins: Arc::default(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Environment {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Where an input comes from, as the user knows it: the file a download fetched (its URL or
/// path), or the upstream step and output. For messages ("reviews.csv row 17", not a cache
/// path) and for telling a table's format from its file name. Never part of a key: a kind
/// whose output depends on it pins that in its parameters ([`Step::resolve_inputs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSource {
    /// How messages name the input: `https://host/reviews.csv`, `/data/reviews.csv`, or
    /// `output file of step train_rows`.
    pub display: String,
    /// The file name it stands for (`reviews.csv`), when there is one: a table's format comes
    /// from its extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

impl InputSource {
    /// An input named only by its upstream step and output.
    pub fn step_output(step: &str, output: &str) -> InputSource {
        InputSource { display: format!("output `{output}` of step `{step}`"), file_name: None }
    }
}

/// Everything a step needs to run once.
pub struct StepContext<'a> {
    /// The step's name in the pipeline (for messages).
    pub name: &'a str,
    pub params: &'a Params,
    /// Input name → path of the upstream output (a file or a directory), read-only.
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// Input name → where it comes from, for messages and formats (may lack inputs: then
    /// [`StepContext::source`] names the path).
    pub sources: &'a BTreeMap<String, InputSource>,
    /// An empty directory; the step writes each declared output at `out_dir/<output name>`.
    pub out_dir: &'a Path,
    /// A directory that survives an interrupted run of the same key (resumable checkpoints).
    /// The runner deletes it after the step succeeds.
    pub checkpoint_dir: &'a Path,
    pub env: &'a Environment,
    pub events: &'a dyn Events,
}

impl StepContext<'_> {
    /// The path of a required input.
    pub fn input(&self, name: &str) -> Result<&Path, StepError> {
        self.inputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| StepError::input(format!("input `{name}` is required")))
    }
    /// Where input `name` comes from; without a source, its path.
    pub fn source(&self, name: &str) -> InputSource {
        self.sources.get(name).cloned().unwrap_or_else(|| {
            let path = self.inputs.get(name);
            InputSource {
                display: path.map(|p| p.display().to_string()).unwrap_or_else(|| format!("input `{name}`")),
                file_name: path.and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()),
            }
        })
    }
    /// The path of an optional input.
    pub fn opt_input(&self, name: &str) -> Option<&Path> {
        self.inputs.get(name).map(PathBuf::as_path)
    }
    /// Where to write a declared output.
    pub fn output(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }
}

/// A step kind.
pub trait Step: Send + Sync {
    fn spec(&self) -> &'static StepSpec;

    /// Replaces the parameters in the key by a content checksum the step verifies itself
    /// (a download pinned by `sha256` is keyed by that checksum, so a mirror or a new URL for
    /// the same bytes is still a hit). `None`: the key uses the parameters.
    fn content_pin(&self, _params: &Params) -> Option<String> {
        None
    }

    /// Local files or directories named by non-`Path` parameters whose content belongs in the
    /// key instead of the parameter's value (e.g. the `url` of a download of a local path
    /// without a pin), by parameter name.
    fn local_sources(&self, _params: &Params) -> BTreeMap<String, PathBuf> {
        BTreeMap::new()
    }

    /// Pins parameter values that can mean different things under the same text: `device: auto`
    /// (to the device it picks on this machine), a hub model id without a revision (to the
    /// commit the hub serves now, `id@sha`). The runner calls it before computing the key, and
    /// both the key and the run use the resolved values, so a key always says what was
    /// computed. It may use the network (the hub); errors are bad input (exit 2). The default
    /// changes nothing.
    fn resolve(&self, params: &Params, _env: &Environment) -> Result<Params, StepError> {
        Ok(params.clone())
    }

    /// Pins parameters that depend on where the inputs come from (a table's format, told by
    /// its file name): the runner calls it after [`Step::resolve`] with each input's source,
    /// and the key and the run use what it returns. Pure; errors are bad input. The default
    /// changes nothing.
    fn resolve_inputs(&self, params: &Params, _sources: &BTreeMap<String, InputSource>) -> Result<Params, StepError> {
        Ok(params.clone())
    }

    /// Where output `output` comes from, given the parameters and the inputs' sources: a
    /// download's file is its URL's, a sample's is a sample of its input. `None`: the runner
    /// names it by step and output ([`InputSource::step_output`]).
    fn output_source(
        &self,
        _output: &str,
        _params: &Params,
        _sources: &BTreeMap<String, InputSource>,
    ) -> Option<InputSource> {
        None
    }

    /// Checks parameter values beyond their types (ranges, combinations), before anything runs.
    fn validate(&self, _params: &Params) -> Result<(), StepError> {
        Ok(())
    }

    fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError>;
}
