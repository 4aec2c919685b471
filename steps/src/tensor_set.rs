//! A tokenized data set as stored between steps: the contract between `tokenize`, `split`,
//! `pretrain`, `fine-tune` and `evaluate`.
//!
//! A tensor set is a directory:
//!
//! ```text
//! <dir>/
//! ├── tensors.safetensors   input_ids u32 [T], token_type_ids u8 [T], offsets u64 [N+1],
//! │                         valid_length u32 [N], labels i64 [N],
//! │                         targets f32 [N*K] (multi_label: multi-hot over K classes;
//! │                         regression: K = 1, the value); absent for single-label sets
//! ├── meta.json             TensorSetMeta: max_len, special ids, vocabulary size, labels
//! └── tokenizer.json        the tokenizer that produced the ids (copied into trained models)
//! ```
//!
//! Rows are stored ragged: row `i` is `input_ids[offsets[i]..offsets[i+1]]`, so a review of
//! 14 tokens costs 14 ids whatever `max_len` is, and training pads per batch (dynamic padding).
//! When the transform was asked to pad, rows are stored padded and `valid_length` is smaller
//! than the row.
//!
//! A single-label set stores each row's class in `labels` ([`crate::labels`]); a multi-label or
//! regression set ([`Task`], in `meta.json` as `task`) stores `labels` as -1 and its targets in
//! `targets`. Single-label sets are written byte for byte as before tasks existed.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{StepError, StepResult};
use crate::task::Task;

pub const TENSORS_FILE: &str = "tensors.safetensors";
pub const META_FILE: &str = "meta.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// What a tensor set says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSetMeta {
    pub max_len: usize,
    pub pad_id: u32,
    pub cls_id: u32,
    pub sep_id: u32,
    pub mask_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub vocab_size: usize,
    /// Whether rows are pairs (`[CLS] a [SEP] b [SEP]`).
    pub pair: bool,
    /// The distinct label values, sorted; a model's class `k` is `label_values[k]`.
    /// Empty for unlabelled text (labels are then all -1).
    pub label_values: Vec<i64>,
    /// The names of string labels, sorted: a row's label is the index of its name, and
    /// `label_values` is `0..N` ([`crate::labels`]). Absent for integer labels, whose names are
    /// their values (so sets of integer labels are written as before names existed).
    /// Multi-label: the class names (every set names them); regression: one name, the label
    /// column's (what `id2label` calls the value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_names: Vec<String>,
    /// What the labels are; absent (single-label) in sets from before tasks existed.
    #[serde(default, skip_serializing_if = "Task::is_single_label")]
    pub task: Task,
}

impl TensorSetMeta {
    /// The class names in class order: `label_names`, or the integer labels written out.
    pub fn class_names(&self) -> Vec<String> {
        if self.label_names.is_empty() {
            self.label_values.iter().map(i64::to_string).collect()
        } else {
            self.label_names.clone()
        }
    }

    /// Targets per row in `targets`: the classes of a multi-label set, 1 for regression, 0
    /// for single-label sets (which have none).
    pub fn target_width(&self) -> usize {
        match self.task {
            Task::SingleLabel => 0,
            Task::MultiLabel => self.label_names.len(),
            Task::Regression => 1,
        }
    }

    /// The name of a stored label (`None` for unlabelled rows: -1 in a set without labels).
    pub fn name_of(&self, label: i64) -> Option<String> {
        if self.label_names.is_empty() {
            self.label_values.binary_search(&label).ok().map(|_| label.to_string())
        } else {
            usize::try_from(label).ok().and_then(|i| self.label_names.get(i)).cloned()
        }
    }
}

/// A tokenized data set in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSet {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u8>,
    pub offsets: Vec<u64>,
    pub valid_length: Vec<u32>,
    pub labels: Vec<i64>,
    /// [`TensorSetMeta::target_width`] values per row (multi-label and regression sets).
    pub targets: Vec<f32>,
    pub meta: TensorSetMeta,
}

impl TensorSet {
    pub fn empty(meta: TensorSetMeta) -> Self {
        TensorSet {
            input_ids: Vec::new(),
            token_type_ids: Vec::new(),
            offsets: vec![0],
            valid_length: Vec::new(),
            labels: Vec::new(),
            targets: Vec::new(),
            meta,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.valid_length.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one row of a single-label (or unlabelled) set.
    pub fn push(&mut self, ids: &[u32], types: &[u8], valid_length: u32, label: i64) {
        self.push_row(ids, types, valid_length, label, &[]);
    }

    /// Appends one row with its targets ([`TensorSetMeta::target_width`] of them).
    pub fn push_row(&mut self, ids: &[u32], types: &[u8], valid_length: u32, label: i64, targets: &[f32]) {
        debug_assert_eq!(ids.len(), types.len());
        debug_assert_eq!(targets.len(), self.meta.target_width());
        self.targets.extend_from_slice(targets);
        self.input_ids.extend_from_slice(ids);
        self.token_type_ids.extend_from_slice(types);
        self.offsets.push(self.input_ids.len() as u64);
        self.valid_length.push(valid_length);
        self.labels.push(label);
    }

    /// Token ids of row `i` (as stored: padded rows include their padding).
    pub fn ids(&self, i: usize) -> &[u32] {
        &self.input_ids[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Token type ids of row `i`.
    pub fn types(&self, i: usize) -> &[u8] {
        &self.token_type_ids[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The targets of row `i` (empty for single-label sets).
    pub fn targets_of(&self, i: usize) -> &[f32] {
        let k = self.meta.target_width();
        &self.targets[i * k..(i + 1) * k]
    }

    /// A new set made of the given rows, in the given order.
    pub fn select(&self, rows: &[usize]) -> TensorSet {
        let mut out = TensorSet::empty(self.meta.clone());
        for &i in rows {
            out.push_row(self.ids(i), self.types(i), self.valid_length[i], self.labels[i], self.targets_of(i));
        }
        out
    }

    /// Writes `tensors.safetensors` and `meta.json` into `dir` (which must exist).
    pub fn save(&self, dir: &Path) -> StepResult<()> {
        let offsets: Vec<u8> = self.offsets.iter().flat_map(|v| v.to_le_bytes()).collect();
        let ids: Vec<u8> = self.input_ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let valid: Vec<u8> = self.valid_length.iter().flat_map(|v| v.to_le_bytes()).collect();
        let labels: Vec<u8> = self.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let targets: Vec<u8> = self.targets.iter().flat_map(|v| v.to_le_bytes()).collect();
        fn view(dtype: Dtype, n: usize, data: &[u8]) -> StepResult<TensorView<'_>> {
            TensorView::new(dtype, vec![n], data).map_err(|e| StepError::failed(format!("building tensor: {e}")))
        }
        let mut tensors = vec![
            ("input_ids", view(Dtype::U32, self.input_ids.len(), &ids)?),
            ("token_type_ids", view(Dtype::U8, self.token_type_ids.len(), &self.token_type_ids)?),
            ("offsets", view(Dtype::U64, self.offsets.len(), &offsets)?),
            ("valid_length", view(Dtype::U32, self.valid_length.len(), &valid)?),
            ("labels", view(Dtype::I64, self.labels.len(), &labels)?),
        ];
        // Single-label sets keep their bytes from before targets existed.
        if !self.meta.task.is_single_label() {
            tensors.push(("targets", view(Dtype::F32, self.targets.len(), &targets)?));
        }
        let path = dir.join(TENSORS_FILE);
        safetensors::serialize_to_file(tensors, None, &path)
            .map_err(|e| StepError::failed(format!("writing {}: {e}", path.display())))?;
        let meta_path = dir.join(META_FILE);
        let meta = serde_json::to_vec_pretty(&self.meta).map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(&meta_path, meta).map_err(StepError::io("writing", &meta_path))
    }

    /// Reads a tensor set directory written by [`TensorSet::save`].
    pub fn load(dir: &Path) -> StepResult<TensorSet> {
        let meta_path = dir.join(META_FILE);
        let meta_bytes = fs::read(&meta_path).map_err(StepError::io("reading", &meta_path))?;
        let meta: TensorSetMeta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| StepError::input(format!("{} is not a tensor set meta file: {e}", meta_path.display())))?;
        let path = dir.join(TENSORS_FILE);
        let bytes = fs::read(&path).map_err(StepError::io("reading", &path))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| StepError::input(format!("{} is not a safetensors file: {e}", path.display())))?;
        let raw = |name: &str, dtype: Dtype| -> StepResult<Vec<u8>> {
            let t =
                st.tensor(name).map_err(|_| StepError::input(format!("{} has no tensor `{name}`", path.display())))?;
            if t.dtype() != dtype {
                return Err(StepError::input(format!(
                    "{}: tensor `{name}` is {:?}, expected {dtype:?}",
                    path.display(),
                    t.dtype()
                )));
            }
            Ok(t.data().to_vec())
        };
        let u32s =
            |b: Vec<u8>| b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
        let u64s = |b: Vec<u8>| {
            b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect::<Vec<_>>()
        };
        let i64s = |b: Vec<u8>| {
            b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect::<Vec<_>>()
        };
        let targets = match meta.task {
            Task::SingleLabel => Vec::new(),
            _ => raw("targets", Dtype::F32)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        let set = TensorSet {
            targets,
            input_ids: u32s(raw("input_ids", Dtype::U32)?),
            token_type_ids: raw("token_type_ids", Dtype::U8)?,
            offsets: u64s(raw("offsets", Dtype::U64)?),
            valid_length: u32s(raw("valid_length", Dtype::U32)?),
            labels: i64s(raw("labels", Dtype::I64)?),
            meta,
        };
        set.check(&path)?;
        Ok(set)
    }

    fn check(&self, path: &Path) -> StepResult<()> {
        let n = self.valid_length.len();
        let consistent = self.offsets.len() == n + 1
            && self.labels.len() == n
            && self.targets.len() == n * self.meta.target_width()
            && self.token_type_ids.len() == self.input_ids.len()
            && self.offsets.first() == Some(&0)
            && self.offsets.last() == Some(&(self.input_ids.len() as u64))
            && self.offsets.windows(2).all(|w| w[0] <= w[1]);
        if consistent {
            Ok(())
        } else {
            Err(StepError::input(format!("{}: tensor lengths are inconsistent", path.display())))
        }
    }

    /// Each row's label name (`None` where unlabelled), in row order.
    pub fn label_names(&self) -> Vec<Option<String>> {
        self.labels.iter().map(|&l| self.meta.name_of(l)).collect()
    }

    /// Index of each label value in `meta.label_values` (the class a model predicts).
    pub fn class_index(&self) -> HashMap<i64, usize> {
        self.meta.label_values.iter().enumerate().map(|(i, &v)| (v, i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TensorSetMeta {
        TensorSetMeta {
            max_len: 8,
            pad_id: 0,
            cls_id: 101,
            sep_id: 102,
            mask_id: Some(103),
            unk_id: Some(100),
            vocab_size: 200,
            pair: false,
            label_values: vec![0, 1],
            label_names: vec![],
            task: Task::SingleLabel,
        }
    }

    #[test]
    fn save_then_load_round_trips_and_select_keeps_rows() {
        let mut set = TensorSet::empty(meta());
        set.push(&[101, 7, 102], &[0, 0, 0], 3, 1);
        set.push(&[101, 8, 9, 102], &[0, 0, 0, 0], 4, 0);
        let dir = tempfile::tempdir().unwrap();
        set.save(dir.path()).unwrap();
        let loaded = TensorSet::load(dir.path()).unwrap();
        assert_eq!(loaded, set);
        let picked = loaded.select(&[1]);
        assert_eq!(picked.ids(0), &[101, 8, 9, 102]);
        assert_eq!(picked.labels, vec![0]);
    }

    #[test]
    fn integer_labels_are_written_without_names_and_string_labels_with_them() {
        let text = serde_json::to_string(&meta()).unwrap();
        assert!(!text.contains("label_names"), "{text}");
        let named = TensorSetMeta { label_names: vec!["neg".into(), "pos".into()], ..meta() };
        let text = serde_json::to_string(&named).unwrap();
        assert!(text.contains(r#""label_names":["neg","pos"]"#), "{text}");
        assert_eq!(serde_json::from_str::<TensorSetMeta>(&text).unwrap(), named);
        assert_eq!(named.class_names(), ["neg", "pos"]);
        assert_eq!(named.name_of(1), Some("pos".into()));
        assert_eq!((meta().name_of(1), meta().name_of(-1)), (Some("1".into()), None));
        assert!(!text.contains("task"), "{text}");
    }

    #[test]
    fn multi_label_sets_store_their_targets_and_select_keeps_them() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let m = TensorSetMeta { task: Task::MultiLabel, label_names: names, label_values: vec![0, 1, 2], ..meta() };
        let mut set = TensorSet::empty(m);
        set.push_row(&[101, 7, 102], &[0, 0, 0], 3, -1, &[1.0, 0.0, 1.0]);
        set.push_row(&[101, 8, 102], &[0, 0, 0], 3, -1, &[0.0, 1.0, 0.0]);
        let dir = tempfile::tempdir().unwrap();
        set.save(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        assert!(text.contains(r#""task": "multi_label""#), "{text}");
        let loaded = TensorSet::load(dir.path()).unwrap();
        assert_eq!(loaded, set);
        assert_eq!(loaded.select(&[1]).targets, [0.0, 1.0, 0.0]);
    }
}
