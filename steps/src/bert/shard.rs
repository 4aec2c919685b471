//! How the BERT steps use several cores on CPU: data parallelism over *shards* of a batch.
//!
//! A training batch is cut into shards of at most [`SHARD_ROWS`] rows (contiguous runs of its
//! rows, which batches keep sorted by length, so each shard is padded only to its own longest
//! row). Each shard runs forward and backward on its own rayon thread; the shards' gradients are
//! summed in shard order by the optimizer. Evaluation runs whole batches in parallel the same
//! way. Candle's kernels themselves run single-threaded (`runtime::configure`): per-op thread
//! pools synchronise hundreds of times a step and spin while they wait, which scaled poorly on
//! 2 cores and collapsed when another process held one (steps/BENCHMARKS_BERT.md).
//!
//! The cut depends only on the batch, never on the number of threads, so a run gives the same
//! bytes with 1 thread or 8. Off CPU a batch is one shard and nothing runs in parallel.

use candle_core::Device;
use rayon::prelude::{IndexedParallelIterator, IntoParallelRefIterator, ParallelIterator};

/// The most rows of a batch computed together on one thread.
pub const SHARD_ROWS: usize = 16;

/// `rows` cut into as few near-equal contiguous shards as keep each within [`SHARD_ROWS`]
/// (`rows` whole off CPU).
pub fn split<'a>(rows: &'a [usize], device: &Device) -> Vec<&'a [usize]> {
    if !device.is_cpu() || rows.len() <= SHARD_ROWS {
        return vec![rows];
    }
    let count = rows.len().div_ceil(SHARD_ROWS);
    let (base, extra) = (rows.len() / count, rows.len() % count);
    let mut shards = Vec::with_capacity(count);
    let mut start = 0;
    for s in 0..count {
        let len = base + usize::from(s < extra);
        shards.push(&rows[start..start + len]);
        start += len;
    }
    shards
}

/// `f(index, item)` for every item: in parallel on rayon's pool on CPU, one after the other on
/// other devices. Results come back in the order of `items`.
pub fn map<I: Sync, T: Send>(items: &[I], device: &Device, f: impl Fn(usize, &I) -> T + Sync + Send) -> Vec<T> {
    if device.is_cpu() && items.len() > 1 {
        items.par_iter().enumerate().map(|(i, item)| f(i, item)).collect()
    } else {
        items.iter().enumerate().map(|(i, item)| f(i, item)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_near_equal_and_cover_the_batch() {
        let rows: Vec<usize> = (0..33).collect();
        let shards = split(&rows, &Device::Cpu);
        assert_eq!(shards.iter().map(|s| s.len()).collect::<Vec<_>>(), vec![11, 11, 11]);
        assert_eq!(shards.concat(), rows);
        assert_eq!(split(&rows[..16], &Device::Cpu).len(), 1);
        assert_eq!(split(&rows[..32], &Device::Cpu).iter().map(|s| s.len()).collect::<Vec<_>>(), vec![16, 16]);
    }

    #[test]
    fn map_keeps_order() {
        let items: Vec<usize> = (0..100).collect();
        assert_eq!(map(&items, &Device::Cpu, |i, &x| i * 1000 + x), (0..100).map(|x| x * 1001).collect::<Vec<_>>());
    }
}
