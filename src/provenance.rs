//! Who ran a run and from what: the user, and the git commit of the pipeline file's work tree
//! (and whether it had uncommitted changes), for its run record. The host is
//! [`host`]. Nothing here is in any key: it says who computed a result, never
//! what it is.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The git state of the work tree a pipeline file is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    /// The commit checked out (`HEAD`), in full.
    pub commit: String,
    /// Tracked files differ from it (untracked files, such as a cache inside, do not count).
    pub dirty: bool,
}

impl GitState {
    /// The state of the work tree holding `dir`; `None` outside one, or without `git`.
    pub fn of(dir: &Path) -> Option<GitState> {
        // One call: the commit (`# branch.oid`) and one line per changed tracked file.
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["status", "--porcelain=v2", "--branch", "--untracked-files=no"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&output.stdout);
        // `(initial)` before the first commit: no commit to name.
        let commit = text.lines().find_map(|l| l.strip_prefix("# branch.oid "))?.trim();
        if commit.len() < 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let dirty = text.lines().any(|l| !l.starts_with('#') && !l.is_empty());
        Some(GitState { commit: commit.to_string(), dirty })
    }

    /// `0123456789ab` or `0123456789ab (dirty)`.
    pub fn describe(&self) -> String {
        let short = &self.commit[..12.min(self.commit.len())];
        if self.dirty {
            format!("{short} (dirty)")
        } else {
            short.to_string()
        }
    }
}

/// The user running this process: `PIPE_USER`, else `USER`, `LOGNAME` or `USERNAME`.
pub fn user() -> Option<String> {
    ["PIPE_USER", "USER", "LOGNAME", "USERNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

/// The name of this machine for records and manifests: `PIPE_HOST`, else the hostname.
pub fn host() -> String {
    if let Ok(h) = std::env::var("PIPE_HOST") {
        if !h.is_empty() {
            return h;
        }
    }
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(h) = fs::read_to_string(path) {
            let h = h.trim();
            if !h.is_empty() {
                return h.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").or_else(|_| std::env::var("COMPUTERNAME")).unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_work_tree_there_is_no_git_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(GitState::of(dir.path()), None);
    }

    #[test]
    fn a_state_names_its_commit_short_and_dirty() {
        let state = GitState { commit: "0123456789abcdef0123456789abcdef01234567".into(), dirty: true };
        assert_eq!(state.describe(), "0123456789ab (dirty)");
    }
}
