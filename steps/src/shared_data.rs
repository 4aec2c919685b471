//! Finding `../shared` (test data that lives beside the checkout, never inside it). A test
//! helper: it prints its skip notice itself.
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
    eprintln!("notice: skipping: shared test data not found at {}", dir.display());
    None
}

/// A file or folder inside the shared data folder, or `None` (with a notice) when absent.
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    shared_dir().map(|d| d.join(relative))
}
