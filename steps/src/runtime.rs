//! Process-wide compute settings, applied once at start-up before any thread pool exists:
//! the number of compute threads and the allocator's tuning.
//!
//! - Threads: rayon's global pool has `threads` threads. Tokenizing uses it, and the BERT steps
//!   run shards of a batch on it (`bert::shard`); candle's own kernels (matmul, element-wise
//!   pools) run single-threaded inside each shard, because their per-op pools synchronise
//!   hundreds of times a step and spin while they wait. On a machine whose other cores are busy,
//!   fewer threads can still be faster; `pipe --threads N` sets it.
//! - glibc malloc: training allocates and frees many tensors of a few MiB per step. With the
//!   default thresholds each is a fresh `mmap` and its pages fault in again every step (25–35%
//!   of a step measured here); raising `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` keeps them in
//!   the heap (steps ran 1.45× faster).

/// The default number of compute threads: the CPUs this process may run on, less those other
/// work keeps busy right now (sampled from `/proc/stat` over 150 ms, on Linux). candle's pools
/// spin while they wait: with one of 2 cores busy, 2 threads trained 2× slower than 1
/// (steps/BENCHMARKS_BERT.md).
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    threads_for(cpus, busy_cores())
}

/// How many cores other processes keep busy: the non-idle share of all CPU time over a short
/// window, times the number of CPUs. `None` where `/proc/stat` cannot be read.
fn busy_cores() -> Option<f64> {
    let (before, _) = cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)?;
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (after, cores) = cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let total = after.0.saturating_sub(before.0);
    let idle = after.1.saturating_sub(before.1);
    (total > 0).then(|| (total - idle) as f64 / total as f64 * cores as f64)
}

/// Total and idle (idle + iowait) jiffies from the aggregate `cpu` line of `/proc/stat` text,
/// and the number of per-CPU lines.
fn cpu_times(text: &str) -> Option<((u64, u64), usize)> {
    let cores = text.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some(((fields.iter().sum(), idle), cores))
}

/// `cpus` less the cores other work keeps busy (rounded), at least 1.
fn threads_for(cpus: usize, busy_cores: Option<f64>) -> usize {
    let busy = busy_cores.map(|b| b.max(0.0).round() as usize).unwrap_or(0);
    cpus.saturating_sub(busy).clamp(1, cpus.max(1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_cores_are_left_alone() {
        assert_eq!(threads_for(2, Some(0.1)), 2);
        assert_eq!(threads_for(2, Some(1.2)), 1);
        assert_eq!(threads_for(2, Some(7.0)), 1);
        assert_eq!(threads_for(8, Some(2.6)), 5);
        assert_eq!(threads_for(4, None), 4);
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(cpu_times(stat), Some(((1000, 850), 1)));
        assert_eq!(cpu_times("intr 1 2 3\n"), None);
    }
}
