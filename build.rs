//! Tells `pipe --version` the git commit the binary is built from (`-dirty` when its sources
//! differed from that commit; `unknown` outside a git checkout, e.g. from a tarball) and the
//! cargo features it is built with. Cheap: two or three `git` commands, nothing downloaded;
//! cargo reruns it only when the commit moves or the sources it covers change, so a build in
//! which nothing changed does not rerun it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the binary is built from: a change here after the commit makes it `-dirty`.
const SOURCES: [&str; 6] = ["src", "steps/src", "Cargo.toml", "steps/Cargo.toml", "Cargo.lock", "build.rs"];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    let commit = commit(&root).unwrap_or_else(|| "unknown".to_string());
    let features: Vec<&str> = [("cuda", "CARGO_FEATURE_CUDA"), ("metal", "CARGO_FEATURE_METAL")]
        .iter()
        .filter(|(_, v)| std::env::var_os(v).is_some())
        .map(|(f, _)| *f)
        .collect();
    let features = if features.is_empty() { "none".to_string() } else { features.join(", ") };
    println!("cargo:rustc-env=PIPE_COMMIT={commit}");
    println!("cargo:rustc-env=PIPE_FEATURES={features}");
}

/// `git` in `root`; `None` when it fails or is not installed.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    // --no-optional-locks: `status` must not refresh the index (which would change the files
    // this script watches and make the next build rerun it for nothing).
    let out = Command::new("git").arg("--no-optional-locks").arg("-C").arg(root).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The short commit, with `-dirty` when the sources differ from it; `None` unless `root` is
/// the top of a git checkout (a tarball unpacked inside some other repository is not it).
fn commit(root: &Path) -> Option<String> {
    let top = git(root, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    let sha = git(root, &["rev-parse", "--short", "HEAD"])?;
    // Rerun when HEAD moves: HEAD itself (checkout), and the branch's ref (commit), loose or packed.
    let watch = |path: &str| {
        let path = git(root, &["rev-parse", "--path-format=absolute", "--git-path", path])?;
        Path::new(&path).exists().then(|| println!("cargo:rerun-if-changed={path}"))
    };
    watch("HEAD");
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        if watch(&branch).is_none() {
            watch("packed-refs");
        }
    }
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(SOURCES);
    let dirty = git(root, &status).is_none_or(|s| !s.is_empty());
    Some(if dirty { format!("{sha}-dirty") } else { sha })
}
