//! `sid2 demo`: the whole pipeline on real clips bundled in the binary, on the CPU, in minutes:
//! it calls the stages one after another, as a user would.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::encode::MediaArgs;
use crate::globals::Globals;
use crate::{eval, prepare, sample, train};

/// The preset the demo trains.
pub const CONFIG: &str = include_str!("../../configs/tiny_video.toml");

/// The real clips the demo trains on, bundled so that an installed `sid2` runs its demo from any
/// folder (sources and licences: examples/clips/NOTICE.md).
const TRAIN_CLIPS: [(&str, &[u8]); 2] = [
    ("kinetics400_demo.mp4", include_bytes!("../../examples/clips/kinetics400_demo.mp4")),
    ("short_part_0.mp4", include_bytes!("../../examples/clips/short_part_0.mp4")),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where everything goes: clips/, data/, run/, samples/.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Clips to predict.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Override a key of the demo's config (configs/tiny_video.toml), e.g. `--set train.total_samples=480`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Bundled clips → prepare → train → predict 11 frames from 5 → MP4s and PNG strips → PSNR/SSIM.
pub fn run(args: Args, globals: &Globals) -> Result<()> {
    if !video_io::FFMPEG {
        bail!(video_io::NO_FFMPEG);
    }
    let out = &args.out;
    let clips = unpack(&out.join("clips"), &TRAIN_CLIPS)?;
    let config = out.join("config.toml");
    video_io::atomic::write_bytes(&config, &[CONFIG.as_bytes()])?;
    let (data, run, samples) = (out.join("data"), out.join("run"), out.join("samples"));
    prepare::run(
        prepare::Args {
            config: config.clone(),
            out: data.clone(),
            videos: Some(clips),
            images: None,
            kinetics_csv: None,
            kinetics_root: None,
            classes: None,
            workers: 2,
            overrides: args.overrides.clone(),
        },
        globals,
    )?;
    let train_args = train::Args { run: run.clone(), data: data.clone(), val: None, config: Some(config), init: None, overrides: args.overrides.clone(), dry_run: false };
    train::run(train_args, globals)?;
    let media = MediaArgs { fps: 4, upscale: 4 };
    let sample_args = sample::Args { run: run.clone(), out: samples.clone(), data: Some(data), video: None, count: args.count, seed: 0, ema: None, batch: 4, media, overrides: Vec::new() };
    sample::run(sample_args, globals)?;
    let report = samples.join("eval.json");
    let eval_args = eval::Args {
        pred: samples.join(sample::PREDICTIONS),
        real: samples.join(sample::REAL),
        context: crate::config::RunConfig::parse(CONFIG, &args.overrides)?.diffusion.context_frames,
        out: Some(report.clone()),
        run: Some(run.clone()),
        i3d: None,
        inception: None,
        batch: 4,
    };
    eval::run(eval_args, globals)?;
    println!("comparison videos (context | real | predicted) and PNG strips in {}; scores in {}", samples.display(), report.display());
    println!("run report: {}", crate::run::RunDir::new(&run).report_path().display());
    Ok(())
}

/// Writes bundled files into `dir` and returns it.
fn unpack(dir: &Path, files: &[(&str, &[u8])]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in files {
        video_io::atomic::write_bytes(&dir.join(name), &[bytes])?;
    }
    Ok(dir.to_owned())
}
