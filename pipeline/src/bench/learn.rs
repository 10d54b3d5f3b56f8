//! `sid2 bench learn`: does a preset learn video it never saw? Trains on one folder of videos for
//! the config's budget (`train.total_samples`), logging the validation loss on another, then
//! predicts held-out clips (context frames → the rest) and scores every predicted frame against
//! the real one and against repeating the last context frame. Writes `learn.json`, the curves as
//! `curves.png` and context | real | predicted strips.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::config::RunConfig;
use crate::encode::{MediaArgs, write_media};
use crate::eval::{EvalReport, compare, write_json};
use crate::globals::Globals;
use crate::plot::{Chart, Series, write_png};
use crate::run::metrics::{read_train, read_val};
use crate::run::{RunDir, Weights};
use crate::sample::generate;
use crate::train::{Job, open_data, train};
use model3d::SamplerKind;
use crate::prepare;

#[derive(clap::Args, Debug)]
pub struct LearnArgs {
    /// The preset to train.
    #[arg(long)]
    pub config: PathBuf,
    /// Videos to train on (a folder, as `sid2 prepare --videos` takes).
    #[arg(long, required_unless_present = "train_images", requires = "heldout_videos", conflicts_with_all = ["train_images", "heldout_images"])]
    pub train_videos: Option<PathBuf>,
    /// Videos never trained on: validation loss during training, predictions scored after.
    #[arg(long, requires = "train_videos")]
    pub heldout_videos: Option<PathBuf>,
    /// Image presets: a class-folder tree of training images (as `sid2 prepare --images` takes).
    #[arg(long, requires = "heldout_images")]
    pub train_images: Option<PathBuf>,
    /// Image presets: test images of the same classes, never trained on (validation loss, the
    /// judge's test accuracy and the real features samples are scored against).
    #[arg(long, requires = "train_images")]
    pub heldout_images: Option<PathBuf>,
    /// Image presets: images sampled per class at each checkpoint.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub per_class: u32,
    /// Image presets: score with this judge instead of training one into OUT/judge.safetensors.
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// Image presets: epochs of the judge trained when none is given or found (`judge train`'s
    /// default; 12 reach 80 % on CIFAR-10's test split, 8 reach 77.8 %: EXPERIMENTS.md).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub judge_epochs: u32,
    /// Where data, run and results go; running again resumes the run.
    #[arg(long)]
    pub out: PathBuf,
    /// Held-out clips to predict, spread evenly over the held-out set.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Sampler steps to score the predictions with (repeat for several), default the config's.
    #[arg(long = "steps", value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: Vec<u32>,
    /// Samplers to score them with (repeat: ancestral, ddim), default the config's.
    #[arg(long = "sampler", value_enum)]
    pub samplers: Vec<SamplerChoice>,
    /// Start from these weights instead of a fresh initialisation.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.total_samples=4800`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// What `bench learn` reports.
#[derive(Debug, Serialize)]
pub struct LearnReport {
    pub config: String,
    pub parameters: u64,
    pub samples: u64,
    pub train_clips: usize,
    pub heldout_clips: usize,
    pub train_s: f64,
    pub samples_per_s: f64,
    /// `(samples, validation loss, validation v-MSE)` after each validation.
    pub val_curve: Vec<(u64, f64, f64)>,
    pub predictions: Vec<Predictions>,
}

/// A sampler for `--sampler`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerChoice {
    Ancestral,
    Ddim,
}

impl SamplerChoice {
    fn kind(self) -> SamplerKind {
        match self {
            Self::Ancestral => SamplerKind::Ancestral,
            Self::Ddim => SamplerKind::Ddim,
        }
    }
}

/// Predictions of the held-out clips with one sampler setting.
#[derive(Debug, Serialize)]
pub struct Predictions {
    pub sampler: SamplerKind,
    pub steps: usize,
    pub sample_s: f64,
    pub eval: EvalReport,
}

pub fn run(args: LearnArgs, globals: &Globals) -> Result<LearnReport> {
    let config = RunConfig::load(&args.config, &args.overrides)?;
    if config.diffusion.context_frames == 0 {
        bail!("{}: bench learn measures video prediction; the config has no context frames", args.config.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let resolved = args.out.join("config.toml");
    video_io::atomic::write_bytes(&resolved, &[config.to_toml().as_bytes()])?;
    let (train_data, heldout_data) = (args.out.join("data-train"), args.out.join("data-heldout"));
    for (videos, data) in [(&args.train_videos, &train_data), (&args.heldout_videos, &heldout_data)] {
        let prepare_args = prepare::Args { config: resolved.clone(), out: data.clone(), videos: videos.clone(), images: None, kinetics_csv: None, kinetics_root: None, classes: None, workers: 2, overrides: Vec::new() };
        prepare::run(prepare_args, globals)?;
    }
    let device = globals.device()?;
    let run = RunDir::new(args.out.join("run"));
    let started = Instant::now();
    let job = Job { run: &run, data: &train_data, val: Some(&heldout_data), init: args.init.as_deref(), given: Some(config) };
    let summary = train(&job, globals)?;
    let config = summary.config.clone();
    let train_s = started.elapsed().as_secs_f64();
    let heldout = open_data(&heldout_data, &config)?;
    let real = heldout.spread(args.count as usize);
    let n = real.len();
    let (model, _) = run.load_model(&config, Weights::Default, &device)?;
    let steps = if args.steps.is_empty() { vec![config.sample.steps] } else { args.steps.iter().map(|&s| s as usize).collect() };
    let samplers = if args.samplers.is_empty() { vec![config.sample.kind] } else { args.samplers.iter().map(|s| s.kind()).collect() };
    let settings: Vec<(SamplerKind, usize)> = samplers.iter().flat_map(|&k| steps.iter().map(move |&s| (k, s))).collect();
    let mut predictions = Vec::new();
    for (sampler, steps) in settings {
        let mut c = config.clone();
        (c.sample.kind, c.sample.steps) = (sampler, steps);
        let started = Instant::now();
        let bar = globals.bar(n as u64, "sample {bar:25} {pos}/{len} clips  ETA {eta}");
        let (generated, _) = generate(&model, &c, Some(&real), &vec![0; n], 0, 8, &device, &bar)?;
        bar.finish_and_clear();
        let sample_s = started.elapsed().as_secs_f64();
        let eval = compare(&generated, &real, c.diffusion.context_frames);
        let media = args.out.join(format!("predictions-{}-{steps}-steps", format!("{sampler:?}").to_lowercase()));
        write_media(&media, &generated.select(0..n.min(4)), Some(&real.select(0..n.min(4))), c.diffusion.context_frames, &MediaArgs { fps: 4, upscale: 4 }, &[])?;
        predictions.push(Predictions { sampler, steps, sample_s, eval });
    }
    let report = LearnReport {
        config: args.config.display().to_string(),
        parameters: model3d::network::cost(&config.model, [1, config.data.size, config.data.size]).params,
        samples: summary.samples_seen,
        train_clips: open_data(&train_data, &config)?.len(),
        heldout_clips: heldout.len(),
        train_s,
        samples_per_s: read_train(&run.metrics_path())?.last().map_or(0.0, |r| r.samples_per_s),
        val_curve: read_val(&run.metrics_path())?.iter().map(|v| (v.samples, v.loss, v.v_mse)).collect(),
        predictions,
    };
    write_curves(&args.out.join("curves.png"), &run, &report)?;
    write_json(&args.out.join("learn.json"), &report)?;
    tracing::info!(out = %args.out.display(), "learn benchmark written");
    Ok(report)
}

/// Training and validation loss over samples, and PSNR per predicted frame against the baseline.
fn write_curves(path: &Path, run: &RunDir, report: &LearnReport) -> Result<()> {
    let train: Vec<(f64, f64)> = read_train(&run.metrics_path())?.iter().map(|r| (r.samples as f64, r.loss)).collect();
    let val: Vec<(f64, f64)> = report.val_curve.iter().map(|&(s, l, _)| (s as f64, l)).collect();
    let losses = Chart {
        title: "loss (held-out: fixed clips, noise levels and noise)".into(),
        x_label: "samples seen".into(),
        y_label: "weighted loss".into(),
        log_y: true,
        series: vec![Series { name: "train".into(), points: train }, Series { name: "held-out".into(), points: val }],
    };
    let mut frames = Chart { title: "held-out predictions: PSNR per frame".into(), x_label: "frame".into(), y_label: "PSNR (dB)".into(), log_y: false, series: Vec::new() };
    for p in &report.predictions {
        frames.series.push(Series { name: format!("{:?}, {} steps", p.sampler, p.steps).to_lowercase(), points: p.eval.per_frame.iter().map(|q| (q.frame as f64, q.psnr_db)).collect() });
    }
    if let Some(p) = report.predictions.first() {
        frames.series.push(Series { name: "last context frame repeated".into(), points: p.eval.per_frame.iter().map(|q| (q.frame as f64, q.last_frame_psnr_db)).collect() });
    }
    write_png(path, &[losses, frames])
}
