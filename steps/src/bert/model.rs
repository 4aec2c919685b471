//! Our BERT: the encoder (`BertModel`), and the heads for sequence classification
//! (`BertClassifier`) and masked-language modelling (`BertMaskedLm`), with Hugging Face tensor
//! names.
//!
//! It exists because candle-transformers' `BertModel` cannot be trained: its LayerNorm has no
//! backward pass, its dropout does nothing and it has no pooler. Here, training passes use a
//! differentiable LayerNorm and softmax and real dropout whose masks come from a seeded RNG
//! (the CPU device cannot be seeded); inference passes use candle's fused LayerNorm. On CPU the
//! dense layers, the head split/merge and the attention softmax are our fused ops in every pass
//! (`ops.rs`, `dense_ops.rs`); other devices use candle's composites ([`Kernels`]), which also
//! run on the CPU when a pass asks for them, so tests check the GPU's code path against the
//! fused one.
//!
//! Mixed precision ([`Precision::Bf16`]) follows PyTorch's autocast: the dense layers and the
//! two attention products compute in bf16 (f32 accumulation), GELU runs on their bf16 output;
//! LayerNorm, the softmax, dropout, the residual stream and the logits are f32; the parameters
//! stay f32 (cast per use, so their gradients come back in f32).
//!
//! Dropout masks: on the CPU from the pass's seeded RNG; on a GPU from the device's generator
//! (the trainer seeds it), since drawing tens of millions of values a step on the host and
//! copying them over would cost more than the step itself.
//!
//! The model takes tensors and a [`Pass`]; loading and saving happen in the step kinds. ELECTRA
//! ([`super::electra`]) builds its generator and discriminator from these parts: one set of
//! [`Embeddings`] shared by two encoders made with [`BertModel::with_embeddings`].

use std::cell::RefCell;

use candle_core::{DType, Result, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::config::BertConfig;
use super::dense_ops::{Dense, MergeHeads, SplitHeads};
use super::ops::{AttentionSoftmax, Dropout, DropoutAdd, GeluErf, Normalize, ScaleShift};
use super::weights::Weights;
use crate::error::StepResult;

/// One batch of token ids as the model consumes it.
pub struct Batch {
    /// `(batch, len)` u32.
    pub input_ids: Tensor,
    /// `(batch, len)` u32.
    pub token_type_ids: Tensor,
    /// `(batch, len)` in the model's dtype: 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
}

/// Rows looked up from an embedding table in a pass that keeps embedding gradients sparse:
/// `rows` is a leaf of the autograd graph, so its gradient is the table's gradient at `ids`.
pub struct Lookup {
    pub table: Tensor,
    pub ids: Vec<u32>,
    pub rows: Var,
}

/// Which kernels a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// Our fused kernels where they apply (CPU tensors of f32 or f64 in an f32 pass), candle's
    /// composites elsewhere.
    #[default]
    Auto,
    /// candle's composites everywhere: what CUDA and Metal run. On the CPU, for tests of that path.
    Composite,
}

/// The precision a pass computes in (the `precision` parameter of the BERT steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in the parameters' type.
    #[default]
    F32,
    /// Mixed precision as PyTorch's autocast does it (see the module doc).
    Bf16,
}

impl Precision {
    pub const NAMES: [&'static str; 2] = ["f32", "bf16"];

    pub fn parse(value: &str) -> Option<Precision> {
        match value {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// How a forward pass runs: inference, or training with dropout.
pub struct Pass {
    rng: Option<RefCell<StdRng>>,
    seed: u64,
    /// Set in passes whose word-embedding gradient comes back as rows ([`Pass::sparse`]).
    lookups: Option<RefCell<Vec<Lookup>>>,
    kernels: Kernels,
    precision: Precision,
}

impl Pass {
    pub fn eval() -> Pass {
        Pass { rng: None, seed: 0, lookups: None, kernels: Kernels::Auto, precision: Precision::F32 }
    }

    /// A training pass whose dropout masks are drawn from an RNG seeded with `seed` (on the
    /// CPU; see the module doc for GPUs).
    pub fn train(seed: u64) -> Pass {
        Pass {
            rng: Some(RefCell::new(StdRng::seed_from_u64(seed))),
            seed,
            lookups: None,
            kernels: Kernels::Auto,
            precision: Precision::F32,
        }
    }

    /// This pass with the given kernels.
    pub fn with_kernels(mut self, kernels: Kernels) -> Pass {
        self.kernels = kernels;
        self
    }

    /// This pass in the given precision.
    pub fn with_precision(mut self, precision: Precision) -> Pass {
        self.precision = precision;
        self
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether `x` goes through our fused CPU kernels.
    fn fused(&self, x: &Tensor) -> bool {
        self.kernels == Kernels::Auto
            && self.precision == Precision::F32
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
    }

    /// `x` in f32 if it is bf16 (the precision of everything but the matrix products).
    pub(crate) fn widen(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() == DType::BF16 {
            x.to_dtype(DType::F32)
        } else {
            Ok(x.clone())
        }
    }

    /// `x` as a matrix-product operand: bf16 in a mixed-precision pass.
    pub(crate) fn narrow(&self, x: &Tensor) -> Result<Tensor> {
        match self.precision {
            Precision::Bf16 => x.to_dtype(DType::BF16),
            Precision::F32 => Ok(x.clone()),
        }
    }

    /// This pass, with word-embedding lookups recorded as [`Lookup`]s instead of differentiating
    /// through the table: the backward pass then yields gradient rows for the looked-up ids
    /// rather than a dense (vocabulary × hidden) tensor, most of it zeros.
    pub fn sparse(mut self) -> Pass {
        self.lookups = Some(RefCell::new(Vec::new()));
        self
    }

    /// The seed the pass was made with (0 for inference).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn is_train(&self) -> bool {
        self.rng.is_some()
    }

    /// The lookups recorded so far (none unless the pass is [`Pass::sparse`]).
    pub fn take_lookups(&self) -> Vec<Lookup> {
        self.lookups.as_ref().map(|l| std::mem::take(&mut *l.borrow_mut())).unwrap_or_default()
    }

    /// Rows `ids` (any shape) of `table`, `(ids.elem_count(), width)`.
    fn embedding(&self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let flat = ids.flatten_all()?;
        let Some(lookups) = &self.lookups else { return table.index_select(&flat, 0) };
        let rows = Var::from_tensor(&table.detach().index_select(&flat, 0)?)?;
        let looked_up = rows.as_tensor().clone();
        lookups.borrow_mut().push(Lookup { table: table.clone(), ids: flat.to_vec1::<u32>()?, rows });
        Ok(looked_up)
    }

    /// An inverted-dropout mask shaped like `x`: 0 with probability `p`, else `1 / (1 - p)`.
    /// `None` in inference passes and when `p` is 0.
    fn mask(&self, x: &Tensor, p: f64) -> Result<Option<Tensor>> {
        let Some(rng) = &self.rng else { return Ok(None) };
        if p <= 0.0 {
            return Ok(None);
        }
        if !x.device().is_cpu() {
            return device_mask(x, p).map(Some);
        }
        let keep = 1.0 - p;
        let threshold = (keep * 4_294_967_296.0) as u64;
        let scale = (1.0 / keep) as f32;
        let mut rng = rng.borrow_mut();
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if u64::from(rng.next_u32()) < threshold { scale } else { 0.0 }).collect();
        Ok(Some(Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?))
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales the rest by
    /// `1 / (1 - p)`. The identity in inference passes.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        match self.mask(x, p)? {
            Some(mask) if self.fused(x) => x.contiguous()?.apply_op1(Dropout { mask }),
            Some(mask) => x * mask,
            None => Ok(x.clone()),
        }
    }

    /// `dropout(x) + residual`, fused on CPU. In mixed precision `x` (a dense layer's bf16
    /// output) is widened first: the residual stream is f32.
    fn dropout_add(&self, x: &Tensor, residual: &Tensor, p: f64) -> Result<Tensor> {
        let x = &x.to_dtype(residual.dtype())?;
        match self.mask(x, p)? {
            Some(mask) if self.fused(x) => x.contiguous()?.apply_op2(&residual.contiguous()?, DropoutAdd { mask }),
            Some(mask) => (x * mask)? + residual,
            None => x + residual,
        }
    }

    /// Attention probabilities `dropout(softmax(scale * scores + bias))` from scores
    /// `(batch, heads, queries, keys)` and an additive padding bias `(batch, keys)`; one fused
    /// kernel on CPU. In mixed precision the softmax is f32 (as in autocast) and the
    /// probabilities come back in the scores' bf16 for the product with the values.
    fn attention_probs(&self, scores: &Tensor, bias: &Tensor, scale: f64, p: f64) -> Result<Tensor> {
        if self.fused(scores) {
            let mask = self.mask(scores, p)?;
            return scores.contiguous()?.apply_op2(&bias.contiguous()?, AttentionSoftmax { scale, mask });
        }
        let dtype = scores.dtype();
        let scores = self.widen(scores)?;
        let (b, _, _, l) = scores.dims4()?;
        let scores = (scores * scale)?.broadcast_add(&bias.reshape((b, 1, 1, l))?)?;
        let probs = if self.is_train() || scores.dtype() == DType::F64 {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        self.dropout(&probs, p)?.to_dtype(dtype)
    }

    /// Training (and f64) needs differentiable kernels: our fused ones on CPU, candle's
    /// composites elsewhere; inference in f32 uses candle's fused forward-only kernels. Always
    /// in f32 (or f64): a bf16 input is widened, as autocast does.
    pub(crate) fn layer_norm(&self, x: &Tensor, ln: &LayerNorm) -> Result<Tensor> {
        let x = &self.widen(x)?;
        if !(self.is_train() || x.dtype() == DType::F64) {
            candle_nn::ops::layer_norm(&x.contiguous()?, &ln.weight, &ln.bias, ln.eps)
        } else if self.fused(x) {
            x.contiguous()?.apply_op1(Normalize { eps: f64::from(ln.eps) })?.apply_op3(&ln.weight, &ln.bias, ScaleShift)
        } else {
            candle_nn::ops::layer_norm_slow(x, &ln.weight, &ln.bias, ln.eps)
        }
    }
}

/// An inverted-dropout mask shaped like `x` from the device's own generator (off the CPU).
pub fn device_mask(x: &Tensor, p: f64) -> Result<Tensor> {
    let keep = 1.0 - p;
    let draws = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
    draws.lt(keep)?.to_dtype(x.dtype())? * (1.0 / keep)
}

/// A dense layer `y = x Wᵀ + b` with a PyTorch-layout weight `(out, in)`.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub(crate) fn new(
        w: &mut Weights,
        name: &str,
        inputs: usize,
        outputs: usize,
        std: f64,
        rng: &mut StdRng,
    ) -> StepResult<Self> {
        Ok(Linear {
            weight: w.normal(&format!("{name}.weight"), &[outputs, inputs], std, rng)?,
            bias: w.zeros(&format!("{name}.bias"), &[outputs])?,
        })
    }

    /// `x Wᵀ + b`; in bf16 (from bf16 copies of `x`, `W` and `b`) in a mixed-precision pass.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        if pass.fused(x) {
            return x.contiguous()?.apply_op3(&self.weight, &self.bias, Dense);
        }
        let dims = x.dims().to_vec();
        let inputs = dims[dims.len() - 1];
        let rows = x.elem_count() / inputs;
        let (x, weight, bias) = (pass.narrow(x)?, pass.narrow(&self.weight)?, pass.narrow(&self.bias)?);
        let y = x.reshape((rows, inputs))?.matmul(&weight.t()?)?.broadcast_add(&bias)?;
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

#[derive(Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn new(w: &mut Weights, name: &str, size: usize, eps: f64) -> StepResult<Self> {
        Ok(LayerNorm {
            weight: w.ones(&format!("{name}.weight"), &[size])?,
            bias: w.zeros(&format!("{name}.bias"), &[size])?,
            eps: eps as f32,
        })
    }
}

/// Word, position and token-type embeddings with their LayerNorm and dropout, under
/// `bert.embeddings.`; a clone shares the tensors (ELECTRA's generator and discriminator use one
/// set).
#[derive(Clone)]
pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    /// Creates the tensors (width `hidden_size`) in `w`, initialised as Hugging Face does.
    pub fn new(config: &BertConfig, w: &mut Weights, rng: &mut StdRng) -> StepResult<Embeddings> {
        let c = config;
        let std = c.initializer_range;
        let h = c.hidden_size;
        Ok(Embeddings {
            word: w.normal("bert.embeddings.word_embeddings.weight", &[c.vocab_size, h], std, rng)?,
            position: w.normal(
                "bert.embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
                std,
                rng,
            )?,
            token_type: w.normal("bert.embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h], std, rng)?,
            norm: LayerNorm::new(w, "bert.embeddings.LayerNorm", h, c.layer_norm_eps)?,
            dropout: c.hidden_dropout_prob,
        })
    }

    /// The word-embedding table, `(vocab, width)`.
    pub fn word(&self) -> &Tensor {
        &self.word
    }

    /// `dropout(LayerNorm(word + position + token type))`, `(batch, len, width)`.
    pub fn forward(&self, batch: &Batch, pass: &Pass) -> Result<Tensor> {
        let (b, l) = batch.input_ids.dims2()?;
        let h = self.word.dim(1)?;
        let words = pass.embedding(&self.word, &batch.input_ids)?.reshape((b, l, h))?;
        let types = self.token_type.index_select(&batch.token_type_ids.flatten_all()?, 0)?.reshape((b, l, h))?;
        let positions = self.position.narrow(0, 0, l)?.unsqueeze(0)?;
        let x = words.add(&types)?.broadcast_add(&positions)?;
        let x = pass.layer_norm(&x, &self.norm)?;
        pass.dropout(&x, self.dropout)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The BERT encoder with its pooler (dense + tanh on `[CLS]`), which ELECTRA's encoders lack.
pub struct BertModel {
    pub config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
}

impl BertModel {
    /// Creates the encoder's tensors under `bert.` in `w`, initialised as Hugging Face does
    /// (normal with `initializer_range`, LayerNorm 1 and 0, biases 0).
    pub fn new(config: &BertConfig, w: &mut Weights, rng: &mut StdRng) -> StepResult<BertModel> {
        let embeddings = Embeddings::new(config, w, rng)?;
        BertModel::with_embeddings(config, embeddings, "bert", true, w, rng)
    }

    /// An encoder on given (possibly shared) embeddings: its layers under
    /// `{prefix}.encoder.layer.N`, a pooler under `{prefix}.pooler` only when `pooler`. The
    /// layers are `config.hidden_size` wide; embeddings of another width need a projection
    /// before [`BertModel::encode`] (so [`BertModel::forward`] then fails on the shapes).
    pub fn with_embeddings(
        config: &BertConfig,
        embeddings: Embeddings,
        prefix: &str,
        pooler: bool,
        w: &mut Weights,
        rng: &mut StdRng,
    ) -> StepResult<BertModel> {
        let c = config;
        let std = c.initializer_range;
        let h = c.hidden_size;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("{prefix}.encoder.layer.{i}");
            layers.push(Layer {
                query: Linear::new(w, &format!("{p}.attention.self.query"), h, h, std, rng)?,
                key: Linear::new(w, &format!("{p}.attention.self.key"), h, h, std, rng)?,
                value: Linear::new(w, &format!("{p}.attention.self.value"), h, h, std, rng)?,
                attention_out: Linear::new(w, &format!("{p}.attention.output.dense"), h, h, std, rng)?,
                attention_norm: LayerNorm::new(w, &format!("{p}.attention.output.LayerNorm"), h, c.layer_norm_eps)?,
                intermediate: Linear::new(w, &format!("{p}.intermediate.dense"), h, c.intermediate_size, std, rng)?,
                output: Linear::new(w, &format!("{p}.output.dense"), c.intermediate_size, h, std, rng)?,
                output_norm: LayerNorm::new(w, &format!("{p}.output.LayerNorm"), h, c.layer_norm_eps)?,
            });
        }
        let pooler =
            if pooler { Some(Linear::new(w, &format!("{prefix}.pooler.dense"), h, h, std, rng)?) } else { None };
        Ok(BertModel { config: config.clone(), embeddings, layers, pooler })
    }

    pub fn word_embeddings(&self) -> &Tensor {
        &self.embeddings.word
    }

    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    pub(crate) fn activation(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        match self.config.hidden_act.as_str() {
            "relu" => x.relu(),
            "gelu_new" | "gelu_pytorch_tanh" => x.gelu(),
            _ if pass.fused(x) => x.contiguous()?.apply_op1(GeluErf),
            _ => x.gelu_erf(),
        }
    }

    /// The last hidden states, `(batch, len, hidden)`.
    pub fn forward(&self, batch: &Batch, pass: &Pass) -> Result<Tensor> {
        let x = self.embeddings.forward(batch, pass)?;
        self.encode(x, &batch.attention_mask, pass)
    }

    /// The layers on embedded input `x` `(batch, len, hidden)` with the batch's attention mask.
    pub fn encode(&self, x: Tensor, attention_mask: &Tensor, pass: &Pass) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let dh = self.config.head_dim();
        let mut x = x;
        // Additive attention bias: 0 for real tokens, a large negative number for padding.
        let bias = ((attention_mask.ones_like()? - attention_mask)? * -10000.0)?;
        let scale = 1.0 / (dh as f64).sqrt();
        let hidden_p = self.config.hidden_dropout_prob;
        let attention_p = self.config.attention_probs_dropout_prob;
        // (batch, len, hidden) → (batch, heads, len, head_dim), or (…, head_dim, len) for keys.
        let split = |t: Tensor, transposed: bool| -> Result<Tensor> {
            if pass.fused(&t) {
                return t.apply_op1(SplitHeads { heads, transposed });
            }
            let t = t.reshape((b, l, heads, dh))?.transpose(1, 2)?;
            if transposed {
                t.transpose(2, 3)?.contiguous()
            } else {
                t.contiguous()
            }
        };
        let merge = |t: Tensor| -> Result<Tensor> {
            if pass.fused(&t) {
                return t.contiguous()?.apply_op1(MergeHeads { heads, transposed: false });
            }
            t.transpose(1, 2)?.reshape((b, l, h))
        };
        for layer in &self.layers {
            let q = split(layer.query.forward(&x, pass)?, false)?;
            let k = split(layer.key.forward(&x, pass)?, true)?;
            let v = split(layer.value.forward(&x, pass)?, false)?;
            let probs = pass.attention_probs(&q.matmul(&k)?, &bias, scale, attention_p)?;
            let context = merge(probs.matmul(&v)?)?;
            let attended = pass.dropout_add(&layer.attention_out.forward(&context, pass)?, &x, hidden_p)?;
            let x1 = pass.layer_norm(&attended, &layer.attention_norm)?;
            let inner = self.activation(&layer.intermediate.forward(&x1, pass)?, pass)?;
            let out = pass.dropout_add(&layer.output.forward(&inner, pass)?, &x1, hidden_p)?;
            x = pass.layer_norm(&out, &layer.output_norm)?;
        }
        Ok(x)
    }

    /// The pooled output: dense + tanh on the `[CLS]` hidden state, `(batch, hidden)`, in f32.
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        self.pool_in(hidden, &Pass::eval())
    }

    /// [`BertModel::pool`] with the kernels and precision of `pass` (the result widened to f32).
    pub fn pool_in(&self, hidden: &Tensor, pass: &Pass) -> Result<Tensor> {
        let Some(pooler) = &self.pooler else { candle_core::bail!("this encoder has no pooler") };
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        pass.widen(&pooler.forward(&cls, pass)?.tanh()?)
    }
}

/// BERT + pooler + dropout + dense classifier (`BertForSequenceClassification`).
pub struct BertClassifier {
    pub bert: BertModel,
    classifier: Linear,
    /// Dropout before the classifier.
    pub dropout: f64,
    pub num_classes: usize,
}

impl BertClassifier {
    pub fn new(config: &BertConfig, num_classes: usize, w: &mut Weights, rng: &mut StdRng) -> StepResult<Self> {
        let bert = BertModel::new(config, w, rng)?;
        let classifier = Linear::new(w, "classifier", config.hidden_size, num_classes, config.initializer_range, rng)?;
        Ok(BertClassifier { bert, classifier, dropout: config.hidden_dropout_prob, num_classes })
    }

    /// Class logits, `(batch, num_classes)` (f32 in a mixed-precision pass).
    pub fn forward(&self, batch: &Batch, pass: &Pass) -> Result<Tensor> {
        let hidden = self.bert.forward(batch, pass)?;
        let pooled = pass.dropout(&self.bert.pool_in(&hidden, pass)?, self.dropout)?;
        pass.widen(&self.classifier.forward(&pooled, pass)?)
    }
}

/// BERT + the masked-language-model head (`BertForMaskedLM`); the decoder is tied to the word
/// embeddings.
pub struct BertMaskedLm {
    pub bert: BertModel,
    transform: Linear,
    transform_norm: LayerNorm,
    decoder_bias: Tensor,
}

impl BertMaskedLm {
    pub fn new(config: &BertConfig, w: &mut Weights, rng: &mut StdRng) -> StepResult<Self> {
        let bert = BertModel::new(config, w, rng)?;
        let h = config.hidden_size;
        let transform = Linear::new(w, "cls.predictions.transform.dense", h, h, config.initializer_range, rng)?;
        let transform_norm = LayerNorm::new(w, "cls.predictions.transform.LayerNorm", h, config.layer_norm_eps)?;
        let decoder_bias = w.zeros("cls.predictions.bias", &[config.vocab_size])?;
        Ok(BertMaskedLm { bert, transform, transform_norm, decoder_bias })
    }

    /// Vocabulary logits at the given flat positions (`row * len + column`), `(positions, vocab)`
    /// (f32 in a mixed-precision pass; the decoder product itself is bf16).
    pub fn forward(&self, batch: &Batch, positions: &Tensor, pass: &Pass) -> Result<Tensor> {
        let hidden = self.bert.forward(batch, pass)?;
        let (b, l, h) = hidden.dims3()?;
        let picked = hidden.reshape((b * l, h))?.index_select(positions, 0)?;
        let t = self.bert.activation(&self.transform.forward(&picked, pass)?, pass)?;
        let t = pass.layer_norm(&t, &self.transform_norm)?;
        let (t, table, bias) =
            (pass.narrow(&t)?, pass.narrow(self.bert.word_embeddings())?, pass.narrow(&self.decoder_bias)?);
        pass.widen(&t.matmul(&table.t()?)?.broadcast_add(&bias)?)
    }

    /// Tensors written besides the parameters so Hugging Face finds the tied decoder.
    pub fn tied_aliases(&self) -> Vec<(String, Tensor)> {
        vec![
            ("cls.predictions.decoder.weight".into(), self.bert.word_embeddings().clone()),
            ("cls.predictions.decoder.bias".into(), self.decoder_bias.clone()),
        ]
    }
}
