//! `sid2 demo`: the whole pipeline on real clips bundled in the binary, on the CPU, in minutes. It
//! starts from weights the project trained itself on 12 real videos (`scripts/pretrain-demo.sh`,
//! examples/checkpoint/NOTICE.md), trains them briefly on the two bundled clips, and predicts 11
//! frames from 5 for clips of a third video that neither training saw. It calls the stages one
//! after another, as a user would.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::RunConfig;
use crate::encode::MediaArgs;
use crate::eval::EvalReport;
use crate::globals::Globals;
use crate::run::RunDir;
use crate::{eval, prepare, sample, train};

/// The preset the demo trains.
pub const CONFIG: &str = include_str!("../../configs/small_video.toml");

/// The demo's fine-tuning: a short run from the bundled weights, at a tenth of the preset's
/// learning rate so two clips do not undo what twelve videos taught.
const FINE_TUNE: [&str; 6] = ["train.total_samples=480", "train.checkpoint_every=480", "train.val_every=480", "train.warmup_samples=0", "train.lr=1e-4", "train.keep_checkpoints=1"];

/// The real clips the demo trains on, bundled so an installed `sid2` runs its demo from any
/// folder (sources and licences: examples/clips/NOTICE.md).
const TRAIN_CLIPS: [(&str, &[u8]); 2] = [
    ("kinetics400_demo.mp4", include_bytes!("../../examples/clips/kinetics400_demo.mp4")),
    ("short_part_0.mp4", include_bytes!("../../examples/clips/short_part_0.mp4")),
];

/// A video of another source repository that neither the bundled weights nor the demo's own
/// training saw: its clips are the ones predicted.
const HELDOUT_CLIP: (&str, &[u8]) = ("heldout_sttn_dogs_jump.mp4", include_bytes!("../../examples/clips/heldout_sttn_dogs_jump.mp4"));

/// EMA weights of configs/small_video.toml after the learning benchmark's training on 12 videos.
const START: &[u8] = include_bytes!("../../examples/checkpoint/small_video.safetensors");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where everything goes: clips/, data/, heldout/, run/, samples/.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Held-out clips to predict.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Override a key of the demo's config (configs/small_video.toml and the fine-tuning above),
    /// e.g. `--set train.total_samples=960`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Instead: class-conditional CIFAR-10 images from the bundled image weights, --count per
    /// class, in seconds (into OUT/images).
    #[arg(long)]
    pub images: bool,
}

/// Bundled clips and weights → prepare → fine-tune → predict held-out clips → MP4s, PNG strips,
/// PSNR/SSIM against repeating the last context frame, the run report.
pub fn run(args: Args, globals: &Globals) -> Result<()> {
    if args.images {
        return crate::demo_images::run(&args.out, args.count as usize, &args.overrides, globals);
    }
    if !video_io::FFMPEG {
        bail!(video_io::NO_FFMPEG);
    }
    let out = &args.out;
    let overrides: Vec<String> = FINE_TUNE.iter().map(|s| s.to_string()).chain(args.overrides.iter().cloned()).collect();
    let config_path = out.join("config.toml");
    let config = RunConfig::parse(CONFIG, &overrides).context("the demo's config (configs/small_video.toml)")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    video_io::atomic::write_bytes(&config_path, &[config.to_toml().as_bytes()])?;
    let train_clips = unpack(&out.join("clips/train"), &TRAIN_CLIPS)?;
    let heldout_clips = unpack(&out.join("clips/heldout"), &[HELDOUT_CLIP])?;
    let start = out.join("start.safetensors");
    video_io::atomic::write_bytes(&start, &[START])?;
    let (data, heldout, run, samples) = (out.join("data"), out.join("heldout"), out.join("run"), out.join("samples"));
    for (videos, shards) in [(&train_clips, &data), (&heldout_clips, &heldout)] {
        let args = prepare::Args { config: config_path.clone(), out: shards.clone(), videos: Some(videos.clone()), images: None, kinetics_csv: None, kinetics_root: None, classes: None, workers: 2, overrides: Vec::new() };
        prepare::run(args, globals)?;
    }
    let train_args = train::Args { run: run.clone(), data, val: Some(heldout.clone()), config: Some(config_path), init: Some(start), overrides: Vec::new(), dry_run: false };
    train::run(train_args, globals)?;
    let media = MediaArgs { fps: 4, upscale: 4 };
    let sample_args = |out: &Path, data: Option<PathBuf>, video: Option<PathBuf>, count: u32, samples_per_clip: u32, frames: Option<u32>| sample::Args {
        run: run.clone(),
        out: out.to_owned(),
        data,
        video,
        count,
        seed: 0,
        samples_per_clip,
        frames,
        ema: None,
        weights: None,
        batch: 4,
        media: media.clone(),
        overrides: Vec::new(),
        overwrite: false,
    };
    let context = config.diffusion.context_frames;
    sample::run(sample_args(&samples, Some(heldout), None, args.count, SAMPLES_PER_CLIP, None), globals)?;
    let report = evaluate(&samples, &run, context, globals)?;
    println!("held-out clips ({}, never trained on), {SAMPLES_PER_CLIP} samples each:", HELDOUT_CLIP.0);
    println!(
        "  whole frames:  PSNR {:.2} dB, SSIM {:.3} (best of {SAMPLES_PER_CLIP}: {:.2} dB, {:.3}); repeating the last context frame: {:.2} dB, {:.3}",
        report.mean_psnr_db,
        report.mean_ssim,
        report.best_of_n.as_ref().map_or(f64::NAN, |b| b.mean_psnr_db),
        report.best_of_n.as_ref().map_or(f64::NAN, |b| b.mean_ssim),
        report.last_frame_psnr_db,
        report.last_frame_ssim
    );
    if let Some(m) = report.moving.as_ref().filter(|m| m.clips_with_motion > 0) {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        println!(
            "  moving pixels ({:.0} % of pixels): PSNR {:.2} dB, SSIM {:.3} (best of {SAMPLES_PER_CLIP}: {:.2} dB, {:.3}); repeating the last context frame: {:.2} dB, {:.3}",
            100.0 * m.fraction,
            v(m.psnr_db),
            v(m.ssim),
            v(m.best_of_n_psnr_db),
            v(m.best_of_n_ssim),
            v(m.last_frame_psnr_db),
            v(m.last_frame_ssim)
        );
    }
    println!("comparison videos (context | real | predicted) and PNG strips in {}", samples.display());
    let rollout = samples.join("rollout");
    sample::run(sample_args(&rollout, None, Some(heldout_clips.join(HELDOUT_CLIP.0)), 1, 1, Some(ROLLOUT_FRAMES)), globals)?;
    let long = evaluate(&rollout, &run, context, globals)?;
    let window = |range: std::ops::Range<usize>| {
        let frames: Vec<&eval::FrameQuality> = long.per_frame.iter().filter(|q| range.contains(&q.frame)).collect();
        frames.iter().map(|q| q.psnr_db).sum::<f64>() / frames.len().max(1) as f64
    };
    let t = config.data.frames;
    println!(
        "a {ROLLOUT_FRAMES}-frame rollout of the held-out video: PSNR {:.2} dB over frames {}-{t}, {:.2} dB over frames {}-{}: {}",
        window(context..t),
        context + 1,
        window(t..ROLLOUT_FRAMES as usize),
        t + 1,
        long.per_frame.last().map_or(t, |q| q.frame + 1),
        rollout.join("clip-000.mp4").display()
    );
    // The stages record what they wrote in the run's events; the report shows them.
    crate::report::refresh(&RunDir::new(&run));
    println!("run report: {}", RunDir::new(&run).report_path().display());
    Ok(())
}

/// Samples per held-out clip: the mean and the best of them are printed.
const SAMPLES_PER_CLIP: u32 = 4;

/// Frames of the demo's rollout (three windows; the held-out video has 33 frames at stride 2).
const ROLLOUT_FRAMES: u32 = 32;

/// `sid2 eval` of the samples in `dir` against their real clips, recorded in the run.
fn evaluate(dir: &Path, run: &Path, context: usize, globals: &Globals) -> Result<EvalReport> {
    let scores = dir.join("eval.json");
    let eval_args = eval::Args {
        pred: dir.join(sample::PREDICTIONS),
        real: dir.join(sample::REAL),
        context,
        out: Some(scores.clone()),
        run: Some(run.to_owned()),
        i3d: None,
        inception: None,
        batch: 4,
        overwrite: false,
    };
    eval::run(eval_args, globals)?;
    Ok(serde_json::from_str(&std::fs::read_to_string(&scores)?)?)
}

/// Writes bundled files into `dir` and returns it.
fn unpack(dir: &Path, files: &[(&str, &[u8])]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in files {
        video_io::atomic::write_bytes(&dir.join(name), &[bytes])?;
    }
    Ok(dir.to_owned())
}
