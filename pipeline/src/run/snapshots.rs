//! Snapshots of the power-function EMAs (`train.ema`), from which `sid2 ema` rebuilds the weights
//! of any EMA width afterwards. Each is a folder written as checkpoints are (`checkpoint::
//! write_folder`: temporary name, CRC-32 of every file, rename), and all are kept.
//!
//! ```text
//! RUN/ema-snapshots/samples-000000000480/
//!   power-0.05.safetensors   the EMA of σ_rel 0.05 after 480 samples
//!   power-0.1.safetensors
//!   state.json               samples, the config's hash, CRC-32 of each file
//! ```

use std::path::Path;

use anyhow::Result;
use model3d::UViT;

use super::checkpoint::{self, Checkpoint, TrainState, power_name, save_module};

pub const DIR: &str = "ema-snapshots";

/// Writes the snapshot of `averages` (σ_rel, weights) at `state.samples_seen`.
pub fn save(dir: &Path, state: &TrainState, averages: &[(f64, &UViT)]) -> Result<Checkpoint> {
    let state = TrainState { files: Default::default(), ..state.clone() };
    checkpoint::write_folder(dir, &state, usize::MAX, |tmp| {
        for (sigma_rel, weights) in averages {
            save_module(*weights, &tmp.weights_file(&power_name(*sigma_rel)))?;
        }
        Ok(())
    })
}

/// Every snapshot in `dir`, oldest first, each verified (a damaged one is an error naming it).
pub fn list(dir: &Path) -> Result<Vec<(Checkpoint, TrainState)>> {
    checkpoint::list(dir)?.into_iter().map(|s| s.verify().map(|state| (s, state))).collect()
}
