//! Where steps run, as a pipeline file says it: the top-level `executor:` section (local or
//! Slurm, which kinds stay local, the Slurm partition and default resources) and a step's own
//! `executor:` and `resources:`. None of it is part of any key: a result computed on a cluster
//! node is the same result as one computed here.
//!
//! ```yaml
//! executor:
//!   kind: slurm                  # local (default) | slurm; `pipe run --executor` overrides
//!   partition: gpu
//!   local_kinds: [download, sample, split, report]   # light steps stay on this machine
//!   resources: { cpus: 4, mem: 16G, time: "2:00:00" } # defaults of every job
//!   node_cache: /local/scratch/pipe   # the nodes' own cache; results move through the remote
//! steps:
//!   finetune:
//!     kind: fine-tune
//!     resources: { gpus: 1, cpus: 8, mem: 32G, time: "4:00:00", partition: gpu }
//!   report:
//!     kind: report
//!     executor: local
//! ```
//!
//! Checked here: the shape and values (a memory size, a Slurm time limit, known kinds). Not
//! here: whether the cluster has the partition or the resources (sbatch says so).

use serde_yaml::Value;

use crate::spec::locate::{locate, locate_value};
use crate::spec::spec_error::{did_you_mean, SpecError};

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// In this process, on a pool of threads.
    Local,
    /// As Slurm batch jobs (`sbatch`), each running `pipe worker` on a node.
    Slurm,
}

impl ExecutorKind {
    fn parse(text: &str) -> Option<ExecutorKind> {
        match text {
            "local" => Some(ExecutorKind::Local),
            "slurm" => Some(ExecutorKind::Slurm),
            _ => None,
        }
    }
}

/// What one job asks the cluster for. Every field is optional: unset fields are left to the
/// section's defaults, then to the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub gpus: Option<u32>,
    pub cpus: Option<u32>,
    /// A Slurm memory size: `4096` (MiB), `500M`, `16G`, `1T`.
    pub mem: Option<String>,
    /// A Slurm time limit: `30` (minutes), `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`.
    pub time: Option<String>,
    pub partition: Option<String>,
}

impl Resources {
    /// These resources, with unset fields taken from `defaults`.
    pub fn or(&self, defaults: &Resources) -> Resources {
        Resources {
            gpus: self.gpus.or(defaults.gpus),
            cpus: self.cpus.or(defaults.cpus),
            mem: self.mem.clone().or_else(|| defaults.mem.clone()),
            time: self.time.clone().or_else(|| defaults.time.clone()),
            partition: self.partition.clone().or_else(|| defaults.partition.clone()),
        }
    }
}

/// The top-level `executor:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSpec {
    pub kind: ExecutorKind,
    /// Steps (or jobs) in flight at once (`--jobs` overrides).
    pub jobs: Option<usize>,
    /// Step kinds that run on this machine even when the executor is Slurm.
    pub local_kinds: Vec<String>,
    /// Defaults for every job (`partition:` at the top of the section is the same as
    /// `resources: {partition: ...}`).
    pub resources: Resources,
    /// The `pipe` binary jobs run (default: this one; it must be at the same path on the
    /// nodes).
    pub binary: Option<String>,
    /// More `sbatch` options, as written (`--account=proj`, `--qos=short`).
    pub sbatch_args: Vec<String>,
    /// A cache directory on each node for the jobs' results (a local disk, or a filesystem the
    /// nodes do not share with this machine): jobs pull their inputs from the remote into it and
    /// push their results there, and this run pulls those. Needs a remote. Unset: jobs use this
    /// run's cache directory, which the nodes must share.
    pub node_cache: Option<String>,
}

impl Default for ExecutorSpec {
    fn default() -> Self {
        ExecutorSpec {
            kind: ExecutorKind::Local,
            jobs: None,
            local_kinds: Vec::new(),
            resources: Resources::default(),
            binary: None,
            sbatch_args: Vec::new(),
            node_cache: None,
        }
    }
}

const SECTION_KEYS: [&str; 8] =
    ["kind", "jobs", "partition", "local_kinds", "resources", "binary", "sbatch_args", "node_cache"];
const RESOURCE_KEYS: [&str; 5] = ["gpus", "cpus", "mem", "time", "partition"];

/// Reads values at paths of one pipeline file, collecting errors with their locations.
pub(crate) struct Checker<'a> {
    pub source: &'a str,
    pub errors: &'a mut Vec<SpecError>,
}

impl Checker<'_> {
    fn key_error(&mut self, message: String, path: &[&str], help: Option<String>) {
        let (location, exact) = self.find(path, false);
        let span = if exact { path.last().map_or(1, |k| k.chars().count()) } else { 0 };
        let mut e = SpecError::new(message).at(location, span);
        e.help = help;
        self.errors.push(e);
    }

    fn value_error(&mut self, message: String, path: &[&str], help: Option<String>) {
        let (location, _) = self.find(path, true);
        let mut e = SpecError::new(message).at(location, 0);
        e.help = help;
        self.errors.push(e);
    }

    /// Where the key (or its value) at `path` is; inside a flow mapping (`{ a: 1 }`), which the
    /// locator does not enter, the line of the nearest enclosing key (`false`: not exact).
    fn find(&self, path: &[&str], value: bool) -> (Option<crate::spec::spec_error::Location>, bool) {
        let exact = if value { locate_value(self.source, path) } else { locate(self.source, path) };
        if exact.is_some() {
            return (exact, true);
        }
        for n in (1..path.len()).rev() {
            if let Some(l) = locate_value(self.source, &path[..n]) {
                return (Some(l), false);
            }
        }
        (None, false)
    }

    /// The top-level `executor:` section.
    pub fn executor(&mut self, value: &Value) -> ExecutorSpec {
        let mut spec = ExecutorSpec::default();
        let Some(map) = value.as_mapping() else {
            self.value_error(
                "`executor` must be a mapping (`kind: local` or `kind: slurm`, ...)".into(),
                &["executor"],
                Some("e.g. `executor: { kind: slurm, partition: gpu }`".into()),
            );
            return spec;
        };
        for (k, v) in map {
            let key = text(k);
            let path = ["executor", key.as_str()];
            match key.as_str() {
                "kind" => match v.as_str().and_then(ExecutorKind::parse) {
                    Some(kind) => spec.kind = kind,
                    None => self.value_error(
                        format!("executor: `kind` must be local or slurm, got {}", describe(v)),
                        &path,
                        v.as_str().and_then(|s| did_you_mean(s, ["local", "slurm"])),
                    ),
                },
                "jobs" => match v.as_u64().filter(|&n| n >= 1) {
                    Some(n) => spec.jobs = Some(n as usize),
                    None => self.value_error(
                        format!("executor: `jobs` must be a positive integer, got {}", describe(v)),
                        &path,
                        None,
                    ),
                },
                "partition" => spec.resources.partition = self.string(v, &path, "executor: `partition`"),
                "binary" => spec.binary = self.string(v, &path, "executor: `binary`"),
                "local_kinds" => spec.local_kinds = self.kinds(v, &path),
                "sbatch_args" => spec.sbatch_args = self.strings(v, &path, "executor: `sbatch_args`"),
                "node_cache" => spec.node_cache = self.string(v, &path, "executor: `node_cache`"),
                "resources" => {
                    let partition = spec.resources.partition.take();
                    spec.resources = self.resources(v, &path, "executor");
                    spec.resources.partition = spec.resources.partition.take().or(partition);
                }
                _ => self.key_error(
                    format!("executor: unknown key `{key}`"),
                    &path,
                    did_you_mean(&key, SECTION_KEYS)
                        .or_else(|| Some(format!("the keys are: {}", SECTION_KEYS.join(", ")))),
                ),
            }
        }
        spec
    }

    /// A step's `executor: local|slurm`.
    pub fn step_executor(&mut self, step: &str, value: &Value) -> Option<ExecutorKind> {
        let kind = value.as_str().and_then(ExecutorKind::parse);
        if kind.is_none() {
            self.value_error(
                format!("step `{step}`: `executor` must be local or slurm, got {}", describe(value)),
                &["steps", step, "executor"],
                value.as_str().and_then(|s| did_you_mean(s, ["local", "slurm"])),
            );
        }
        kind
    }

    /// `resources:` of a step (`owner` = `step `name``) or of the executor section.
    pub fn resources(&mut self, value: &Value, path: &[&str], owner: &str) -> Resources {
        let mut r = Resources::default();
        let Some(map) = value.as_mapping() else {
            self.value_error(
                format!("{owner}: `resources` must be a mapping of gpus, cpus, mem, time, partition"),
                path,
                Some("e.g. `resources: { gpus: 1, cpus: 8, mem: 32G, time: \"4:00:00\" }`".into()),
            );
            return r;
        };
        for (k, v) in map {
            let key = text(k);
            let mut at: Vec<&str> = path.to_vec();
            at.push(key.as_str());
            match key.as_str() {
                "gpus" => r.gpus = self.count(v, &at, owner, "gpus", 0),
                "cpus" => r.cpus = self.count(v, &at, owner, "cpus", 1),
                "mem" => {
                    r.mem = match memory(v) {
                        Some(m) => Some(m),
                        None => {
                            self.value_error(
                                format!("{owner}: resources: `mem` must be a memory size, got {}", describe(v)),
                                &at,
                                Some("a number of MiB or a size with a unit: 4096, 500M, 16G, 1T".into()),
                            );
                            None
                        }
                    }
                }
                "time" => {
                    r.time = match time_limit(v) {
                        Some(t) => Some(t),
                        None => {
                            self.value_error(
                                format!("{owner}: resources: `time` must be a Slurm time limit, got {}", describe(v)),
                                &at,
                                Some(
                                    "minutes (30), \"MM:SS\", \"HH:MM:SS\", \"D-HH\", \"D-HH:MM\" or \"D-HH:MM:SS\"; \
                                     quote values with colons"
                                        .into(),
                                ),
                            );
                            None
                        }
                    }
                }
                "partition" => r.partition = self.string(v, &at, &format!("{owner}: resources: `partition`")),
                _ => self.key_error(
                    format!("{owner}: unknown resource `{key}`"),
                    &at,
                    did_you_mean(&key, RESOURCE_KEYS)
                        .or_else(|| Some(format!("the resources are: {}", RESOURCE_KEYS.join(", ")))),
                ),
            }
        }
        r
    }

    fn count(&mut self, v: &Value, path: &[&str], owner: &str, name: &str, min: u64) -> Option<u32> {
        match v.as_u64().filter(|&n| n >= min && n <= u32::MAX as u64) {
            Some(n) => Some(n as u32),
            None => {
                let what = if min == 0 { "a non-negative integer" } else { "a positive integer" };
                self.value_error(
                    format!("{owner}: resources: `{name}` must be {what}, got {}", describe(v)),
                    path,
                    None,
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Value, path: &[&str], what: &str) -> Option<String> {
        match v.as_str().filter(|s| !s.is_empty()) {
            Some(s) => Some(s.to_string()),
            None => {
                self.value_error(format!("{what} must be a non-empty string, got {}", describe(v)), path, None);
                None
            }
        }
    }

    fn strings(&mut self, v: &Value, path: &[&str], what: &str) -> Vec<String> {
        match v {
            Value::Sequence(items) if items.iter().all(|i| i.as_str().is_some()) => {
                items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
            }
            _ => {
                self.value_error(format!("{what} must be a list of strings, got {}", describe(v)), path, None);
                Vec::new()
            }
        }
    }

    fn kinds(&mut self, v: &Value, path: &[&str]) -> Vec<String> {
        let kinds = self.strings(v, path, "executor: `local_kinds`");
        let known: Vec<&str> = pipe_steps::registry().iter().map(|k| k.spec().kind).collect();
        for kind in &kinds {
            if !known.contains(&kind.as_str()) {
                self.value_error(
                    format!("executor: `local_kinds` names unknown step kind `{kind}`"),
                    path,
                    did_you_mean(kind, known.iter().copied())
                        .or_else(|| Some(format!("the step kinds are: {}", known.join(", ")))),
                );
            }
        }
        kinds
    }
}

/// A Slurm memory size as sbatch takes it, or `None`.
fn memory(v: &Value) -> Option<String> {
    if let Some(n) = v.as_u64() {
        return (n > 0).then(|| n.to_string());
    }
    let s = v.as_str()?.trim();
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], Some(c.to_ascii_uppercase())),
        _ => (s, None),
    };
    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse::<u64>().ok()? > 0;
    let unit_ok = unit.is_none_or(|u| matches!(u, 'K' | 'M' | 'G' | 'T'));
    (ok && unit_ok).then(|| format!("{digits}{}", unit.map(String::from).unwrap_or_default()))
}

/// A Slurm time limit as sbatch takes it, or `None`.
fn time_limit(v: &Value) -> Option<String> {
    if let Some(n) = v.as_u64() {
        return (n > 0).then(|| n.to_string());
    }
    let s = v.as_str()?.trim();
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("infinite") {
        return Some(s.to_ascii_uppercase());
    }
    let number = |t: &str| !t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let ok = days.is_none_or(number)
        && parts.iter().all(|p| number(p))
        && match days {
            // D-HH, D-HH:MM, D-HH:MM:SS
            Some(_) => parts.len() <= 3,
            // MM, MM:SS, HH:MM:SS
            None => parts.len() <= 3,
        };
    ok.then(|| s.to_string())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("\"{s}\""),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_time_limits_take_slurm_forms() {
        let y = |s: &str| serde_yaml::from_str::<Value>(s).unwrap();
        assert_eq!(memory(&y("4096")), Some("4096".into()));
        assert_eq!(memory(&y("16G")), Some("16G".into()));
        assert_eq!(memory(&y("500m")), Some("500M".into()));
        assert_eq!(memory(&y("16GB")), None);
        assert_eq!(memory(&y("lots")), None);
        assert_eq!(memory(&y("0")), None);
        assert_eq!(time_limit(&y("30")), Some("30".into()));
        assert_eq!(time_limit(&y("\"4:00:00\"")), Some("4:00:00".into()));
        assert_eq!(time_limit(&y("\"1-12\"")), Some("1-12".into()));
        assert_eq!(time_limit(&y("\"1-12:30:00\"")), Some("1-12:30:00".into()));
        assert_eq!(time_limit(&y("\"1:2:3:4\"")), None);
        assert_eq!(time_limit(&y("soon")), None);
        assert_eq!(time_limit(&y("\"4h\"")), None);
    }
}
