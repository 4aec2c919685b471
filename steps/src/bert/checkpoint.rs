//! `EpochCheckpoints`: what a training step keeps after each epoch so an interrupted run
//! resumes where it stopped. They live in the step's checkpoint directory, which the runner
//! ties to the step's key and deletes after the step succeeds:
//!
//! ```text
//! <checkpoint_dir>/
//! ├── epoch-1/               an older epoch kept because its weights are the model so far
//! │                           (`fine-tune`'s chosen epoch); other older ones are removed
//! ├── epoch-2/               the latest complete epoch
//! │   ├── weights.safetensors
//! │   ├── optimizer.safetensors   AdamW moments and update count
//! │   └── state.json              metrics so far and the SHA-256 of the two files above
//! │                               (the RNG state is a function of seed, epoch, batch)
//! ├── epoch-1.corrupt-1/     a checkpoint that could not be restored, set aside
//! └── epoch-3.partial/       being written; ignored and removed when found
//! ```
//!
//! Durability: every file is fsynced before the directory is renamed into place, and the
//! parent directory after (on unix), so a crash leaves either the complete epoch or none.
//! A checkpoint that still cannot be restored (a disk error, a hand edit, a model that no
//! longer fits) is renamed aside with a warning and training starts afresh: a rerun must not
//! fail forever on a file only the step itself reads; a latest epoch whose kept epoch is
//! missing or damaged cannot be restored either. What is *not* here: checkpoints within an
//! epoch.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::optimizer::AdamW;
use super::weights::{Checkpoint, Weights};
use crate::error::{StepError, StepResult};
use crate::step::Events;

const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

/// `state.json`: the step's state and the checksums of the files beside it.
#[derive(Serialize, Deserialize)]
struct Manifest<S> {
    /// File name → SHA-256 (hex) of its bytes when written.
    sha256: BTreeMap<String, String>,
    state: S,
}

pub struct EpochCheckpoints {
    dir: PathBuf,
}

impl EpochCheckpoints {
    pub fn new(dir: &Path) -> Self {
        EpochCheckpoints { dir: dir.to_path_buf() }
    }

    /// The latest complete epoch and its directory; partial ones are removed, set-aside ones
    /// ignored.
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

    /// Writes epoch `epoch` (1-based) and removes older ones but `keep` (an earlier epoch whose
    /// weights are still wanted, see [`EpochCheckpoints::load_weights`]). The directory appears
    /// complete or not at all (written under a `.partial` name, synced, then renamed).
    pub fn save<S: Serialize>(
        &self,
        epoch: usize,
        weights: &Weights,
        optimizer: &AdamW,
        state: &S,
        keep: Option<usize>,
    ) -> StepResult<()> {
        fs::create_dir_all(&self.dir).map_err(StepError::io("creating", &self.dir))?;
        let partial = self.dir.join(format!("epoch-{epoch}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).map_err(StepError::io("creating", &partial))?;
        weights.save(&partial.join(WEIGHTS), &[])?;
        optimizer.save(&partial.join(OPTIMIZER))?;
        let mut sha256 = BTreeMap::new();
        for name in [WEIGHTS, OPTIMIZER] {
            let path = partial.join(name);
            File::open(&path).and_then(|f| f.sync_all()).map_err(StepError::io("syncing", &path))?;
            sha256.insert(name.to_string(), file_sha256(&path)?);
        }
        let state_path = partial.join(STATE);
        let text = serde_json::to_vec_pretty(&Manifest { sha256, state })
            .map_err(|e| StepError::failed(format!("{}: {e}", state_path.display())))?;
        File::create(&state_path)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .map_err(StepError::io("writing", &state_path))?;
        sync_dir(&partial)?;
        let done = self.dir.join(format!("epoch-{epoch}"));
        if done.exists() {
            fs::remove_dir_all(&done).map_err(StepError::io("removing an incomplete checkpoint", &done))?;
        }
        fs::rename(&partial, &done).map_err(StepError::io("renaming", &partial))?;
        sync_dir(&self.dir)?;
        for older in (1..epoch).filter(|&e| Some(e) != keep) {
            let _ = fs::remove_dir_all(self.dir.join(format!("epoch-{older}")));
        }
        Ok(())
    }

    /// Copies the weights of a saved epoch into `weights`, after checking them against the
    /// checksum they were written with.
    pub fn load_weights(&self, epoch: usize, weights: &Weights) -> StepResult<()> {
        let dir = self.dir.join(format!("epoch-{epoch}"));
        check_weights(&dir)?;
        let checkpoint = Checkpoint::load(&dir.join(WEIGHTS))?;
        checkpoint.fill(weights, &[""], |_| false).map(|_| ())
    }

    /// Restores the latest complete epoch into `weights` and `optimizer` and returns the epoch
    /// and its state; `None`: start from the beginning. `kept(state, epoch)` names the earlier
    /// epoch the state still needs (see [`EpochCheckpoints::save`]); its weights are checked
    /// too. A checkpoint that cannot be restored is renamed to `epoch-N.corrupt-K` with a
    /// warning through `events`, and then the next latest is tried, or none is restored: with
    /// nothing changed, the step trains as a fresh run would. Only failing to set a checkpoint
    /// aside is an error.
    pub fn resume<S: DeserializeOwned>(
        &self,
        weights: &Weights,
        optimizer: &mut AdamW,
        events: &dyn Events,
        kept: impl Fn(&S, usize) -> Option<usize>,
    ) -> StepResult<Option<(usize, S)>> {
        while let Some((epoch, dir)) = self.latest() {
            let needs = |state: &S| match kept(state, epoch) {
                Some(k) if k != epoch => check_weights(&self.dir.join(format!("epoch-{k}")))
                    .map_err(|e| StepError::failed(format!("the weights of epoch {k} it keeps: {e}"))),
                _ => Ok(()),
            };
            match Self::restore(&dir, weights, optimizer, needs) {
                Ok(state) => return Ok(Some((epoch, state))),
                Err(e) => {
                    let aside = set_aside(&dir)?;
                    events.log(&format!(
                        "warning: the checkpoint of epoch {epoch} cannot be restored ({e}); set aside as {}, \
                         training starts from the beginning",
                        aside.display()
                    ));
                }
            }
        }
        Ok(None)
    }

    /// Restores weights and optimizer from an epoch directory and returns its state. Everything
    /// is read and checked before anything is changed, so on an error `weights` and
    /// `optimizer` are as they were.
    fn restore<S: DeserializeOwned>(
        dir: &Path,
        weights: &Weights,
        optimizer: &mut AdamW,
        needs: impl Fn(&S) -> StepResult<()>,
    ) -> StepResult<S> {
        let manifest: Manifest<S> = read_manifest(dir)?;
        for name in [WEIGHTS, OPTIMIZER] {
            check_sha256(&manifest, dir, name)?;
        }
        needs(&manifest.state)?;
        let checkpoint = Checkpoint::load(&dir.join(WEIGHTS))?;
        for (name, var) in weights.iter() {
            match checkpoint.get(name) {
                Some(t) if t.dims() == var.dims() => {}
                Some(t) => {
                    return Err(StepError::failed(format!(
                        "{}: `{name}` has shape {:?}, the model {:?}",
                        checkpoint.path.display(),
                        t.dims(),
                        var.dims()
                    )))
                }
                None => return Err(StepError::failed(format!("{}: no tensor `{name}`", checkpoint.path.display()))),
            }
        }
        // Into a fresh optimizer over the same parameters, so a failure leaves `optimizer` alone.
        let mut restored = AdamW::new(weights.iter(), optimizer.weight_decay)
            .map_err(|e| StepError::failed(format!("creating the optimizer: {e}")))?;
        (restored.beta1, restored.beta2, restored.eps) = (optimizer.beta1, optimizer.beta2, optimizer.eps);
        restored.load(&dir.join(OPTIMIZER))?;
        // Names and shapes were checked above; this copies.
        checkpoint.fill(weights, &[""], |_| false)?;
        *optimizer = restored;
        Ok(manifest.state)
    }
}

fn read_manifest<S: DeserializeOwned>(dir: &Path) -> StepResult<Manifest<S>> {
    let state_path = dir.join(STATE);
    let text = fs::read(&state_path).map_err(StepError::io("reading", &state_path))?;
    serde_json::from_slice(&text).map_err(|e| StepError::failed(format!("{}: {e}", state_path.display())))
}

/// Checks a file of a checkpoint against the SHA-256 its manifest recorded.
fn check_sha256<S>(manifest: &Manifest<S>, dir: &Path, name: &str) -> StepResult<()> {
    let path = dir.join(name);
    let recorded = manifest.sha256.get(name).map(String::as_str);
    let actual = file_sha256(&path)?;
    if recorded != Some(actual.as_str()) {
        return Err(StepError::failed(format!(
            "{}: SHA-256 {actual}, written as {}",
            path.display(),
            recorded.unwrap_or("(not recorded)")
        )));
    }
    Ok(())
}

/// Checks the weights of an epoch's directory against their checksum.
fn check_weights(dir: &Path) -> StepResult<()> {
    let manifest: Manifest<serde::de::IgnoredAny> = read_manifest(dir)?;
    check_sha256(&manifest, dir, WEIGHTS)
}

/// Renames a checkpoint directory to the first free `<name>.corrupt-<k>`.
fn set_aside(dir: &Path) -> StepResult<PathBuf> {
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut k = 1;
    let aside = loop {
        let candidate = dir.with_file_name(format!("{name}.corrupt-{k}"));
        if !candidate.exists() {
            break candidate;
        }
        k += 1;
    };
    fs::rename(dir, &aside).map_err(StepError::io("setting aside an unreadable checkpoint", dir))?;
    Ok(aside)
}

fn file_sha256(path: &Path) -> StepResult<String> {
    let mut file = File::open(path).map_err(StepError::io("reading", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(StepError::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes a directory's entries (new files, a rename) durable. Directories cannot be opened
/// for syncing on Windows; there the rename is as durable as the file system makes it.
fn sync_dir(dir: &Path) -> StepResult<()> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(StepError::io("syncing", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::sync::Mutex;

    struct Lines(Mutex<Vec<String>>);
    impl Events for Lines {
        fn log(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
        fn progress_start(&self, _: &str, _: Option<u64>, _: &str) {}
        fn progress_inc(&self, _: u64) {}
        fn progress_message(&self, _: &str) {}
        fn progress_finish(&self) {}
    }

    fn model(value: f32) -> (Weights, AdamW) {
        let mut w = Weights::new(DType::F32, &Device::Cpu);
        w.ones("bert.a.weight", &[2, 3]).unwrap();
        w.zeros("bert.a.bias", &[3]).unwrap();
        let t = candle_core::Tensor::full(value, (2, 3), &Device::Cpu).unwrap();
        w.set("bert.a.weight", &t, Path::new("test")).unwrap();
        let opt = AdamW::new(w.iter(), 0.01).unwrap();
        (w, opt)
    }

    fn values(w: &Weights) -> Vec<f32> {
        w.var("bert.a.weight").unwrap().as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_saved_epoch_restores_and_a_damaged_one_is_set_aside_untouched() {
        let root = tempfile::tempdir().unwrap();
        let ck = EpochCheckpoints::new(root.path());
        let (w, mut opt) = model(2.5);
        opt.step = 7;
        ck.save(1, &w, &opt, &vec![1u32, 2], None).unwrap();
        assert!(!root.path().join("epoch-1.partial").exists());

        let (w2, mut opt2) = model(0.0);
        let (epoch, state): (usize, Vec<u32>) = {
            let lines = Lines(Mutex::new(Vec::new()));
            let r = ck.resume(&w2, &mut opt2, &lines, |_: &Vec<u32>, _| None).unwrap();
            r.unwrap_or_else(|| panic!("{:?}", lines.0.lock().unwrap()))
        };
        assert_eq!((epoch, state, opt2.step, values(&w2)), (1, vec![1, 2], 7, vec![2.5; 6]));

        // Damage each part in turn: nothing is changed, the directory is set aside, a warning
        // names it.
        type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
        let damages: [Damage; 4] = [
            (WEIGHTS, &|p| fs::write(p, b"garbage").unwrap()),
            (OPTIMIZER, &|p| {
                let mut b = fs::read(p).unwrap();
                let n = b.len();
                b[n - 1] ^= 0xff;
                fs::write(p, b).unwrap()
            }),
            (STATE, &|p| fs::write(p, b"{ not json").unwrap()),
            (STATE, &|p| {
                let mut v: serde_json::Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
                v["state"] = serde_json::json!("not a list");
                fs::write(p, v.to_string()).unwrap()
            }),
        ];
        for (k, (file, damage)) in damages.iter().enumerate() {
            ck.save(1, &w, &opt, &vec![1u32, 2], None).unwrap();
            damage(&root.path().join("epoch-1").join(file));
            let (w3, mut opt3) = model(0.5);
            let lines = Lines(Mutex::new(Vec::new()));
            let resumed: Option<(usize, Vec<u32>)> = ck.resume(&w3, &mut opt3, &lines, |_, _| None).unwrap();
            assert!(resumed.is_none(), "damaged {file} was restored");
            assert_eq!((opt3.step, values(&w3)), (0, vec![0.5; 6]), "damaged {file} changed the model");
            let aside = root.path().join(format!("epoch-1.corrupt-{}", k + 1));
            assert!(aside.is_dir() && !root.path().join("epoch-1").exists(), "{file}");
            let lines = lines.0.into_inner().unwrap();
            assert!(
                lines.len() == 1
                    && lines[0].starts_with("warning: the checkpoint of epoch 1 cannot be restored")
                    && lines[0].contains(&aside.display().to_string()),
                "{lines:?}"
            );
        }
    }

    /// A warning naming why, with the model and optimizer left as they were.
    fn assert_set_aside(ck: &EpochCheckpoints, aside: &Path, why: &str) {
        let (w, mut opt) = model(0.5);
        let lines = Lines(Mutex::new(Vec::new()));
        assert!(ck.resume::<u32>(&w, &mut opt, &lines, |_, _| None).unwrap().is_none());
        assert_eq!((opt.step, values(&w)), (0, vec![0.5; 6]));
        assert!(aside.is_dir());
        let lines = lines.0.into_inner().unwrap();
        assert!(lines.len() == 1 && lines[0].contains(why), "{lines:?}");
    }

    #[test]
    fn checkpoints_that_do_not_fit_the_model_are_set_aside() {
        let root = tempfile::tempdir().unwrap();
        let ck = EpochCheckpoints::new(root.path());
        let mut other = Weights::new(DType::F32, &Device::Cpu);
        other.ones("bert.a.weight", &[3, 2]).unwrap();
        other.zeros("bert.a.bias", &[3]).unwrap();
        ck.save(2, &other, &AdamW::new(other.iter(), 0.01).unwrap(), &0u32, None).unwrap();
        assert_set_aside(
            &ck,
            &root.path().join("epoch-2.corrupt-1"),
            "`bert.a.weight` has shape [3, 2], the model [2, 3]",
        );

        // Weights that fit beside moments that do not (checksums intact): the optimizer is read
        // before any weight is copied, so neither changes.
        let (w, mut opt) = model(2.5);
        opt.step = 3;
        ck.save(2, &w, &opt, &0u32, None).unwrap();
        let mut bigger = Weights::new(DType::F32, &Device::Cpu);
        bigger.ones("bert.a.weight", &[4, 2]).unwrap();
        bigger.zeros("bert.a.bias", &[3]).unwrap();
        let dir = root.path().join("epoch-2");
        AdamW::new(bigger.iter(), 0.01).unwrap().save(&dir.join(OPTIMIZER)).unwrap();
        let mut manifest: serde_json::Value = serde_json::from_slice(&fs::read(dir.join(STATE)).unwrap()).unwrap();
        manifest["sha256"][OPTIMIZER] = file_sha256(&dir.join(OPTIMIZER)).unwrap().into();
        fs::write(dir.join(STATE), manifest.to_string()).unwrap();
        assert_set_aside(&ck, &root.path().join("epoch-2.corrupt-2"), "has 8 values, the parameter 6");
    }

    #[test]
    fn a_kept_epoch_survives_later_saves_and_a_latest_epoch_needs_it() {
        let root = tempfile::tempdir().unwrap();
        let ck = EpochCheckpoints::new(root.path());
        for (epoch, value, keep) in [(1, 1.0, None), (2, 2.0, Some(1)), (3, 3.0, Some(1))] {
            let (w, opt) = model(value);
            ck.save(epoch, &w, &opt, &(epoch as u32), keep).unwrap();
        }
        let exists = |e: usize| root.path().join(format!("epoch-{e}")).is_dir();
        assert_eq!((exists(1), exists(2), exists(3)), (true, false, true));
        let (w, _) = model(0.0);
        ck.load_weights(1, &w).unwrap();
        assert_eq!(values(&w), vec![1.0; 6]);

        // The latest restores when the epoch it keeps is intact...
        let lines = Lines(Mutex::new(Vec::new()));
        let (w, mut opt) = model(0.0);
        let r = ck.resume::<u32>(&w, &mut opt, &lines, |_, _| Some(1)).unwrap();
        assert_eq!((r, values(&w)), (Some((3, 3)), vec![3.0; 6]));
        // ...and not when it is damaged: both are set aside, with nothing changed.
        let kept = root.path().join("epoch-1").join(WEIGHTS);
        let mut bytes = fs::read(&kept).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        fs::write(&kept, bytes).unwrap();
        assert!(ck.load_weights(1, &w).is_err());
        let (w, mut opt) = model(0.5);
        let r = ck.resume::<u32>(&w, &mut opt, &lines, |_, _| Some(1)).unwrap();
        assert_eq!((r, values(&w)), (None, vec![0.5; 6]));
        let lines = lines.0.into_inner().unwrap();
        assert!(lines[0].contains("cannot be restored (the weights of epoch 1 it keeps:"), "{lines:?}");
        assert!(root.path().join("epoch-3.corrupt-1").is_dir() && root.path().join("epoch-1.corrupt-1").is_dir());
    }
}
