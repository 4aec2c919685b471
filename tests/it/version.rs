//! `pipe --version`: the version, the commit the binary was built from (`-dirty` when its
//! sources differed from it) and the enabled cargo features.

use std::process::Command;

/// `git ARGS` in the checkout; `None` outside git.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(env!("CARGO_MANIFEST_DIR")).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = Command::new(env!("CARGO_BIN_EXE_pipe")).arg("--version").output().expect("run pipe");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let prefix = format!("pipe {} (commit ", env!("CARGO_PKG_VERSION"));
    let rest = text.strip_prefix(&prefix).and_then(|r| r.strip_suffix(')')).unwrap_or_else(|| panic!("{text}"));
    let (commit, features) = rest.split_once(", features: ").unwrap_or_else(|| panic!("{text}"));
    let expected: Vec<&str> = [("cuda", cfg!(feature = "cuda")), ("metal", cfg!(feature = "metal"))]
        .iter()
        .filter(|f| f.1)
        .map(|f| f.0)
        .collect();
    assert_eq!(features, if expected.is_empty() { "none".to_string() } else { expected.join(", ") });
    // Tests are built from this checkout: the commit is its HEAD, dirty as its sources are.
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let sha = commit.trim_end_matches("-dirty");
            assert!(sha.len() >= 7 && head.starts_with(sha), "{text} is not HEAD {head}");
            let sources = ["src", "steps/src", "Cargo.toml", "steps/Cargo.toml", "Cargo.lock", "build.rs"];
            let status = git(&[&["status", "--porcelain", "--"][..], &sources].concat()).unwrap_or_default();
            assert_eq!(commit.ends_with("-dirty"), !status.is_empty(), "{text}; git status: {status}");
        }
        None => assert_eq!(commit, "unknown"),
    }
}
