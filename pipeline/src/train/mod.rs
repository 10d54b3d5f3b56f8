//! `sid2 train`: the training loop, written out (edm2's `training_loop` is the model): noising
//! with per-frame λ and clean context frames, the weighted loss, global gradient clipping, AdamW
//! with warm-up, EMAs, label dropout, non-finite guards, validation on held-out clips,
//! checkpoints, and a resumable, reproducible sample stream.

pub mod interrupt;
pub mod loader;
pub mod params;
pub mod power_ema;
pub mod trainer;
pub mod validation;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::ProgressBar;
use video_io::prepare::ShardDataset;

use crate::config::RunConfig;
use crate::globals::Globals;
use crate::info;
use crate::run::checkpoint::{self, Checkpoint, TrainState};
use crate::run::events::{self, Event};
use crate::run::snapshots;
use crate::run::metrics::{MetricsLog, Record, TrainRecord, peak_rss_mib};
use crate::run::RunDir;
use loader::Loader;
use params::all_finite;
use trainer::{StepResult, Trainer};
use validation::Validation;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run folder: created at the start, resumed from its newest checkpoint when run again.
    #[arg(long)]
    pub run: PathBuf,
    /// Prepared training shards (the --out of `sid2 prepare`).
    #[arg(long)]
    pub data: PathBuf,
    /// Prepared held-out shards: the loss on a fixed set of their clips is logged every
    /// train.val_every samples.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// The config that starts a run; a resumed run uses the config saved in its folder.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start from these weights (a .safetensors of a run with the same [model] section) instead of
    /// a fresh initialisation; ignored when the run resumes.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=2e-4`; on a resumed run only
    /// train.total_samples may change.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the resolved config and stop.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a finished `train` call reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The run's config as resolved (the saved one when resumed).
    pub config: RunConfig,
    pub samples_seen: u64,
    pub resumed_from: Option<u64>,
    pub last_loss: f64,
    pub checkpoint: Option<PathBuf>,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let run = RunDir::new(&args.run);
    let given = match (&args.config, args.overrides.is_empty()) {
        (Some(path), _) => Some(RunConfig::load(path, &args.overrides)?),
        (None, false) => Some(RunConfig::parse(&run.load_config()?.to_toml(), &args.overrides).with_context(|| format!("--set on run {}", run.path().display()))?),
        (None, true) => None,
    };
    if args.dry_run {
        let config = match given {
            Some(c) => c,
            None => run.load_config()?,
        };
        print!("{}", info::describe(&config));
        return Ok(());
    }
    let job = Job { run: &run, data: &args.data, val: args.val.as_deref(), init: args.init.as_deref(), given };
    let summary = train(&job, globals)?;
    println!(
        "trained to {} samples{}; last loss {:.4}; checkpoint {}",
        summary.samples_seen,
        summary.resumed_from.map(|s| format!(" (resumed at {s})")).unwrap_or_default(),
        summary.last_loss,
        summary.checkpoint.map_or_else(|| "unchanged".into(), |p| p.display().to_string())
    );
    Ok(())
}

/// One training call: where the run lives, what it trains on, and the config given to start it
/// (a resumed run's saved config must agree with it; `None` resumes with the saved one).
pub struct Job<'a> {
    pub run: &'a RunDir,
    pub data: &'a Path,
    pub val: Option<&'a Path>,
    pub init: Option<&'a Path>,
    pub given: Option<RunConfig>,
}

/// Opens prepared shards and checks they fit the run: clip layout, records, classes.
pub fn open_data(dir: &Path, config: &RunConfig) -> Result<ShardDataset> {
    let data = ShardDataset::open(dir).with_context(|| format!("prepared data {}", dir.display()))?;
    let expected = config.data.layout();
    if data.layout() != expected {
        bail!("{}: shards hold clips of {}, the run needs {expected} (data.frames, data.size)", dir.display(), data.layout());
    }
    if data.is_empty() {
        bail!("{}: the prepared data set has no records (see skipped inputs in its manifest.json)", dir.display());
    }
    let classes = data.manifest.classes.len();
    if config.model.num_classes > 0 && classes > config.model.num_classes {
        bail!("{}: the data set has {classes} classes, model.num_classes is {}", dir.display(), config.model.num_classes);
    }
    Ok(data)
}

/// Trains until `train.total_samples`, resuming from the newest intact checkpoint. Every check
/// (config, data, held-out data, device, starting weights, the checkpoint's own config) runs
/// before the first byte is written, under the run's write lock when the run exists; a new run's
/// folder is made only once they pass.
pub fn train(job: &Job<'_>, globals: &Globals) -> Result<TrainSummary> {
    if let Some(init) = job.init {
        crate::paths::existing_file("--init", init)?;
    }
    let existing_lock = job.run.lock_existing("train")?;
    let (config, save) = job.run.plan_config(job.given.clone())?;
    let tc = &config.train;
    let device = globals.device_for(tc.precision)?;
    let data = open_data(job.data, &config)?;
    let validation = job.val.map(|dir| Validation::new(&open_data(dir, &config).context("--val")?, &config, &device)).transpose()?;
    let mut trainer = Trainer::new(&config, &device)?;
    let latest = job.run.latest_checkpoint()?;
    let state = match (latest, job.init) {
        (Some((checkpoint, state)), _) => {
            trained_with(&checkpoint, &state, &config)?;
            trainer.resume(&checkpoint, state)?
        }
        (None, Some(weights)) => {
            trainer.init_from(weights).context("--init")?;
            TrainState::default()
        }
        (None, None) => TrainState::default(),
    };
    let resumed_from = (state.samples_seen > 0).then_some(state.samples_seen);
    let classes = data.manifest.classes.clone();
    let _lock = match existing_lock {
        Some(lock) => {
            if save {
                job.run.save_config(&config)?;
            }
            job.run.save_classes(&classes)?;
            lock
        }
        None => {
            let lock = job.run.create_locked("train")?;
            if let Err(e) = job.run.save_config(&config).and_then(|()| job.run.save_classes(&classes)) {
                job.run.abandon_start(lock);
                return Err(e);
            }
            lock
        }
    };
    interrupt::install();
    let backend = globals.device_name()?;
    job.run.record(&Event::Train { unix_s: events::now(), samples: state.samples_seen, backend, hardware: events::hardware(), commit: events::commit() })?;
    let mut loader = Loader::start(Arc::new(data), tc.batch_size, state.samples_seen, tc.seed, tc.flip)?;
    let bar = globals.bar(tc.total_samples, "train {bar:25} {pos}/{len} samples  ETA {eta}  {msg}");
    bar.set_position(state.samples_seen);
    let log = job.run.open_metrics(state.samples_seen)?;
    let mut progress = Progress::new(state, log, bar);
    while progress.state.samples_seen < tc.total_samples {
        let step_start = Instant::now();
        let batch = loader.next()?;
        progress.wait += step_start.elapsed();
        let log_due = (progress.state.samples_seen + tc.batch_size as u64).is_multiple_of(tc.log_every);
        let result = trainer.step(batch, progress.state.samples_seen, log_due);
        progress.after_step(&result, step_start, tc);
        let p = progress.state.samples_seen;
        if log_due {
            progress.log_train(tc, &result, job.run)?;
        }
        let checkpoint_due = p.is_multiple_of(tc.checkpoint_every) || p >= tc.total_samples;
        let val_due = if tc.val_every > 0 { p.is_multiple_of(tc.val_every) } else { checkpoint_due };
        if let (Some(v), true) = (&validation, val_due) {
            let record = v.run(&trainer, p);
            progress.bar.set_message(format!("val loss {:.4}", record.loss));
            tracing::info!(samples = p, val_loss = record.loss, val_v_mse = record.v_mse, "validation");
            progress.log.write(Record::Val(record))?;
        }
        if tc.snapshot_every().is_some_and(|n| p.is_multiple_of(n)) {
            let state = TrainState { config_hash: Some(config.resume_hash()), ..progress.state.clone() };
            let power: Vec<(f64, &model3d::UViT)> = trainer.power.iter().map(|p| (p.sigma_rel, &p.weights)).collect();
            snapshots::save(&job.run.snapshots_dir(), &state, &power)?;
        }
        let interrupted = interrupt::requested();
        if checkpoint_due || interrupted {
            progress.last_checkpoint = Some(save_checkpoint(job.run, &trainer, &progress.state, &config)?);
            crate::report::refresh(job.run);
        }
        if interrupted {
            progress.bar.finish_and_clear();
            let at = progress.last_checkpoint.as_ref().map_or_else(String::new, |c| c.path().display().to_string());
            return Err(interrupt::Interrupted(format!("interrupted at sample {p}: checkpoint written to {at}; run the same command to resume")).into());
        }
    }
    progress.bar.finish_and_clear();
    let last_checkpoint = progress.last_checkpoint.map(|c| c.path().to_owned());
    Ok(TrainSummary { config: config.clone(), samples_seen: progress.state.samples_seen, resumed_from, last_loss: progress.last_loss, checkpoint: last_checkpoint })
}

/// A checkpoint resumes only under the config it was trained with (but a longer
/// `train.total_samples`), whatever the run folder's `config.toml` says now or whether it is
/// there at all: the first key that differs is named.
fn trained_with(checkpoint: &Checkpoint, state: &TrainState, config: &RunConfig) -> Result<()> {
    let Some(hash) = &state.config_hash else { return Ok(()) }; // written before hashes were recorded
    if *hash == config.resume_hash() {
        return Ok(());
    }
    let file = checkpoint.config_file();
    let trained = RunConfig::load(&file, &[]).with_context(|| format!("checkpoint {} was trained with another config", checkpoint.path().display()))?;
    match trained.first_difference(config) {
        Some((key, was, now)) => bail!(
            "checkpoint {} was trained with {key} = {was}, the run now gives {now}; resume with the config it was trained with (only train.total_samples may change) or choose a new --run",
            checkpoint.path().display()
        ),
        None => bail!("{}: does not match the hash recorded in its state.json (damaged)", file.display()),
    }
}

fn save_checkpoint(run: &RunDir, trainer: &Trainer, state: &TrainState, config: &RunConfig) -> Result<Checkpoint> {
    let samples = state.samples_seen;
    if !all_finite(trainer.model()) {
        bail!("weights became non-finite at sample {samples}; no checkpoint written ({})", last_checkpoint_words(run));
    }
    let state = TrainState { config_hash: Some(config.resume_hash()), ..state.clone() };
    let saved = checkpoint::save(&run.checkpoints_dir(), &state, &config.to_toml(), trainer.model(), &trainer.averages(), &trainer.optim, config.train.keep_checkpoints)?;
    tracing::info!(samples, path = %saved.path().display(), "checkpoint");
    Ok(saved)
}

/// What a stopped run still has: its newest intact checkpoint, or none.
fn last_checkpoint_words(run: &RunDir) -> String {
    match run.latest_checkpoint() {
        Ok(Some((c, _))) => format!("the last checkpoint, {}, is intact", c.path().display()),
        _ => "the run has no checkpoint yet".to_owned(),
    }
}

/// The loop's bookkeeping between log lines: counters, device-side sums, timings, the status
/// line. Values computed on the device are read back only at log steps.
struct Progress {
    state: TrainState,
    log: MetricsLog,
    bar: ProgressBar,
    start: Instant,
    start_samples: u64,
    /// `[1]` each, on the device: sums of the loss, the gradient norm and the non-finite flag
    /// over the interval.
    sums: Option<[Tensor<1>; 3]>,
    /// `[1]`, on the device: the current run of consecutive non-finite steps, across intervals.
    in_a_row: Option<Tensor<1>>,
    steps: u32,
    wait: Duration,
    busy: Duration,
    last_loss: f64,
    last_checkpoint: Option<Checkpoint>,
}

impl Progress {
    fn new(state: TrainState, log: MetricsLog, bar: ProgressBar) -> Self {
        Self {
            start_samples: state.samples_seen,
            state,
            log,
            bar,
            start: Instant::now(),
            sums: None,
            in_a_row: None,
            steps: 0,
            wait: Duration::ZERO,
            busy: Duration::ZERO,
            last_loss: f64::NAN,
            last_checkpoint: None,
        }
    }

    /// Counts the step; every sum stays on the device.
    fn after_step(&mut self, step: &StepResult, started: Instant, tc: &crate::config::TrainConfig) {
        let (loss, norm, bad) = (step.loss.clone(), step.grad_norm.clone(), step.nonfinite.clone());
        self.in_a_row = Some(match self.in_a_row.take() {
            None => bad.clone(),
            Some(run) => run.add_scalar(1.0) * bad.clone(),
        });
        self.sums = Some(match self.sums.take() {
            None => [loss, norm, bad],
            Some([l, n, b]) => [l + loss, n + norm, b + bad],
        });
        self.steps += 1;
        self.state.samples_seen += tc.batch_size as u64;
        self.busy += started.elapsed();
        self.bar.set_position(self.state.samples_seen);
    }

    /// Reads the interval's sums back, writes them to the log and the status line, and stops
    /// training after `train.max_nonfinite` non-finite steps in a row.
    fn log_train(&mut self, tc: &crate::config::TrainConfig, step: &StepResult, run: &RunDir) -> Result<()> {
        let samples = self.state.samples_seen;
        let [loss, norm, bad] = self.sums.take().expect("a step before every log");
        let run_length = self.in_a_row.clone().expect("a step before every log");
        let read = Tensor::cat(vec![loss, norm, bad, run_length], 0).into_data().convert::<f64>().try_into_vec::<f64>().expect("f64 sums");
        let (n, in_a_row) = (self.steps.max(1) as f64, read[3] as u32);
        self.state.skipped_nonfinite += read[2] as u64;
        if in_a_row >= tc.max_nonfinite {
            bail!("training stopped at sample {samples}: {in_a_row} non-finite updates in a row (train.max_nonfinite = {}); {}", tc.max_nonfinite, last_checkpoint_words(run));
        }
        let elapsed_s = self.start.elapsed().as_secs_f64();
        let samples_per_s = (samples - self.start_samples) as f64 / elapsed_s.max(1e-9);
        let [v_mse, eps_mse, x_mse] = step.monitor.unwrap_or([f64::NAN; 3]);
        self.last_loss = read[0] / n;
        let record = TrainRecord {
            samples,
            elapsed_s,
            samples_per_s,
            eta_s: (tc.total_samples - samples) as f64 / samples_per_s.max(1e-9),
            loss: self.last_loss,
            v_mse,
            eps_mse,
            x_mse,
            grad_norm: read[1] / n,
            lr: step.lr,
            data_wait: self.wait.as_secs_f64() / self.busy.as_secs_f64().max(1e-9),
            skipped_nonfinite: self.state.skipped_nonfinite,
            peak_rss_mib: peak_rss_mib(),
        };
        self.bar.set_message(format!("loss {:.4}  {:.1} samples/s  data wait {:.0}%", record.loss, record.samples_per_s, 100.0 * record.data_wait));
        tracing::info!(samples, loss = record.loss, v_mse, grad_norm = record.grad_norm, lr = step.lr, samples_per_s, data_wait = record.data_wait, "train");
        self.log.write(Record::Train(record))?;
        (self.steps, self.wait, self.busy) = (0, Duration::ZERO, Duration::ZERO);
        Ok(())
    }
}
