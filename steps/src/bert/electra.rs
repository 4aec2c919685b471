//! `Electra`: the model of ELECTRA pre-training (Clark et al., 2020, replaced-token detection)
//! built from our BERT parts, with the loss terms of one shard of a batch.
//!
//! What is in it, as in Hugging Face's `ElectraForMaskedLM` + `ElectraForPreTraining` with tied
//! embeddings:
//!
//! - shared **embeddings** (word, position, token type and their LayerNorm, under
//!   `bert.embeddings.`), as wide as the discriminator;
//! - a smaller **generator**: a projection of the embeddings to its width when the widths differ
//!   (`generator.embeddings_project`, HF's `embeddings_project`), its own layers
//!   (`generator.encoder.layer.N`) and an MLM head: dense to the embedding width, GELU,
//!   LayerNorm (`generator_predictions.*`), then a decoder tied to the shared word embeddings
//!   plus a bias (`generator_lm_head.bias`);
//! - the **discriminator**: a BERT encoder without a pooler under `bert.` (what the `pretrain`
//!   step writes out, so `fine-tune` reads it as any BERT) and a head classifying each token as
//!   original or replaced: dense, GELU, dense to one logit (`discriminator_predictions.*`);
//! - replacements **sampled** from the generator's softmax (temperature 1; no gradient flows
//!   through the draw): on the CPU by inverse CDF from a seeded RNG, elsewhere by the
//!   Gumbel-max trick with the device's generator (as ELECTRA's own code samples), so a GPU need
//!   not copy the logits back. A draw equal to the original token counts as original;
//! - the two summed losses: cross-entropy of the generator at the masked positions and binary
//!   cross-entropy (numerically stable form) of the discriminator at every non-padding token.
//!
//! What is not: choosing the masked positions and weighting the two losses into one (the
//! `pretrain` step does both: its masking is the MLM objective's, and it divides each sum by its
//! batch's count), loading checkpoints, and saving.

use candle_core::{DType, Result, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::BertConfig;
use super::model::{Batch, BertModel, Embeddings, LayerNorm, Linear, Pass};
use super::train::count_equal;
use super::weights::Weights;
use crate::error::StepResult;

/// Generator + discriminator on shared embeddings (see the module doc for the tensor names).
pub struct Electra {
    /// The encoder that is kept: embeddings and layers under `bert.`, no pooler.
    pub discriminator: BertModel,
    generator: BertModel,
    project: Option<Linear>,
    generator_dense: Linear,
    generator_norm: LayerNorm,
    generator_bias: Tensor,
    rtd_dense: Linear,
    rtd_out: Linear,
}

/// One shard's input: the generator sees `generator.input_ids` (the masked ids); the
/// discriminator sees `original` with every masked position replaced by a draw.
pub struct MaskedInput {
    pub generator: Batch,
    /// `(batch, len)` u32: the ids before masking.
    pub original: Tensor,
    /// Flat positions (`row * len + column`) of the masked tokens, `(masked,)` u32.
    pub positions: Tensor,
    /// The original ids there, `(masked,)` u32.
    pub targets: Tensor,
    pub masked: usize,
    /// Non-padding tokens.
    pub tokens: usize,
}

/// The loss terms of one shard, as scalar tensors (summed, not averaged: the caller divides by
/// the batch's counts) so a GPU need not be waited for.
pub struct ElectraLosses {
    /// Σ cross-entropy of the generator over the masked positions (0 when none).
    pub mlm: Tensor,
    /// Masked positions the generator's argmax got right.
    pub mlm_correct: Tensor,
    /// Σ binary cross-entropy of the discriminator over the non-padding tokens.
    pub rtd: Tensor,
    /// Tokens the discriminator classified right.
    pub rtd_correct: Tensor,
    /// Tokens whose draw differs from the original.
    pub replaced: Tensor,
}

impl Electra {
    /// Creates every tensor in `w`: shared embeddings and the discriminator's layers first (the
    /// order of [`BertModel::new`]), then the generator, then both heads. `generator` has the
    /// generator's layers, width, heads and intermediate size; its vocabulary and positions
    /// must be the discriminator's.
    pub fn new(
        discriminator: &BertConfig,
        generator: &BertConfig,
        w: &mut Weights,
        rng: &mut StdRng,
    ) -> StepResult<Electra> {
        let (d, g) = (discriminator, generator);
        let embeddings = Embeddings::new(d, w, rng)?;
        let shared = embeddings.clone();
        let discriminator = BertModel::with_embeddings(d, embeddings, "bert", false, w, rng)?;
        let (h, gh, std) = (d.hidden_size, g.hidden_size, g.initializer_range);
        let project =
            if gh != h { Some(Linear::new(w, "generator.embeddings_project", h, gh, std, rng)?) } else { None };
        let generator = BertModel::with_embeddings(g, shared, "generator", false, w, rng)?;
        let generator_dense = Linear::new(w, "generator_predictions.dense", gh, h, std, rng)?;
        let generator_norm = LayerNorm::new(w, "generator_predictions.LayerNorm", h, g.layer_norm_eps)?;
        let generator_bias = w.zeros("generator_lm_head.bias", &[d.vocab_size])?;
        let std = d.initializer_range;
        let rtd_dense = Linear::new(w, "discriminator_predictions.dense", h, h, std, rng)?;
        let rtd_out = Linear::new(w, "discriminator_predictions.dense_prediction", h, 1, std, rng)?;
        Ok(Electra {
            discriminator,
            generator,
            project,
            generator_dense,
            generator_norm,
            generator_bias,
            rtd_dense,
            rtd_out,
        })
    }

    pub fn generator_config(&self) -> &BertConfig {
        &self.generator.config
    }

    /// The generator's vocabulary logits at flat `positions` of `batch`, `(positions, vocab)`
    /// (f32 in a mixed-precision pass).
    pub fn generator_logits(&self, batch: &Batch, positions: &Tensor, pass: &Pass) -> Result<Tensor> {
        let embeddings = self.generator.embeddings();
        let mut x = embeddings.forward(batch, pass)?;
        if let Some(project) = &self.project {
            x = project.forward(&x, pass)?;
        }
        let hidden = self.generator.encode(x, &batch.attention_mask, pass)?;
        let (b, l, h) = hidden.dims3()?;
        let picked = hidden.reshape((b * l, h))?.index_select(positions, 0)?;
        let t = self.generator.activation(&self.generator_dense.forward(&picked, pass)?, pass)?;
        let t = pass.layer_norm(&t, &self.generator_norm)?;
        let (t, table, bias) = (pass.narrow(&t)?, pass.narrow(embeddings.word())?, pass.narrow(&self.generator_bias)?);
        pass.widen(&t.matmul(&table.t()?)?.broadcast_add(&bias)?)
    }

    /// The discriminator's logit of "replaced" at every position, `(batch, len)` (f32 in a
    /// mixed-precision pass).
    pub fn rtd_logits(&self, batch: &Batch, pass: &Pass) -> Result<Tensor> {
        let hidden = self.discriminator.forward(batch, pass)?;
        let t = self.discriminator.activation(&self.rtd_dense.forward(&hidden, pass)?, pass)?;
        pass.widen(&self.rtd_out.forward(&t, pass)?.squeeze(D::Minus1)?)
    }

    /// The loss terms of one shard, drawing the replacements from the generator with
    /// `sample_seed` (on the CPU; the device's generator elsewhere).
    pub fn losses(&self, input: &MaskedInput, sample_seed: u64, pass: &Pass) -> Result<ElectraLosses> {
        if input.masked == 0 {
            return self.losses_given(input, None, pass);
        }
        let logits = self.generator_logits(&input.generator, &input.positions, pass)?;
        let draws = sample(&logits.detach(), sample_seed)?;
        self.losses_given(input, Some((&logits, &draws)), pass)
    }

    /// [`Electra::losses`] with the generator's logits at the masked positions and the draws
    /// given (`None`: nothing masked), for tests that need fixed replacements.
    pub fn losses_given(
        &self,
        input: &MaskedInput,
        generated: Option<(&Tensor, &Tensor)>,
        pass: &Pass,
    ) -> Result<ElectraLosses> {
        let device = input.original.device();
        let (b, l) = input.original.dims2()?;
        // In the parameters' type (the attention mask's), so the sums add up with the RTD loss.
        let zero = || Tensor::zeros((), input.generator.attention_mask.dtype(), device);
        let (corrupted, labels, mlm, mlm_correct) = match generated {
            None => (input.original.clone(), Tensor::zeros((b, l), DType::F32, device)?, zero()?, zero()?),
            Some((logits, draws)) => {
                let m = input.masked;
                let mlm = (candle_nn::loss::cross_entropy(logits, &input.targets)? * m as f64)?;
                let mlm_correct = count_equal(&logits.argmax(1)?, &input.targets)?;
                // In f32: ids are exact there below 2^24, far above any vocabulary.
                let n = b * l;
                let zeros = Tensor::zeros(n, DType::F32, device)?;
                let at = zeros.index_add(&input.positions, &Tensor::ones(m, DType::F32, device)?, 0)?;
                let placed = zeros.index_add(&input.positions, &draws.to_dtype(DType::F32)?, 0)?;
                let original = input.original.flatten_all()?.to_dtype(DType::F32)?;
                let corrupted = ((original * (1.0 - &at)?)? + placed)?.to_dtype(DType::U32)?.reshape((b, l))?;
                let differs = draws.ne(&input.targets)?.to_dtype(DType::F32)?;
                let labels = zeros.index_add(&input.positions, &differs, 0)?.reshape((b, l))?;
                (corrupted, labels, mlm, mlm_correct)
            }
        };
        let g = &input.generator;
        let batch = Batch {
            input_ids: corrupted,
            token_type_ids: g.token_type_ids.clone(),
            attention_mask: g.attention_mask.clone(),
        };
        let logits = self.rtd_logits(&batch, pass)?;
        let real = batch.attention_mask.to_dtype(logits.dtype())?;
        let rtd = rtd_loss_sum(&logits, &labels.to_dtype(logits.dtype())?, &real)?;
        let right = logits.gt(0.0)?.eq(&labels.gt(0.5)?)?.to_dtype(logits.dtype())?;
        let rtd_correct = (right * &real)?.sum_all()?.to_dtype(DType::F32)?;
        let replaced = labels.sum_all()?;
        Ok(ElectraLosses { mlm, mlm_correct, rtd, rtd_correct, replaced })
    }
}

/// Σ over the tokens where `real` is 1 of the binary cross-entropy of `logits` against
/// `labels` (1: replaced), as `max(x, 0) - x·y + ln(1 + e^-|x|)`, which neither overflows nor
/// loses the small losses of confident logits.
pub fn rtd_loss_sum(logits: &Tensor, labels: &Tensor, real: &Tensor) -> Result<Tensor> {
    let x = logits;
    let softplus = ((x.abs()?.neg()?.exp()? + 1.0)?.log()? + x.relu()?)?;
    ((softplus - (x * labels)?)? * real)?.sum_all()
}

/// One draw per row of `logits` `(rows, vocab)` from its softmax, `(rows,)` u32: by inverse
/// CDF from an RNG seeded with `seed` on the CPU, by [`sample_gumbel`] elsewhere. The
/// exponentials are f32 (one per logit, the cost that matters: a row is the vocabulary long),
/// their running sum f64.
pub fn sample(logits: &Tensor, seed: u64) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return sample_gumbel(logits);
    }
    let (rows, vocab) = logits.dims2()?;
    let values = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = vec![0f32; vocab];
    let mut draws = Vec::with_capacity(rows);
    for row in values.chunks(vocab.max(1)) {
        let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f64;
        for (w, &x) in weights.iter_mut().zip(row) {
            *w = (x - top).exp();
            total += f64::from(*w);
        }
        let mut u = rng.random::<f64>() * total;
        // Rounding can leave a sliver past the last token: then the most likely one.
        let mut draw = row.iter().position(|&x| x == top).unwrap_or(0);
        for (i, &w) in weights.iter().enumerate() {
            u -= f64::from(w);
            if u < 0.0 {
                draw = i;
                break;
            }
        }
        draws.push(draw as u32);
    }
    Tensor::from_vec(draws, rows, logits.device())
}

/// One draw per row as `argmax(logits + Gumbel noise)` with uniforms from the device's own
/// generator (ELECTRA's `sample_from_softmax`), `(rows,)` u32; no value leaves the device.
pub fn sample_gumbel(logits: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let u = Tensor::rand(0f32, 1f32, logits.shape(), logits.device())?;
    let gumbel = ((u + 1e-9)?.log()?.neg()? + 1e-9)?.log()?.neg()?;
    (logits + gumbel)?.argmax(D::Minus1)
}
