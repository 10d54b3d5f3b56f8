//! Checkpoints: a folder per checkpoint, written under a temporary name and renamed when complete.
//!
//! ```text
//! checkpoints/samples-000000000480/
//!   model.safetensors        weights (readable by any safetensors loader)
//!   ema-0.9999.safetensors   one per EMA decay
//!   power-0.05.safetensors   one per power-function EMA (train.ema, σ_rel)
//!   optimizer.bpk            AdamW state (burnpack)
//!   config.toml              the run config it was trained with
//!   state.json               samples seen, counters, the config's hash, a CRC-32 of every file above
//! ```
//!
//! Old checkpoints are removed the same way round: renamed out of the `samples-` names first,
//! then deleted, so a kill part-way never leaves a half-deleted folder that counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "samples-";
const PARTIAL: &str = ".partial-";
const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.bpk";
const STATE: &str = "state.json";
const CONFIG: &str = "config.toml";
const DELETING: &str = ".deleting-";

/// What a checkpoint records besides its weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub samples_seen: u64,
    pub skipped_nonfinite: u64,
    /// [`RunConfig::resume_hash`](crate::config::RunConfig::resume_hash) of the config trained
    /// with (absent in checkpoints written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// CRC-32 of each file of the checkpoint, by name.
    pub files: BTreeMap<String, u32>,
}

/// One complete checkpoint folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint(PathBuf);

impl Checkpoint {
    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn model_file(&self) -> PathBuf {
        self.0.join(MODEL)
    }

    pub fn ema_file(&self, decay: f64) -> PathBuf {
        self.weights_file(&ema_name(decay))
    }

    /// The weights file of an average named by [`ema_name`] or [`power_name`].
    pub fn weights_file(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.safetensors"))
    }

    pub fn optimizer_file(&self) -> PathBuf {
        self.0.join(OPTIMIZER)
    }

    pub fn config_file(&self) -> PathBuf {
        self.0.join(CONFIG)
    }

    /// Reads and verifies the state: every file must be present with its recorded CRC.
    pub fn verify(&self) -> Result<TrainState> {
        let state_path = self.0.join(STATE);
        let text = std::fs::read_to_string(&state_path).with_context(|| format!("cannot read {} (an incomplete checkpoint)", state_path.display()))?;
        let state: TrainState = serde_json::from_str(&text).with_context(|| format!("{} is damaged", state_path.display()))?;
        for (name, crc) in &state.files {
            let path = self.0.join(name);
            let bytes = std::fs::read(&path).with_context(|| format!("checkpoint file {} is missing", path.display()))?;
            if crc32fast::hash(&bytes) != *crc {
                bail!("checkpoint file {} is damaged (checksum mismatch)", path.display());
            }
        }
        Ok(state)
    }
}

pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path).overwrite(true);
    module.save_into(&mut store).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// Loads weights into `module`; every tensor must be present with the module's shape, and the
/// file may hold no others (weights of another architecture are refused, naming what differs).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    let mut module = module;
    let mut store = SafetensorsStore::from_file(path);
    let result = module.load_from(&mut store).map_err(|e| {
        let detail: String = e.to_string().chars().take(240).collect();
        match detail.contains("Mismatch") {
            true => anyhow!("{}: weights do not fit the run's model.* config ({detail}...)", path.display()),
            false => anyhow!("cannot read weights {}: {detail}", path.display()),
        }
    })?;
    let first = |v: Vec<String>| v.into_iter().take(3).collect::<Vec<_>>().join(", ");
    if !result.errors.is_empty() {
        bail!("{}: weights do not fit the run's model.* config ({})", path.display(), first(result.errors.iter().map(|e| format!("{e:?}")).collect()));
    }
    if !result.missing.is_empty() || !result.unused.is_empty() {
        let missing = first(result.missing.into_iter().map(|(p, _)| p).collect());
        bail!("{}: weights are of another model (missing: [{missing}], not in the model: [{}])", path.display(), first(result.unused));
    }
    Ok(module)
}

/// The name of the EMA of `decay` in a checkpoint.
pub fn ema_name(decay: f64) -> String {
    format!("ema-{decay}")
}

/// The name of the power-function EMA of relative width `sigma_rel`.
pub fn power_name(sigma_rel: f64) -> String {
    format!("power-{sigma_rel}")
}

/// Writes a checkpoint (with `config`, the run config as TOML, and the `averages` by name) under a
/// temporary name, renames it into place when complete, and keeps only the newest `keep`.
#[allow(clippy::too_many_arguments)]
pub fn save<M: Module, E: Module>(dir: &Path, state: &TrainState, config: &str, model: &M, averages: &[(String, &E)], optim: &ModuleOptimizer, keep: usize) -> Result<Checkpoint> {
    write_folder(dir, state, keep, |tmp| {
        save_module(model, &tmp.model_file())?;
        for (name, average) in averages {
            save_module(*average, &tmp.weights_file(name))?;
        }
        optim.save(tmp.optimizer_file()).map_err(|e| anyhow!("cannot write {}: {e:?}", tmp.optimizer_file().display()))?;
        std::fs::write(tmp.config_file(), config).with_context(|| format!("cannot write {}", tmp.config_file().display()))
    })
}

/// Writes a folder `samples-N` of `dir` as checkpoints are written: `fill` writes its files into a
/// temporary folder, `state.json` records their CRC-32s, and the folder is renamed into place
/// (over an older one of the same name); then only the newest `keep` folders are kept. The
/// snapshots of the power-function EMAs are written this way too.
pub fn write_folder(dir: &Path, state: &TrainState, keep: usize, fill: impl FnOnce(&Checkpoint) -> Result<()>) -> Result<Checkpoint> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    remove_deleted(dir)?;
    let name = format!("{PREFIX}{:012}", state.samples_seen);
    let tmp = Checkpoint(dir.join(format!("{PARTIAL}{name}")));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0).with_context(|| format!("cannot clear {}", tmp.0.display()))?;
    }
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("cannot create {}", tmp.0.display()))?;
    fill(&tmp)?;
    let mut state = TrainState { files: BTreeMap::new(), ..state.clone() };
    for entry in std::fs::read_dir(&tmp.0).with_context(|| format!("cannot list {}", tmp.0.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", tmp.0.display()))?.path();
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read back {}", path.display()))?;
        sync_file(&path)?;
        state.files.insert(path.file_name().expect("a file in the folder").to_string_lossy().into_owned(), crc32fast::hash(&bytes));
    }
    let state_path = tmp.0.join(STATE);
    std::fs::write(&state_path, serde_json::to_string_pretty(&state)?).with_context(|| format!("cannot write {}", state_path.display()))?;
    sync_file(&state_path)?;
    let done = Checkpoint(dir.join(&name));
    if done.0.exists() {
        remove(&done)?;
    }
    std::fs::rename(&tmp.0, &done.0).with_context(|| format!("cannot move checkpoint into {}", done.0.display()))?;
    video_io::atomic::sync_dir(dir);
    for old in list(dir)?.into_iter().rev().skip(keep) {
        remove(&old)?;
    }
    Ok(done)
}

/// Deletes a checkpoint: renamed out of the `samples-` names first (one atomic step), so it no
/// longer counts, then deleted.
fn remove(checkpoint: &Checkpoint) -> Result<()> {
    let name = checkpoint.0.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let doomed = checkpoint.0.with_file_name(format!("{DELETING}{name}"));
    if doomed.exists() {
        std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot remove {}", doomed.display()))?;
    }
    std::fs::rename(&checkpoint.0, &doomed).with_context(|| format!("cannot remove old checkpoint {}", checkpoint.0.display()))?;
    if let Some(dir) = doomed.parent() {
        video_io::atomic::sync_dir(dir);
    }
    std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot remove {}", doomed.display()))
}

/// Finishes deletions a killed process left part-way.
fn remove_deleted(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(DELETING)) {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The newest checkpoint in `dir` that is complete and intact, with its state, after warning of
/// each newer one passed over; `None` when there is no checkpoint, an error naming the newest's
/// damage when none is intact.
pub fn newest_intact(dir: &Path) -> Result<Option<(Checkpoint, TrainState)>> {
    let all = list(dir)?;
    let mut damaged: Vec<(PathBuf, String)> = Vec::new();
    for checkpoint in all.iter().rev() {
        match checkpoint.verify() {
            Ok(state) => {
                for (path, why) in &damaged {
                    tracing::warn!("passed over damaged checkpoint {}: {why}", path.display());
                }
                if !damaged.is_empty() {
                    tracing::warn!("using {}, the newest intact checkpoint", checkpoint.0.display());
                }
                return Ok(Some((checkpoint.clone(), state)));
            }
            Err(e) => damaged.push((checkpoint.0.clone(), format!("{e:#}"))),
        }
    }
    match damaged.first() {
        None => Ok(None),
        Some((_, why)) => bail!("no intact checkpoint in {} ({} damaged; the newest: {why})", dir.display(), damaged.len()),
    }
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", path.display()))
}

/// Checkpoint folders in `dir` (temporary `.partial-` and `.deleting-` folders are not), oldest
/// first; [`Checkpoint::verify`] tells whether each is complete and intact.
pub fn list(dir: &Path) -> Result<Vec<Checkpoint>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix(PREFIX).and_then(|n| n.parse().ok()) {
            found.push((n, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| Checkpoint(p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use model3d::{BlockKind, UViT, UViTConfig};

    #[test]
    fn weights_round_trip_through_safetensors() {
        let device = Device::flex();
        let config = UViTConfig {
            in_channels: 3,
            patch_size: 2,
            channels: vec![16, 32],
            kinds: vec![BlockKind::Res, BlockKind::Transformer],
            blocks: vec![1],
            mid_blocks: 1,
            emb_channels: 16,
            fourier_features: 8,
            heads: 2,
            dropout: vec![],
            temporal: vec![],
            attention: Default::default(),
            conv: Default::default(),
            linear: Default::default(),
            skips: Default::default(),
            norm_groups: 8,
            num_classes: 3,
        };
        // Give the zero-initialised outputs non-zero values so the forward pass sees every weight.
        let a = crate::train::params::stable_ids(UViT::new(&config, &device)).map(&mut AddConstant(0.05));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_module(&a, &path).unwrap();
        let b = load_module(UViT::new(&config, &device), &path).unwrap();
        let x = Tensor::<5>::ones([1, 2, 3, 8, 8], &device);
        let l = Tensor::<2>::zeros([1, 2], &device);
        let y = Tensor::<1, Int>::from_ints([1], &device);
        let (ya, yb) = (a.forward(x.clone(), l.clone(), y.clone()), b.forward(x, l, y));
        assert!(ya.clone().abs().max().into_scalar::<f32>() > 1e-3);
        assert_eq!((ya - yb).abs().max().into_scalar::<f32>(), 0.0);
        // Weights of another architecture are refused with what differs, not applied in part.
        let other = UViTConfig { channels: vec![16, 16], ..config };
        let err = load_module(UViT::new(&other, &device), &path).unwrap_err().to_string();
        assert!(err.contains("w.safetensors") && err.contains("do not fit"), "{err}");
    }

    struct AddConstant(f64);
    impl burn::module::ModuleMapper for AddConstant {
        fn map_float<const D: usize>(&mut self, p: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
            let (id, v, mapper) = p.consume();
            burn::module::Param::from_mapped_value(id, v.add_scalar(self.0), mapper)
        }
    }
}
