//! Why a step must run: the difference between the fingerprint recorded for it last time and
//! the one it has now, in words a user reads in `pipe status` and `pipe run`.

use serde_json::Value as Json;

use crate::fingerprint::Fingerprint;

#[derive(Debug, Clone, PartialEq)]
pub enum DirtyReason {
    /// No run of this pipeline ever recorded the step.
    NeverRun,
    /// `--force` named this step or one it depends on.
    Forced,
    ParamChanged {
        name: String,
        old: Option<Json>,
        new: Option<Json>,
    },
    PinChanged {
        old: Option<String>,
        new: Option<String>,
    },
    /// The content of an upstream output differs.
    InputChanged {
        name: String,
    },
    /// The step takes an input it did not take before (or no longer takes one).
    InputAdded {
        name: String,
    },
    InputRemoved {
        name: String,
    },
    /// An upstream step will run first, so the input's content is not known yet.
    InputPending {
        name: String,
        step: String,
    },
    /// A local file named by a parameter changed.
    SourceChanged {
        name: String,
    },
    ImplementationChanged {
        old: u32,
        new: u32,
    },
    /// The cache's layout or the meaning of keys changed ([`crate::fingerprint::CACHE_FORMAT`]).
    FormatChanged {
        old: u32,
        new: u32,
    },
    KindChanged {
        old: String,
        new: String,
    },
    /// Same key as before, but the cached result is gone or fails verification.
    ArtifactMissing {
        detail: String,
    },
}

impl DirtyReason {
    /// What changed from `old` to `new`; empty when they are equal.
    pub fn diff(old: &Fingerprint, new: &Fingerprint) -> Vec<DirtyReason> {
        let mut out = Vec::new();
        if old.kind != new.kind {
            out.push(DirtyReason::KindChanged { old: old.kind.clone(), new: new.kind.clone() });
            return out;
        }
        if old.format != new.format {
            out.push(DirtyReason::FormatChanged { old: old.format, new: new.format });
            return out;
        }
        if old.version != new.version {
            out.push(DirtyReason::ImplementationChanged { old: old.version, new: new.version });
        }
        if old.pin != new.pin {
            out.push(DirtyReason::PinChanged { old: old.pin.clone(), new: new.pin.clone() });
        }
        let names: std::collections::BTreeSet<&String> = old.params.keys().chain(new.params.keys()).collect();
        for name in names {
            let (a, b) = (old.params.get(name), new.params.get(name));
            if a != b {
                out.push(DirtyReason::ParamChanged { name: name.clone(), old: a.cloned(), new: b.cloned() });
            }
        }
        let inputs: std::collections::BTreeSet<&String> = old.inputs.keys().chain(new.inputs.keys()).collect();
        for name in inputs {
            let name = name.clone();
            match (old.inputs.get(&name), new.inputs.get(&name)) {
                (None, Some(_)) => out.push(DirtyReason::InputAdded { name }),
                (Some(_), None) => out.push(DirtyReason::InputRemoved { name }),
                (a, b) if a != b => out.push(DirtyReason::InputChanged { name }),
                _ => {}
            }
        }
        let sources: std::collections::BTreeSet<&String> = old.sources.keys().chain(new.sources.keys()).collect();
        for name in sources {
            if old.sources.get(name) != new.sources.get(name) {
                out.push(DirtyReason::SourceChanged { name: name.clone() });
            }
        }
        out
    }
}

fn show(value: &Option<Json>) -> String {
    match value {
        None => "(unset)".into(),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e7) {
                format!("{f:e}")
            } else {
                f.to_string()
            }
        }
        Some(v) => v.to_string(),
    }
}

/// `id@a` → `id@b`, values of a hub model pinned to two commits: `(id, a, b)` with the
/// commits shortened to 12 digits.
fn hub_move<'a>(old: &'a Option<Json>, new: &'a Option<Json>) -> Option<(&'a str, &'a str, &'a str)> {
    let (Some(Json::String(old)), Some(Json::String(new))) = (old, new) else { return None };
    let (id, a) = old.split_once('@')?;
    let (id2, b) = new.split_once('@')?;
    let short = |s: &'a str| s.get(..12).unwrap_or(s);
    (id == id2).then(|| (id, short(a), short(b)))
}

impl std::fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirtyReason::NeverRun => write!(f, "never run"),
            DirtyReason::Forced => write!(f, "forced"),
            DirtyReason::ParamChanged { name, old, new } => match hub_move(old, new) {
                Some((id, a, b)) => write!(f, "hub model {id} moved: {a} -> {b}"),
                None => write!(f, "param {name}: {} -> {}", show(old), show(new)),
            },
            DirtyReason::PinChanged { old, new } => write!(
                f,
                "pinned checksum: {} -> {}",
                old.as_deref().unwrap_or("(none)"),
                new.as_deref().unwrap_or("(none)")
            ),
            DirtyReason::InputChanged { name } => write!(f, "input {name} changed"),
            DirtyReason::InputAdded { name } => write!(f, "new input {name}"),
            DirtyReason::InputRemoved { name } => write!(f, "input {name} no longer used"),
            DirtyReason::InputPending { name, step } => write!(f, "input {name} comes from {step}, which will run"),
            DirtyReason::SourceChanged { name } => write!(f, "local file {name} changed"),
            DirtyReason::ImplementationChanged { .. } => write!(f, "step implementation changed"),
            DirtyReason::FormatChanged { old, new } => write!(f, "cache format changed ({old} -> {new})"),
            DirtyReason::KindChanged { old, new } => write!(f, "kind: {old} -> {new}"),
            DirtyReason::ArtifactMissing { detail } => write!(f, "cached artifact missing or corrupt ({detail})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn fp(lr: f64, input: &str) -> Fingerprint {
        Fingerprint {
            format: crate::fingerprint::CACHE_FORMAT,
            kind: "fine-tune".into(),
            version: 1,
            params: BTreeMap::from([("lr".to_string(), Json::from(lr))]),
            pin: None,
            inputs: BTreeMap::from([("train".to_string(), input.to_string())]),
            sources: BTreeMap::new(),
        }
    }

    #[test]
    fn diff_names_params_and_inputs() {
        let reasons = DirtyReason::diff(&fp(5e-5, "a"), &fp(3e-5, "b"));
        let text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert_eq!(text, vec!["param lr: 5e-5 -> 3e-5", "input train changed"]);
        assert!(DirtyReason::diff(&fp(5e-5, "a"), &fp(5e-5, "a")).is_empty());
    }

    #[test]
    fn an_input_taken_or_dropped_is_named_as_such() {
        let (old, mut new) = (fp(5e-5, "a"), fp(5e-5, "a"));
        new.inputs = BTreeMap::from([("valid".to_string(), "v".to_string())]);
        let text: Vec<String> = DirtyReason::diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(text, vec!["input train no longer used", "new input valid"]);
    }

    #[test]
    fn a_format_change_is_named_as_such() {
        let mut old = fp(5e-5, "a");
        old.format = 0;
        let text: Vec<String> = DirtyReason::diff(&old, &fp(5e-5, "a")).iter().map(ToString::to_string).collect();
        assert_eq!(text, vec!["cache format changed (0 -> 1)"]);
    }

    #[test]
    fn a_hub_model_pinned_to_another_commit_reads_as_moved() {
        let reason = DirtyReason::ParamChanged {
            name: "model".into(),
            old: Some(Json::from(format!("org/bert@{}", "a".repeat(40)))),
            new: Some(Json::from(format!("org/bert@{}", "b".repeat(40)))),
        };
        assert_eq!(reason.to_string(), "hub model org/bert moved: aaaaaaaaaaaa -> bbbbbbbbbbbb");
    }
}
