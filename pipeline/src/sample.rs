//! Sampling from a trained run: frame-conditional video prediction and class-conditional images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use model3d::network::compute_copy;
use model3d::sampler::sample;
use model3d::{SampleRequest, SampleStats, UViT};
use video_io::encode::{Clip, write_mp4, write_png_grid};
use video_io::shard::{Record, RecordLayout, write_shard};

use crate::checkpoint;
use crate::config::RunConfig;
use crate::loader::to_network_layout;
use crate::train::RunDir;

/// Loads a run's newest checkpoint: the EMA weights of `ema` (the first EMA by default, raw
/// weights when the run keeps none, or `Some(None)` for raw weights on request).
pub fn load_model(run: &RunDir, config: &RunConfig, ema: Option<Option<f64>>, device: &Device) -> Result<(UViT, PathBuf)> {
    let latest = checkpoint::list(&run.checkpoints())?
        .pop()
        .with_context(|| format!("{} has no checkpoint yet: train first", run.checkpoints().display()))?;
    checkpoint::verify(&latest)?;
    let decay = ema.unwrap_or_else(|| config.train.ema_decays.first().copied());
    let file = match decay {
        Some(d) => {
            if !config.train.ema_decays.contains(&d) {
                bail!("--ema {d}: this run keeps EMA decays {:?}", config.train.ema_decays);
            }
            latest.join(checkpoint::ema_file(d))
        }
        None => latest.join("model.safetensors"),
    };
    Ok((checkpoint::load_module(UViT::new(&config.model, device), &file)?, file))
}

/// Packed `[T, H, W, 3]` bytes of `n` clips → `[n, T, 3, H, W]` values in [−1, 1].
pub fn to_tensor(clips: &[&[u8]], frames: usize, side: usize, device: &Device) -> Tensor<5> {
    let per_clip = frames * 3 * side * side;
    let mut v = vec![0f32; clips.len() * per_clip];
    for (clip, out) in clips.iter().zip(v.chunks_mut(per_clip)) {
        to_network_layout(clip, [frames, side, side, 3], false, out);
    }
    let len = v.len();
    Tensor::<1>::from_data(TensorData::new(v, [len]), device).reshape([clips.len(), frames, 3, side, side])
}

/// `[n, T, 3, H, W]` in [−1, 1] → packed `[T, H, W, 3]` bytes per clip.
pub fn to_bytes(x: Tensor<5>) -> Vec<Vec<u8>> {
    let [n, frames, _, side, _] = x.dims();
    let v = x.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values");
    (0..n)
        .map(|i| {
            let mut out = vec![0u8; frames * side * side * 3];
            for f in 0..frames {
                for c in 0..3 {
                    for y in 0..side {
                        for xx in 0..side {
                            let val = v[(((i * frames + f) * 3 + c) * side + y) * side + xx];
                            out[((f * side + y) * side + xx) * 3 + c] = ((val + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// Generates one clip per entry of `labels` with the `[sample]` settings of `config`, holding the
/// first `diffusion.context_frames` frames of `real` (when given) fixed. Clip `i` draws its noise
/// from `(seed, i)`.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &UViT,
    config: &RunConfig,
    real: Option<&[Vec<u8>]>,
    labels: &[i64],
    seed: u64,
    batch: usize,
    device: &Device,
    progress: bool,
) -> Result<(Vec<Vec<u8>>, SampleStats)> {
    let diffusion = config.diffusion.build(config.data.size)?;
    let model = &compute_copy(model, config.train.precision); // the network in the run's precision
    let (frames, side, k) = (config.data.frames, config.data.size, config.diffusion.context_frames);
    let bar = if progress { ProgressBar::new(labels.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("sample {bar:25} {pos}/{len} clips  ETA {eta}").expect("valid template"));
    let mut out = Vec::new();
    let mut stats = SampleStats::default();
    for start in (0..labels.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(labels.len());
        let context = match (real, k) {
            (_, 0) => None,
            (Some(real), _) => {
                let refs: Vec<&[u8]> = real[start..end].iter().map(Vec::as_slice).collect();
                Some(to_tensor(&refs, frames, side, device).narrow(1, 0, k))
            }
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
        stats.evaluations = s.evaluations;
        stats.skipped_unconditional = s.skipped_unconditional;
        out.extend(to_bytes(clips));
        bar.set_position(end as u64);
    }
    bar.finish_and_clear();
    Ok((out, stats))
}

/// Clips stored in the shard format (`[T, H, W, 3]` records), for `encode` and `eval`.
pub fn save_clips(path: &Path, frames: usize, side: usize, clips: &[Vec<u8>], labels: &[i64]) -> Result<()> {
    let layout = RecordLayout { frames: frames as u32, height: side as u32, width: side as u32, channels: 3 };
    let records = clips.iter().zip(labels).enumerate().map(|(i, (c, &l))| Record { label: l as i32, source: i as u32, pixels: c });
    write_shard(path, layout, records)?;
    Ok(())
}

/// Viewable files written for a set of clips.
#[derive(Debug, Default)]
pub struct Media {
    pub videos: Vec<PathBuf>,
    pub comparisons: Vec<PathBuf>,
    pub grid: Option<PathBuf>,
}

/// One-frame clips become a PNG grid; longer clips become MP4s, plus context | ground truth |
/// prediction comparison videos when the real clips are given (context frames framed in green).
#[allow(clippy::too_many_arguments)]
pub fn write_media(out: &Path, frames: usize, side: usize, context: usize, generated: &[Vec<u8>], real: Option<&[Vec<u8>]>, fps: u32, upscale: usize) -> Result<Media> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let upscale = upscale.max(1);
    let mut media = Media::default();
    if frames == 1 {
        let path = out.join("samples.png");
        let images: Vec<Vec<u8>> = generated.iter().map(|g| Clip { width: side, height: side, frames: vec![g.clone()] }.upscale(upscale).frames.remove(0)).collect();
        write_png_grid(&path, &images, side * upscale, (images.len() as f64).sqrt().ceil() as usize)?;
        media.grid = Some(path);
        return Ok(media);
    }
    let as_clip = |bytes: &[u8]| Clip { width: side, height: side, frames: bytes.chunks(side * side * 3).map(<[u8]>::to_vec).collect() };
    for (i, g) in generated.iter().enumerate() {
        let video = out.join(format!("clip-{i:03}.mp4"));
        write_mp4(&video, &as_clip(g).upscale(upscale), fps)?;
        media.videos.push(video);
        if let Some(real) = real {
            let mut context_panel = as_clip(&real[i]);
            context_panel.frames.iter_mut().skip(context).for_each(|f| *f = context_last(&real[i], context, side));
            let mut panels = [context_panel, as_clip(&real[i]), as_clip(g)].map(|c| c.upscale(upscale));
            for p in &mut panels {
                p.mark_frames(context, upscale, [0, 200, 0]);
            }
            let compare = out.join(format!("compare-{i:03}.mp4"));
            write_mp4(&compare, &Clip::side_by_side(&panels, 2 * upscale), fps)?;
            media.comparisons.push(compare);
        }
    }
    Ok(media)
}

/// The last context frame, held in the context panel after the context ends.
fn context_last(clip: &[u8], k: usize, side: usize) -> Vec<u8> {
    let n = side * side * 3;
    clip[(k.max(1) - 1) * n..k.max(1) * n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bytes_round_trip_through_the_network_layout() {
        let (frames, side) = (3, 4);
        let clips: Vec<Vec<u8>> = (0..2).map(|k| (0..frames * side * side * 3).map(|i| ((i * 7 + k * 13) % 256) as u8).collect()).collect();
        let refs: Vec<&[u8]> = clips.iter().map(Vec::as_slice).collect();
        let x = to_tensor(&refs, frames, side, &Device::flex());
        assert_eq!(x.dims(), [2, frames, 3, side, side]);
        // Channel 1 of frame 2, pixel (y=1, x=3) of clip 1, in [−1, 1].
        let v: f32 = x.clone().slice([1..2, 2..3, 1..2, 1..2, 3..4]).into_scalar();
        assert_eq!(v, clips[1][((2 * side + 1) * side + 3) * 3 + 1] as f32 / 127.5 - 1.0);
        assert_eq!(to_bytes(x), clips);
    }
}
