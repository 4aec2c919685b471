//! Class labels by name: the contract between the steps that read labels from a table
//! (`tokenize`, `linear`), the steps that train and score classifiers (`fine-tune`, `evaluate`,
//! `ensemble`, `predict`) and what they write (`config.json`'s `id2label`, metrics, predictions).
//!
//! A label column holds integers or strings. When every label reads as an integer, the labels
//! are those integers, classes in numeric order, and a class is named by its decimal form
//! (`"0"`, `"1"`: what NSMC's models always called them). Otherwise the labels are the
//! (trimmed) strings, classes in sorted (byte) order, and a tensor set stores each row's label
//! as the index of its name ([`encode`]). Classes are matched between sets by name, never by
//! id, so a test set that lacks one class still lines up with the training set; a name the
//! model does not know is an error naming it and its rows ([`classes_by_name`]).
//!
//! Multi-label rows name several classes, ordered and matched by name the same way (the class
//! order is [`encode`]'s over every name a table uses); their tensor sets keep the names in
//! `label_names` and the rows' classes as multi-hot targets. Regression rows are numbers, not
//! names. Both are [`crate::task`]'s; not in it: how a cell is split into names (`tokenize`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{StepError, StepResult};

/// The labels of a table's rows, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Each row's label as stored in a tensor set: the integer itself, or the index of its name
    /// in `names`.
    pub ids: Vec<i64>,
    /// The distinct ids, sorted (`0..N` for string labels).
    pub values: Vec<i64>,
    /// The sorted names of string labels; empty for integer labels.
    pub names: Vec<String>,
}

impl Encoded {
    /// The class names in class order.
    pub fn class_names(&self) -> Vec<String> {
        if self.names.is_empty() {
            self.values.iter().map(i64::to_string).collect()
        } else {
            self.names.clone()
        }
    }

    /// Each row's label name, as a tensor set of these rows names it (integers in canonical
    /// form: `"07"` is `"7"`).
    pub fn row_names(&self) -> Vec<String> {
        if self.names.is_empty() {
            self.ids.iter().map(i64::to_string).collect()
        } else {
            self.ids.iter().map(|&i| self.names[i as usize].clone()).collect()
        }
    }
}

/// The integer a label name stands for, when it is the canonical decimal form of one (`"7"`,
/// `"-1"`; not `"07"` or `"+7"`).
pub fn integer_of(name: &str) -> Option<i64> {
    name.parse::<i64>().ok().filter(|v| v.to_string() == name)
}

/// Encodes the (already trimmed, non-empty) labels of a table's rows: integers when every one
/// reads as an integer, else string names in sorted order.
pub fn encode<S: AsRef<str>>(raw: &[S]) -> Encoded {
    let ints: Option<Vec<i64>> = raw.iter().map(|s| s.as_ref().parse::<i64>().ok()).collect();
    match ints {
        Some(ids) => {
            let values: Vec<i64> = ids.iter().copied().collect::<BTreeSet<i64>>().into_iter().collect();
            Encoded { ids, values, names: Vec::new() }
        }
        None => {
            let names: Vec<String> =
                raw.iter().map(|s| s.as_ref().to_string()).collect::<BTreeSet<String>>().into_iter().collect();
            let index: HashMap<&str, i64> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i as i64)).collect();
            let ids = raw.iter().map(|s| index[s.as_ref()]).collect();
            Encoded { ids, values: (0..names.len() as i64).collect(), names }
        }
    }
}

/// Why a label cell cannot be a class name, if it cannot: empty, or with a line break (the
/// predictions files hold one row per line).
pub fn invalid(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        Some("is empty")
    } else if label.contains(['\n', '\r']) {
        Some("contains a line break")
    } else {
        None
    }
}

/// The class of every row, by name: `rows[i]` is row `i`'s label name (`None`: unlabelled),
/// `classes` the model's class names in class order. `what` names the rows in errors (`valid`,
/// `input \`test\``) and `known` the classes (`the training labels`, `the model's labels`).
/// Every unknown name is reported with its first rows.
pub fn classes_by_name(rows: &[Option<&str>], classes: &[String], what: &str, known: &str) -> StepResult<Vec<u32>> {
    let index: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
    let mut out = Vec::with_capacity(rows.len());
    let mut unknown: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (row, name) in rows.iter().enumerate() {
        match name {
            None => return Err(StepError::input(format!("{what} has no labels (row {row} is unlabelled)"))),
            Some(n) => match index.get(n) {
                Some(&c) => out.push(c),
                None => unknown.entry(n).or_default().push(row),
            },
        }
    }
    if unknown.is_empty() {
        return Ok(out);
    }
    let described: Vec<String> = unknown
        .iter()
        .map(|(name, rows)| {
            let shown: Vec<String> = rows.iter().take(5).map(usize::to_string).collect();
            let more = if rows.len() > 5 { format!(" and {} more", rows.len() - 5) } else { String::new() };
            let noun = if rows.len() == 1 { "row" } else { "rows" };
            format!("`{name}` ({noun} {}{more})", shown.join(", "))
        })
        .collect();
    Err(StepError::input_with_help(
        format!(
            "{what}: label{} {} not among {known} ({})",
            if unknown.len() == 1 { "" } else { "s" },
            described.join(", ") + if unknown.len() == 1 { " is" } else { " are" },
            quoted(classes)
        ),
        "train, valid and test must share one label set: every label must occur in the training rows",
    ))
}

/// `` `a`, `b`, `c` `` for messages.
pub fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Serde for a list of class names that writes canonical integers as JSON numbers (so metrics of
/// integer labels read as before names existed) and reads numbers or strings.
pub mod as_json {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Name {
        Int(i64),
        Str(String),
    }

    pub fn serialize<S: Serializer>(names: &[String], s: S) -> Result<S::Ok, S::Error> {
        let out: Vec<Name> =
            names.iter().map(|n| integer_of(n).map(Name::Int).unwrap_or_else(|| Name::Str(n.clone()))).collect();
        out.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let names: Vec<Name> = Vec::deserialize(d)?;
        Ok(names
            .into_iter()
            .map(|n| match n {
                Name::Int(i) => i.to_string(),
                Name::Str(s) => s,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_stay_integers_and_strings_get_sorted_ids() {
        let e = encode(&["1", "0", "10", "2"]);
        assert_eq!((e.ids.clone(), e.values.clone(), e.names.clone()), (vec![1, 0, 10, 2], vec![0, 1, 2, 10], vec![]));
        assert_eq!(e.class_names(), ["0", "1", "2", "10"]);
        let e = encode(&["tech", "sports", "politics", "sports"]);
        assert_eq!(e.ids, [2, 1, 0, 1]);
        assert_eq!(e.values, [0, 1, 2]);
        assert_eq!(e.class_names(), ["politics", "sports", "tech"]);
        // One string makes them all names.
        assert_eq!(encode(&["1", "x"]).names, ["1", "x"]);
    }

    #[test]
    fn unknown_names_are_named_with_their_rows() {
        let classes: Vec<String> = ["politics", "sports"].map(String::from).to_vec();
        let rows = [Some("sports"), Some("tech"), Some("politics"), Some("tech")];
        let e = classes_by_name(&rows, &classes, "valid", "the training labels").unwrap_err();
        assert_eq!(
            e.to_string(),
            "valid: label `tech` (rows 1, 3) is not among the training labels (`politics`, `sports`)"
        );
        let ok = classes_by_name(&rows[..1], &classes, "valid", "x").unwrap();
        assert_eq!(ok, [1]);
    }

    #[test]
    fn names_serialize_as_integers_where_they_are_integers() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct M {
            #[serde(with = "as_json")]
            labels: Vec<String>,
        }
        let m = M { labels: ["0", "07", "sports"].map(String::from).to_vec() };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"labels":[0,"07","sports"]}"#);
        assert_eq!(serde_json::from_str::<M>(&text).unwrap(), m);
    }
}
