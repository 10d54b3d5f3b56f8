//! `sid2 demo`: the whole pipeline on the bundled real clips, on the CPU, in minutes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use video_io::datasets::video_folder;
use video_io::prepare::{ShardDataset, prepare};
use video_io::shard::Shard;

use crate::config::RunConfig;
use crate::eval::evaluate;
use crate::sample::{generate, load_model, save_clips, write_media};
use crate::train::{RunDir, resolve_config, train};

/// The preset the demo trains.
pub const CONFIG: &str = include_str!("../../configs/tiny_video.toml");

pub struct DemoReport {
    pub data: PathBuf,
    pub run: PathBuf,
    pub samples: PathBuf,
    pub comparisons: Vec<PathBuf>,
    pub eval: PathBuf,
    pub lines: Vec<String>,
}

/// Prepare → train → predict 11 frames from 5 → comparison MP4s → PSNR/SSIM.
pub fn run(clips: &Path, out: &Path, overrides: &[String], count: usize, device: &Device, progress: bool) -> Result<DemoReport> {
    let config = RunConfig::parse(CONFIG, overrides).context("demo config (configs/tiny_video.toml)")?;
    let mut lines = Vec::new();
    let data = out.join("data");
    let listing = video_folder(clips).with_context(|| format!("demo clips {}", clips.display()))?;
    let prepared = prepare(&listing, &config.data, &data, std::thread::available_parallelism().map_or(2, |n| n.get()), progress)?;
    lines.push(format!("prepared {} clips from {} videos into {}", prepared.records, listing.inputs.len(), data.display()));

    let run = RunDir(out.join("run"));
    let config = resolve_config(&run, Some(config))?;
    let summary = train(&run, &data, &config, device, progress)?;
    lines.push(format!("trained to {} samples (final loss {:.4}); metrics in {}", summary.samples_seen, summary.last_loss, run.metrics().display()));

    let (model, weights) = load_model(&run, &config, None, device)?;
    let dataset = ShardDataset::open(&data)?;
    let count = count.min(dataset.len());
    let real: Vec<Vec<u8>> = (0..count).map(|i| dataset.get(i).0.pixels.to_vec()).collect();
    let labels = vec![0i64; count];
    let (generated, stats) = generate(&model, &config, Some(&real), &labels, config.train.seed, 4, device, progress)?;
    let samples = out.join("samples");
    std::fs::create_dir_all(&samples).with_context(|| format!("cannot create {}", samples.display()))?;
    let (frames, side, k) = (config.data.frames, config.data.size, config.diffusion.context_frames);
    save_clips(&samples.join("predictions.bin"), frames, side, &generated, &labels)?;
    save_clips(&samples.join("real.bin"), frames, side, &real, &labels)?;
    let media = write_media(&samples, frames, side, k, &generated, Some(&real), 4, 4)?;
    lines.push(format!(
        "predicted {} frames from {k} for {count} clips with {} ({} network passes each); videos in {}",
        frames - k,
        weights.display(),
        stats.evaluations,
        samples.display()
    ));
    let report = evaluate(&Shard::open(&samples.join("predictions.bin"))?, &Shard::open(&samples.join("real.bin"))?, k)?;
    let eval = samples.join("eval.json");
    std::fs::write(&eval, serde_json::to_string_pretty(&report)?).with_context(|| format!("cannot write {}", eval.display()))?;
    lines.push(format!(
        "predicted frames vs real: PSNR {:.2} dB, SSIM {:.3}; repeating the last context frame: {:.2} dB, {:.3} ({})",
        report.mean_psnr_db,
        report.mean_ssim,
        report.last_frame_psnr_db,
        report.last_frame_ssim,
        eval.display()
    ));
    Ok(DemoReport { data, run: run.0, samples, comparisons: media.comparisons, eval, lines })
}
