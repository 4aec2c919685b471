//! The step graph: a [`PipelineSpec`] checked against the step kinds and turned into a DAG
//! (petgraph) of steps with typed parameters and resolved inputs. Pure data: no I/O but
//! checking that local paths named by parameters exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Bfs;
use petgraph::Direction;
use pipe_steps::command::{self, Command};
use pipe_steps::{InputSource, ParamSpec, ParamType, Params, Reported, Step};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::spec::{did_you_mean, CommandDecl, Origin, PipelineSpec, SpecError, SpecErrors, StepSpec};

/// An input resolved to an upstream step's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRef {
    /// Index of the upstream step in [`PipelineGraph::steps`].
    pub step: usize,
    pub output: &'static str,
}

/// One step, checked and typed.
pub struct GraphStep {
    /// Unique in the graph: the pipeline's step name, with the variant in brackets when a
    /// sweep runs the step once per value (`finetune[lr=3e-5]`).
    pub name: String,
    /// The step's name in the pipeline file (what run records and history use).
    pub base: String,
    pub kind: &'static dyn Step,
    pub params: Params,
    pub inputs: BTreeMap<String, OutputRef>,
}

/// The checked pipeline.
pub struct PipelineGraph {
    pub name: String,
    /// In file order.
    pub steps: Vec<GraphStep>,
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
}

impl PipelineGraph {
    /// Checks every step against its kind; all problems are reported together.
    pub fn build(spec: &PipelineSpec) -> Result<PipelineGraph, SpecErrors> {
        let mut errors = Vec::new();
        let index: BTreeMap<&str, usize> = spec.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        // A command step's kind comes from its declaration: its own inputs, outputs, params.
        let names: BTreeSet<&str> = index.keys().copied().collect();
        let decls: Vec<Option<CommandDecl>> = spec
            .steps
            .iter()
            .map(|s| (s.kind == command::KIND).then(|| CommandDecl::parse(spec, s, &names, &mut errors)).flatten())
            .collect();
        let mut kinds: Vec<Option<&'static dyn Step>> = Vec::new();
        for (s, decl) in spec.steps.iter().zip(&decls) {
            kinds.push(match decl {
                Some(d) => {
                    let inputs: Vec<String> = d.step_inputs.keys().cloned().collect();
                    match Command::declare(&inputs, &d.params) {
                        Ok(kind) => Some(kind),
                        Err(e) => {
                            let location = spec.locate(&["steps", &s.name]);
                            errors.push(SpecError::new(format!("step `{}`: {e}", s.name)).at(location, s.name.len()));
                            None
                        }
                    }
                }
                None if s.kind == command::KIND => None,
                None => pipe_steps::find(&s.kind),
            });
        }
        let mut steps = Vec::new();
        for (i, step) in spec.steps.iter().enumerate() {
            if step.kind == command::KIND && kinds[i].is_none() {
                continue; // its declaration's errors are reported
            }
            let lookup = Kinds { of: &kinds, decl: decls[i].as_ref() };
            if let Some(checked) = check_step(spec, step, &index, &lookup, &mut errors) {
                steps.push(checked);
            }
        }
        if !errors.is_empty() || steps.len() != spec.steps.len() {
            return Err(SpecErrors::new(&spec.file, &spec.source, errors));
        }
        match PipelineGraph::from_steps(spec.name.clone(), steps) {
            Ok(graph) => {
                // What depends on the inputs' names (a table's format): checked before anything runs.
                let errors: Vec<SpecError> = (0..graph.steps.len())
                    .filter_map(|i| {
                        let step = &graph.steps[i];
                        let e = step.kind.resolve_inputs(&step.params, &graph.sources(i)).err()?;
                        let mut se = SpecError::new(format!("step `{}`: {e}", step.name))
                            .at(spec.locate(&["steps", &step.name]), step.name.len());
                        se.help = e.help().map(str::to_string);
                        Some(se)
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(graph)
                } else {
                    Err(SpecErrors::new(&spec.file, &spec.source, errors))
                }
            }
            Err((graph, steps)) => {
                let cycle = find_cycle(&graph).into_iter().map(|i| steps[i].name.clone()).collect::<Vec<_>>();
                let first = cycle.first().cloned().unwrap_or_default();
                let location = spec.locate(&["steps", &first]);
                let path = cycle.iter().chain(std::iter::once(&first)).cloned().collect::<Vec<_>>().join(" -> ");
                let e = SpecError::new(format!("the steps form a cycle: {path}"))
                    .at(location, first.len())
                    .help("a step's inputs must come from steps that do not depend on it");
                Err(SpecErrors::new(&spec.file, &spec.source, vec![e]))
            }
        }
    }

    /// The graph of checked steps; `Err` gives back the graph and steps when they form a cycle.
    #[allow(clippy::type_complexity)]
    fn from_steps(name: String, steps: Vec<GraphStep>) -> Result<PipelineGraph, (DiGraph<usize, ()>, Vec<GraphStep>)> {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
        for (i, step) in steps.iter().enumerate() {
            for input in step.inputs.values() {
                graph.update_edge(nodes[input.step], nodes[i], ());
            }
        }
        match stable_order(&graph) {
            Some(order) => Ok(PipelineGraph { name, steps, graph, order }),
            None => Err((graph, steps)),
        }
    }

    /// One graph for the variants of a sweep (each the same pipeline built with other
    /// overrides, named by `labels`): a step that is the same in several variants — same kind,
    /// parameters and inputs, recursively — appears once; a step that differs appears once per
    /// distinct form, named with the variant's label. Also returns, per variant, the merged
    /// index of each of its steps.
    pub fn merge(variants: Vec<PipelineGraph>, labels: &[String]) -> (PipelineGraph, Vec<Vec<usize>>) {
        let name = variants.first().map(|g| g.name.clone()).unwrap_or_default();
        let mut identities: BTreeMap<String, usize> = BTreeMap::new();
        let mut merged: Vec<GraphStep> = Vec::new();
        let mut users: Vec<Vec<usize>> = Vec::new(); // merged step -> variants using it
        let mut maps: Vec<Vec<usize>> = Vec::new();
        for (v, graph) in variants.iter().enumerate() {
            let mut map = vec![usize::MAX; graph.steps.len()];
            let mut ids = vec![String::new(); graph.steps.len()];
            for &i in graph.order() {
                let step = &graph.steps[i];
                let inputs: BTreeMap<&str, (String, &str)> =
                    step.inputs.iter().map(|(n, r)| (n.as_str(), (ids[r.step].clone(), r.output))).collect();
                let id = serde_json::to_string(&(&step.base, step.kind.spec().kind, step.params.values(), inputs))
                    .unwrap_or_default();
                let m = *identities.entry(id.clone()).or_insert_with(|| {
                    let inputs = step
                        .inputs
                        .iter()
                        .map(|(n, r)| (n.clone(), OutputRef { step: map[r.step], output: r.output }))
                        .collect();
                    merged.push(GraphStep {
                        name: step.name.clone(),
                        base: step.base.clone(),
                        kind: step.kind,
                        params: step.params.clone(),
                        inputs,
                    });
                    users.push(Vec::new());
                    merged.len() - 1
                });
                users[m].push(v);
                map[i] = m;
                ids[i] = id;
            }
            maps.push(map);
        }
        // Display order is file order: the forms of one step together, in variant order.
        let position = |base: &str| variants[0].steps.iter().position(|s| s.base == base).unwrap_or(usize::MAX);
        let mut order: Vec<usize> = (0..merged.len()).collect();
        order.sort_by_key(|&m| position(&merged[m].base));
        let mut new_index = vec![0; merged.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let mut slots: Vec<Option<GraphStep>> = merged.into_iter().map(Some).collect();
        let mut merged: Vec<GraphStep> = order.iter().filter_map(|&old| slots[old].take()).collect();
        for step in &mut merged {
            for input in step.inputs.values_mut() {
                input.step = new_index[input.step];
            }
        }
        let users: Vec<Vec<usize>> = order.iter().map(|&old| users[old].clone()).collect();
        for map in &mut maps {
            for m in map.iter_mut() {
                *m = new_index[*m];
            }
        }
        // Name the forms of a step that differs between variants by what their variants share.
        let mut forms: BTreeMap<String, usize> = BTreeMap::new();
        for step in &merged {
            *forms.entry(step.base.clone()).or_default() += 1;
        }
        for (m, step) in merged.iter_mut().enumerate() {
            if forms[&step.base] > 1 {
                step.name = format!("{}[{}]", step.base, common_label(&users[m], labels));
            }
        }
        let graph = match PipelineGraph::from_steps(name, merged) {
            Ok(g) => g,
            // Merging acyclic variants by structure cannot make a cycle.
            Err(_) => unreachable!("merged variants form a cycle"),
        };
        (graph, maps)
    }

    /// Step indices in an order where every step comes after its inputs (file order among
    /// independent steps).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Where each input of step `i` comes from, as the user knows it (a download's URL, a
    /// sample of it, else the upstream step and output): for messages and table formats, never
    /// for keys. Pure: from the upstream kinds' [`Step::output_source`].
    pub fn sources(&self, i: usize) -> BTreeMap<String, InputSource> {
        self.steps[i].inputs.iter().map(|(name, r)| (name.clone(), self.output_source(r.step, r.output))).collect()
    }

    fn output_source(&self, step: usize, output: &str) -> InputSource {
        let upstream = &self.steps[step];
        upstream
            .kind
            .output_source(output, &upstream.params, &self.sources(step))
            .unwrap_or_else(|| InputSource::step_output(&upstream.base, output))
    }

    /// The steps named `name` in the pipeline (several when a sweep varies them).
    pub fn indices(&self, name: &str) -> Vec<usize> {
        (0..self.steps.len()).filter(|&i| self.steps[i].base == name).collect()
    }

    /// The step and every step that depends on it, directly or not.
    pub fn with_dependents(&self, step: usize) -> Vec<usize> {
        let start = NodeIndex::new(step);
        let mut bfs = Bfs::new(&self.graph, start);
        let mut out = Vec::new();
        while let Some(n) = bfs.next(&self.graph) {
            out.push(self.graph[n]);
        }
        out
    }
}

/// The kind of each step of the file (`None`: unknown, or a command with errors), and the
/// declaration of the step being checked when it is a command.
struct Kinds<'a> {
    of: &'a [Option<&'static dyn Step>],
    decl: Option<&'a CommandDecl>,
}

fn check_step(
    spec: &PipelineSpec,
    step: &StepSpec,
    index: &BTreeMap<&str, usize>,
    kinds: &Kinds<'_>,
    errors: &mut Vec<SpecError>,
) -> Option<GraphStep> {
    let name = step.name.as_str();
    let Some(kind) = index.get(name).and_then(|&i| kinds.of[i]) else {
        let kinds: Vec<&str> = pipe_steps::registry().iter().map(|k| k.spec().kind).collect();
        let help = did_you_mean(&step.kind, kinds.iter().copied())
            .unwrap_or_else(|| format!("the step kinds are: {}", kinds.join(", ")));
        errors.push(
            SpecError::new(format!("step `{name}`: unknown step kind `{}`", step.kind))
                .at(spec.locate_value(&["steps", name, "kind"]), step.kind.len())
                .help(help),
        );
        return None;
    };
    let ks = kind.spec();
    let before = errors.len();

    let mut inputs = BTreeMap::new();
    for (input_name, reference) in &step.inputs {
        if kinds.decl.is_some_and(|d| !d.step_inputs.contains_key(input_name)) {
            continue; // a command's file input, in its parameters
        }
        // A flow mapping (`inputs: {data: a}`) has no line per input: find the reference's text.
        let location = spec
            .locate_value(&["steps", name, "inputs", input_name])
            .or_else(|| spec.locate_text(&["steps", name, "inputs"], &reference.to_string()));
        let span = reference.to_string().len();
        if ks.input(input_name).is_none() {
            let names: Vec<&str> = ks.inputs.iter().map(|i| i.name).collect();
            let help = did_you_mean(input_name, names.iter().copied()).unwrap_or_else(|| {
                if names.is_empty() {
                    format!("kind `{}` takes no inputs", ks.kind)
                } else {
                    format!("kind `{}` takes inputs: {}", ks.kind, names.join(", "))
                }
            });
            errors.push(
                SpecError::new(format!("step `{name}`: unknown input `{input_name}` for kind `{}`", ks.kind))
                    .at(spec.locate(&["steps", name, "inputs", input_name]), input_name.len())
                    .help(help),
            );
            continue;
        }
        let Some(&upstream) = index.get(reference.step.as_str()) else {
            let help = did_you_mean(&reference.step, index.keys().copied());
            let mut e = SpecError::new(format!(
                "step `{name}`: input `{input_name}` refers to unknown step `{}`",
                reference.step
            ))
            .at(location, span);
            e.help = help;
            errors.push(e);
            continue;
        };
        let Some(upstream_kind) = kinds.of[upstream] else {
            continue;
        };
        let outputs = upstream_kind.spec().outputs;
        let output = match &reference.output {
            Some(o) => outputs.iter().find(|x| x.name == o),
            None if outputs.len() == 1 => outputs.first(),
            None => {
                let names: Vec<String> = outputs.iter().map(|o| format!("{}.{}", reference.step, o.name)).collect();
                errors.push(
                    SpecError::new(format!(
                        "step `{name}`: input `{input_name}`: step `{}` has several outputs; name one",
                        reference.step
                    ))
                    .at(location, span)
                    .help(format!("use one of: {}", names.join(", "))),
                );
                continue;
            }
        };
        match output {
            Some(o) => {
                let expects = ks.input(input_name).and_then(|i| i.expects);
                match expects {
                    Some(e) if upstream_kind.spec().reported(o.name) != Some(e) => errors.push(
                        SpecError::new(format!(
                            "step `{name}`: input `{input_name}` is `{}.{}`, which is not {}",
                            reference.step,
                            o.name,
                            e.describe()
                        ))
                        .at(location, span)
                        .help(producers(e)),
                    ),
                    _ => {
                        inputs.insert(input_name.clone(), OutputRef { step: upstream, output: o.name });
                    }
                }
            }
            None => {
                let names: Vec<&str> = outputs.iter().map(|o| o.name).collect();
                let wanted = reference.output.as_deref().unwrap_or_default();
                let help = did_you_mean(wanted, names.iter().copied())
                    .unwrap_or_else(|| format!("`{}` outputs: {}", reference.step, names.join(", ")));
                errors.push(
                    SpecError::new(format!(
                        "step `{name}`: input `{input_name}` refers to unknown output `{reference}` (kind `{}`)",
                        upstream_kind.spec().kind
                    ))
                    .at(location, span)
                    .help(help),
                );
            }
        }
    }
    for input in ks.inputs.iter().filter(|i| i.required && !step.inputs.contains_key(i.name)) {
        errors.push(
            SpecError::new(format!("step `{name}`: missing required input `{}` ({})", input.name, input.help))
                .at(spec.locate(&["steps", name]), name.len())
                .help(format!("add `inputs: {{ {}: STEP }}`", input.name)),
        );
    }

    let mut params = BTreeMap::new();
    let mut suggested: Vec<String> = Vec::new();
    // A command's parameters are its checked declaration's.
    let raw_params = if kinds.decl.is_some() { BTreeMap::new() } else { step.params.clone() };
    for (param, raw) in &raw_params {
        let (location, span) = match &raw.origin {
            Origin::File => (spec.locate(&["steps", name, param]), param.len()),
            Origin::Override(_) => (None, 1),
        };
        let prefix = match &raw.origin {
            Origin::File => format!("step `{name}`"),
            Origin::Override(text) => format!("--set {text}"),
        };
        let Some(ps) = ks.param(param) else {
            let names: Vec<&str> = ks.params.iter().map(|p| p.name).collect();
            let renamed = ks.params.iter().find(|p| p.old_name == Some(param.as_str()));
            let hint = match renamed {
                Some(new) => Some(format!("did you mean `{0}`? `{param}` was renamed `{0}`", new.name)),
                None => did_you_mean(param, names.iter().copied()),
            };
            if let Some(h) = &hint {
                suggested.extend(names.iter().filter(|n| h.contains(&format!("`{n}`"))).map(|n| n.to_string()));
            }
            let help = hint.unwrap_or_else(|| format!("kind `{}` takes: {}", ks.kind, names.join(", ")));
            errors.push(
                SpecError::new(format!("{prefix}: unknown parameter `{param}` for kind `{}`", ks.kind))
                    .at(location, span)
                    .help(help),
            );
            continue;
        };
        // Relative paths: to the pipeline file's directory, or to the working directory for `--set`.
        let base_dir = match &raw.origin {
            Origin::File => spec.base_dir.as_path(),
            Origin::Override(_) => Path::new("."),
        };
        match convert(ps, &raw.value, base_dir) {
            Ok(Json::Null) => {}
            Ok(v) => {
                params.insert(param.clone(), v);
            }
            Err(message) => {
                let location = match &raw.origin {
                    Origin::File => spec.locate_value(&["steps", name, param]),
                    Origin::Override(_) => None,
                };
                errors.push(SpecError::new(format!("{prefix}: parameter `{param}` {message}")).at(location, 0));
            }
        }
    }
    for ps in ks.params.iter() {
        if let (ParamType::Steps(reads), Some(Json::Array(named))) = (ps.ty, params.get(ps.name)) {
            let location = spec.locate_value(&["steps", name, ps.name]);
            step_inputs(name, reads, named, index, kinds, &mut inputs, |e| errors.push(e.at(location, 0)));
        }
    }
    for ps in ks.params.iter().filter(|_| kinds.decl.is_none()) {
        if params.contains_key(ps.name) || step.params.contains_key(ps.name) || suggested.iter().any(|s| s == ps.name) {
            continue;
        }
        match ps.default.to_value() {
            Some(v) => {
                params.insert(ps.name.to_string(), v);
            }
            None if ps.default == pipe_steps::Default::Required => errors.push(
                SpecError::new(format!("step `{name}`: missing required parameter `{}` ({})", ps.name, ps.help))
                    .at(spec.locate(&["steps", name]), name.len())
                    .help(format!("add `{}: ...` ({})", ps.name, ps.ty.describe())),
            ),
            None => {}
        }
    }
    let params = match kinds.decl {
        Some(d) => d.params.clone(),
        None => Params::new(params),
    };
    if errors.len() == before {
        if let Err(e) = kind.validate(&params) {
            let location = match &e {
                pipe_steps::StepError::Param { name: p, .. } => spec.locate_value(&["steps", name, p]),
                _ => spec.locate(&["steps", name]),
            };
            let mut se = SpecError::new(format!("step `{name}`: {e}")).at(location, 0);
            se.help = e.help().map(str::to_string);
            errors.push(se);
        }
    }
    (errors.len() == before).then(|| GraphStep { name: name.to_string(), base: name.to_string(), kind, params, inputs })
}

/// The inputs a [`ParamType::Steps`] parameter of step `name` makes: per step it names, each
/// output of a meaning in `reads` ([`pipe_steps::StepSpec::reported`]), as input
/// [`Reported::input_name`]. A name that is no step, or a step with none of them, is an error.
fn step_inputs(
    name: &str,
    reads: &[Reported],
    named: &[Json],
    index: &BTreeMap<&str, usize>,
    kinds: &Kinds<'_>,
    inputs: &mut BTreeMap<String, OutputRef>,
    mut error: impl FnMut(SpecError),
) {
    for step in named.iter().filter_map(Json::as_str) {
        let Some(&upstream) = index.get(step) else {
            let mut e = SpecError::new(format!("step `{name}`: `steps` names unknown step `{step}`"));
            e.help = did_you_mean(step, index.keys().copied());
            error(e);
            continue;
        };
        let Some(kind) = kinds.of[upstream] else { continue };
        let mut found = false;
        for is in reads {
            if let Some(output) = kind.spec().reported_output(*is) {
                inputs.insert(is.input_name(step), OutputRef { step: upstream, output });
                found = true;
            }
        }
        if !found {
            let what: Vec<&str> = reads.iter().map(|r| r.describe()).collect();
            let kinds: Vec<&str> = pipe_steps::registry()
                .iter()
                .filter(|k| reads.iter().any(|r| k.spec().reported_output(*r).is_some()))
                .map(|k| k.spec().kind)
                .collect();
            error(
                SpecError::new(format!(
                    "step `{name}`: `steps` names `{step}` (kind `{}`), which has none of: {}",
                    kind.spec().kind,
                    what.join(", ")
                ))
                .help(format!("name steps of kind {}", kinds.join(", "))),
            );
        }
    }
}

/// Which kinds' outputs are `what`: the help of an input that expects it.
fn producers(what: Reported) -> String {
    let outputs: Vec<String> = pipe_steps::registry()
        .iter()
        .filter_map(|k| Some(format!("the `{}` output of a {} step", k.spec().reported_output(what)?, k.spec().kind)))
        .collect();
    format!("use {}", outputs.join(", or "))
}

/// Converts a YAML value to the parameter's type; `Err` says what was expected.
fn convert(ps: &ParamSpec, value: &Yaml, base_dir: &Path) -> Result<Json, String> {
    let wrong = || format!("must be {}, got {}", ps.ty.describe(), describe_yaml(value));
    if value.is_null() {
        return if ps.default == pipe_steps::Default::Required { Err(wrong()) } else { Ok(Json::Null) };
    }
    match ps.ty {
        ParamType::Str => value.as_str().map(Json::from).ok_or_else(wrong),
        ParamType::Int => value.as_i64().map(Json::from).ok_or_else(wrong),
        ParamType::Uint => value.as_u64().map(Json::from).ok_or_else(wrong),
        ParamType::Float => value.as_f64().filter(|f| f.is_finite()).map(Json::from).ok_or_else(wrong),
        ParamType::Bool => value.as_bool().map(Json::from).ok_or_else(wrong),
        ParamType::Choice(options) => {
            let s = value.as_str().ok_or_else(wrong)?;
            if options.contains(&s) {
                Ok(Json::from(s))
            } else {
                let hint = did_you_mean(s, options.iter().copied()).map(|h| format!(" ({h})")).unwrap_or_default();
                Err(format!("must be one of {}, got `{s}`{hint}", options.join(", ")))
            }
        }
        ParamType::StrList | ParamType::Steps(_) => match value {
            Yaml::Sequence(items) => items
                .iter()
                .map(|v| v.as_str().map(Json::from).ok_or_else(wrong))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            _ => Err(wrong()),
        },
        ParamType::NameOrNumbers(names) => match value {
            Yaml::Sequence(items) => items
                .iter()
                .map(|v| v.as_f64().filter(|f| f.is_finite()).map(Json::from).ok_or_else(wrong))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            // A number per name (`{law: 3, food: 2}`); the names are the step's to check.
            Yaml::Mapping(entries) => entries
                .iter()
                .map(|(k, v)| {
                    let name = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Number(n) => n.to_string(),
                        _ => return Err(wrong()),
                    };
                    let number = v.as_f64().filter(|f| f.is_finite()).ok_or_else(wrong)?;
                    Ok((name, Json::from(number)))
                })
                .collect::<Result<serde_json::Map<_, _>, _>>()
                .map(Json::Object),
            _ => {
                let s = value.as_str().ok_or_else(wrong)?;
                if names.contains(&s) {
                    Ok(Json::from(s))
                } else {
                    let hint = did_you_mean(s, names.iter().copied()).map(|h| format!(" ({h})")).unwrap_or_default();
                    Err(format!("must be {}, got `{s}`{hint}", ps.ty.describe()))
                }
            }
        },
        ParamType::Path => {
            let s = value.as_str().ok_or_else(wrong)?;
            let path = absolute(base_dir, s);
            if path.exists() {
                Ok(Json::from(path.to_string_lossy().into_owned()))
            } else {
                Err(format!("names `{s}`, which does not exist ({})", path.display()))
            }
        }
        ParamType::PathOrHubId => {
            let s = value.as_str().ok_or_else(wrong)?;
            let path = absolute(base_dir, s);
            if path.exists() {
                Ok(Json::from(path.to_string_lossy().into_owned()))
            } else if s.starts_with('.') || s.starts_with('/') || s.starts_with('~') {
                Err(format!("names `{s}`, which does not exist ({})", path.display()))
            } else if pipe_steps::hub::looks_like_hub_id(s) {
                Ok(Json::from(s))
            } else {
                Err(format!(
                    "names `{s}`, which is neither an existing path ({}) nor a hub model id \
                     (`name` or `owner/name`, optionally `@revision`)",
                    path.display()
                ))
            }
        }
        ParamType::Url => {
            let s = value.as_str().ok_or_else(wrong)?;
            if s.contains("://") {
                Ok(Json::from(s))
            } else {
                Ok(Json::from(absolute(base_dir, s).to_string_lossy().into_owned()))
            }
        }
    }
}

fn absolute(base_dir: &Path, s: &str) -> PathBuf {
    let p = Path::new(s);
    let joined = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
    std::path::absolute(&joined).unwrap_or(joined)
}

/// The part of the labels of `variants` (`a=1,b=2`) that all of them share: what sets this
/// form of a step apart.
fn common_label(variants: &[usize], labels: &[String]) -> String {
    let parts: Vec<Vec<&str>> = variants.iter().map(|&v| labels[v].split(',').collect()).collect();
    let shared: Vec<&str> = parts[0].iter().copied().filter(|p| parts.iter().all(|q| q.contains(p))).collect();
    shared.join(",")
}

fn describe_yaml(value: &Yaml) -> String {
    match value {
        Yaml::Null => "nothing".into(),
        Yaml::Bool(b) => format!("`{b}`"),
        Yaml::Number(n) => format!("`{n}`"),
        Yaml::String(s) => format!("\"{s}\""),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(_) => "a tagged value".into(),
    }
}

/// Kahn's algorithm taking the lowest file index first, so independent steps keep file order.
/// `None` when the graph has a cycle.
fn stable_order(graph: &DiGraph<usize, ()>) -> Option<Vec<usize>> {
    let mut indegree: Vec<usize> =
        graph.node_indices().map(|n| graph.neighbors_directed(n, Direction::Incoming).count()).collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        graph.node_indices().filter(|n| indegree[n.index()] == 0).map(|n| Reverse(n.index())).collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(graph[NodeIndex::new(i)]);
        for next in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(Reverse(next.index()));
            }
        }
    }
    (order.len() == indegree.len()).then_some(order)
}

/// A cycle as a list of step indices (the first step is not repeated at the end).
fn find_cycle(graph: &DiGraph<usize, ()>) -> Vec<usize> {
    for scc in kosaraju_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let mut members = scc.clone();
        members.sort_by_key(|n| graph[*n]);
        let start = members[0];
        // Breadth-first search inside the component from `start` back to `start`.
        let mut previous: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for next in graph.neighbors_directed(n, Direction::Outgoing) {
                if !scc.contains(&next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![graph[n]];
                    let mut cur = n;
                    while cur != start {
                        cur = previous[&cur];
                        path.push(graph[cur]);
                    }
                    path.reverse();
                    if path.len() > 1 && path[0] == path[path.len() - 1] {
                        path.pop();
                    }
                    return path;
                }
                if let std::collections::btree_map::Entry::Vacant(e) = previous.entry(next) {
                    e.insert(n);
                    queue.push_back(next);
                }
            }
        }
    }
    Vec::new()
}
