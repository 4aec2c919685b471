//! A `kind: command` step as written (`run`, `inputs`, `deps`, `params`, `outputs`, `env`),
//! checked and turned into the parameters of [`pipe_steps::command`], the form the graph, the
//! key and the executor use for every kind. Errors point at the file and line.
//!
//! Checked here: unknown fields, output names and file names, that every dep and file input
//! exists, that every placeholder names something declared, `--set` of declared params only.
//! Found here: the words of `run:` that name files of the project (deps without being listed).
//! Not here: whether an input's step and output exist (the graph checks it for every kind).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pipe_steps::command::{self, env_name, placeholders, shell_quote, suspicious, valid_name, Group};
use pipe_steps::Params;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::spec::spec_error::{did_you_mean, SpecError};
use crate::spec::step_spec::{InputRef, Origin};
use crate::spec::{PipelineSpec, StepSpec};

/// A checked command declaration.
pub struct CommandDecl {
    /// The step's inputs from other steps (the others are files, in the parameters).
    pub step_inputs: BTreeMap<String, InputRef>,
    pub params: Params,
}

impl CommandDecl {
    /// Checks `step` (of kind `command`); `steps` are the pipeline's step names. `None` when it
    /// has errors (pushed to `errors`).
    pub fn parse(
        spec: &PipelineSpec,
        step: &StepSpec,
        steps: &BTreeSet<&str>,
        errors: &mut Vec<SpecError>,
    ) -> Option<CommandDecl> {
        parse(spec, step, steps, errors)
    }
}

fn parse(
    spec: &PipelineSpec,
    step: &StepSpec,
    steps: &BTreeSet<&str>,
    errors: &mut Vec<SpecError>,
) -> Option<CommandDecl> {
    let before = errors.len();
    let mut c = Checker { spec, name: &step.name, errors };
    let field = |f: &str| step.params.get(f).filter(|r| r.origin == Origin::File).map(|r| &r.value);
    for (key, raw) in &step.params {
        if raw.origin == Origin::File && !command::FIELDS.contains(&key.as_str()) {
            let help = did_you_mean(key, command::FIELDS).unwrap_or_else(|| {
                format!("a command step takes: {}, and inputs, executor, resources", command::FIELDS.join(", "))
            });
            c.at_key(format!("unknown field `{key}` for kind `command`"), &[key.as_str()], Some(help));
        }
    }

    let run = match field("run") {
        Some(Yaml::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => {
            c.at_value("`run` must be the command text".into(), &["run"], None);
            String::new()
        }
        None => {
            c.at_key(
                "a command step needs `run:`, the command text".into(),
                &[],
                Some("add `run: python3 script.py {inputs.data} {outputs.result}`".into()),
            );
            String::new()
        }
    };

    // Outputs: name -> file name, or folder name ending in `/`.
    let mut outputs = serde_json::Map::new();
    match field("outputs") {
        Some(Yaml::Mapping(m)) if !m.is_empty() => {
            let mut files = BTreeSet::new();
            for (k, v) in m {
                let name = scalar(k);
                if !valid_name(&name) {
                    c.at_text(format!("output name `{name}` must be letters, digits and _"), "outputs", &name);
                    continue;
                }
                let file = v.as_str().unwrap_or_default();
                let bare = file.strip_suffix('/').unwrap_or(file);
                if bare.is_empty() || bare.contains('/') || bare.starts_with('.') {
                    let text = if file.is_empty() { name.clone() } else { file.to_string() };
                    c.at_text(
                        format!("output `{name}`: `{file}` must be a file name, or a folder name ending in /"),
                        "outputs",
                        &text,
                    );
                    continue;
                }
                if !files.insert(bare.to_string()) {
                    c.at_text(format!("output `{name}`: another output is named `{bare}` too"), "outputs", file);
                    continue;
                }
                outputs.insert(name, Json::from(file));
            }
        }
        Some(_) => c.at_value(
            "`outputs` must map output names to file names, e.g. {table: clean.tsv}".into(),
            &["outputs"],
            None,
        ),
        None => c.at_key(
            "a command step needs `outputs:`, what it writes".into(),
            &[],
            Some("add `outputs: {result: result.tsv}` (a name ending in / is a folder)".into()),
        ),
    }

    // Inputs: another step's output, or a file of the project.
    let mut step_inputs = BTreeMap::new();
    let mut files = serde_json::Map::new();
    for (input, reference) in &step.inputs {
        if !valid_name(input) {
            c.at_text(format!("input name `{input}` must be letters, digits and _"), "inputs", input);
            continue;
        }
        let text = reference.to_string();
        if steps.contains(reference.step.as_str()) {
            step_inputs.insert(input.clone(), reference.clone());
            continue;
        }
        let path = absolute(&spec.base_dir, &text);
        if path.exists() {
            files.insert(input.clone(), Json::from(path.to_string_lossy().into_owned()));
        } else {
            let help = did_you_mean(&reference.step, steps.iter().copied());
            c.at_text(
                format!("input `{input}`: `{text}` is neither a step nor a file ({} does not exist)", path.display()),
                "inputs",
                &text,
            );
            if let (Some(h), Some(e)) = (help, c.errors.last_mut()) {
                e.help = Some(h);
            }
        }
    }

    // Deps: listed, and the words of `run` that name files of the project.
    let mut deps = serde_json::Map::new();
    match field("deps") {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Sequence(items)) => {
            for item in items {
                let Some(written) = item.as_str() else {
                    c.at_value("`deps` must be a list of paths".into(), &["deps"], None);
                    continue;
                };
                let path = absolute(&spec.base_dir, written);
                if path.exists() {
                    deps.insert(normal(written), Json::from(path.to_string_lossy().into_owned()));
                } else {
                    c.at_text(format!("dep `{written}` does not exist ({})", path.display()), "deps", written);
                }
            }
        }
        Some(_) => c.at_value("`deps` must be a list of paths, e.g. [scripts/clean.py]".into(), &["deps"], None),
    }
    let (command_text, found) = project_words(&run, &spec.base_dir);
    for (written, path) in found {
        deps.insert(written, Json::from(path));
    }

    // Params: keyed, one by one; `--set STEP.NAME=VALUE` overrides a declared one.
    let mut user = BTreeMap::new();
    match field("params") {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Mapping(m)) => {
            for (k, v) in m {
                let name = scalar(k);
                if !valid_name(&name) {
                    c.at_text(format!("param name `{name}` must be letters, digits and _"), "params", &name);
                    continue;
                }
                match param_value(v) {
                    Some(j) => {
                        user.insert(name, j);
                    }
                    None => c.at_text(format!("param `{name}` must be a value or a list of values"), "params", &name),
                }
            }
        }
        Some(_) => c.at_value("`params` must be a mapping, e.g. {min_len: 5}".into(), &["params"], None),
    }
    for (key, raw) in step.params.iter().filter(|(_, r)| r.origin != Origin::File) {
        let Origin::Override(text) = &raw.origin else { continue };
        let name = key.strip_prefix("params.").unwrap_or(key);
        match (user.contains_key(name), param_value(&raw.value)) {
            (true, Some(v)) => {
                user.insert(name.to_string(), v);
            }
            (true, None) => c.errors.push(SpecError::new(format!("--set {text}: must be a value or a list of values"))),
            (false, _) => {
                let mut e = SpecError::new(format!(
                    "--set {text}: step `{}` (kind command) declares no param `{name}`",
                    step.name
                ));
                e.help = did_you_mean(name, user.keys().map(String::as_str))
                    .or_else(|| Some("`--set` overrides a command's `params:`".into()));
                c.errors.push(e);
            }
        }
    }

    // Env: keyed names, or {name: X, unkeyed: true}.
    let mut keyed = BTreeSet::new();
    let mut unkeyed = Vec::new();
    match field("env") {
        None | Some(Yaml::Null) => {}
        Some(Yaml::Sequence(items)) => {
            for item in items {
                let (name, is_unkeyed) = match item {
                    Yaml::String(s) => (s.clone(), false),
                    Yaml::Mapping(m) => {
                        let name = m.get("name").and_then(Yaml::as_str).unwrap_or_default().to_string();
                        let flag = m.get("unkeyed").and_then(Yaml::as_bool);
                        let other = m.keys().map(scalar).find(|k| k != "name" && k != "unkeyed");
                        if name.is_empty() || other.is_some() || m.contains_key("unkeyed") && flag.is_none() {
                            c.at_value("an `env` entry is NAME or {name: NAME, unkeyed: true}".into(), &["env"], None);
                            continue;
                        }
                        (name, flag.unwrap_or(false))
                    }
                    _ => {
                        c.at_value("an `env` entry is NAME or {name: NAME, unkeyed: true}".into(), &["env"], None);
                        continue;
                    }
                };
                if !valid_name(&name) || name == "TMPDIR" || name.starts_with("PIPE_") {
                    c.at_text(
                        format!("`{name}` cannot be passed through `env` (TMPDIR and PIPE_* are pipe's own)"),
                        "env",
                        &name,
                    );
                } else if is_unkeyed {
                    unkeyed.push(Json::from(name));
                } else {
                    keyed.insert(name);
                }
            }
        }
        Some(_) => {
            c.at_value("`env` must be a list, e.g. [LANG, {name: HF_TOKEN, unkeyed: true}]".into(), &["env"], None)
        }
    }

    // Every placeholder names something declared; the environment variables do not collide.
    let declared = |group: Group| -> Vec<String> {
        match group {
            Group::Inputs => step.inputs.keys().cloned().collect(),
            Group::Outputs => outputs.keys().cloned().collect(),
            Group::Params => user.keys().cloned().collect(),
        }
    };
    for p in placeholders(&run) {
        let names = declared(p.group);
        if !names.contains(&p.name) {
            let what = &run[p.span.clone()];
            let word = p.group.word();
            let written: Vec<String> = names.iter().map(|n| format!("{{{word}.{n}}}")).collect();
            let help = did_you_mean(what, written.iter().map(String::as_str)).unwrap_or_else(|| {
                if names.is_empty() {
                    format!("the step declares no {word}")
                } else {
                    format!("the step's {word}: {}", names.join(", "))
                }
            });
            c.at_text(format!("placeholder `{what}` names no declared {}", &word[..word.len() - 1]), "run", what);
            if let Some(e) = c.errors.last_mut() {
                e.help = Some(help);
            }
        }
    }
    for (_, text) in suspicious(&run) {
        c.at_text(format!("`{text}` is not a placeholder"), "run", &text);
        if let Some(e) = c.errors.last_mut() {
            e.help = Some("placeholders are {inputs.NAME}, {outputs.NAME} and {params.NAME}".into());
        }
    }
    for group in [Group::Inputs, Group::Outputs, Group::Params] {
        let mut seen = BTreeMap::new();
        for name in declared(group) {
            if let Some(other) = seen.insert(env_name(group, &name), name.clone()) {
                c.at_key(
                    format!("{} `{other}` and `{name}` would both be ${}", group.word(), env_name(group, &name)),
                    &[],
                    Some("names must differ in more than case".into()),
                );
            }
        }
    }

    if errors.len() != before {
        return None;
    }
    let mut params = BTreeMap::new();
    params.insert("run".to_string(), Json::from(run.clone()));
    params.insert("outputs".to_string(), Json::Object(outputs));
    if command_text != run {
        params.insert("command".to_string(), Json::from(command_text));
    }
    if !deps.is_empty() {
        params.insert("deps".to_string(), Json::Object(deps));
    }
    if !files.is_empty() {
        params.insert("files".to_string(), Json::Object(files));
    }
    if !unkeyed.is_empty() {
        params.insert("unkeyed_env".to_string(), Json::Array(unkeyed));
    }
    for (name, value) in user {
        params.insert(format!("params.{name}"), value);
    }
    for name in keyed {
        params.insert(format!("env.{name}"), Json::Null);
    }
    Some(CommandDecl { step_inputs, params: Params::new(params) })
}

struct Checker<'a> {
    spec: &'a PipelineSpec,
    name: &'a str,
    errors: &'a mut Vec<SpecError>,
}

impl Checker<'_> {
    fn path<'p>(&'p self, rest: &[&'p str]) -> Vec<&'p str> {
        let mut path = vec!["steps", self.name];
        path.extend_from_slice(rest);
        path
    }

    /// At the key of `rest` under the step (the step itself when empty).
    fn at_key(&mut self, message: String, rest: &[&str], help: Option<String>) {
        let path = self.path(rest);
        let span = path.last().map_or(1, |k| k.len());
        let mut e = SpecError::new(format!("step `{}`: {message}", self.name)).at(self.spec.locate(&path), span);
        e.help = help;
        self.errors.push(e);
    }

    fn at_value(&mut self, message: String, rest: &[&str], help: Option<String>) {
        let path = self.path(rest);
        let mut e = SpecError::new(format!("step `{}`: {message}", self.name)).at(self.spec.locate_value(&path), 0);
        e.help = help;
        self.errors.push(e);
    }

    /// At `text` in the value of `field`.
    fn at_text(&mut self, message: String, field: &str, text: &str) {
        let path = self.path(&[field]);
        let location = self.spec.locate_text(&path, text);
        self.errors.push(SpecError::new(format!("step `{}`: {message}", self.name)).at(location, text.len().max(1)));
    }
}

/// `run` with each word that names a file of the project (relative to `base_dir`) made
/// absolute, and those files (as written → absolute path). A command's first word is looked up
/// on PATH by the shell, so it counts only with a `/` (`./tool`); words with `{`, `$`, `=` or
/// a leading `-`, and absolute paths, are left alone.
fn project_words(run: &str, base_dir: &Path) -> (String, BTreeMap<String, String>) {
    let mut found = BTreeMap::new();
    let mut out = String::with_capacity(run.len());
    let mut last = 0;
    let mut command_position = true;
    for (start, word) in words(run) {
        let was_command = command_position;
        command_position = matches!(word, ";" | "&&" | "||" | "|" | "(" | "then" | "do" | "else")
            || word.ends_with(';')
            || word.ends_with('|')
            || word.ends_with('&');
        let core = word.trim_start_matches(['<', '>']).trim_matches(['\'', '"']);
        let core = core.trim_end_matches([';', '|', '&', ')']);
        let candidate = !core.is_empty()
            && !core.contains(['{', '$', '=', '*', '?'])
            && !core.starts_with(['-', '/', '~'])
            && (!was_command || core.contains('/'));
        if !candidate {
            continue;
        }
        let path = absolute(base_dir, core);
        if !path.is_file() {
            continue;
        }
        let at = start + word.find(core).unwrap_or(0);
        // A quoted word loses its quotes: the path is quoted again.
        let (from, to) = quoted_span(run, at, core.len());
        out.push_str(&run[last..from]);
        let shown = path.to_string_lossy().into_owned();
        out.push_str(&shell_quote(&shown));
        last = to;
        found.insert(normal(core), shown);
    }
    out.push_str(&run[last..]);
    (out, found)
}

/// The span of `len` bytes at `at`, widened over a quote on each side.
fn quoted_span(text: &str, at: usize, len: usize) -> (usize, usize) {
    let before = text[..at].chars().last();
    let after = text[at + len..].chars().next();
    match (before, after) {
        (Some(q @ ('\'' | '"')), Some(r)) if q == r => (at - 1, at + len + 1),
        _ => (at, at + len),
    }
}

/// Whitespace-separated words with their byte offsets.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, ch) in text.char_indices() {
        match (ch.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// A path as written, without a leading `./`: how a dep is named in the key.
fn normal(written: &str) -> String {
    written.trim_start_matches("./").to_string()
}

fn absolute(base_dir: &Path, s: &str) -> std::path::PathBuf {
    let p = Path::new(s);
    let joined = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
    std::path::absolute(&joined).unwrap_or(joined)
}

fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A user parameter: a scalar or a list of scalars, as JSON.
fn param_value(v: &Yaml) -> Option<Json> {
    match v {
        Yaml::Sequence(items) => items.iter().map(param_value).collect::<Option<Vec<_>>>().map(Json::Array),
        Yaml::Mapping(_) | Yaml::Tagged(_) => None,
        Yaml::Null => Some(Json::Null),
        other => serde_json::to_value(other).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_naming_project_files_become_absolute_deps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/clean.py"), "").unwrap();
        std::fs::write(dir.path().join("tool"), "").unwrap();
        let base = dir.path();
        let abs = std::path::absolute(base.join("scripts/clean.py")).unwrap().to_string_lossy().into_owned();
        let (text, found) = project_words("python3 scripts/clean.py {inputs.data} > out.tsv", base);
        assert_eq!(text, format!("python3 {abs} {{inputs.data}} > out.tsv"));
        assert_eq!(found.keys().collect::<Vec<_>>(), ["scripts/clean.py"]);
        // A first word without `/` is looked up on PATH; quoted words are requoted.
        let (text, found) = project_words("tool './scripts/clean.py' | tool", base);
        assert_eq!(text, format!("tool {abs} | tool"));
        assert_eq!(found.len(), 1);
        assert!(project_words("cat missing.py", base).1.is_empty());
    }
}
