//! `BertConfig`: the architecture of a BERT, read from and written to a Hugging Face
//! `config.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{StepError, StepResult};

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}

/// The fields of a Hugging Face BERT `config.json` that shape the model. Unknown fields are
/// kept in `extra` so a loaded config is written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl BertConfig {
    /// A fresh config for pre-training from scratch.
    pub fn new(
        vocab_size: usize,
        layers: usize,
        hidden: usize,
        heads: usize,
        intermediate: usize,
        max_positions: usize,
    ) -> Self {
        let mut extra = BTreeMap::new();
        extra.insert("model_type".into(), Value::from("bert"));
        extra.insert("position_embedding_type".into(), Value::from("absolute"));
        BertConfig {
            vocab_size,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            max_position_embeddings: max_positions,
            type_vocab_size: 2,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            pad_token_id: 0,
            extra,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks what the model code relies on.
    pub fn check(&self, path: &Path) -> StepResult<()> {
        let bad = |m: String| StepError::input(format!("{}: {m}", path.display()));
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu") {
            return Err(bad(format!("hidden_act `{}` is not supported (gelu, gelu_new, relu)", self.hidden_act)));
        }
        if let Some(Value::String(kind)) = self.extra.get("position_embedding_type") {
            if kind != "absolute" {
                return Err(bad(format!("position_embedding_type `{kind}` is not supported (absolute)")));
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> StepResult<BertConfig> {
        let text = fs::read_to_string(path).map_err(StepError::io("reading", path))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| StepError::input(format!("{}: not a BERT config: {e}", path.display())))?;
        config.check(path)?;
        Ok(config)
    }

    pub fn save(&self, path: &Path) -> StepResult<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(path, text).map_err(StepError::io("writing", path))
    }
}
