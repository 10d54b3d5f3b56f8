//! The run folder and every file in it: `config.toml` (the resolved config, saved at the start),
//! `metrics.jsonl` ([`metrics`]) and `checkpoints/` ([`checkpoint`]). Nobody else spells these
//! names.
//!
//! ```text
//! RUN/
//!   .lock             (see lock: held by the one process that writes the run)
//!   config.toml
//!   metrics.jsonl
//!   events.jsonl      (see events: training calls, samples and evaluations written)
//!   report.html       (sid2 report)
//!   checkpoints/samples-000000000480/   (see checkpoint)
//!   ema-snapshots/samples-000000000480/ (see snapshots: with train.ema)
//! ```

pub mod checkpoint;
pub mod events;
pub mod lock;
pub mod metrics;
pub mod snapshots;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use model3d::UViT;

use crate::config::RunConfig;
use checkpoint::Checkpoint;
use lock::RunLock;
use metrics::MetricsLog;

const CONFIG_FILE: &str = "config.toml";
const METRICS_FILE: &str = "metrics.jsonl";
const EVENTS_FILE: &str = "events.jsonl";
const REPORT_FILE: &str = "report.html";
const CHECKPOINTS: &str = "checkpoints";
const CLASSES_FILE: &str = "classes.txt";

/// Which weights of a checkpoint to load.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Weights {
    /// The run's first EMA, or the raw weights when it keeps none.
    #[default]
    Default,
    Raw,
    Ema(f64),
}

impl std::str::FromStr for Weights {
    type Err = String;

    /// `raw`, or an EMA decay such as `0.9999`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            _ => s.parse::<f64>().map(Self::Ema).map_err(|_| format!("`{s}`: expected an EMA decay like 0.9999, or `raw`")),
        }
    }
}

/// A run folder.
#[derive(Clone, Debug)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn config_path(&self) -> PathBuf {
        self.0.join(CONFIG_FILE)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.0.join(METRICS_FILE)
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.0.join(CHECKPOINTS)
    }

    /// Where the power-function EMAs' snapshots go (see [`snapshots`]).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.0.join(snapshots::DIR)
    }

    pub fn report_path(&self) -> PathBuf {
        self.0.join(REPORT_FILE)
    }

    /// Appends to `events.jsonl`.
    pub fn record(&self, event: &events::Event) -> Result<()> {
        events::append(&self.0.join(EVENTS_FILE), event)
    }

    pub fn events(&self) -> Vec<events::Event> {
        events::read(&self.0.join(EVENTS_FILE))
    }

    /// The config saved at the run's start.
    pub fn load_config(&self) -> Result<RunConfig> {
        if !self.0.is_dir() {
            bail!("{}: no run folder here (start one with `sid2 train --config ...`)", self.0.display());
        }
        if !self.config_path().exists() {
            bail!("{}: not a run folder, it has no {CONFIG_FILE} (start a run with `sid2 train --config ...`)", self.0.display());
        }
        RunConfig::load(&self.config_path(), &[]).with_context(|| format!("run folder {}", self.0.display()))
    }

    /// The run's config, decided before anything is written: the saved one when resuming (a
    /// different one given now is an error naming the first key that differs, except a longer
    /// `train.total_samples`), otherwise the given one. The flag says whether it must be saved
    /// ([`save_config`](Self::save_config)) once every other check has passed.
    pub fn plan_config(&self, given: Option<RunConfig>) -> Result<(RunConfig, bool)> {
        if !self.config_path().exists() {
            let config = given.with_context(|| format!("{} has no {CONFIG_FILE}: give --config to start a run", self.0.display()))?;
            return Ok((config, true));
        }
        let mut saved = self.load_config()?;
        let Some(given) = given else { return Ok((saved, false)) };
        if let Some((key, was, now)) = saved.first_difference(&given) {
            bail!(
                "run folder {} was started with {key} = {was}, given {now}; resume with the same config (only train.total_samples may change) or choose a new --run",
                self.0.display()
            );
        }
        let longer = given.train.total_samples != saved.train.total_samples;
        saved.train.total_samples = given.train.total_samples;
        Ok((saved, longer))
    }

    /// Takes the run's write lock ([`lock`]) when the folder exists; `None` when it does not yet.
    pub fn lock_existing(&self, what: &str) -> Result<Option<RunLock>> {
        if !self.0.is_dir() {
            return Ok(None);
        }
        RunLock::acquire(&self.0, what).map(Some)
    }

    /// Creates the folder of a new run and takes its write lock; refuses when another process
    /// started a run there since this one looked.
    pub fn create_locked(&self, what: &str) -> Result<RunLock> {
        std::fs::create_dir_all(&self.0).with_context(|| format!("cannot create run folder {}", self.0.display()))?;
        let lock = RunLock::acquire(&self.0, what)?;
        if self.config_path().exists() {
            bail!("run folder {} was started by another process meanwhile; run the same command again to resume it", self.0.display());
        }
        Ok(lock)
    }

    /// Removes what [`create_locked`](Self::create_locked) made, after a start that failed
    /// before its config was saved (the folder only when nothing else is in it).
    pub fn abandon_start(&self, lock: RunLock) {
        let _ = std::fs::remove_file(lock.path());
        drop(lock);
        let _ = std::fs::remove_dir(&self.0);
    }

    /// Whether this process may add files to the folder (a run shared read-only can still be
    /// sampled and evaluated; it is then left unchanged).
    pub fn writable(&self) -> bool {
        let probe = self.0.join(format!(".write-test-{}", std::process::id()));
        let ok = std::fs::File::create(&probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }

    pub fn save_config(&self, config: &RunConfig) -> Result<()> {
        Ok(video_io::atomic::write_bytes(&self.config_path(), &[config.to_toml().as_bytes()])?)
    }

    /// Records the training data's class names (one a line), for grids named by class.
    pub fn save_classes(&self, classes: &[String]) -> Result<()> {
        if classes.iter().all(String::is_empty) {
            return Ok(());
        }
        Ok(video_io::atomic::write_bytes(&self.0.join(CLASSES_FILE), &[classes.join("\n").as_bytes(), b"\n"])?)
    }

    /// The class names of the training data, where `train` recorded them; none otherwise.
    pub fn classes(&self) -> Vec<String> {
        video_io::datasets::read_class_list(&self.0.join(CLASSES_FILE)).unwrap_or_default()
    }

    /// Checkpoint folders, oldest first (see [`checkpoint::list`]).
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        checkpoint::list(&self.checkpoints_dir())
    }

    /// The newest complete, intact checkpoint and its state (see [`checkpoint::newest_intact`]).
    pub fn latest_checkpoint(&self) -> Result<Option<(Checkpoint, checkpoint::TrainState)>> {
        checkpoint::newest_intact(&self.checkpoints_dir())
    }

    /// The network with the weights of `file` (from `sid2 ema`, or another run of the same
    /// `[model]`), or else of the newest intact checkpoint as `weights` chooses; also returns the
    /// weights file it read.
    pub fn load_weights(&self, config: &RunConfig, file: Option<&Path>, weights: Weights, device: &Device) -> Result<(UViT, PathBuf)> {
        match file {
            Some(file) => {
                crate::paths::existing_file("--weights", file)?;
                Ok((checkpoint::load_module(UViT::new(&config.model, device), file)?, file.to_owned()))
            }
            None => self.load_model(config, weights, device),
        }
    }

    /// The network of the newest intact checkpoint with the chosen weights; also returns the
    /// weights file it read.
    pub fn load_model(&self, config: &RunConfig, weights: Weights, device: &Device) -> Result<(UViT, PathBuf)> {
        let (latest, _) = self.latest_checkpoint()?.with_context(|| format!("{} has no checkpoint yet: train first", self.checkpoints_dir().display()))?;
        let file = match weights {
            Weights::Raw => latest.model_file(),
            Weights::Default => config.train.ema_decays.first().map_or_else(|| latest.model_file(), |&d| latest.ema_file(d)),
            Weights::Ema(d) if config.train.ema_decays.contains(&d) => latest.ema_file(d),
            Weights::Ema(d) => bail!("--ema {d}: this run keeps EMA decays {:?}", config.train.ema_decays),
        };
        Ok((checkpoint::load_module(UViT::new(&config.model, device), &file)?, file))
    }

    /// The metrics log, opened for appending at `samples` (records past it are dropped).
    pub fn open_metrics(&self, samples: u64) -> Result<MetricsLog> {
        MetricsLog::open(&self.metrics_path(), samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_nobody_can_write_is_seen_as_such() {
        // /proc refuses new files even to root, as a read-only mount would.
        assert!(!RunDir::new("/proc/self").writable());
        let dir = tempfile::tempdir().unwrap();
        assert!(RunDir::new(dir.path()).writable());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe leaves nothing behind");
    }

    #[test]
    fn weights_choices_parse() {
        assert_eq!("raw".parse::<Weights>(), Ok(Weights::Raw));
        assert_eq!("0.999".parse::<Weights>(), Ok(Weights::Ema(0.999)));
        assert!("fast".parse::<Weights>().unwrap_err().contains("`fast`"));
    }
}
