//! The `pretrain` step kind: masked-language-model pre-training of a BERT from a config on
//! tokenized text (15% of tokens chosen; of those 80% `[MASK]`, 10% a random token, 10% kept).

use std::fs;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::batch::{Batches, PaddedRows};
use super::checkpoint::EpochCheckpoints;
use super::config::BertConfig;
use super::device;
use super::model::{BertMaskedLm, Pass};
use super::model_dir::{tensor_set_tokenizer, write_config, write_tokenizer, WEIGHTS};
use super::train::{batch_seed, count_equal, params as train, BatchOutcome, TrainConfig, Trainer};
use super::weights::Weights;
use crate::error::{StepError, StepResult};
use crate::step::{
    Default, Environment, InputSpec, OutputSpec, ParamSpec, ParamType, Params, Step, StepContext, StepSpec,
};
use crate::tensor_set::{TensorSet, TensorSetMeta};

pub struct Pretrain;

static SPEC: StepSpec = StepSpec {
    kind: "pretrain",
    version: 3,
    summary: "masked-language-model pre-training of a BERT from a config on tokenized text",
    params: &[
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
        train::SEED,
        train::DEVICE,
        train::PRECISION,
        train::log_every(100),
    ],
    inputs: &[InputSpec::required("data", "tokenized text (a tensor set; labels are ignored)")],
    outputs: &[
        OutputSpec { name: "model", help: "the pre-trained model in Hugging Face layout (BertForMaskedLM)" },
        OutputSpec { name: "metrics", help: "per-epoch MLM loss and accuracy (JSON)" },
    ],
};

/// One epoch of pre-training, as recorded in `metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainEpoch {
    pub epoch: usize,
    pub updates: usize,
    pub mlm_loss: f64,
    pub mlm_accuracy: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
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

impl Step for Pretrain {
    fn spec(&self) -> &'static StepSpec {
        &SPEC
    }

    fn resolve(&self, params: &Params, env: &Environment) -> StepResult<Params> {
        device::resolve_params(params, env)
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
        Ok(())
    }

    fn run(&self, ctx: &StepContext<'_>) -> StepResult<()> {
        let params = ctx.params;
        let cfg = TrainConfig::from_params(params)?;
        let device = device::open(params.str("device")?)?;
        let data_dir = ctx.input("data")?;
        let set = TensorSet::load(data_dir)?;
        let mask_id = set.meta.mask_id.ok_or_else(|| {
            StepError::input("the tokenizer of the data has no [MASK] token; masked-language modelling needs one")
        })?;
        let mut config = BertConfig::new(
            set.meta.vocab_size,
            params.usize("layers")?,
            params.usize("hidden")?,
            params.usize("heads")?,
            params.usize("intermediate")?,
            params.usize("max_positions")?,
        );
        if let Some(p) = params.opt_f64("dropout")? {
            (config.hidden_dropout_prob, config.attention_probs_dropout_prob) = (p, p);
        }
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
        let model = BertMaskedLm::new(&config, &mut weights, &mut rng)?;
        ctx.events.log(&format!(
            "model: {} layers, hidden {}, {} heads, vocabulary {}, {:.1}M parameters; {} rows",
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.vocab_size,
            weights.parameter_count() as f64 / 1e6,
            set.len()
        ));
        let per_epoch = set.len().div_ceil(cfg.batch_size);
        let max_steps = params.usize("max_steps")?;
        let total = if max_steps > 0 { max_steps.min(per_epoch * cfg.epochs) } else { per_epoch * cfg.epochs };
        let vars = weights.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let mut trainer = Trainer::new(cfg.clone(), vars, per_epoch, ctx.events, ctx.env)?;
        trainer.schedule.total = total as u64;
        trainer.schedule.warmup = (total as f64 * cfg.warmup_ratio).floor() as u64;
        let checkpoints = EpochCheckpoints::new(ctx.checkpoint_dir);
        let mut history: Vec<PretrainEpoch> = Vec::new();
        if let Some((epoch, state)) = checkpoints.resume(&weights, &mut trainer.optimizer, ctx.events)? {
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
            let stats = trainer.epoch(epoch, &order.batches, |rows, pass| {
                let masked = mask_rows(&set, rows, mask_prob, mask_id, pass.seed() ^ 0x6d61_736b);
                mlm_batch(&model, masked, pass, &device)
            })?;
            done += order.batches.len();
            let row = PretrainEpoch {
                epoch,
                updates: order.batches.len(),
                mlm_loss: stats.loss,
                mlm_accuracy: stats.accuracy,
                seconds: stats.seconds,
                samples_per_second: stats.samples as f64 / stats.seconds.max(1e-9),
            };
            ctx.events.log(&format!(
                "[Epoch {epoch}] MLM loss={:.4}, acc={:.4}; {:.1}s, {:.1} samples/s",
                row.mlm_loss, row.mlm_accuracy, row.seconds, row.samples_per_second
            ));
            history.push(row);
            checkpoints.save(epoch, &weights, &trainer.optimizer, &history)?;
        }

        let out = ctx.output("model");
        fs::create_dir_all(&out).map_err(StepError::io("creating", &out))?;
        weights.save(&out.join(WEIGHTS), &model.tied_aliases())?;
        write_config(&out, &config, None)?;
        write_tokenizer(&out, tensor_set_tokenizer(data_dir).as_deref(), &set.meta)?;
        let path = ctx.output("metrics");
        let text = serde_json::to_vec_pretty(&history).map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(&path, text).map_err(StepError::io("writing", &path))
    }
}
