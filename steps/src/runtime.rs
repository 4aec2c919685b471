//! Process-wide compute settings, applied once at start-up before any thread pool exists:
//! the number of compute threads and the allocator's tuning.
//!
//! - Threads: rayon's global pool (used by tokenizing and by candle's CPU kernels) and candle's
//!   matmul parallelism both follow `threads`. Candle's pool spins while waiting, so on a machine
//!   whose other core is busy, fewer threads can be faster; `pipe --threads N` sets it.
//! - glibc malloc: training allocates and frees many tensors of a few MiB per step. With the
//!   default thresholds each is a fresh `mmap` and its pages fault in again every step (25–35%
//!   of a step measured here); raising `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` keeps them in
//!   the heap (steps ran 1.45× faster).

/// The default number of compute threads: the CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Applies `threads` and the allocator settings. Call once, early, from the main thread
/// before other threads start (it sets `RAYON_NUM_THREADS`, which candle reads).
pub fn configure(threads: usize) {
    let threads = threads.max(1);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
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
