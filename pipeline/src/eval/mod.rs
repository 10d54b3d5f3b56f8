//! `sid2 eval` and everything evaluation is made of: per-frame PSNR and SSIM of predicted
//! continuations against the real ones ([`quality`]), against the "repeat the last context
//! frame" baseline; FVD and FID ([`fidelity`]) from the feature networks ([`features`]) and the
//! Fréchet distance ([`frechet`]).

pub mod features;
pub mod fidelity;
pub mod frechet;
pub mod quality;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::s;
use serde::{Deserialize, Serialize};
use video_io::clips::Clips;
use video_io::shard::Shard;

use crate::globals::Globals;
use crate::paths::{check_output_file, existing_file};
use fidelity::{FrechetScore, Metric};
use quality::{psnr, ssim};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Predicted clips (predictions.bin from `sid2 sample`).
    #[arg(long)]
    pub pred: PathBuf,
    /// The real clips they continue (real.bin), in the same order.
    #[arg(long)]
    pub real: PathBuf,
    /// Leading context frames, given and not scored (5 for Kinetics-600).
    #[arg(long)]
    pub context: usize,
    /// Also write the report here as JSON (default with --run: eval.json beside --pred).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The run the predictions came from: the evaluation goes into its report.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// FVD with these I3D weights (pytorch-i3d's rgb_imagenet.pt).
    #[arg(long)]
    pub i3d: Option<PathBuf>,
    /// FID with these Inception-v3 weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth).
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// Clips per feature-network batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Write --out even where it is an input.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: Args, globals: &Globals) -> Result<()> {
    let files = [("--pred", Some(&args.pred)), ("--real", Some(&args.real)), ("--i3d", args.i3d.as_ref()), ("--inception", args.inception.as_ref())];
    for (flag, path) in files {
        if let Some(path) = path {
            existing_file(flag, path)?;
        }
    }
    let out = args.out.clone().or_else(|| args.run.as_ref().map(|_| args.pred.with_file_name("eval.json")));
    if let Some(out) = &out {
        let inputs: Vec<&Path> = files.iter().filter_map(|(_, p)| p.map(PathBuf::as_path)).collect();
        check_output_file("--out", out, &inputs, args.overwrite)?;
    }
    let run = args.run.as_ref().map(crate::run::RunDir::new);
    if let Some(run) = &run {
        run.load_config().context("--run")?;
    }
    let (pred, real) = (Shard::open(&args.pred)?, Shard::open(&args.real)?);
    let mut report = evaluate(&pred, &real, args.context)?;
    for (metric, weights) in [(Metric::Fvd, &args.i3d), (Metric::Fid, &args.inception)] {
        if let Some(weights) = weights {
            report.frechet.push(fidelity::score(metric, weights, &pred, &real, args.batch as usize, &globals.device()?, globals)?);
        }
    }
    print!("{}", report.summary());
    if let Some(path) = &out {
        write_json(path, &report)?;
    }
    if let (Some(run), Some(path)) = (run, out) {
        if !run.writable() {
            tracing::warn!("run folder {} is read-only: this evaluation is not added to its report", run.path().display());
            return Ok(());
        }
        let path = std::path::absolute(&path).unwrap_or(path);
        run.record(&crate::run::events::Event::Eval { unix_s: crate::run::events::now(), path })?;
        crate::report::refresh(&run);
    }
    Ok(())
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    video_io::atomic::write_bytes(path, &[text.as_bytes()]).with_context(|| format!("cannot write {}", path.display()))
}

/// Mean quality per predicted frame position, over all clips.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameQuality {
    pub frame: usize,
    pub psnr_db: f64,
    pub ssim: f64,
    /// The same for the trivial prediction "the last context frame, repeated".
    pub last_frame_psnr_db: f64,
    pub last_frame_ssim: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub clips: usize,
    pub context_frames: usize,
    pub per_frame: Vec<FrameQuality>,
    pub mean_psnr_db: f64,
    pub mean_ssim: f64,
    pub last_frame_psnr_db: f64,
    pub last_frame_ssim: f64,
    /// FVD and FID, when their weights were given.
    pub frechet: Vec<FrechetScore>,
}

impl EvalReport {
    /// The per-frame table and the means, as `sid2 eval` prints them.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for q in &self.per_frame {
            text += &format!(
                "frame {:2}  PSNR {:6.2} dB  SSIM {:.4}   (last context frame repeated: {:6.2} dB, {:.4})\n",
                q.frame, q.psnr_db, q.ssim, q.last_frame_psnr_db, q.last_frame_ssim
            );
        }
        text += &format!(
            "mean over {} clips: PSNR {:.2} dB, SSIM {:.4} (last context frame repeated: {:.2} dB, {:.4})\n",
            self.clips, self.mean_psnr_db, self.mean_ssim, self.last_frame_psnr_db, self.last_frame_ssim
        );
        for f in &self.frechet {
            let source = if f.real_stats_cached { "cached" } else { "computed, now cached" };
            text += &format!(
                "{:?} {:.2}  ({} generated vs {} real feature vectors; real statistics {source} in {})\n",
                f.metric,
                f.value,
                f.generated_samples,
                f.real_samples,
                f.real_stats.display()
            );
        }
        text
    }
}

/// Compares frames `context..T` of each predicted clip with the real clip at the same index.
pub fn evaluate(pred: &Shard, real_shard: &Shard, context: usize) -> Result<EvalReport> {
    if pred.layout != real_shard.layout || pred.len != real_shard.len {
        bail!(
            "{} ({} clips of {:?}) and {} ({} clips of {:?}) do not pair up",
            pred.path.display(),
            pred.len,
            pred.layout,
            real_shard.path.display(),
            real_shard.len,
            real_shard.layout
        );
    }
    if pred.len == 0 {
        bail!("{}: holds no clips, nothing to evaluate", pred.path.display());
    }
    let frames = pred.layout.frames as usize;
    if context >= frames {
        bail!("--context {context}: clips have only {frames} frames");
    }
    Ok(compare(&Clips::read(pred), &Clips::read(real_shard), context))
}

/// The report for predicted clips against their real clips (same layout, same order).
pub fn compare(pred: &Clips, real: &Clips, context: usize) -> EvalReport {
    let [frames, height, width, _] = pred.layout().dims();
    let n = pred.len() as f64;
    let frame = |clips: &Clips, i: usize, f: usize| -> Vec<u8> { clips.pixels.slice(s![i, f, .., .., ..]).iter().copied().collect() };
    let mut per_frame: Vec<FrameQuality> = (context..frames)
        .map(|frame| FrameQuality { frame, psnr_db: 0.0, ssim: 0.0, last_frame_psnr_db: 0.0, last_frame_ssim: 0.0 })
        .collect();
    for i in 0..pred.len() {
        let last = (context > 0).then(|| frame(real, i, context - 1));
        for q in &mut per_frame {
            let (a, b) = (frame(pred, i, q.frame), frame(real, i, q.frame));
            // Identical frames have infinite PSNR; cap at 100 dB so means stay finite.
            q.psnr_db += psnr(&a, &b).min(100.0) / n;
            q.ssim += ssim(&a, &b, width, height) / n;
            if let Some(last) = &last {
                q.last_frame_psnr_db += psnr(last, &b).min(100.0) / n;
                q.last_frame_ssim += ssim(last, &b, width, height) / n;
            }
        }
    }
    let m = per_frame.len() as f64;
    let mean = |f: fn(&FrameQuality) -> f64| per_frame.iter().map(f).sum::<f64>() / m;
    EvalReport {
        clips: pred.len(),
        context_frames: context,
        mean_psnr_db: mean(|q| q.psnr_db),
        mean_ssim: mean(|q| q.ssim),
        last_frame_psnr_db: mean(|q| q.last_frame_psnr_db),
        last_frame_ssim: mean(|q| q.last_frame_ssim),
        per_frame,
        frechet: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_predicted_frames_and_the_repeat_last_frame_baseline() {
        // Two-pixel frames of constant grey: frame f of the real clip is 10·f everywhere.
        let real = Clips::new(ndarray::Array5::from_shape_fn((1, 4, 2, 2, 3), |(_, f, ..)| 10 * f as u8), vec![0]);
        let mut pred = real.clone();
        pred.pixels.slice_mut(s![.., 3, .., .., ..]).mapv_inplace(|v| v + 5); // frame 3 off by 5
        let dir = tempfile::tempdir().unwrap();
        let (p, r) = (dir.path().join("p.bin"), dir.path().join("r.bin"));
        pred.write(&p).unwrap();
        real.write(&r).unwrap();
        let (p, r) = (Shard::open(&p).unwrap(), Shard::open(&r).unwrap());
        let report = evaluate(&p, &r, 2).unwrap();
        assert_eq!(report.per_frame.len(), 2);
        assert_eq!(report.per_frame[0].psnr_db, 100.0);
        assert!((report.per_frame[1].psnr_db - psnr(&[0], &[5])).abs() < 1e-9);
        // Repeating frame 1 (value 10) for frames 2 and 3 (values 20 and 30).
        assert!((report.per_frame[0].last_frame_psnr_db - psnr(&[10], &[20])).abs() < 1e-9);
        assert!((report.per_frame[1].last_frame_psnr_db - psnr(&[10], &[30])).abs() < 1e-9);
        assert!(evaluate(&p, &r, 4).is_err());
    }
}
