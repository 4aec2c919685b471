//! The cache key of a step: a blake3 hash of its [`crate::fingerprint::Fingerprint`].

use serde::{Deserialize, Serialize};

/// 64 hex digits naming one step result in the cache.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepKey(String);

impl StepKey {
    pub fn from_hash(hash: blake3::Hash) -> StepKey {
        StepKey(hash.to_hex().to_string())
    }

    /// Parses a key read back from disk; `None` unless it is 64 hex digits.
    pub fn parse(text: &str) -> Option<StepKey> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| StepKey(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for display.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for StepKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
