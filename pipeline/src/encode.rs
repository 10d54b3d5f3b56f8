//! `sid2 encode`: stored clips (what `sample` writes, or any shard) to viewable files: H.264 MP4s
//! per clip, context | real | predicted comparison MP4s and PNG strips when the real clips are
//! given, or a PNG grid for images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::{Array4, Axis, s};
use video_io::clips::Clips;
use video_io::encode::{mark_frames, side_by_side, upscale, write_mp4, write_png_grid};
use video_io::shard::Shard;

use crate::class_grid;
use crate::globals::Globals;
use crate::paths::{check_output_dir, existing_file};

/// How clips are shown.
#[derive(clap::Args, Clone, Debug)]
pub struct MediaArgs {
    /// Frame rate of the MP4s.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub fps: u32,
    /// Integer (nearest-neighbour) upscale of the frames, so 64x64 clips are viewable.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub upscale: u32,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A shard of clips, e.g. predictions.bin from `sid2 sample`.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// The real clips paired with --input (real.bin), for context | real | predicted videos.
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Leading context frames, marked in green.
    #[arg(long, default_value_t = 0)]
    pub context: usize,
    #[command(flatten)]
    pub media: MediaArgs,
    /// Write even where an output would replace an input.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: Args, _globals: &Globals) -> Result<()> {
    existing_file("--input", &args.input)?;
    if let Some(real) = &args.real {
        existing_file("--real", real)?;
    }
    let inputs: Vec<&Path> = std::iter::once(args.input.as_path()).chain(args.real.as_deref()).collect();
    check_output_dir("--out", &args.out, is_media_name, &inputs, args.overwrite)?;
    let shard = Shard::open(&args.input)?;
    if shard.len == 0 {
        bail!("--input {}: holds no clips, nothing to encode", args.input.display());
    }
    let clips = Clips::read(&shard);
    let real = match &args.real {
        Some(path) => {
            let real = Shard::open(path)?;
            if real.layout != shard.layout || real.len != shard.len {
                bail!("{} ({} clips of {}) does not pair with {} ({} clips of {})", path.display(), real.len, real.layout, args.input.display(), shard.len, shard.layout);
            }
            Some(Clips::read(&real))
        }
        None => None,
    };
    if args.context >= shard.layout.frames as usize && shard.layout.frames > 1 {
        bail!("--context {}: the clips have {} frames", args.context, shard.layout.frames);
    }
    for p in write_media(&args.out, &clips, real.as_ref(), args.context, &args.media, &[])?.files() {
        println!("{}", p.display());
    }
    Ok(())
}

/// Viewable files written for a set of clips.
#[derive(Debug, Default)]
pub struct Media {
    pub videos: Vec<PathBuf>,
    pub comparisons: Vec<PathBuf>,
    /// Context | real | predicted frames as PNG, one per clip.
    pub strips: Vec<PathBuf>,
    pub grid: Option<PathBuf>,
}

impl Media {
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.comparisons.iter().chain(&self.strips).chain(&self.videos).chain(&self.grid)
    }
}

/// Whether [`write_media`] writes files of this name.
pub fn is_media_name(name: &str) -> bool {
    let numbered = |prefix: &str, ext: &str| name.strip_prefix(prefix).and_then(|r| r.strip_suffix(ext)).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    name == GRID || numbered("clip-", ".mp4") || numbered("compare-", ".mp4") || numbered("strip-", ".png")
}

/// The grid of one-frame clips.
const GRID: &str = "samples.png";

/// Frames marking the context (a green border).
const CONTEXT_GREEN: [u8; 3] = [0, 200, 0];

/// One-frame clips become a PNG grid (one row per class, named from `classes` where it has the
/// label, when the clips have more than one label); longer clips become MP4s, plus context | real
/// | prediction comparison videos and PNG strips when the real clips are given.
pub fn write_media(out: &Path, generated: &Clips, real: Option<&Clips>, context: usize, media: &MediaArgs, classes: &[String]) -> Result<Media> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let up = media.upscale as usize;
    let mut written = Media::default();
    if generated.layout().frames == 1 {
        let path = out.join(GRID);
        let images: Vec<Array4<u8>> = (0..generated.len()).map(|i| upscale(generated.clip(i), up)).collect();
        let views: Vec<_> = images.iter().map(|i| i.index_axis(Axis(0), 0)).collect();
        match generated.labels.iter().any(|&l| l != generated.labels[0]) {
            true => class_grid::write(&path, &class_grid::rows(&views, &generated.labels, classes))?,
            false => write_png_grid(&path, &views, (views.len() as f64).sqrt().ceil() as usize)?,
        }
        written.grid = Some(path);
        return Ok(written);
    }
    for i in 0..generated.len() {
        let video = out.join(format!("clip-{i:03}.mp4"));
        write_mp4(&video, upscale(generated.clip(i), up).view(), media.fps)?;
        written.videos.push(video);
        let Some(real) = real else { continue };
        let [held, truth, predicted] = panels(real.clip(i), generated.clip(i), context, up);
        let compare = out.join(format!("compare-{i:03}.mp4"));
        write_mp4(&compare, side_by_side(&[held.view(), truth.view(), predicted.view()], 2 * up).view(), media.fps)?;
        written.comparisons.push(compare);
        let strip = out.join(format!("strip-{i:03}.png"));
        let frames: Vec<_> = truth.outer_iter().chain(predicted.outer_iter()).collect();
        write_png_grid(&strip, &frames, truth.len_of(Axis(0)))?;
        written.strips.push(strip);
    }
    Ok(written)
}

/// The three panels of a comparison, upscaled, context frames marked: the context held on its
/// last frame, the real clip, and the prediction.
fn panels(real: ndarray::ArrayView4<'_, u8>, predicted: ndarray::ArrayView4<'_, u8>, context: usize, up: usize) -> [Array4<u8>; 3] {
    let mut held = real.to_owned();
    if context > 0 {
        let last = real.index_axis(Axis(0), context - 1).to_owned();
        for mut frame in held.slice_mut(s![context.., .., .., ..]).outer_iter_mut() {
            frame.assign(&last);
        }
    }
    [held.view(), real, predicted].map(|p| {
        let mut p = upscale(p, up);
        mark_frames(&mut p, context, up, CONTEXT_GREEN);
        p
    })
}
