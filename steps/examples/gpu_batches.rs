//! The batches `fine-tune` trains on, epoch by epoch, for the PyTorch side of the GPU benchmark
//! (`steps/benches/train_gpu_python.py`, run by `scripts/gpu-check.sh`): the same rows in the
//! same order with the same dynamic padding.
//!
//! ```text
//! target/debug/examples/gpu_batches TENSOR_SET_DIR OUT_DIR [BATCH] [SEED] [EPOCHS]
//! ```
//!
//! Writes `OUT_DIR/tensors/` (a copy of the tensor set) and `OUT_DIR/batches.json`
//! (`{"batch_size", "seed", "epochs": [[[row, ...], ...], ...]}`), epoch `e` being
//! `Batches::shuffled(set, batch, batch_seed(seed, e, usize::MAX))` exactly as `fine-tune` draws it.

use std::fs;
use std::path::PathBuf;

use pipe_steps::bert::batch::Batches;
use pipe_steps::bert::train::batch_seed;
use pipe_steps::tensor_set::{TensorSet, TOKENIZER_FILE};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: gpu_batches TENSOR_SET_DIR OUT_DIR [BATCH] [SEED] [EPOCHS]".into());
    };
    let number = |i: usize, default: usize| args.get(i).map_or(Ok(default), |s| s.parse::<usize>());
    let (batch, seed, epochs) = (number(2, 32)?, number(3, 42)? as u64, number(4, 3)?);
    let (input, out) = (PathBuf::from(input), PathBuf::from(out));
    let set = TensorSet::load(&input)?;
    let tensors = out.join("tensors");
    fs::create_dir_all(&tensors)?;
    set.save(&tensors)?;
    if input.join(TOKENIZER_FILE).is_file() {
        fs::copy(input.join(TOKENIZER_FILE), tensors.join(TOKENIZER_FILE))?;
    }
    let orders: Vec<Vec<Vec<usize>>> =
        (1..=epochs).map(|e| Batches::shuffled(&set, batch, batch_seed(seed, e, usize::MAX)).batches).collect();
    let text = serde_json::to_vec(&json!({"batch_size": batch, "seed": seed, "rows": set.len(), "epochs": orders}))?;
    fs::write(out.join("batches.json"), text)?;
    println!("{} rows, {epochs} epochs of {} batches -> {}", set.len(), orders[0].len(), out.display());
    Ok(())
}
