//! Process-wide compute settings, applied once at start-up before any thread pool exists:
//! the number of compute threads and the allocator's tuning.
//!
//! - Threads: rayon's global pool has `threads` threads. Tokenizing uses it, and the BERT steps
//!   run shards of a batch on it (`bert::shard`); candle's own kernels (matmul, element-wise
//!   pools) run single-threaded inside each shard, because their per-op pools synchronise
//!   hundreds of times a step and spin while they wait. The default is every CPU
//!   ([`default_threads`]); `pipe --threads N` sets it.
//! - glibc malloc: training allocates and frees many tensors of a few MiB per step. With the
//!   default thresholds each is a fresh `mmap` and its pages fault in again every step (25–35%
//!   of a step measured here); raising `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` keeps them in
//!   the heap (steps ran 1.45× faster).

/// The default number of compute threads: the CPUs this process may run on. Training
/// synchronises once per shard of a batch and rayon's idle threads sleep, so a core that other
/// work keeps busy slows only its own shard: with one of 2 cores busy, 2 threads trained as
/// fast as 1 or slightly faster (steps/BENCHMARKS_BERT.md). Earlier, when candle's per-op pools
/// spun, 2 threads were 2× slower than 1 there, and this sampled `/proc/stat` to leave busy
/// cores alone.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Applies `threads` and the allocator settings. Call once, early, from the main thread
/// before other threads start: it sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` to 1,
/// which candle reads for its matmul and element-wise parallelism, and sizes rayon's global
/// pool explicitly (an explicit size wins over the variable).
pub fn configure(threads: usize) {
    let threads = threads.max(1);
    std::env::set_var("RAYON_NUM_THREADS", "1");
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    tune_allocator();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const M_TRIM_THRESHOLD: libc::c_int = -1;
    const M_MMAP_THRESHOLD: libc::c_int = -3;
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate heavily and takes plain integers.
    unsafe {
        libc::mallopt(M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
