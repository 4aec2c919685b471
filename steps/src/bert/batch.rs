//! `Batches`: how a tensor set is cut into batches. Rows are grouped by length so that each
//! batch is padded only to its own longest row (dynamic padding): NSMC averages about 16
//! tokens a row against a `max_len` of 64, so fixed padding would spend three quarters of the
//! work on pad tokens.

use candle_core::{DType, Device, Result, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::model::Batch;
use crate::tensor_set::TensorSet;

/// How many batches are sorted by length together when shuffling: large enough to keep
/// batches nearly uniform in length, small enough to keep them random.
const POOL_BATCHES: usize = 64;

/// The rows of each batch, in order.
pub struct Batches {
    pub batches: Vec<Vec<usize>>,
}

impl Batches {
    /// Training order for one epoch: rows shuffled with `seed`, sorted by length within pools
    /// of [`POOL_BATCHES`] batches, and the batches shuffled again.
    pub fn shuffled(set: &TensorSet, batch_size: usize, seed: u64) -> Batches {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rows: Vec<usize> = (0..set.len()).collect();
        rows.shuffle(&mut rng);
        let mut batches = Vec::new();
        for pool in rows.chunks_mut(batch_size * POOL_BATCHES) {
            pool.sort_by_key(|&i| set.valid_length[i]);
            batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        Batches { batches }
    }

    /// Evaluation order: all rows sorted by length (the order of results does not matter).
    pub fn by_length(set: &TensorSet, batch_size: usize) -> Batches {
        let mut rows: Vec<usize> = (0..set.len()).collect();
        rows.sort_by_key(|&i| (set.valid_length[i], i));
        Batches { batches: rows.chunks(batch_size).map(<[usize]>::to_vec).collect() }
    }

    /// In file order, `batch_size` rows at a time.
    pub fn sequential(set: &TensorSet, batch_size: usize) -> Batches {
        let rows: Vec<usize> = (0..set.len()).collect();
        Batches { batches: rows.chunks(batch_size).map(<[usize]>::to_vec).collect() }
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Rows of a tensor set laid out as a padded `(rows, len)` grid, before becoming tensors (the
/// masked-language-model step edits the ids first).
pub struct PaddedRows {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
    pub mask: Vec<f32>,
    pub rows: usize,
    pub len: usize,
}

impl PaddedRows {
    /// `rows` of `set`, padded to the longest row (or to `pad_to` when given: fixed padding,
    /// for comparison). Only the first `valid_length` tokens of a stored row are used.
    pub fn new(set: &TensorSet, rows: &[usize], pad_to: Option<usize>) -> PaddedRows {
        let longest = rows.iter().map(|&i| set.valid_length[i] as usize).max().unwrap_or(1).max(1);
        let len = pad_to.unwrap_or(longest).max(longest);
        let mut ids = vec![set.meta.pad_id; rows.len() * len];
        let mut types = vec![0u32; rows.len() * len];
        let mut mask = vec![0f32; rows.len() * len];
        for (r, &i) in rows.iter().enumerate() {
            let n = set.valid_length[i] as usize;
            let base = r * len;
            for (j, (&id, &ty)) in set.ids(i).iter().zip(set.types(i)).take(n).enumerate() {
                ids[base + j] = id;
                types[base + j] = u32::from(ty);
                mask[base + j] = 1.0;
            }
        }
        PaddedRows { ids, types, mask, rows: rows.len(), len }
    }

    pub fn into_batch(self, dtype: DType, device: &Device) -> Result<Batch> {
        let shape = (self.rows, self.len);
        Ok(Batch {
            input_ids: Tensor::from_vec(self.ids, shape, device)?,
            token_type_ids: Tensor::from_vec(self.types, shape, device)?,
            attention_mask: Tensor::from_vec(self.mask, shape, device)?.to_dtype(dtype)?,
        })
    }
}

/// The model input for `rows` of `set` (see [`PaddedRows::new`]).
pub fn make_batch(
    set: &TensorSet,
    rows: &[usize],
    pad_to: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Batch> {
    PaddedRows::new(set, rows, pad_to).into_batch(dtype, device)
}
