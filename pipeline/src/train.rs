//! The training loop, written out (style.md 11): noising with per-frame λ and clean context
//! frames, the weighted loss, global gradient clipping, AdamW with warm-up, EMA, label dropout,
//! non-finite guards, checkpoints, and a resumable, reproducible sample stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use video_io::prepare::ShardDataset;

use crate::checkpoint::{self, TrainState};
use crate::config::RunConfig;
use crate::loader::Loader;
use crate::metrics::{MetricsLog, TrainRecord, peak_rss_mib};
use crate::params::all_finite;
use crate::trainer::Trainer;

pub const CONFIG_FILE: &str = "config.toml";

/// Where a run lives: `config.toml`, `metrics.jsonl`, `checkpoints/`.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join(CONFIG_FILE)
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.0.join("checkpoints")
    }
    /// The config saved at the run's start.
    pub fn load_config(&self) -> Result<RunConfig> {
        RunConfig::load(&self.config(), &[]).with_context(|| format!("run folder {}", self.0.display()))
    }
}

/// Resolves the run's config: the saved one when resuming (a different one given now is an
/// error), otherwise the given one, saved for later.
pub fn resolve_config(run: &RunDir, given: Option<RunConfig>) -> Result<RunConfig> {
    if run.config().exists() {
        let mut saved = run.load_config()?;
        if let Some(given) = given {
            // A run may be extended (train.total_samples); everything else must match.
            let same_train = crate::config::TrainConfig { total_samples: saved.train.total_samples, ..given.train.clone() } == saved.train;
            for (section, same) in [
                ("data", given.data == saved.data),
                ("model", given.model == saved.model),
                ("diffusion", given.diffusion == saved.diffusion),
                ("train", same_train),
            ] {
                if !same {
                    bail!("run folder {} was started with a different [{section}] section; resume with the same config or choose a new --run", run.0.display());
                }
            }
            if given.train.total_samples != saved.train.total_samples {
                // Nothing is rewritten unless the run can resume.
                if let Some(latest) = checkpoint::list(&run.checkpoints())?.pop() {
                    checkpoint::verify(&latest)?;
                }
                saved.train.total_samples = given.train.total_samples;
                save_config(run, &saved)?;
            }
        }
        return Ok(saved);
    }
    let config = given.with_context(|| format!("{} has no {CONFIG_FILE}: give --config to start a run", run.0.display()))?;
    std::fs::create_dir_all(&run.0).with_context(|| format!("cannot create run folder {}", run.0.display()))?;
    save_config(run, &config)?;
    Ok(config)
}

fn save_config(run: &RunDir, config: &RunConfig) -> Result<()> {
    Ok(video_io::atomic::write_bytes(&run.config(), &[config.to_toml().as_bytes()])?)
}

/// What a finished `train` call reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub samples_seen: u64,
    pub resumed_from: Option<u64>,
    pub last_loss: f64,
    pub checkpoint: Option<PathBuf>,
}

/// Trains until `train.total_samples`, resuming from the newest complete checkpoint.
pub fn train(run: &RunDir, data_dir: &Path, config: &RunConfig, device: &Device, progress: bool) -> Result<TrainSummary> {
    let data = ShardDataset::open(data_dir).with_context(|| format!("training data {}", data_dir.display()))?;
    let layout = data.layout();
    if (layout.frames as usize, layout.height as usize) != (config.data.frames, config.data.size) {
        bail!(
            "{}: shards hold {} frames of {}x{}, the config asks for data.frames = {} and data.size = {}",
            data_dir.display(),
            layout.frames,
            layout.height,
            layout.width,
            config.data.frames,
            config.data.size
        );
    }
    if data.is_empty() {
        bail!("{}: the prepared data set has no records (see skipped inputs in its manifest.json)", data_dir.display());
    }
    let classes = data.manifest.classes.len();
    if config.model.num_classes > 0 && classes > config.model.num_classes {
        bail!("{}: the data set has {classes} classes, model.num_classes is {}", data_dir.display(), config.model.num_classes);
    }
    let tc = &config.train;
    let mut trainer = Trainer::new(config, device)?;
    let mut state = TrainState { samples_seen: 0, skipped_nonfinite: 0, files: Default::default() };
    let mut resumed_from = None;
    if let Some(latest) = checkpoint::list(&run.checkpoints())?.pop() {
        state = trainer.resume(&latest)?;
        resumed_from = Some(state.samples_seen);
        tracing::info!(samples = state.samples_seen, checkpoint = %latest.display(), "resumed");
    }
    let mut log = MetricsLog::open(&run.metrics(), state.samples_seen)?;
    let loader = Loader::start(Arc::new(data), tc.batch_size, state.samples_seen, tc.seed, tc.flip);

    let bar = if progress { ProgressBar::new(tc.total_samples) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("train {bar:25} {pos}/{len} samples  ETA {eta}  {msg}").expect("valid template"));
    bar.set_position(state.samples_seen);

    let b = tc.batch_size;
    let start = Instant::now();
    let start_samples = state.samples_seen;
    let (mut window, mut wait, mut busy) = (Window::default(), Duration::ZERO, Duration::ZERO);
    let mut in_a_row = 0u32;
    let mut last_checkpoint = None;
    let mut last_loss = f64::NAN;
    while state.samples_seen < tc.total_samples {
        let step_start = Instant::now();
        let batch = loader.next();
        wait += step_start.elapsed();
        let p = state.samples_seen;
        let step = trainer.step(batch, p);
        let lr = step.lr;
        if step.applied {
            in_a_row = 0;
            last_loss = step.means[0];
            window.add(&step.means, step.grad_norm);
        } else {
            state.skipped_nonfinite += 1;
            in_a_row += 1;
            tracing::warn!(samples = p, loss = step.means[0], grad_norm = step.grad_norm, "non-finite update skipped");
            if in_a_row >= tc.max_nonfinite {
                bail!(
                    "training stopped at sample {p}: {in_a_row} non-finite updates in a row (train.max_nonfinite = {}); the last checkpoint in {} is intact",
                    tc.max_nonfinite,
                    run.checkpoints().display()
                );
            }
        }
        state.samples_seen += b as u64;
        busy += step_start.elapsed();
        bar.set_position(state.samples_seen);

        if state.samples_seen % tc.log_every == 0 {
            let elapsed = start.elapsed().as_secs_f64();
            let rate = (state.samples_seen - start_samples) as f64 / elapsed.max(1e-9);
            let record = window.record(state.samples_seen, elapsed, rate, (tc.total_samples - state.samples_seen) as f64 / rate.max(1e-9), lr, wait.as_secs_f64() / busy.as_secs_f64().max(1e-9), state.skipped_nonfinite);
            bar.set_message(format!("loss {:.4}  {:.1} samples/s  data wait {:.0}%", record.loss, record.samples_per_s, 100.0 * record.data_wait));
            tracing::info!(
                samples = record.samples,
                loss = record.loss,
                v_mse = record.v_mse,
                grad_norm = record.grad_norm,
                lr = record.lr,
                samples_per_s = record.samples_per_s,
                data_wait = record.data_wait,
                "train"
            );
            log.write(&record)?;
            window = Window::default();
            (wait, busy) = (Duration::ZERO, Duration::ZERO);
        }
        if state.samples_seen % tc.checkpoint_every == 0 || state.samples_seen >= tc.total_samples {
            if !all_finite(trainer.model()) {
                bail!("weights became non-finite at sample {}; no checkpoint written, the last one in {} is intact", state.samples_seen, run.checkpoints().display());
            }
            let path = checkpoint::save(&run.checkpoints(), &state, trainer.model(), &trainer.emas, &trainer.optim, tc.keep_checkpoints)?;
            tracing::info!(samples = state.samples_seen, path = %path.display(), "checkpoint");
            last_checkpoint = Some(path);
        }
    }
    bar.finish_and_clear();
    Ok(TrainSummary { samples_seen: state.samples_seen, resumed_from, last_loss, checkpoint: last_checkpoint })
}

/// Running means over one logging interval.
#[derive(Default)]
struct Window {
    n: f64,
    sums: [f64; 5],
}

impl Window {
    fn add(&mut self, means: &[f64], grad_norm: f64) {
        self.n += 1.0;
        for (s, v) in self.sums.iter_mut().zip(means.iter().chain([grad_norm].iter())) {
            *s += v;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(&self, samples: u64, elapsed_s: f64, samples_per_s: f64, eta_s: f64, lr: f64, data_wait: f64, skipped: u64) -> TrainRecord {
        let m = |i: usize| if self.n > 0.0 { self.sums[i] / self.n } else { f64::NAN };
        TrainRecord {
            samples,
            elapsed_s,
            samples_per_s,
            eta_s,
            loss: m(0),
            v_mse: m(1),
            eps_mse: m(2),
            x_mse: m(3),
            grad_norm: m(4),
            lr,
            data_wait,
            skipped_nonfinite: skipped,
            peak_rss_mib: peak_rss_mib(),
        }
    }
}
