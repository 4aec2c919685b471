//! The `command` step kind: a user's own program as a step, keyed as strictly as a DVC stage.
//!
//! The runner's spec layer turns a `kind: command` declaration into parameters of this kind
//! ([`Command::declare`] makes the step for one declaration, with its own inputs and outputs);
//! the step runs `sh -c` on the command text in a fresh folder and turns what it leaves there
//! into the declared outputs. It knows nothing of YAML or the cache, as every kind.
//!
//! Parameters (the resolved form; see [`MANUAL`] for what users write):
//!
//! | name            | in key | value |
//! |-----------------|--------|-------|
//! | `run`           | yes    | the command text as written |
//! | `outputs`       | yes    | output name → file name (`clean.tsv`) or folder name (`parts/`) |
//! | `params.NAME`   | yes    | a user parameter (any YAML scalar or list) |
//! | `env.NAME`      | yes    | a keyed environment variable: its value when the key was made (null: unset) |
//! | `command`       | no     | `run` with each word that names a project file made absolute |
//! | `deps`          | no     | path as written → absolute path (their *content* is keyed: [`Step::local_sources`]) |
//! | `files`         | no     | input name → absolute path of an input that is a file of the project (content keyed) |
//! | `unkeyed_env`   | no     | names of environment variables passed as they are where the step runs |
//!
//! What it detects: a nonzero exit; a declared output missing, or a file where a folder is
//! declared (and the reverse); anything else left in its working folder (which is where its
//! outputs go). It cannot see writes made by absolute path elsewhere (the project, `$HOME`,
//! `/tmp` named literally): the command is not sandboxed.

mod placeholder;
mod process;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use placeholder::{env_name, placeholders, shell_quote, substitute, suspicious, valid_name, Group, Placeholder};

use crate::error::{StepError, StepResult};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};

pub const KIND: &str = "command";

/// The fields a `kind: command` step may have besides `kind`, `inputs`, `executor` and
/// `resources`.
pub const FIELDS: [&str; 5] = ["run", "deps", "params", "outputs", "env"];

/// The working folder inside the output folder: the command's current directory, where its
/// outputs are written; `$TMPDIR` beside it.
const WORK: &str = ".work";
const TMP: &str = ".tmp";

/// What `pipe kinds command` prints.
pub const MANUAL: &str = "command (version 1): run your own program as a step, cached like any other

  clean:
    kind: command
    inputs: {data: train_raw}          # step outputs (STEP or STEP.OUTPUT) or files of the project
    deps: [scripts/clean.py]           # files or folders it reads; keyed by content
    params: {min_len: 5}               # keyed; passed as {params.min_len} and $PIPE_PARAM_MIN_LEN
    outputs: {table: clean.tsv}        # a file; a name ending in / is a folder
    env: [LANG, {name: HF_TOKEN, unkeyed: true}]
    run: python3 scripts/clean.py {inputs.data} {outputs.table} {params.min_len}

A later step takes `clean.table` as an input like any other output.

run:      `sh -c` runs it in an empty working folder. {inputs.NAME}, {outputs.NAME} and
          {params.NAME} become shell-quoted paths and values; $PIPE_INPUT_NAME,
          $PIPE_OUTPUT_NAME and $PIPE_PARAM_NAME hold the same (NAME in capitals). Other braces
          ({print $1}, ${VAR}) are the shell's. A word of `run:` that names a file of the
          project (relative to the pipeline file's folder) is a dep without being listed, and
          the command gets its absolute path.
inputs:   a name per input: another step's output, or a file or folder of the project.
deps:     files or folders (relative to the pipeline file), keyed by content, never by path.
params:   values of any YAML type; `--set STEP.NAME=VALUE` and `--sweep` override them.
outputs:  name -> file name, or folder name ending in /. The command writes each at its
          path ({outputs.NAME}, or the name in its working folder); pipe hashes and caches
          them after the run, so a change that leaves their bytes equal reruns nothing
          downstream. Folders are not created for it.
env:      the only environment variables it sees, besides PATH (not keyed), TMPDIR (a
          scratch folder) and the PIPE_ ones. A name is keyed by its value; `{name: X,
          unkeyed: true}` passes X as set where the step runs, outside the key (secrets).

The key: the command text as written, the outputs' names, the params, the keyed env values,
the content of the deps and of the inputs (never their paths). Not in it: PATH, the programs
it finds there (python3's version), unkeyed env values.

Failure, committing nothing: a nonzero exit (the message has the exit code and the end of
stderr), a declared output missing, or any other file left in its working folder. Writes
elsewhere by absolute path are not detected. stdout and stderr go to the step's log.";

static PARAMS: &[ParamSpec] = &[
    ParamSpec::required("run", ParamType::Str, "the command text, run with `sh -c`"),
    ParamSpec::required("outputs", ParamType::Str, "output name -> file name, or folder name ending in /"),
    ParamSpec::optional("command", ParamType::Str, Default::Absent, "run with project files made absolute")
        .not_in_key(),
    ParamSpec::optional("deps", ParamType::Str, Default::Absent, "path as written -> absolute path").not_in_key(),
    ParamSpec::optional("files", ParamType::Str, Default::Absent, "input name -> absolute path").not_in_key(),
    ParamSpec::optional("unkeyed_env", ParamType::StrList, Default::Absent, "variables passed outside the key")
        .not_in_key(),
];

static TEMPLATE_SPEC: StepSpec = StepSpec {
    kind: KIND,
    all_cores: false,
    version: 1,
    summary: "run your own program (`run:` with declared inputs, deps, params, outputs, env)",
    params: PARAMS,
    inputs: &[],
    outputs: &[],
    reported: &[],
};

/// A command step: the kind in the registry (no inputs or outputs, for `pipe kinds`), or one
/// declaration's ([`Command::declare`]).
pub struct Command {
    spec: &'static StepSpec,
}

pub(crate) static TEMPLATE: Command = Command { spec: &TEMPLATE_SPEC };

impl Command {
    /// The step of one declaration: `inputs`, the names of its inputs from other steps;
    /// `params`, the declaration in the form above. The rest of the runner holds step kinds as
    /// `&'static`; a declaration's spec is made once per command step when a pipeline (or a
    /// job file) is read and lives as long as the process, as the built-in kinds' do.
    pub fn declare(inputs: &[String], params: &Params) -> StepResult<&'static dyn Step> {
        let outputs = output_decls(params)?;
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let inputs: Vec<InputSpec> =
            inputs.iter().map(|name| InputSpec::required(leak(name), "an input of the command")).collect();
        let outputs: Vec<OutputSpec> =
            outputs.keys().map(|name| OutputSpec { name: leak(name), help: "an output of the command" }).collect();
        // Keyed one by one, so that a change says which (`params.min_len: 5 -> 6`).
        let mut params_spec = PARAMS.to_vec();
        for name in params.values().keys().filter(|n| n.starts_with("params.") || n.starts_with("env.")) {
            params_spec.push(ParamSpec::optional(leak(name), ParamType::Str, Default::Absent, "declared"));
        }
        let spec = StepSpec {
            kind: KIND,
            all_cores: false,
            version: TEMPLATE_SPEC.version,
            summary: TEMPLATE_SPEC.summary,
            params: Box::leak(params_spec.into_boxed_slice()),
            inputs: Box::leak(inputs.into_boxed_slice()),
            outputs: Box::leak(outputs.into_boxed_slice()),
            reported: &[],
        };
        Ok(Box::leak(Box::new(Command { spec: Box::leak(Box::new(spec)) })))
    }
}

/// Output name → (file or folder name, is a folder).
fn output_decls(params: &Params) -> StepResult<BTreeMap<String, (String, bool)>> {
    let Some(Value::Object(outputs)) = params.get("outputs") else {
        return Err(StepError::param("outputs", "must be a mapping of output name -> file or folder name"));
    };
    let mut out = BTreeMap::new();
    for (name, value) in outputs {
        let Some(file) = value.as_str() else {
            return Err(StepError::param("outputs", format!("`{name}` must be a file or folder name")));
        };
        let folder = file.ends_with('/');
        out.insert(name.clone(), (file.trim_end_matches('/').to_string(), folder));
    }
    Ok(out)
}

/// A mapping parameter of strings (`deps`, `files`).
fn string_map(params: &Params, name: &str) -> StepResult<BTreeMap<String, String>> {
    match params.get(name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| StepError::param(name, "must map names to paths"))
            })
            .collect(),
        Some(_) => Err(StepError::param(name, "must map names to paths")),
    }
}

/// A parameter value as the command sees it: strings as they are, lists space-separated.
pub fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(param_text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

impl Step for Command {
    fn spec(&self) -> &'static StepSpec {
        self.spec
    }

    /// Deps and inputs that are files of the project: keyed by content.
    fn local_sources(&self, params: &Params) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        for (written, path) in string_map(params, "deps").unwrap_or_default() {
            out.insert(written, PathBuf::from(path));
        }
        for (input, path) in string_map(params, "files").unwrap_or_default() {
            out.insert(format!("inputs.{input}"), PathBuf::from(path));
        }
        out
    }

    /// Keyed environment variables take the values they have here and now: the key and the
    /// run (here or on a cluster node) both use them.
    fn resolve(&self, params: &Params, _env: &Environment) -> StepResult<Params> {
        let mut resolved = params.clone();
        for name in params.values().keys().filter_map(|n| n.strip_prefix("env.")) {
            let value = std::env::var(name).map(Value::from).unwrap_or(Value::Null);
            resolved.set(&format!("env.{name}"), value);
        }
        Ok(resolved)
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        output_decls(params).map(|_| ())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let outputs = output_decls(ctx.params)?;
        let text = match ctx.params.opt_str("command")? {
            Some(c) => c,
            None => ctx.params.str("run")?,
        };
        let work = ctx.out_dir.join(WORK);
        let tmp = ctx.out_dir.join(TMP);
        for dir in [&work, &tmp] {
            fs::create_dir_all(dir).map_err(StepError::io("creating", dir))?;
        }
        let mut inputs: BTreeMap<String, PathBuf> = ctx.inputs.clone();
        for (name, path) in string_map(ctx.params, "files")? {
            inputs.insert(name, PathBuf::from(path));
        }
        let user_params: BTreeMap<&str, &Value> =
            ctx.params.values().iter().filter_map(|(k, v)| k.strip_prefix("params.").map(|n| (n, v))).collect();
        let value_of = |group: Group, name: &str| -> Option<String> {
            match group {
                Group::Inputs => inputs.get(name).map(|p| p.to_string_lossy().into_owned()),
                Group::Outputs => outputs.get(name).map(|(file, _)| work.join(file).to_string_lossy().into_owned()),
                Group::Params => user_params.get(name).map(|v| param_text(v)),
            }
        };
        let mut missing = None;
        let text = substitute(text, |p| match value_of(p.group, &p.name) {
            Some(v) => shell_quote(&v),
            None => {
                missing.get_or_insert_with(|| format!("{{{}.{}}}", p.group.word(), p.name));
                String::new()
            }
        });
        if let Some(m) = missing {
            return Err(StepError::input(format!("`run:` has placeholder {m}, which names nothing declared")));
        }

        let mut vars = BTreeMap::new();
        if let Some(path) = std::env::var_os("PATH") {
            vars.insert("PATH".to_string(), path.to_string_lossy().into_owned());
        }
        vars.insert("TMPDIR".to_string(), tmp.to_string_lossy().into_owned());
        for name in ctx.params.str_list("unkeyed_env")? {
            if let Ok(value) = std::env::var(&name) {
                vars.insert(name, value);
            }
        }
        for (key, value) in ctx.params.values() {
            if let (Some(name), Some(value)) = (key.strip_prefix("env."), value.as_str()) {
                vars.insert(name.to_string(), value.to_string());
            }
        }
        for (group, names) in [
            (Group::Inputs, inputs.keys().cloned().collect::<Vec<_>>()),
            (Group::Outputs, outputs.keys().cloned().collect()),
            (Group::Params, user_params.keys().map(|s| s.to_string()).collect()),
        ] {
            for name in names {
                if let Some(v) = value_of(group, &name) {
                    vars.insert(env_name(group, &name), v);
                }
            }
        }

        let finished = process::run(&text, &work, &vars, ctx.env, ctx.events)?;
        if !finished.status.success() {
            let mut message = format!("the command failed with {}", process::describe(&finished.status));
            if finished.stderr_tail.is_empty() {
                message.push_str(" (nothing on stderr)");
            } else {
                message.push_str("; the end of its stderr:");
                for line in &finished.stderr_tail {
                    message.push_str("\n    ");
                    message.push_str(line);
                }
            }
            return Err(StepError::failed(message));
        }
        let _ = fs::remove_dir_all(&tmp);
        check_left(&work, ctx.out_dir, &outputs)?;
        for (name, (file, _)) in &outputs {
            let from = work.join(file);
            let to = ctx.out_dir.join(name);
            fs::rename(&from, &to).map_err(StepError::io("moving output", &from))?;
        }
        fs::remove_dir(&work).map_err(StepError::io("removing", &work))?;
        Ok(())
    }
}

/// Checks that the command left exactly its declared outputs, of the declared types, in its
/// working folder, and nothing beside that folder.
fn check_left(work: &Path, out_dir: &Path, outputs: &BTreeMap<String, (String, bool)>) -> StepResult<()> {
    for (name, (file, folder)) in outputs {
        let path = work.join(file);
        let shown = if *folder { format!("{file}/") } else { file.clone() };
        match fs::symlink_metadata(&path) {
            Err(_) => {
                return Err(StepError::failed_with_help(
                    format!("the command exited 0 but did not write its output `{name}` ({shown})"),
                    format!("write it at {{outputs.{name}}} (${})", env_name(Group::Outputs, name)),
                ))
            }
            Ok(m) if m.is_dir() != *folder => {
                let (was, declared) = if *folder { ("a file", "a folder") } else { ("a folder", "a file") };
                return Err(StepError::failed_with_help(
                    format!("the command wrote {was} for output `{name}` ({shown}), declared as {declared}"),
                    "a name ending in / declares a folder",
                ));
            }
            Ok(_) => {}
        }
    }
    let declared: Vec<&str> = outputs.values().map(|(f, _)| f.as_str()).collect();
    let mut extra = Vec::new();
    for entry in fs::read_dir(work).map_err(StepError::io("listing", work))? {
        let name = entry.map_err(StepError::io("listing", work))?.file_name().to_string_lossy().into_owned();
        if !declared.contains(&name.as_str()) {
            extra.push(name);
        }
    }
    for entry in fs::read_dir(out_dir).map_err(StepError::io("listing", out_dir))? {
        let name = entry.map_err(StepError::io("listing", out_dir))?.file_name().to_string_lossy().into_owned();
        if name != WORK {
            extra.push(format!("../{name}"));
        }
    }
    if !extra.is_empty() {
        extra.sort();
        return Err(StepError::failed_with_help(
            format!(
                "the command wrote {} outside its declared outputs: {}",
                if extra.len() == 1 { "a file" } else { "files" },
                extra.join(", ")
            ),
            "declare it in `outputs:`, or write scratch files under $TMPDIR (removed after the run)",
        ));
    }
    Ok(())
}
