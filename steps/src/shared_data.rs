//! Finding `../shared` (test data that lives beside the checkout, never inside it), and how
//! every test that skips for a missing service says so ([`skipped`]). A test helper: it prints
//! its skip notice itself.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;

/// The shared data folder: `$PIPE_SHARED_DIR`, else `shared/` beside the workspace root.
/// `None` when it is absent; under CI (`CI` set) its absence is a test failure.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("PIPE_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("shared test data not found at {} (CI is set, so this is an error)", dir.display());
    }
    skipped(&format!("shared test data not found at {}", dir.display()));
    None
}

/// A test skips for a missing service (Python packages, moto, Slurm, the shared data): a
/// notice on stderr, and a line appended to `$PIPE_SKIP_LOG` when set, so that a whole test
/// run (parallel test binaries included) can count its skips (`.ci/run` prints the count).
pub fn skipped(why: &str) {
    eprintln!("notice: skipping: {why}");
    if let Some(path) = std::env::var_os("PIPE_SKIP_LOG") {
        use std::io::Write;
        // One short write in append mode: lines of concurrent tests do not interleave.
        let line = format!("{}\n", why.replace('\n', " "));
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("notice: cannot append to PIPE_SKIP_LOG {}: {e}", PathBuf::from(path).display());
        }
    }
}

/// A file or folder inside the shared data folder, or `None` (with a notice) when absent.
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    shared_dir().map(|d| d.join(relative))
}
