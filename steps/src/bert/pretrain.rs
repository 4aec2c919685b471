//! The `pretrain` step kind: pre-training of a BERT from a config on tokenized text, by
//! masked-language modelling (`objective: mlm`, the default: 15% of tokens chosen; of those 80%
//! `[MASK]`, 10% a random token, 10% kept) or by ELECTRA's replaced-token detection
//! (`objective: electra`, model in [`super::electra`]).
//!
//! ELECTRA masks exactly as the MLM objective does (the same [`mask_rows`]), not with ELECTRA's
//! own 85% `[MASK]` / 15% kept: the generator then learns the very task an MLM run learns, so
//! its `mlm_loss` and `mlm_accuracy` compare with an MLM run's, and the objectives differ only
//! by the discriminator. The loss of a batch is its mean generator cross-entropy over the masked
//! positions plus `rtd_weight` times its mean binary cross-entropy over the non-padding tokens
//! (ELECTRA's weighting, default 50). The positions are chosen for a whole batch before its
//! shards run, so each shard can divide by its batch's counts and the loss does not depend on
//! how a batch is cut into shards (CPU) or not (GPU). The trainer's batch log lines show that
//! combined loss and the discriminator's accuracy; the epoch lines both losses and accuracies.
//! The output is the discriminator alone,
//! as a `BertModel` without a pooler (ELECTRA has none; `fine-tune` initialises one): the
//! generator and both heads are dropped from `model` (they stay in the epoch checkpoints).
//!
//! Keys: every parameter added for ELECTRA has no default value and `objective: mlm` is keyed
//! as absent, so MLM results keep the keys (and bytes) they had before ELECTRA existed.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::batch::{Batches, PaddedRows};
use super::checkpoint::EpochCheckpoints;
use super::config::BertConfig;
use super::device;
use super::electra::{Electra, MaskedInput};
use super::model::{BertMaskedLm, Pass};
use super::model_dir::{tensor_set_tokenizer, write_config, write_tokenizer, Head, CONFIG, WEIGHTS};
use super::train::{batch_seed, count_equal, params as train, BatchOutcome, EpochStats, TrainConfig, Trainer};
use super::weights::{candle_err, Weights};
use crate::error::{StepError, StepResult};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Reported, ReportedOutput, Step,
    StepContext, StepSpec, Timing,
};
use crate::tensor_set::{TensorSet, TensorSetMeta};

pub struct Pretrain;

static SPEC: StepSpec = StepSpec {
    kind: "pretrain",
    all_cores: true,
    // 4: no timings in the metrics (they go to the run record through `Events::timing`).
    version: 4,
    summary: "pre-training of a BERT from a config on tokenized text: masked-language modelling, or ELECTRA \
              (`objective: electra`: a small generator fills masked tokens, the BERT learns to spot replaced ones)",
    params: &[
        // No default value: `mlm` is keyed as absent (see `resolve`), so MLM results keep their keys.
        ParamSpec::optional(
            "objective",
            ParamType::Choice(&["mlm", "electra"]),
            Default::Absent,
            "mlm (when absent): masked-language modelling; electra: replaced-token detection with a generator",
        ),
        ParamSpec::optional("layers", ParamType::Uint, Default::Int(4), "transformer layers"),
        ParamSpec::optional("hidden", ParamType::Uint, Default::Int(256), "hidden size"),
        ParamSpec::optional("heads", ParamType::Uint, Default::Int(4), "attention heads (must divide `hidden`)"),
        ParamSpec::optional("intermediate", ParamType::Uint, Default::Int(1024), "feed-forward size"),
        ParamSpec::optional(
            "max_positions",
            ParamType::Uint,
            Default::Int(128),
            "position embeddings (longest row the model accepts)",
        ),
        train::epochs(1),
        ParamSpec::optional(
            "max_steps",
            ParamType::Uint,
            Default::Int(0),
            "stop after this many updates (0: no limit)",
        ),
        train::batch_size(64),
        train::lr(5e-4),
        train::warmup_ratio(0.06),
        train::WEIGHT_DECAY,
        train::MAX_GRAD_NORM,
        ParamSpec::optional("mask_prob", ParamType::Float, Default::Float(0.15), "fraction of tokens to predict"),
        // No default value: keyed only when set, so results from before it existed keep their keys.
        ParamSpec::optional(
            "dropout",
            ParamType::Float,
            Default::Absent,
            "dropout of the encoder, hidden and attention (0.1 when absent); written to the model's config",
        ),
        // ELECTRA only, and without default values (keyed only when set).
        ParamSpec::optional(
            "generator_hidden",
            ParamType::Uint,
            Default::Absent,
            "electra: generator width (when absent: hidden/4, rounded up to a multiple of its heads)",
        ),
        ParamSpec::optional(
            "generator_layers",
            ParamType::Uint,
            Default::Absent,
            "electra: generator layers (when absent: `layers`)",
        ),
        ParamSpec::optional(
            "generator_heads",
            ParamType::Uint,
            Default::Absent,
            "electra: generator attention heads, must divide `generator_hidden` (when absent: the most, up to \
             heads/4 and at least 1, that divide it)",
        ),
        ParamSpec::optional(
            "generator_intermediate",
            ParamType::Uint,
            Default::Absent,
            "electra: generator feed-forward size (when absent: 4 × generator_hidden)",
        ),
        ParamSpec::optional(
            "rtd_weight",
            ParamType::Float,
            Default::Absent,
            "electra: weight of the replaced-token-detection loss against the generator's MLM loss (50 when absent)",
        ),
        train::SEED,
        train::DEVICE,
        train::PRECISION,
        train::log_every(100),
    ],
    inputs: &[InputSpec::required("data", "tokenized text (a tensor set; labels are ignored)")],
    outputs: &[
        OutputSpec {
            name: "model",
            help: "the pre-trained model in Hugging Face layout: BertForMaskedLM, or with `objective: electra` the \
                   discriminator as a BertModel (no generator, no pooler)",
        },
        OutputSpec {
            name: "metrics",
            help: "per-epoch MLM loss and accuracy (JSON); with electra the generator's, and the discriminator's \
                   rtd_loss, rtd_accuracy and replaced_fraction",
        },
    ],
    reported: &[ReportedOutput::new("metrics", Reported::Pretraining)],
};

/// The `objective` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Mlm,
    Electra,
}

impl Objective {
    pub fn of(params: &Params) -> StepResult<Objective> {
        match params.opt_str("objective")? {
            None | Some("mlm") => Ok(Objective::Mlm),
            Some("electra") => Ok(Objective::Electra),
            Some(other) => Err(StepError::param("objective", format!("`{other}` is not an objective (mlm, electra)"))),
        }
    }
}

/// The parameters that only ELECTRA reads.
const ELECTRA_PARAMS: [&str; 5] =
    ["generator_hidden", "generator_layers", "generator_heads", "generator_intermediate", "rtd_weight"];

/// What ELECTRA adds to the discriminator's config: the generator's config and the RTD weight,
/// with the defaults filled in.
pub struct ElectraSettings {
    pub generator: BertConfig,
    pub rtd_weight: f64,
}

impl ElectraSettings {
    /// From the parameters and the discriminator's config.
    pub fn new(params: &Params, disc: &BertConfig) -> StepResult<ElectraSettings> {
        let quarter_heads = (disc.num_attention_heads / 4).max(1);
        let given_heads = params.opt_usize("generator_heads")?;
        let hidden = match params.opt_usize("generator_hidden")? {
            Some(h) => h,
            None => {
                let multiple = given_heads.unwrap_or(quarter_heads).max(1);
                (disc.hidden_size / 4).max(1).div_ceil(multiple) * multiple
            }
        };
        // The largest head count up to heads/4 that divides the width.
        let heads = given_heads.unwrap_or_else(|| (1..=quarter_heads).rev().find(|d| hidden % d == 0).unwrap_or(1));
        let layers = params.opt_usize("generator_layers")?.unwrap_or(disc.num_hidden_layers);
        let intermediate = params.opt_usize("generator_intermediate")?.unwrap_or(4 * hidden);
        for (name, value) in [
            ("generator_hidden", hidden),
            ("generator_layers", layers),
            ("generator_heads", heads),
            ("generator_intermediate", intermediate),
        ] {
            if value == 0 {
                return Err(StepError::param(name, "must be at least 1"));
            }
        }
        if hidden % heads != 0 {
            return Err(StepError::param(
                "generator_heads",
                format!("must divide `generator_hidden` ({hidden}), got {heads}"),
            ));
        }
        let rtd_weight = params.opt_f64("rtd_weight")?.unwrap_or(50.0);
        if !(rtd_weight > 0.0 && rtd_weight.is_finite()) {
            return Err(StepError::param("rtd_weight", format!("must be a positive number, got {rtd_weight}")));
        }
        let mut generator = disc.clone();
        generator.hidden_size = hidden;
        generator.num_hidden_layers = layers;
        generator.num_attention_heads = heads;
        generator.intermediate_size = intermediate;
        Ok(ElectraSettings { generator, rtd_weight })
    }
}

/// The discriminator's config from the parameters (the `BertConfig` both objectives train).
fn bert_config(params: &Params, vocab_size: usize) -> StepResult<BertConfig> {
    let mut config = BertConfig::new(
        vocab_size,
        params.usize("layers")?,
        params.usize("hidden")?,
        params.usize("heads")?,
        params.usize("intermediate")?,
        params.usize("max_positions")?,
    );
    if let Some(p) = params.opt_f64("dropout")? {
        (config.hidden_dropout_prob, config.attention_probs_dropout_prob) = (p, p);
    }
    Ok(config)
}

/// One epoch of pre-training, as recorded in `metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainEpoch {
    pub epoch: usize,
    pub updates: usize,
    pub mlm_loss: f64,
    pub mlm_accuracy: f64,
    /// The epoch's time and rows, for its log line and [`Timing`]; never written (a hashed
    /// output holds no timings, since version 4).
    #[serde(skip)]
    pub seconds: f64,
    #[serde(skip)]
    pub samples: u64,
    /// ELECTRA: the discriminator's mean binary cross-entropy per non-padding token. Absent
    /// for MLM (so MLM metrics keep their bytes) and in metrics from before ELECTRA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtd_loss: Option<f64>,
    /// ELECTRA: the fraction of non-padding tokens the discriminator classified right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtd_accuracy: Option<f64>,
    /// ELECTRA: the fraction of non-padding tokens the generator replaced (a draw equal to the
    /// original is no replacement); `1 - replaced_fraction` is the accuracy of answering
    /// "original" everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_fraction: Option<f64>,
}

/// A batch with some tokens hidden, and what the model must predict at the hidden positions.
pub struct MaskedBatch {
    pub rows: PaddedRows,
    /// Flat positions (`row * len + column`) of the tokens to predict.
    pub positions: Vec<u32>,
    /// The original ids at those positions.
    pub targets: Vec<u32>,
}

/// Chooses tokens to predict among the real, non-special tokens of `rows`: each with
/// probability `mask_prob` (at least one); 80% become `[MASK]`, 10% a random token,
/// 10% stay.
pub fn mask_rows(set: &TensorSet, rows: &[usize], mask_prob: f64, mask_id: u32, seed: u64) -> MaskedBatch {
    let meta: &TensorSetMeta = &set.meta;
    let mut padded = PaddedRows::new(set, rows, None);
    let mut rng = StdRng::seed_from_u64(seed);
    let special = |id: u32| id == meta.cls_id || id == meta.sep_id || id == meta.pad_id;
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let mut candidates = Vec::new();
    for p in 0..padded.ids.len() {
        let id = padded.ids[p];
        if padded.mask[p] == 0.0 || special(id) {
            continue;
        }
        candidates.push(p);
        if rng.random::<f64>() < mask_prob {
            positions.push(p as u32);
            targets.push(id);
        }
    }
    if positions.is_empty() {
        if let Some(&p) = candidates.first() {
            positions.push(p as u32);
            targets.push(padded.ids[p]);
        }
    }
    for &p in &positions {
        let u: f64 = rng.random();
        if u < 0.8 {
            padded.ids[p as usize] = mask_id;
        } else if u < 0.9 {
            padded.ids[p as usize] = rng.random_range(0..meta.vocab_size as u32);
        }
    }
    MaskedBatch { rows: padded, positions, targets }
}

fn mlm_batch(
    model: &BertMaskedLm,
    masked: MaskedBatch,
    pass: &Pass,
    device: &Device,
) -> candle_core::Result<BatchOutcome> {
    let count = masked.targets.len();
    let positions = Tensor::from_vec(masked.positions, count, device)?;
    let targets = Tensor::from_vec(masked.targets.clone(), count, device)?;
    let batch = masked.rows.into_batch(DType::F32, device)?;
    let logits = model.forward(&batch, &positions, pass)?;
    let loss = (candle_nn::loss::cross_entropy(&logits, &targets)? * count as f64)?;
    let correct = count_equal(&logits.argmax(1)?, &targets)?;
    Ok(BatchOutcome { loss, correct, count })
}

/// The masking of one epoch's batches for ELECTRA, drawn per batch (with [`mask_rows`]) before
/// the trainer cuts the batches into shards, so a shard knows its batch's counts.
struct EpochMasks {
    /// Per row of the set (`None`: not trained this epoch): the masked columns and the ids the
    /// generator sees there (`[MASK]`, a random token or the original).
    rows: Vec<Option<RowMask>>,
    /// Per row of the set: its batch.
    batch_of: Vec<usize>,
    /// Per batch: masked positions and non-padding tokens.
    totals: Vec<(usize, usize)>,
}

#[derive(Default)]
struct RowMask {
    columns: Vec<u32>,
    ids: Vec<u32>,
}

impl EpochMasks {
    fn new(set: &TensorSet, batches: &[Vec<usize>], mask_prob: f64, mask_id: u32, seed: u64, epoch: usize) -> Self {
        let mut rows: Vec<Option<RowMask>> = (0..set.len()).map(|_| None).collect();
        let mut batch_of = vec![0; set.len()];
        let mut totals = Vec::with_capacity(batches.len());
        for (b, batch) in batches.iter().enumerate() {
            let masked = mask_rows(set, batch, mask_prob, mask_id, batch_seed(seed, epoch, b) ^ 0x6d61_736b);
            for &row in batch {
                rows[row] = Some(RowMask::default());
                batch_of[row] = b;
            }
            let len = masked.rows.len;
            for &p in &masked.positions {
                let (r, column) = (p as usize / len, p as usize % len);
                if let Some(mask) = &mut rows[batch[r]] {
                    mask.columns.push(column as u32);
                    mask.ids.push(masked.rows.ids[p as usize]);
                }
            }
            let tokens = masked.rows.mask.iter().filter(|&&m| m > 0.0).count();
            totals.push((masked.positions.len(), tokens));
        }
        EpochMasks { rows, batch_of, totals }
    }

    /// The input of a shard of `rows` (padded to its own longest row) and its batch's masked
    /// positions and tokens.
    fn input(
        &self,
        set: &TensorSet,
        rows: &[usize],
        device: &Device,
    ) -> candle_core::Result<(MaskedInput, usize, usize)> {
        let mut padded = PaddedRows::new(set, rows, None);
        let len = padded.len;
        let original = padded.ids.clone();
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        for (r, &row) in rows.iter().enumerate() {
            let Some(mask) = &self.rows[row] else { candle_core::bail!("row {row} was not masked for this epoch") };
            for (&column, &id) in mask.columns.iter().zip(&mask.ids) {
                let p = r * len + column as usize;
                positions.push(p as u32);
                targets.push(original[p]);
                padded.ids[p] = id;
            }
        }
        let (masked, tokens) = (positions.len(), padded.mask.iter().filter(|&&m| m > 0.0).count());
        let input = MaskedInput {
            original: Tensor::from_vec(original, (rows.len(), len), device)?,
            positions: Tensor::from_vec(positions, masked, device)?,
            targets: Tensor::from_vec(targets, masked, device)?,
            generator: padded.into_batch(DType::F32, device)?,
            masked,
            tokens,
        };
        let (batch_masked, batch_tokens) = self.totals[self.batch_of[rows[0]]];
        Ok((input, batch_masked, batch_tokens))
    }
}

/// One shard's sums for the metrics: its first row (unique in an epoch, so the sums are added
/// in an order that does not depend on threads), the five sums as an f64 tensor (generator
/// loss and right answers, discriminator loss and right answers, replaced tokens), and the
/// masked and non-padding token counts.
type ShardSums = (usize, Tensor, usize, usize);

/// One epoch of ELECTRA: the batch loss is `mean MLM + rtd_weight · mean RTD` over the batch
/// (each shard's sums divided by its batch's counts; the trainer divides by the tokens), and
/// the trainer's accuracy is the discriminator's.
#[allow(clippy::too_many_arguments)]
fn electra_epoch(
    trainer: &mut Trainer<'_>,
    model: &Electra,
    rtd_weight: f64,
    set: &TensorSet,
    batches: &[Vec<usize>],
    epoch: usize,
    (mask_prob, mask_id): (f64, u32),
    device: &Device,
) -> StepResult<PretrainEpoch> {
    let masks = EpochMasks::new(set, batches, mask_prob, mask_id, trainer.config.seed, epoch);
    let sums: Mutex<Vec<ShardSums>> = Mutex::new(Vec::new());
    let stats: EpochStats = trainer.epoch(epoch, batches, |rows, pass| {
        let (input, batch_masked, batch_tokens) = masks.input(set, rows, device)?;
        let losses = model.losses(&input, pass.seed() ^ 0x7361_6d70, pass)?;
        let mlm_scale = if batch_masked > 0 { batch_tokens as f64 / batch_masked as f64 } else { 0.0 };
        let loss = ((&losses.mlm * mlm_scale)? + (&losses.rtd * rtd_weight)?)?;
        let parts = [&losses.mlm, &losses.mlm_correct, &losses.rtd, &losses.rtd_correct, &losses.replaced];
        // Detached: kept until the epoch ends, these must not hold the shard's autograd graph
        // (every activation of the batch) alive.
        let values =
            Tensor::stack(&parts.map(|t| t.to_dtype(DType::F64)).into_iter().collect::<Result<Vec<_>, _>>()?, 0)?
                .detach();
        sums.lock().unwrap_or_else(|e| e.into_inner()).push((rows[0], values, input.masked, input.tokens));
        Ok(BatchOutcome { loss, correct: losses.rtd_correct, count: input.tokens })
    })?;
    let mut sums = sums.into_inner().unwrap_or_else(|e| e.into_inner());
    sums.sort_by_key(|s| s.0);
    let (mut total, mut masked, mut tokens) = ([0.0f64; 5], 0usize, 0usize);
    if !sums.is_empty() {
        let all: Vec<Tensor> = sums.iter().map(|s| s.1.clone()).collect();
        let values = Tensor::stack(&all, 0)
            .and_then(|t| t.to_vec2::<f64>())
            .map_err(candle_err(&format!("epoch {epoch}: reading the ELECTRA losses back")))?;
        for (row, s) in values.iter().zip(&sums) {
            for (t, v) in total.iter_mut().zip(row) {
                *t += v;
            }
            (masked, tokens) = (masked + s.2, tokens + s.3);
        }
    }
    let (m, t) = (masked.max(1) as f64, tokens.max(1) as f64);
    Ok(PretrainEpoch {
        epoch,
        updates: batches.len(),
        mlm_loss: total[0] / m,
        mlm_accuracy: total[1] / m,
        seconds: stats.seconds,
        samples: stats.samples as u64,
        rtd_loss: Some(total[2] / t),
        rtd_accuracy: Some(total[3] / t),
        replaced_fraction: Some(total[4] / t),
    })
}

/// The encoder's tensors (`bert.*`) alone, as f32: ELECTRA's output.
fn save_encoder(weights: &Weights, path: &Path) -> StepResult<()> {
    let mut tensors = HashMap::new();
    for (name, var) in weights.iter().filter(|(name, _)| name.starts_with("bert.")) {
        tensors.insert(name.to_string(), var.as_tensor().to_dtype(DType::F32).map_err(candle_err(name))?);
    }
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| StepError::failed(format!("writing {}: {e}", path.display())))
}

/// What is trained (one per run, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Model {
    Mlm(BertMaskedLm),
    Electra(Electra, f64),
}

impl Step for Pretrain {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        let out = device::resolve_params(params, env)?;
        if params.opt_str("objective")? != Some("mlm") {
            return Ok(out);
        }
        // The default, keyed as absent: MLM results keep the keys they had before `objective`.
        let mut values = out.values().clone();
        values.remove("objective");
        Ok(Params::new(values))
    }

    fn validate(&self, params: &Params) -> StepResult<()> {
        TrainConfig::validate(params)?;
        let (hidden, heads) = (params.usize("hidden")?, params.usize("heads")?);
        if heads == 0 || hidden % heads != 0 {
            return Err(StepError::param("heads", format!("must divide `hidden` ({hidden}), got {heads}")));
        }
        for name in ["layers", "hidden", "intermediate", "max_positions"] {
            if params.usize(name)? == 0 {
                return Err(StepError::param(name, "must be at least 1"));
            }
        }
        let p = params.f64("mask_prob")?;
        if !(p > 0.0 && p < 1.0) {
            return Err(StepError::param("mask_prob", format!("must be in (0, 1), got {p}")));
        }
        if let Some(p) = params.opt_f64("dropout")? {
            if !(0.0..1.0).contains(&p) {
                return Err(StepError::param("dropout", format!("must be in [0, 1), got {p}")));
            }
        }
        match Objective::of(params)? {
            Objective::Mlm => match ELECTRA_PARAMS.iter().find(|name| params.get(name).is_some()) {
                Some(name) => Err(StepError::param(name, "applies only with `objective: electra`")),
                None => Ok(()),
            },
            Objective::Electra => ElectraSettings::new(params, &bert_config(params, 1)?).map(|_| ()),
        }
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let params = ctx.params;
        let cfg = TrainConfig::from_params(params)?;
        let objective = Objective::of(params)?;
        let device = device::open(params.str("device")?)?;
        let data_dir = ctx.input("data")?;
        let set = TensorSet::load(data_dir)?;
        let mask_id = set.meta.mask_id.ok_or_else(|| {
            StepError::input("the tokenizer of the data has no [MASK] token; masked-language modelling needs one")
        })?;
        let config = bert_config(params, set.meta.vocab_size)?;
        let longest = set.valid_length.iter().copied().max().unwrap_or(0) as usize;
        if longest > config.max_position_embeddings {
            return Err(StepError::param(
                "max_positions",
                format!("is {}, but the data has rows of {longest} tokens", config.max_position_embeddings),
            ));
        }
        if set.is_empty() {
            return Err(StepError::input("the data has no rows"));
        }
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut weights = Weights::new(DType::F32, &device);
        let model = match objective {
            Objective::Mlm => Model::Mlm(BertMaskedLm::new(&config, &mut weights, &mut rng)?),
            Objective::Electra => {
                let settings = ElectraSettings::new(params, &config)?;
                Model::Electra(Electra::new(&config, &settings.generator, &mut weights, &mut rng)?, settings.rtd_weight)
            }
        };
        let size = format!(
            "{} layers, hidden {}, {} heads",
            config.num_hidden_layers, config.hidden_size, config.num_attention_heads
        );
        let millions = weights.parameter_count() as f64 / 1e6;
        ctx.events.log(&match &model {
            Model::Mlm(_) => format!(
                "model: {size}, vocabulary {}, {millions:.1}M parameters; {} rows",
                config.vocab_size,
                set.len()
            ),
            Model::Electra(m, weight) => {
                let g = m.generator_config();
                format!(
                    "model: ELECTRA discriminator {size}; generator {} layers, hidden {}, {} heads, intermediate {}; \
                     vocabulary {}, {millions:.1}M parameters in all; RTD weight {weight}; {} rows",
                    g.num_hidden_layers,
                    g.hidden_size,
                    g.num_attention_heads,
                    g.intermediate_size,
                    config.vocab_size,
                    set.len()
                )
            }
        });
        let per_epoch = set.len().div_ceil(cfg.batch_size);
        let max_steps = params.usize("max_steps")?;
        let total = if max_steps > 0 { max_steps.min(per_epoch * cfg.epochs) } else { per_epoch * cfg.epochs };
        let vars = weights.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let mut trainer = Trainer::new(cfg.clone(), vars, per_epoch, ctx.events, ctx.env)?;
        trainer.schedule.total = total as u64;
        trainer.schedule.warmup = (total as f64 * cfg.warmup_ratio).floor() as u64;
        let checkpoints = EpochCheckpoints::new(ctx.checkpoint_dir);
        let mut history: Vec<PretrainEpoch> = Vec::new();
        if let Some((epoch, state)) = checkpoints.resume(&weights, &mut trainer.optimizer, ctx.events, |_, _| None)? {
            history = state;
            ctx.events.log(&format!("resuming after epoch {epoch} from its checkpoint"));
        }
        let mask_prob = params.f64("mask_prob")?;
        let mut done: usize = history.iter().map(|e| e.updates).sum();
        for epoch in history.len() + 1..=cfg.epochs {
            if done >= total {
                break;
            }
            let mut order = Batches::shuffled(&set, cfg.batch_size, batch_seed(cfg.seed, epoch, usize::MAX));
            order.batches.truncate(total - done);
            let row = match &model {
                Model::Mlm(model) => {
                    let stats = trainer.epoch(epoch, &order.batches, |rows, pass| {
                        let masked = mask_rows(&set, rows, mask_prob, mask_id, pass.seed() ^ 0x6d61_736b);
                        mlm_batch(model, masked, pass, &device)
                    })?;
                    PretrainEpoch {
                        epoch,
                        updates: order.batches.len(),
                        mlm_loss: stats.loss,
                        mlm_accuracy: stats.accuracy,
                        seconds: stats.seconds,
                        samples: stats.samples as u64,
                        rtd_loss: None,
                        rtd_accuracy: None,
                        replaced_fraction: None,
                    }
                }
                Model::Electra(model, weight) => electra_epoch(
                    &mut trainer,
                    model,
                    *weight,
                    &set,
                    &order.batches,
                    epoch,
                    (mask_prob, mask_id),
                    &device,
                )?,
            };
            done += order.batches.len();
            let timing = Timing::epoch(epoch, row.seconds, row.samples);
            ctx.events.timing(&timing);
            let timing = timing.describe();
            ctx.events.log(&match (row.rtd_loss, row.rtd_accuracy, row.replaced_fraction) {
                (Some(loss), Some(acc), Some(replaced)) => format!(
                    "[Epoch {epoch}] MLM loss={:.4}, acc={:.4}; RTD loss={loss:.4}, acc={acc:.4}, replaced={replaced:.4}; \
                     {timing}",
                    row.mlm_loss, row.mlm_accuracy
                ),
                _ => format!("[Epoch {epoch}] MLM loss={:.4}, acc={:.4}; {timing}", row.mlm_loss, row.mlm_accuracy),
            });
            history.push(row);
            checkpoints.save(epoch, &weights, &trainer.optimizer, &history, None)?;
        }

        let out = ctx.output("model");
        fs::create_dir_all(&out).map_err(StepError::io("creating", &out))?;
        match &model {
            Model::Mlm(model) => {
                weights.save(&out.join(WEIGHTS), &model.tied_aliases())?;
                write_config(&out, &config, Head::MaskedLm)?;
            }
            Model::Electra(..) => {
                save_encoder(&weights, &out.join(WEIGHTS))?;
                let mut encoder = config.clone();
                encoder.extra.insert("architectures".into(), json!(["BertModel"]));
                encoder.extra.insert("model_type".into(), json!("bert"));
                encoder.save(&out.join(CONFIG))?;
            }
        }
        write_tokenizer(&out, tensor_set_tokenizer(data_dir).as_deref(), &set.meta)?;
        let path = ctx.output("metrics");
        let text = serde_json::to_vec_pretty(&history).map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(&path, text).map_err(StepError::io("writing", &path))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::*;

    fn settings(disc: (usize, usize), given: &[(&str, Value)]) -> StepResult<ElectraSettings> {
        let values: BTreeMap<String, Value> = given.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let config = BertConfig::new(100, 4, disc.0, disc.1, 4 * disc.0, 128);
        ElectraSettings::new(&Params::new(values), &config)
    }

    fn shape(s: &ElectraSettings) -> (usize, usize, usize, usize, f64) {
        let g = &s.generator;
        (g.hidden_size, g.num_attention_heads, g.num_hidden_layers, g.intermediate_size, s.rtd_weight)
    }

    #[test]
    fn generator_defaults_follow_the_discriminator() {
        // ELECTRA-Small's: hidden 256 / 4 heads → a generator of 64 wide, 1 head, 256 inner.
        assert_eq!(shape(&settings((256, 4), &[]).unwrap()), (64, 1, 4, 256, 50.0));
        // BERT-base-like: 768 / 12 → 192 wide, 3 heads of 64.
        assert_eq!(shape(&settings((768, 12), &[]).unwrap()), (192, 3, 4, 768, 50.0));
        // Given heads, the width rounds up to a multiple of them.
        assert_eq!(shape(&settings((256, 4), &[("generator_heads", json!(3))]).unwrap()).0, 66);
        // Given a width, the heads are the largest count up to heads/4 that divides it.
        assert_eq!(shape(&settings((768, 12), &[("generator_hidden", json!(100))]).unwrap()).1, 2);
        let given = [
            ("generator_hidden", json!(32)),
            ("generator_heads", json!(4)),
            ("generator_layers", json!(2)),
            ("generator_intermediate", json!(48)),
            ("rtd_weight", json!(10.0)),
        ];
        assert_eq!(shape(&settings((256, 4), &given).unwrap()), (32, 4, 2, 48, 10.0));
        let tiny = settings((8, 2), &[]).unwrap();
        assert_eq!((tiny.generator.hidden_size, tiny.generator.num_attention_heads), (2, 1));
        assert!(settings((256, 4), &[("generator_hidden", json!(30)), ("generator_heads", json!(4))]).is_err());
    }
}
