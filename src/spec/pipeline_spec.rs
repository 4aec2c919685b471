//! A pipeline file as written: name, shared parameters and steps, with `${params.NAME}`
//! substituted and `--set` overrides applied. Checking steps against their kinds happens when
//! the graph is built ([`crate::graph::PipelineGraph`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::spec::executor_spec::{Checker, ExecutorSpec};
use crate::spec::locate::{locate, locate_text, locate_value};
use crate::spec::override_arg::OverrideArg;
use crate::spec::spec_error::{did_you_mean, Location, SpecError, SpecErrors};
use crate::spec::step_spec::{InputRef, Origin, RawParam, StepSpec};

const TOP_LEVEL_KEYS: [&str; 6] = ["name", "description", "params", "remote", "executor", "steps"];

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub name: String,
    /// The file as given on the command line.
    pub file: PathBuf,
    /// The file's directory: relative paths in parameters are relative to it (those given with
    /// `--set`, to the working directory).
    pub base_dir: PathBuf,
    pub source: String,
    /// `remote:`, the remote cache this pipeline shares results through (`--remote` and
    /// `PIPE_REMOTE` take precedence).
    pub remote: Option<String>,
    /// `executor:`, where steps run (`--executor` takes precedence); the default is local.
    pub executor: ExecutorSpec,
    /// In file order, which is display order.
    pub steps: Vec<StepSpec>,
}

/// Reading the pipeline file failed before it could be parsed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read pipeline file {}: {source}", path.display())]
pub struct UnreadablePipeline {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl PipelineSpec {
    /// Reads and parses `path`, then applies `overrides`.
    pub fn load(
        path: &Path,
        overrides: &[OverrideArg],
    ) -> Result<Result<PipelineSpec, SpecErrors>, UnreadablePipeline> {
        let source =
            fs::read_to_string(path).map_err(|source| UnreadablePipeline { path: path.to_path_buf(), source })?;
        Ok(PipelineSpec::parse(path, &source, overrides))
    }

    pub fn parse(file: &Path, source: &str, overrides: &[OverrideArg]) -> Result<PipelineSpec, SpecErrors> {
        let fail = |errors: Vec<SpecError>| SpecErrors::new(file, source, errors);
        let doc: Value = serde_yaml::from_str(source).map_err(|e| fail(vec![yaml_error(source, &e)]))?;
        let mut parser = Parser { source, errors: Vec::new() };
        let spec = parser.pipeline(file, source, &doc, overrides);
        match spec {
            Some(spec) if parser.errors.is_empty() => Ok(spec),
            _ => Err(fail(parser.errors)),
        }
    }

    /// Where the key at `path` is in the file, for error messages.
    pub fn locate(&self, path: &[&str]) -> Option<Location> {
        locate(&self.source, path)
    }

    pub fn locate_value(&self, path: &[&str]) -> Option<Location> {
        locate_value(&self.source, path)
    }

    /// Where `needle` is in the value of the key at `path` (an item of a flow mapping or list).
    pub fn locate_text(&self, path: &[&str], needle: &str) -> Option<Location> {
        locate_text(&self.source, path, needle)
    }
}

/// A serde_yaml error with its location; a duplicate key points at its second occurrence.
fn yaml_error(source: &str, e: &serde_yaml::Error) -> SpecError {
    let message = strip_location(&e.to_string());
    let location = e.location().map(|l| Location { line: l.line(), column: l.column() });
    if let Some(key) = message.split("duplicate entry with key \"").nth(1).and_then(|r| r.split('"').next()) {
        let mut found = source.lines().enumerate().filter_map(|(i, line)| {
            let trimmed = line.trim_start();
            trimmed
                .strip_prefix(key)
                .filter(|rest| rest.starts_with(':'))
                .map(|_| Location { line: i + 1, column: line.len() - trimmed.len() + 1 })
        });
        let second = found.nth(1);
        let what = if message.starts_with("steps:") { "step name" } else { "key" };
        return SpecError::new(format!("duplicate {what} `{key}`"))
            .at(second.or(location), key.len())
            .help("names in a mapping must be unique");
    }
    SpecError::new(format!("invalid YAML: {message}")).at(location, 1)
}

/// serde_yaml appends " at line L column C" to its messages; the renderer shows it instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

struct Parser<'a> {
    source: &'a str,
    errors: Vec<SpecError>,
}

impl Parser<'_> {
    fn error(&mut self, message: String, path: &[&str], help: Option<String>) {
        let location = locate(self.source, path);
        let span = path.last().map_or(1, |k| k.chars().count());
        let mut e = SpecError::new(message).at(location, span);
        e.help = help;
        self.errors.push(e);
    }

    fn value_error(&mut self, message: String, path: &[&str]) {
        let location = locate_value(self.source, path);
        self.errors.push(SpecError::new(message).at(location, 0));
    }

    fn pipeline(&mut self, file: &Path, source: &str, doc: &Value, overrides: &[OverrideArg]) -> Option<PipelineSpec> {
        let Some(top) = doc.as_mapping() else {
            self.errors.push(
                SpecError::new("a pipeline file is a mapping with `name` and `steps`")
                    .at(Some(Location { line: 1, column: 1 }), 1),
            );
            return None;
        };
        for key in top.keys() {
            let key = key_text(key);
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                let help = did_you_mean(&key, TOP_LEVEL_KEYS);
                self.error(format!("unknown top-level key `{key}`"), &[&key], help);
            }
        }
        let name = match top.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                self.value_error("`name` must be a non-empty string".into(), &["name"]);
                String::new()
            }
            None => {
                self.errors.push(
                    SpecError::new("missing `name`")
                        .at(Some(Location { line: 1, column: 1 }), 1)
                        .help("add `name: my-pipeline`"),
                );
                String::new()
            }
        };
        let remote = match top.get("remote") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                self.value_error("`remote` must be a URL: s3://BUCKET/PREFIX or file:///PATH".into(), &["remote"]);
                None
            }
        };
        let executor = match top.get("executor") {
            None | Some(Value::Null) => ExecutorSpec::default(),
            Some(v) => Checker { source: self.source, errors: &mut self.errors }.executor(v),
        };
        let mut params = BTreeMap::new();
        match top.get("params") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    params.insert(key_text(k), v.clone());
                }
            }
            Some(_) => self.value_error("`params` must be a mapping of shared values".into(), &["params"]),
        }
        // Shared values set on the command line, by name → the `--set` text.
        let mut overridden = BTreeMap::new();
        for o in overrides.iter().filter(|o| o.step == "params") {
            if params.contains_key(&o.param) {
                params.insert(o.param.clone(), o.value.clone());
                overridden.insert(o.param.clone(), o.text.clone());
            } else {
                let help = did_you_mean(&o.param, params.keys().map(String::as_str));
                let mut e = SpecError::new(format!("--set {}: no shared parameter `{}` in `params`", o.text, o.param));
                e.help = help;
                self.errors.push(e);
            }
        }
        let mut steps = Vec::new();
        match top.get("steps") {
            Some(Value::Mapping(m)) if !m.is_empty() => {
                for (k, v) in m {
                    let step_name = key_text(k);
                    if let Some(step) = self.step(&step_name, v, &params, &overridden) {
                        steps.push(step);
                    }
                }
            }
            Some(_) => self.value_error("`steps` must be a non-empty mapping of step name -> step".into(), &["steps"]),
            None => self.errors.push(SpecError::new("missing `steps`").at(Some(Location { line: 1, column: 1 }), 1)),
        }
        self.apply_overrides(&mut steps, overrides);
        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
        Some(PipelineSpec {
            name,
            file: file.to_path_buf(),
            base_dir,
            source: source.to_string(),
            remote,
            executor,
            steps,
        })
    }

    fn step(
        &mut self,
        name: &str,
        value: &Value,
        shared: &BTreeMap<String, Value>,
        overridden: &BTreeMap<String, String>,
    ) -> Option<StepSpec> {
        if name.is_empty() || name.contains(['.', '/', ' ', '=']) {
            self.error(
                format!("step name `{name}` may not be empty or contain `.`, `/`, `=` or spaces"),
                &["steps", name],
                None,
            );
        }
        let Some(map) = value.as_mapping() else {
            self.value_error(format!("step `{name}` must be a mapping with `kind`"), &["steps", name]);
            return None;
        };
        let kind = match map.get("kind") {
            Some(Value::String(k)) => k.clone(),
            Some(_) => {
                self.value_error(format!("step `{name}`: `kind` must be a string"), &["steps", name, "kind"]);
                return None;
            }
            None => {
                self.error(
                    format!("step `{name}` has no `kind`"),
                    &["steps", name],
                    Some("add `kind:` with a step kind (see `pipe kinds`)".into()),
                );
                return None;
            }
        };
        let inputs = self.inputs(name, map);
        // Where and with what the step runs: not parameters, and not in its key.
        let mut checker = Checker { source: self.source, errors: &mut self.errors };
        let executor = map.get("executor").and_then(|v| checker.step_executor(name, v));
        let resources = map
            .get("resources")
            .map(|v| checker.resources(v, &["steps", name, "resources"], &format!("step `{name}`")));
        let mut params = BTreeMap::new();
        for (k, v) in map {
            let key = key_text(k);
            if ["kind", "inputs", "executor", "resources"].contains(&key.as_str()) {
                continue;
            }
            // A command's text keeps the shell's own `${VAR}`.
            let shell = kind == pipe_steps::command::KIND && key == "run";
            let value = self.substitute(v, shared, &["steps", name, &key], shell);
            // A value that is exactly a shared value set with `--set` comes from the command
            // line: a relative path in it is relative to the working directory, as any argument.
            let from_command_line = v
                .as_str()
                .and_then(|s| s.strip_prefix("${params.")?.strip_suffix('}'))
                .and_then(|shared_name| overridden.get(shared_name));
            let origin = match from_command_line {
                Some(text) => Origin::Override(text.clone()),
                None => Origin::File,
            };
            params.insert(key, RawParam { value, origin });
        }
        Some(StepSpec {
            name: name.to_string(),
            kind,
            inputs,
            params,
            executor,
            resources: resources.unwrap_or_default(),
        })
    }

    fn inputs(&mut self, step: &str, map: &Mapping) -> BTreeMap<String, InputRef> {
        let mut inputs = BTreeMap::new();
        match map.get("inputs") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let input = key_text(k);
                    match v {
                        Value::String(s) => {
                            inputs.insert(input, InputRef::parse(s));
                        }
                        _ => self.value_error(
                            format!("step `{step}`: input `{input}` must be `STEP` or `STEP.OUTPUT`"),
                            &["steps", step, "inputs", &input],
                        ),
                    }
                }
            }
            Some(_) => self.value_error(
                format!("step `{step}`: `inputs` must be a mapping of input name -> STEP or STEP.OUTPUT"),
                &["steps", step, "inputs"],
            ),
        }
        inputs
    }

    /// Replaces `${params.NAME}`: a value that is exactly one reference takes the shared
    /// value with its type; references inside a longer string are interpolated as text. With
    /// `shell`, other `${...}` are left as written (a command's `${HOME}`).
    fn substitute(&mut self, value: &Value, shared: &BTreeMap<String, Value>, path: &[&str], shell: bool) -> Value {
        match value {
            Value::String(s) if s.contains("${") => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let Some(end) = rest[start..].find('}') else {
                        self.value_error(format!("unclosed `${{` in `{s}`"), path);
                        return value.clone();
                    };
                    let reference = &rest[start + 2..start + end];
                    if shell && !reference.starts_with("params.") {
                        out.push_str(&rest[start..start + end + 1]);
                        rest = &rest[start + end + 1..];
                        continue;
                    }
                    let Some(name) = reference.strip_prefix("params.") else {
                        self.value_error(
                            format!("`${{{reference}}}`: only `${{params.NAME}}` references are supported"),
                            path,
                        );
                        return value.clone();
                    };
                    let Some(shared_value) = shared.get(name) else {
                        let help = did_you_mean(name, shared.keys().map(String::as_str));
                        let location = locate_value(self.source, path);
                        let mut e =
                            SpecError::new(format!("`${{params.{name}}}`: no shared parameter `{name}` in `params`"))
                                .at(location, reference.len() + 3);
                        e.help = help;
                        self.errors.push(e);
                        return value.clone();
                    };
                    if start == 0 && start + end + 1 == rest.len() && out.is_empty() {
                        return shared_value.clone();
                    }
                    out.push_str(&scalar_text(shared_value));
                    rest = &rest[start + end + 1..];
                }
                out.push_str(rest);
                Value::String(out)
            }
            Value::Sequence(items) => {
                Value::Sequence(items.iter().map(|v| self.substitute(v, shared, path, shell)).collect())
            }
            // A command's `params: {min_len: ${params.min_len}}`.
            Value::Mapping(m) => {
                Value::Mapping(m.iter().map(|(k, v)| (k.clone(), self.substitute(v, shared, path, shell))).collect())
            }
            other => other.clone(),
        }
    }

    fn apply_overrides(&mut self, steps: &mut [StepSpec], overrides: &[OverrideArg]) {
        for o in overrides.iter().filter(|o| o.step != "params") {
            match steps.iter_mut().find(|s| s.name == o.step) {
                Some(step) => {
                    step.params.insert(
                        o.param.clone(),
                        RawParam { value: o.value.clone(), origin: Origin::Override(o.text.clone()) },
                    );
                }
                None => {
                    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
                    let mut e = SpecError::new(format!("--set {}: no step named `{}`", o.text, o.step));
                    e.help = did_you_mean(&o.step, names.iter().copied())
                        .or_else(|| Some(format!("the steps are: {}", names.join(", "))));
                    self.errors.push(e);
                }
            }
        }
    }
}

fn key_text(key: &Value) -> String {
    scalar_text(key)
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}
