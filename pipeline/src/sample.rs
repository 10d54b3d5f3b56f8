//! `sid2 sample`: frame-conditional video prediction and class-conditional images from a trained
//! run, with the run's `[sample]` settings (overridable with `--set sample.*`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::s;
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
    /// Seed of the sampling noise; the noise of clip i's sample s depends only on (seed, i, s).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Predictions per clip, stored together in predictions.bin (`sid2 eval` then scores the
    /// best of them and their diversity); the first is the one a single sample gives.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub samples_per_clip: u32,
    /// Roll predictions out to this many frames per clip, window after window, each conditioned
    /// on the last context frames of what came before (real at first, generated after); with
    /// --video long enough, real.bin holds the real frames to score the whole rollout against.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub frames: Option<u32>,
    /// Weights to sample with: an EMA decay the run keeps (default: its first), or `raw`.
    #[arg(long)]
    pub ema: Option<Weights>,
    /// Sample with these weights instead (e.g. from `sid2 ema`), of the run's network.
    #[arg(long, conflicts_with = "ema")]
    pub weights: Option<PathBuf>,
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
    let (t, k) = (config.data.frames, config.diffusion.context_frames);
    let total = args.frames.map_or(t, |f| f as usize);
    if args.frames.is_some() && total <= k {
        bail!("--frames {total}: must be more than the {k} context frames the run predicts from (diffusion.context_frames)");
    }
    let (real, labels) = conditioning(&args, &config, total)?;
    let per_clip = args.samples_per_clip as usize;
    if per_clip > 1 && real.is_none() {
        bail!("--samples-per-clip {per_clip}: is for video prediction; for more images per class, raise --count");
    }
    let device = globals.device_for(config.train.precision)?;
    let (model, weights) = run.load_weights(&config, args.weights.as_deref(), args.ema.unwrap_or_default(), &device)?;
    let record = run.writable();
    if !record {
        tracing::warn!("run folder {} is read-only: these samples are not added to its events and report", run.path().display());
    }
    let mut samples = Vec::new();
    let mut stats = SampleStats::default();
    for s in 0..per_clip {
        let template = if per_clip > 1 { format!("sample {}/{per_clip} {{bar:25}} {{pos}}/{{len}} clips  ETA {{eta}}", s + 1) } else { "sample {bar:25} {pos}/{len} clips  ETA {eta}".to_owned() };
        let bar = globals.bar(labels.len() as u64, &template);
        let seed = sample_seed(args.seed, s);
        let (clips, st) = match &real {
            Some(real) if total != t => rollout(&model, &config, real, &labels, seed, total, args.batch as usize, &device, &bar)?,
            _ => generate(&model, &config, real.as_ref(), &labels, seed, args.batch as usize, &device, &bar)?,
        };
        bar.finish_and_clear();
        samples.push(clips);
        stats = st;
    }
    // Each clip's samples together: clip i's sample s is record i·N + s.
    let interleaved = (per_clip > 1).then(|| Clips::concat(&(0..labels.len()).flat_map(|i| samples.iter().map(move |c| c.select(i..i + 1))).collect::<Vec<_>>()));
    let first = &samples[0];
    let generated = interleaved.as_ref().unwrap_or(first);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    generated.write(&args.out.join(PREDICTIONS))?;
    if let Some(real) = &real {
        real.write(&args.out.join(REAL))?;
    }
    println!(
        "{} samples{} from {} ({} network passes each, {} unconditional passes skipped outside the guidance interval) in {}",
        generated.len(),
        if per_clip > 1 { format!(" ({per_clip} per clip; videos of the first)") } else { String::new() },
        weights.display(),
        stats.evaluations,
        stats.skipped_unconditional,
        args.out.display()
    );
    if let (Some(real), true) = (&real, total != t) {
        let windows = (total - k).div_ceil(t - k);
        let scored = if real.layout().frames as usize >= total { "all of them".to_owned() } else { format!("the first {} (the real video ends there)", real.layout().frames) };
        println!("rollouts of {total} frames in {windows} windows of {} predicted frames; real frames to score against: {scored}", t - k);
    }
    // Comparison videos need the real clip as long as the prediction.
    let paired = real.as_ref().filter(|r| r.layout().frames == first.layout().frames);
    if video_io::FFMPEG || config.data.frames == 1 {
        let media = write_media(&args.out, first, paired, config.diffusion.context_frames, &args.media, &run.classes())?;
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
    }
    Ok(())
}

/// The noise seed of each clip's sample `s`: the run's seed for the first, so that one sample per
/// clip and the first of several are the same prediction.
pub fn sample_seed(seed: u64, s: usize) -> u64 {
    if s == 0 { seed } else { model3d::noise::key(&[seed, s as u64]) }
}

/// The clips to condition on (video runs), with up to `frames` real frames each, and one label
/// per sample.
fn conditioning(args: &Args, config: &RunConfig, frames: usize) -> Result<(Option<Clips>, Vec<i64>)> {
    let (count, k, classes) = (args.count as usize, config.diffusion.context_frames, config.model.num_classes);
    if k == 0 && args.frames.is_some() {
        bail!("--frames: this run has no context frames (diffusion.context_frames = 0) to roll predictions out from");
    }
    let real = match (&args.data, &args.video) {
        (_, Some(_)) if k == 0 => bail!("--video: this run makes class-conditional images (diffusion.context_frames = 0); there are no frames to predict from a video"),
        (Some(dir), _) => Some(from_data(dir, count, config)?),
        (_, Some(path)) if frames > config.data.frames => {
            // As many real frames as the rollout, where the video has them.
            match from_video(path, count, &PrepareConfig { frames, ..config.data.clone() }) {
                Ok(clips) => Some(clips),
                Err(_) => Some(from_video(path, count, &config.data)?),
            }
        }
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

/// Predicts `total` frames of each clip of `real` window after window: the first window is
/// conditioned on the clip's first `diffusion.context_frames` real frames and is exactly
/// [`generate`] with `seed`; each later window `w` is conditioned on the last context frames of
/// what came before and draws its noise from `(seed, w)`.
#[allow(clippy::too_many_arguments)]
pub fn rollout(
    model: &UViT,
    config: &RunConfig,
    real: &Clips,
    labels: &[i64],
    seed: u64,
    total: usize,
    batch: usize,
    device: &Device,
    bar: &indicatif::ProgressBar,
) -> Result<(Clips, SampleStats)> {
    let (t, k) = (config.data.frames, config.diffusion.context_frames);
    let window = |pixels: ndarray::ArrayView5<'_, u8>| Clips::new(pixels.to_owned(), real.labels.clone());
    let (first, stats) = generate(model, config, Some(&window(real.pixels.slice(s![.., ..t, .., .., ..]))), labels, seed, batch, device, bar)?;
    let mut sequence = first.pixels;
    for w in 1u64.. {
        let len = sequence.dim().1;
        if len >= total {
            break;
        }
        // A window of `t` frames whose first `k` condition it (the rest is generated over).
        let (n, _, h, width, c) = sequence.dim();
        let mut context = ndarray::Array5::<u8>::zeros((n, t, h, width, c));
        context.slice_mut(s![.., ..k, .., .., ..]).assign(&sequence.slice(s![.., len - k.., .., .., ..]));
        let (next, _) = generate(model, config, Some(&window(context.view())), labels, model3d::noise::key(&[seed, ROLLOUT, w]), batch, device, bar)?;
        sequence = ndarray::concatenate(ndarray::Axis(1), &[sequence.view(), next.pixels.slice(s![.., k.., .., .., ..])]).expect("windows of one clip layout");
    }
    Ok((Clips::new(sequence.slice(s![.., ..total, .., .., ..]).to_owned(), real.labels.clone()), stats))
}

/// Keys the noise of a rollout's later windows apart from other samples ("ROLL").
const ROLLOUT: u64 = 0x524F_4C4C;

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
