//! `sid2 bench learn` for class-conditional image presets: does the model generate images of the
//! class it is asked for? Prepares the training and test images, trains for the config's budget
//! with the test images as validation data, trains the judge (or takes one), then at every kept
//! checkpoint samples `--per-class` images of each class with the run's guidance, the same noise
//! at every checkpoint, and scores them with the judge against the test images. Writes
//! `learn.json`, the curves as `curves.png`, the last checkpoint's samples as `samples.png` (one
//! row per class) beside `real.png`, the same grid of real test images.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use model3d::{SamplerConfig, UViT};
use ndarray::Axis;
use serde::Serialize;
use video_io::clips::Clips;

use super::learn::LearnArgs;
use crate::class_grid;
use crate::config::RunConfig;
use crate::eval::write_json;
use crate::globals::Globals;
use crate::judge::{self, Loaded, Plan, Reference, Scores, ceiling_scores, frames, labelled_images};
use crate::plot::{Chart, Series, write_png};
use crate::prepare;
use crate::run::RunDir;
use crate::run::events::{self, Event};
use crate::run::checkpoint::load_module;
use crate::run::metrics::{read_train, read_val};
use crate::sample::generate;
use crate::train::{Job, train};

/// Images per row of the PNG grids.
const GRID_COLUMNS: usize = 10;

/// What the image learning benchmark reports.
#[derive(Debug, Serialize)]
pub struct ImageLearnReport {
    pub config: String,
    pub parameters: u64,
    pub samples: u64,
    pub train_images: usize,
    pub heldout_images: usize,
    /// Seconds of training, over every call that trained the run.
    pub train_s: f64,
    pub samples_per_s: f64,
    /// `(samples, validation loss, validation v-MSE)` after each validation.
    pub val_curve: Vec<(u64, f64, f64)>,
    pub judge: JudgeSummary,
    pub chance: f64,
    pub per_class: usize,
    pub sampler: SamplerConfig,
    /// The judge's scores of each kept checkpoint's samples, oldest first.
    pub checkpoints: Vec<CheckpointScores>,
    /// The same scores of as many real training images (the ceiling).
    pub ceiling: Scores,
}

#[derive(Debug, Serialize)]
pub struct JudgeSummary {
    pub path: String,
    pub params: u64,
    pub test_accuracy: Option<f64>,
    pub epochs: usize,
}

#[derive(Debug, Serialize)]
pub struct CheckpointScores {
    pub samples: u64,
    pub weights: String,
    pub sample_s: f64,
    /// Network passes per image, and the unconditional ones the guidance interval saved.
    pub network_passes: usize,
    pub skipped_unconditional: usize,
    pub scores: Scores,
}

pub fn run(args: LearnArgs, globals: &Globals) -> Result<ImageLearnReport> {
    let (Some(train_images), Some(heldout_images)) = (&args.train_images, &args.heldout_images) else {
        bail!("bench learn on images needs --train-images and --heldout-images");
    };
    let config = RunConfig::load(&args.config, &args.overrides)?;
    if config.data.frames != 1 || config.diffusion.context_frames != 0 || config.model.num_classes == 0 {
        bail!("{}: --train-images measures class-conditional image models (data.frames = 1, model.num_classes > 0); for video use --train-videos", args.config.display());
    }
    if let Some(j) = &args.judge {
        crate::paths::existing_file("--judge", j)?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let resolved = args.out.join("config.toml");
    video_io::atomic::write_bytes(&resolved, &[config.to_toml().as_bytes()])?;
    let (train_data, heldout_data) = (args.out.join("data-train"), args.out.join("data-heldout"));
    for (images, data) in [(train_images, &train_data), (heldout_images, &heldout_data)] {
        let prepare_args = prepare::Args { config: resolved.clone(), out: data.clone(), videos: None, images: Some(images.clone()), kinetics_csv: None, kinetics_root: None, classes: None, workers: 2, overrides: Vec::new() };
        prepare::run(prepare_args, globals)?;
    }
    let (train_set, heldout_set) = (labelled_images(&train_data, "--train-images")?, labelled_images(&heldout_data, "--heldout-images")?);
    if train_set.1 != heldout_set.1 {
        bail!("--heldout-images {}: classes {:?} differ from --train-images' {:?}", heldout_images.display(), heldout_set.1, train_set.1);
    }
    let run = RunDir::new(args.out.join("run"));
    let started = Instant::now();
    let job = Job { run: &run, data: &train_data, val: Some(&heldout_data), init: args.init.as_deref(), given: Some(config) };
    let summary = train(&job, globals)?;
    let train_s = started.elapsed().as_secs_f64();
    let config = summary.config.clone();
    let device = globals.device()?;
    let judge = match &args.judge {
        Some(path) => judge::load(path, &device)?,
        None => {
            let path = args.out.join("judge.safetensors");
            if !path.exists() {
                judge::train_and_save(&train_set, Some(&heldout_set), &path, &Plan::default_with(args.judge_epochs as usize), globals)?;
            }
            judge::load(&path, &device)?
        }
    };
    let heldout = heldout_set.0.clips(0..heldout_set.0.len());
    judge.check(&heldout_data, heldout.layout())?;
    if judge.card.shape.classes != train_set.1 {
        bail!("{}: the judge knows classes {:?}, the images are of {:?}", judge.path.display(), judge.card.shape.classes, train_set.1);
    }
    let reference = Reference::new(&judge, frames(&heldout), &device)?;
    let classes = config.model.num_classes.min(train_set.1.len());
    let per_class = args.per_class as usize;
    let labels: Vec<i64> = (0..classes as i64).flat_map(|c| std::iter::repeat_n(c, per_class)).collect();
    let ceiling = ceiling_scores(&judge, &train_set.0, labels.len(), &reference, &device)?;
    let mut checkpoints = Vec::new();
    let mut last = None;
    for checkpoint in run.checkpoints()? {
        let Ok(state) = checkpoint.verify() else {
            tracing::warn!(checkpoint = %checkpoint.path().display(), "damaged checkpoint left out of the judge's curve");
            continue;
        };
        let (file, weights) = match config.train.ema_decays.first() {
            Some(&d) => (checkpoint.ema_file(d), format!("ema-{d}")),
            None => (checkpoint.model_file(), "raw".to_owned()),
        };
        let model = load_module(UViT::new(&config.model, &device), &file)?;
        let started = Instant::now();
        let bar = globals.bar(labels.len() as u64, &format!("checkpoint {} {{bar:25}} {{pos}}/{{len}} images  ETA {{eta}}", state.samples_seen));
        let (generated, stats) = generate(&model, &config, None, &labels, 0, 64, &device, &bar)?;
        bar.finish_and_clear();
        let sample_s = started.elapsed().as_secs_f64();
        let ids: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        let scores = judge::scores(&judge, frames(&generated), &ids, &reference, &device)?;
        tracing::info!(samples = state.samples_seen, class_accuracy = scores.class_accuracy, judge_fd = scores.judge_fd, "checkpoint judged");
        checkpoints.push(CheckpointScores { samples: state.samples_seen, weights, sample_s, network_passes: stats.evaluations, skipped_unconditional: stats.skipped_unconditional, scores });
        last = Some(generated);
    }
    let Some(generated) = last else { bail!("{}: no intact checkpoint to sample", run.path().display()) };
    write_grid(&args.out.join("samples.png"), &generated, &train_set.1)?;
    write_grid(&args.out.join("real.png"), &heldout, &train_set.1)?;
    let report = ImageLearnReport {
        config: args.config.display().to_string(),
        parameters: model3d::network::cost(&config.model, [1, config.data.size, config.data.size]).params,
        samples: summary.samples_seen,
        train_images: train_set.0.len(),
        heldout_images: heldout_set.0.len(),
        // Over every call that trained the run (a resumed run's metrics keep counting).
        train_s: read_train(&run.metrics_path())?.last().map_or(train_s, |r| r.elapsed_s),
        samples_per_s: read_train(&run.metrics_path())?.last().map_or(0.0, |r| r.samples_per_s),
        val_curve: read_val(&run.metrics_path())?.iter().map(|v| (v.samples, v.loss, v.v_mse)).collect(),
        judge: JudgeSummary { path: judge.path.display().to_string(), params: judge.card.params, test_accuracy: judge.card.test_accuracy, epochs: judge.card.history.len() },
        chance: 1.0 / judge.card.shape.classes.len() as f64,
        per_class,
        sampler: config.sample.clone(),
        checkpoints,
        ceiling,
    };
    write_curves(&args.out.join("curves.png"), &run, &report)?;
    let learn = args.out.join("learn.json");
    write_json(&learn, &report)?;
    let path = std::path::absolute(&learn).unwrap_or(learn);
    run.record(&Event::Judge { unix_s: events::now(), path })?;
    crate::report::refresh(&run);
    print_summary(&report, &judge);
    Ok(report)
}

/// Up to [`GRID_COLUMNS`] images of each class, one row per class.
fn write_grid(path: &Path, clips: &Clips, classes: &[String]) -> Result<()> {
    let mut picks = Vec::new();
    for class in 0..classes.len() as i32 {
        picks.extend(clips.labels.iter().enumerate().filter(|&(_, &l)| l == class).map(|(i, _)| i).take(GRID_COLUMNS));
    }
    let images = frames(clips).select(Axis(0), &picks);
    let upscaled: Vec<_> = images.outer_iter().map(|i| video_io::encode::upscale(i.insert_axis(Axis(0)), 2)).collect();
    let views: Vec<_> = upscaled.iter().map(|i| i.index_axis(Axis(0), 0)).collect();
    let labels: Vec<i32> = picks.iter().map(|&i| clips.labels[i]).collect();
    class_grid::write(path, &class_grid::rows(&views, &labels, classes))
}

fn print_summary(report: &ImageLearnReport, judge: &Loaded) {
    let accuracy = judge.card.test_accuracy.map_or("unmeasured".to_owned(), |a| format!("{:.1}%", 100.0 * a));
    eprintln!("judge {}: test accuracy {accuracy}; chance {:.1}%", judge.path.display(), 100.0 * report.chance);
    eprintln!("{:>10} {:>10} {:>9} {:>9} {:>7}", "samples", "class acc", "judge-FD", "precision", "recall");
    for c in &report.checkpoints {
        let s = &c.scores;
        eprintln!("{:>10} {:>9.1}% {:>9.2} {:>9.3} {:>7.3}", c.samples, 100.0 * s.class_accuracy, s.judge_fd, s.precision, s.recall);
    }
    let s = &report.ceiling;
    eprintln!("{:>10} {:>9.1}% {:>9.2} {:>9.3} {:>7.3}", "real", 100.0 * s.class_accuracy, s.judge_fd, s.precision, s.recall);
}

/// Losses over samples, then the judge's scores per checkpoint with the real images' ceiling.
fn write_curves(path: &Path, run: &RunDir, report: &ImageLearnReport) -> Result<()> {
    let train: Vec<(f64, f64)> = read_train(&run.metrics_path())?.iter().map(|r| (r.samples as f64, r.loss)).collect();
    let val: Vec<(f64, f64)> = report.val_curve.iter().map(|&(s, l, _)| (s as f64, l)).collect();
    let losses = Chart {
        title: "loss (held-out: fixed test images, noise levels and noise)".into(),
        x_label: "samples seen".into(),
        y_label: "weighted loss".into(),
        log_y: true,
        series: vec![Series { name: "train".into(), points: train }, Series { name: "held-out".into(), points: val }],
    };
    let at = |f: fn(&Scores) -> f64| -> Vec<(f64, f64)> { report.checkpoints.iter().map(|c| (c.samples as f64, f(&c.scores))).collect() };
    let flat = |v: f64| -> Vec<(f64, f64)> { report.checkpoints.iter().map(|c| (c.samples as f64, v)).collect() };
    let fractions = Chart {
        title: "judge: samples of each checkpoint (real training images: ceiling)".into(),
        x_label: "samples seen".into(),
        y_label: "fraction".into(),
        log_y: false,
        series: vec![
            Series { name: "class accuracy".into(), points: at(|s| s.class_accuracy) },
            Series { name: "precision".into(), points: at(|s| s.precision) },
            Series { name: "recall".into(), points: at(|s| s.recall) },
            Series { name: "class accuracy, real".into(), points: flat(report.ceiling.class_accuracy) },
            Series { name: "chance".into(), points: flat(report.chance) },
        ],
    };
    let distance = Chart {
        title: "judge-FD to the test images (the judge's features, not FID)".into(),
        x_label: "samples seen".into(),
        y_label: "judge-FD".into(),
        log_y: true,
        series: vec![Series { name: "samples".into(), points: at(|s| s.judge_fd) }, Series { name: "real training images".into(), points: flat(report.ceiling.judge_fd) }],
    };
    write_png(path, &[losses, fractions, distance])
}
