//! The manifest of one cached step result: which files each output has, with size and blake3.
//! Written last, after every file is in place; a result without a manifest does not exist.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::step_key::StepKey;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the output's root; empty when the output is a single file.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEntry {
    /// Content hash of the output: blake3 over its file list. Downstream keys use it.
    pub hash: String,
    pub files: Vec<FileEntry>,
}

impl OutputEntry {
    /// Hashes every file of the output at `path` (a file or a directory).
    pub fn scan(path: &Path) -> std::io::Result<OutputEntry> {
        let mut files = Vec::new();
        if path.is_dir() {
            scan_dir(path, path, &mut files)?;
        } else {
            files.push(FileEntry { path: String::new(), size: fs::metadata(path)?.len(), blake3: hash_file(path)? });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(OutputEntry { hash: list_hash(&files), files })
    }
}

fn scan_dir(root: &Path, dir: &Path, files: &mut Vec<FileEntry>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            scan_dir(root, &path, files)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            files.push(FileEntry { path: rel, size: entry.metadata()?.len(), blake3: hash_file(&path)? });
        }
    }
    Ok(())
}

/// blake3 of a file's bytes, as hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn list_hash(files: &[FileEntry]) -> String {
    let mut hasher = blake3::Hasher::new();
    for f in files {
        hasher.update(f.path.as_bytes());
        hasher.update(&[0]);
        hasher.update(f.size.to_le_bytes().as_slice());
        hasher.update(f.blake3.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex().to_string()
}

/// One cached step result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cache format it was written in ([`crate::fingerprint::CACHE_FORMAT`]).
    #[serde(default)]
    pub format: u32,
    pub key: StepKey,
    /// The directory of the entry holding the outputs (`out-<id>`).
    #[serde(default)]
    pub dir: String,
    /// The step that produced it (another pipeline may reuse it under another name).
    pub step: String,
    pub fingerprint: Fingerprint,
    pub outputs: BTreeMap<String, OutputEntry>,
    /// Seconds the step took.
    pub seconds: f64,
    /// When it was written (RFC 3339).
    pub created: String,
}

impl Manifest {
    /// Checks the files under `out_dir` against the manifest: `Err` says the first problem.
    pub fn verify(&self, out_dir: &Path) -> Result<(), String> {
        for (name, output) in &self.outputs {
            for f in &output.files {
                let path = if f.path.is_empty() { out_dir.join(name) } else { out_dir.join(name).join(&f.path) };
                let shown = if f.path.is_empty() { name.clone() } else { format!("{name}/{}", f.path) };
                let size = fs::metadata(&path).map_err(|_| format!("{shown} is missing"))?.len();
                if size != f.size {
                    return Err(format!("{shown} has {size} bytes, expected {}", f.size));
                }
                let hash = hash_file(&path).map_err(|e| format!("{shown} cannot be read: {e}"))?;
                if hash != f.blake3 {
                    return Err(format!("{shown} content changed"));
                }
            }
        }
        Ok(())
    }
}
