//! `pipe dag [PIPELINE.yaml]`: the step graph — each step, its kind, its inputs and whether it
//! is up-to-date, stale or never run, decided exactly as `pipe status` decides (a dry run of
//! the planner) — as text for the terminal, or as Mermaid or Graphviz DOT for docs and tools
//! (like `dvc dag`). With `--sweep`, the graph of every variant at once: the steps the variants
//! share appear once. This module lays the graph out as text; it runs nothing and writes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::cache::Cache;
use crate::commands::status::state;
use crate::commands::{environment, load_swept, open_remote, pipeline_file, GlobalArgs, RemoteArgs, Swept};
use crate::error::Error;
use crate::executor::{Executor, RunOptions};
use crate::graph::PipelineGraph;
use crate::reporter::{paint_state, Reporter};
use crate::run_record::RunRecord;
use crate::spec::{OverrideArg, SweepArg};
use crate::tiered_cache::TieredCache;

#[derive(Debug, Args)]
pub struct DagArgs {
    /// The pipeline file (default: the one most recently run with this cache).
    pub pipeline: Option<PathBuf>,
    /// Show the graph as if run with this override: STEP.PARAM=VALUE.
    #[arg(long = "set", value_name = "STEP.PARAM=VALUE")]
    pub set: Vec<OverrideArg>,
    /// Show the graph of a sweep: STEP.PARAM=A,B,... (the steps that differ once per variant).
    #[arg(long = "sweep", value_name = "STEP.PARAM=A,B,...")]
    pub sweep: Vec<SweepArg>,
    /// text (for the terminal, states coloured), mermaid (a `flowchart` for Markdown) or dot
    /// (Graphviz: `pipe dag --format dot | dot -Tsvg > dag.svg`).
    #[arg(long, value_enum, default_value = "text")]
    pub format: DagFormat,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DagFormat {
    Text,
    Mermaid,
    Dot,
}

/// One step as drawn: name, kind, state (as `status` names it) and inputs.
struct Node {
    name: String,
    kind: &'static str,
    state: &'static str,
    /// Input name, upstream step index, upstream output (`None` when it is the step's only one).
    inputs: Vec<(String, usize, Option<&'static str>)>,
}

pub fn execute(args: &DagArgs, global: &GlobalArgs, reporter: &Reporter) -> Result<ExitCode, Error> {
    let cache = Cache::at(&global.cache_dir);
    let file = pipeline_file(args.pipeline.as_deref(), global, "pipe dag pipelines/nsmc-tiny.yaml")?;
    let Swept { spec, graph, variants, .. } = load_swept(&file, &args.set, &args.sweep)?;
    let env = environment(global);
    let mut history: Vec<RunRecord> = RunRecord::all(&cache).into_iter().filter(|r| r.pipeline == graph.name).collect();
    history.reverse();
    let quiet = Reporter::quiet();
    let remote = open_remote(&args.remote, spec.remote.as_deref(), reporter)?;
    let store = TieredCache::new(&cache, remote.as_ref(), reporter);
    let executor = Executor::new(&store, &graph, &env, &quiet, &history);
    let outcomes = executor.run(&RunOptions { dry_run: true, ..RunOptions::default() }, &mut |_, _| {});
    let nodes: Vec<Node> = graph
        .steps
        .iter()
        .zip(&outcomes)
        .map(|(s, o)| Node {
            name: s.name.clone(),
            kind: s.kind.spec().kind,
            state: state(o),
            inputs: s
                .inputs
                .iter()
                .map(|(name, r)| {
                    let only = graph.steps[r.step].kind.spec().outputs.len() == 1;
                    (name.clone(), r.step, (!only).then_some(r.output))
                })
                .collect(),
        })
        .collect();
    match args.format {
        DagFormat::Text => {
            let swept = if variants.len() > 1 { format!(", {} variants", variants.len()) } else { String::new() };
            let steps = if nodes.len() == 1 { "step" } else { "steps" };
            reporter.line(&format!("pipeline {} ({}): {} {steps}{swept}", graph.name, file.display(), nodes.len()));
            for line in text(&graph, &nodes) {
                reporter.line(line.trim_end());
            }
        }
        DagFormat::Mermaid => reporter.line(mermaid(&nodes).trim_end()),
        DagFormat::Dot => reporter.line(dot(&graph.name, &nodes).trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}

/// How an input is written in the pipeline file: `tokenizer: vocab`, `train: split.train`.
fn input_text(nodes: &[Node], (name, step, output): &(String, usize, Option<&'static str>)) -> String {
    match output {
        Some(o) => format!("{name}: {}.{o}", nodes[*step].name),
        None => format!("{name}: {}", nodes[*step].name),
    }
}

/// A step's depth: the longest chain of inputs above it (0 for a step without inputs).
fn depths(graph: &PipelineGraph, nodes: &[Node]) -> Vec<usize> {
    let mut depth = vec![0; nodes.len()];
    for &i in graph.order() {
        depth[i] = nodes[i].inputs.iter().map(|(_, s, _)| depth[*s] + 1).max().unwrap_or(0);
    }
    depth
}

/// The text form: one line per step in dependency order, indented by its depth, with its
/// kind, its state (coloured in a terminal) and its inputs as the pipeline file writes them.
fn text(graph: &PipelineGraph, nodes: &[Node]) -> Vec<String> {
    let depth = depths(graph, nodes);
    let label = |i: usize| format!("{}{}", "  ".repeat(depth[i]), nodes[i].name);
    let name_width = (0..nodes.len()).map(|i| label(i).chars().count()).max().unwrap_or(4).max(4);
    let kind_width = nodes.iter().map(|n| n.kind.len()).max().unwrap_or(4).max(4);
    let state_width = nodes.iter().map(|n| n.state.len()).max().unwrap_or(5).max(5);
    let mut lines =
        vec![format!("  {:<name_width$}  {:<kind_width$}  {:<state_width$}  inputs", "step", "kind", "state")];
    for &i in graph.order() {
        let n = &nodes[i];
        let inputs: Vec<String> = n.inputs.iter().map(|input| input_text(nodes, input)).collect();
        let state = paint_state(n.state, &format!("{:<state_width$}", n.state));
        lines.push(format!("  {:<name_width$}  {:<kind_width$}  {state}  {}", label(i), n.kind, inputs.join(", ")));
    }
    lines
}

/// The class (Mermaid) or colour (DOT) of each state.
const STATES: [(&str, &str, &str); 4] = [
    ("up-to-date", "up_to_date", "#d3f9d8"),
    ("stale", "stale", "#fff3bf"),
    ("never-run", "never_run", "#e9ecef"),
    ("unknown", "unknown", "#ffe3e3"),
];

fn state_style(state: &str) -> (&'static str, &'static str) {
    let found = STATES.iter().find(|(s, _, _)| *s == state).unwrap_or(&STATES[3]);
    (found.1, found.2)
}

/// An edge's label: the input's name, with the upstream output when it has several.
fn edge_label((name, _, output): &(String, usize, Option<&'static str>)) -> String {
    match output {
        Some(o) if o != name => format!("{o} → {name}"),
        _ => name.clone(),
    }
}

/// A Mermaid `flowchart`: a node per step (name and kind, classed by state), an edge per
/// input labelled with its name.
fn mermaid(nodes: &[Node]) -> String {
    let quote = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart TD\n");
    for (i, n) in nodes.iter().enumerate() {
        let class = state_style(n.state).0;
        out.push_str(&format!("    n{i}[\"{}<br/><i>{}</i>\"]:::{class}\n", quote(&n.name), n.kind));
    }
    for (i, n) in nodes.iter().enumerate() {
        for input in &n.inputs {
            out.push_str(&format!("    n{} -->|\"{}\"| n{i}\n", input.1, quote(&edge_label(input))));
        }
    }
    for (_, class, colour) in STATES {
        out.push_str(&format!("    classDef {class} fill:{colour},stroke:#495057\n"));
    }
    out
}

/// A Graphviz `digraph`: a box per step (name and kind, filled by state), an edge per input.
fn dot(pipeline: &str, nodes: &[Node]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n", quote(pipeline));
    out.push_str("    node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n");
    out.push_str("    edge [fontname=\"sans-serif\", fontsize=10];\n");
    for (i, n) in nodes.iter().enumerate() {
        let label = format!("{}\n{}", n.name, n.kind).replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let colour = state_style(n.state).1;
        out.push_str(&format!("    n{i} [label=\"{label}\", fillcolor=\"{colour}\", tooltip={}];\n", quote(n.state)));
    }
    let mut edges: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for input in &n.inputs {
            edges.entry((input.1, i)).or_default().push(edge_label(input));
        }
    }
    for ((from, to), labels) in edges {
        out.push_str(&format!("    n{from} -> n{to} [label={}];\n", quote(&labels.join(", "))));
    }
    out.push_str("}\n");
    out
}
