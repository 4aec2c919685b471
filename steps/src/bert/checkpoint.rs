//! `EpochCheckpoints`: what a training step keeps after each epoch so an interrupted run
//! resumes where it stopped. They live in the step's checkpoint directory, which the runner
//! ties to the step's key and deletes after the step succeeds:
//!
//! ```text
//! <checkpoint_dir>/
//! ├── epoch-2/               the latest complete epoch (older ones are removed)
//! │   ├── weights.safetensors
//! │   ├── optimizer.safetensors   AdamW moments and update count
//! │   └── state.json              metrics so far (the RNG state is a function of seed, epoch, batch)
//! └── epoch-3.partial/       being written; ignored and removed when found
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::optimizer::AdamW;
use super::weights::{Checkpoint, Weights};
use crate::error::{StepError, StepResult};

const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

pub struct EpochCheckpoints {
    dir: PathBuf,
}

impl EpochCheckpoints {
    pub fn new(dir: &Path) -> Self {
        EpochCheckpoints { dir: dir.to_path_buf() }
    }

    /// The latest complete epoch and its directory; partial ones are removed.
    pub fn latest(&self) -> Option<(usize, PathBuf)> {
        let entries = fs::read_dir(&self.dir).ok()?;
        let mut best: Option<(usize, PathBuf)> = None;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".partial") {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            let Some(epoch) = name.strip_prefix("epoch-").and_then(|n| n.parse::<usize>().ok()) else { continue };
            let complete = [WEIGHTS, OPTIMIZER, STATE].iter().all(|f| entry.path().join(f).is_file());
            if complete && best.as_ref().is_none_or(|(e, _)| epoch > *e) {
                best = Some((epoch, entry.path()));
            }
        }
        best
    }

    /// Writes epoch `epoch` (1-based) and removes older ones. The directory appears complete
    /// or not at all (written under a `.partial` name, then renamed).
    pub fn save<S: Serialize>(&self, epoch: usize, weights: &Weights, optimizer: &AdamW, state: &S) -> StepResult<()> {
        fs::create_dir_all(&self.dir).map_err(StepError::io("creating", &self.dir))?;
        let partial = self.dir.join(format!("epoch-{epoch}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).map_err(StepError::io("creating", &partial))?;
        weights.save(&partial.join(WEIGHTS), &[])?;
        optimizer.save(&partial.join(OPTIMIZER))?;
        let state_path = partial.join(STATE);
        let text = serde_json::to_vec_pretty(state).map_err(|e| StepError::failed(e.to_string()))?;
        fs::write(&state_path, text).map_err(StepError::io("writing", &state_path))?;
        let done = self.dir.join(format!("epoch-{epoch}"));
        if done.exists() {
            fs::remove_dir_all(&done).map_err(StepError::io("removing an incomplete checkpoint", &done))?;
        }
        fs::rename(&partial, &done).map_err(StepError::io("renaming", &partial))?;
        for older in 1..epoch {
            let _ = fs::remove_dir_all(self.dir.join(format!("epoch-{older}")));
        }
        Ok(())
    }

    /// Restores weights and optimizer from an epoch directory and returns its state.
    pub fn restore<S: DeserializeOwned>(dir: &Path, weights: &Weights, optimizer: &mut AdamW) -> StepResult<S> {
        let checkpoint = Checkpoint::load(&dir.join(WEIGHTS))?;
        checkpoint.fill(weights, &[""], |_| false)?;
        optimizer.load(&dir.join(OPTIMIZER))?;
        let state_path = dir.join(STATE);
        let text = fs::read(&state_path).map_err(StepError::io("reading", &state_path))?;
        serde_json::from_slice(&text).map_err(|e| StepError::failed(format!("{}: {e}", state_path.display())))
    }
}
