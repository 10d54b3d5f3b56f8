//! `sid2 sample`: frame-conditional video prediction and class-conditional images from a trained
//! run, with the run's `[sample]` settings (overridable with `--set sample.*`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use model3d::network::compute_copy;
use model3d::sampler::sample;
use model3d::{SampleRequest, SampleStats, UViT};
use video_io::clips::Clips;
use video_io::datasets::{Input, InputKind};
use video_io::prepare::{PrepareConfig, clips_of};

use crate::config::RunConfig;
use crate::encode::{MediaArgs, is_media_name, write_media};
use crate::globals::Globals;
use crate::paths::{check_output_dir, existing_file};
use crate::run::events::{self, Event};
use crate::run::{RunDir, Weights};
use crate::tensor::{clips_to_tensor, tensor_to_clips};
use crate::train::open_data;

/// Generated clips, as `sample` writes them into `--out`.
pub const PREDICTIONS: &str = "predictions.bin";
/// The real clips whose first frames conditioned the predictions.
pub const REAL: &str = "real.bin";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trained run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Where predictions.bin, real.bin and the videos go.
    #[arg(long)]
    pub out: PathBuf,
    /// Condition on prepared clips: the first --count records of these shards.
    #[arg(long, group = "source")]
    pub data: Option<PathBuf>,
    /// Condition on the first --count clips of a video file.
    #[arg(long, group = "source")]
    pub video: Option<PathBuf>,
    /// Clips to predict, or images per class.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Seed of the sampling noise; clip i's noise depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights to sample with: an EMA decay the run keeps (default: its first), or `raw`.
    #[arg(long)]
    pub ema: Option<Weights>,
    /// Clips per network batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    #[command(flatten)]
    pub media: MediaArgs,
    /// Sampler overrides, e.g. sample.steps=128 or sample.guidance=1.5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Write even where an output would replace an input.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let run = RunDir::new(&args.run);
    if let Some(bad) = args.overrides.iter().find(|o| !o.trim_start().starts_with("sample.")) {
        bail!("--set {bad}: only sample.* keys can change at sampling time");
    }
    let config = RunConfig::parse(&run.load_config()?.to_toml(), &args.overrides).with_context(|| format!("--set on run {}", run.path().display()))?;
    // Every check on the inputs comes before anything is loaded or written.
    if let Some(video) = &args.video {
        existing_file("--video", video)?;
    }
    let writes = |name: &str| name == PREDICTIONS || name == REAL || is_media_name(name);
    check_output_dir("--out", &args.out, writes, &args.video.iter().map(PathBuf::as_path).collect::<Vec<_>>(), args.overwrite)?;
    let (real, labels) = conditioning(&args, &config)?;
    let device = globals.device()?;
    let (model, weights) = run.load_model(&config, args.ema.unwrap_or_default(), &device)?;
    let record = run.writable();
    if !record {
        tracing::warn!("run folder {} is read-only: these samples are not added to its events and report", run.path().display());
    }
    let bar = globals.bar(labels.len() as u64, "sample {bar:25} {pos}/{len} clips  ETA {eta}");
    let (generated, stats) = generate(&model, &config, real.as_ref(), &labels, args.seed, args.batch as usize, &device, &bar)?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    generated.write(&args.out.join(PREDICTIONS))?;
    if let Some(real) = &real {
        real.write(&args.out.join(REAL))?;
    }
    println!(
        "{} samples from {} ({} network passes each, {} unconditional passes skipped outside the guidance interval) in {}",
        generated.len(),
        weights.display(),
        stats.evaluations,
        stats.skipped_unconditional,
        args.out.display()
    );
    if video_io::FFMPEG || config.data.frames == 1 {
        let media = write_media(&args.out, &generated, real.as_ref(), config.diffusion.context_frames, &args.media)?;
        for p in media.files() {
            println!("  {}", p.display());
        }
    } else {
        println!("no MP4s from a build without FFmpeg: run `sid2 encode --input {PREDICTIONS}` where FFmpeg is");
    }
    if record {
        let path = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
        let weights = std::path::absolute(&weights).unwrap_or(weights);
        run.record(&Event::Samples { unix_s: events::now(), path, clips: generated.len(), weights, steps: config.sample.steps })?;
        crate::report::refresh(&run);
    }
    Ok(())
}

/// The clips to condition on (video runs) and one label per sample.
fn conditioning(args: &Args, config: &RunConfig) -> Result<(Option<Clips>, Vec<i64>)> {
    let (count, k, classes) = (args.count as usize, config.diffusion.context_frames, config.model.num_classes);
    let real = match (&args.data, &args.video) {
        (_, Some(_)) if k == 0 => bail!("--video: this run makes class-conditional images (diffusion.context_frames = 0); there are no frames to predict from a video"),
        (Some(dir), _) => Some(from_data(dir, count, config)?),
        (_, Some(path)) => Some(from_video(path, count, &config.data)?),
        (None, None) if k == 0 => None,
        (None, None) => bail!("this run predicts from {k} context frames: give --data or --video"),
    };
    let labels = match &real {
        Some(clips) if classes == 0 => vec![0; clips.len()],
        Some(clips) => {
            if let Some((i, l)) = clips.labels.iter().enumerate().find(|&(_, &l)| l < 0 || l as usize >= classes) {
                bail!("clip {i} of the conditioning data has label {l}; this run's model has model.num_classes = {classes}");
            }
            clips.labels.iter().map(|&l| l as i64).collect()
        }
        None => (0..classes.max(1) as i64).flat_map(|c| std::iter::repeat_n(c, count)).collect(),
    };
    Ok((real, labels))
}

fn from_data(dir: &Path, count: usize, config: &RunConfig) -> Result<Clips> {
    let data = open_data(dir, config)?;
    Ok(data.clips(0..count.min(data.len())))
}

fn from_video(path: &Path, count: usize, data: &PrepareConfig) -> Result<Clips> {
    let input = Input { path: path.to_owned(), label: 0, kind: InputKind::Video { range: Default::default() } };
    let taken = clips_of(&input, &PrepareConfig { clips_per_video: count, ..data.clone() }).with_context(|| format!("--video {}", path.display()))?;
    if let Some(d) = &taken.damage {
        tracing::warn!(path = %path.display(), frame = d.frame, reason = %d.reason, "damaged video: using the clips before the damage");
    }
    Ok(taken.clips)
}

/// Generates one clip per entry of `labels` with the `[sample]` settings of `config`, holding the
/// first `diffusion.context_frames` frames of `real` (when given) fixed. Clip `i` draws its noise
/// from `(seed, i)`, so the result does not depend on `batch`.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &UViT,
    config: &RunConfig,
    real: Option<&Clips>,
    labels: &[i64],
    seed: u64,
    batch: usize,
    device: &Device,
    bar: &indicatif::ProgressBar,
) -> Result<(Clips, SampleStats)> {
    let diffusion = config.diffusion.build(config.data.frames, config.data.size)?;
    let model = &compute_copy(model, config.train.precision); // the network in the run's precision
    let (frames, side, k) = (config.data.frames, config.data.size, diffusion.context_frames);
    let mut generated = Vec::new();
    let mut stats = SampleStats::default();
    for start in (0..labels.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(labels.len());
        let context = match (real, k) {
            (_, 0) => None,
            (Some(real), _) => Some(clips_to_tensor(&real.select(start..end), device).narrow(1, 0, k)),
            (None, _) => bail!("this config predicts from {k} context frames: give clips to condition on"),
        };
        let request = SampleRequest {
            shape: [end - start, frames, 3, side, side],
            labels: Tensor::from_data(TensorData::new(labels[start..end].to_vec(), [end - start]), device),
            context,
            seed,
            first_index: start as u64,
        };
        let (clips, s) = sample(model, &diffusion.schedule, diffusion.prediction, &config.sample, &request, device);
        stats = s;
        let clips = tensor_to_clips(clips, labels[start..end].iter().map(|&l| l as i32).collect());
        generated.push(clips);
        bar.set_position(end as u64);
    }
    if generated.is_empty() {
        bail!("nothing to generate: no labels");
    }
    Ok((Clips::concat(&generated), stats))
}
