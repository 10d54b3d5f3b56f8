//! `sid2 eval` and everything evaluation is made of: per-frame PSNR and SSIM of predicted
//! continuations against the real ones ([`quality`]), against the "repeat the last context
//! frame" baseline; FVD and FID ([`fidelity`]) from the feature networks ([`features`]) and the
//! Fréchet distance ([`frechet`]).

pub mod features;
pub mod fidelity;
pub mod frechet;
pub mod quality;
pub mod scores;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use video_io::clips::Clips;
use video_io::shard::{RecordLayout, Shard};

use crate::globals::Globals;
use crate::plot::{Chart, Series};
use crate::paths::{check_output_file, existing_file};
use fidelity::{FrechetScore, Metric};
use scores::{BestOfN, Diversity, Moving};

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
    /// Also write the report here as JSON, with its per-frame PSNR chart beside it as PNG (default
    /// with --run: eval.json beside --pred).
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
        match path {
            // A missing weights file is named with where to get it (fidelity::score).
            Some(path) if flag == "--pred" || flag == "--real" || path.exists() => existing_file(flag, path)?,
            _ => {}
        }
    }
    let out = args.out.clone().or_else(|| args.run.as_ref().map(|_| args.pred.with_file_name("eval.json")));
    if let Some(out) = &out {
        check_output_file("--out", out, &inputs_of(&files), args.overwrite)?;
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
        let chart = path.with_extension("png");
        if !inputs_of(&files).iter().any(|i| crate::paths::resolved(i) == crate::paths::resolved(&chart)) {
            crate::plot::write_png(&chart, &[per_frame_chart(&report)])?;
        }
    }
    if let (Some(run), Some(path)) = (run, out) {
        if !run.writable() {
            tracing::warn!("run folder {} is read-only: this evaluation is not added to its report", run.path().display());
            return Ok(());
        }
        let path = std::path::absolute(&path).unwrap_or(path);
        run.record(&crate::run::events::Event::Eval { unix_s: crate::run::events::now(), path })?;
    }
    Ok(())
}

/// The files of `(flag, path)` pairs that were given.
fn inputs_of<'a>(files: &[(&str, Option<&'a PathBuf>)]) -> Vec<&'a Path> {
    files.iter().filter_map(|(_, p)| p.map(PathBuf::as_path)).collect()
}

/// PSNR per predicted frame: the mean over samples, the best of N, and repeating the last
/// context frame.
pub fn per_frame_chart(report: &EvalReport) -> Chart {
    let line = |name: String, points: Vec<(f64, f64)>| Series { name, points };
    let mut series = vec![line("mean over samples".into(), report.per_frame.iter().map(|q| (q.frame as f64 + 1.0, q.psnr_db)).collect())];
    if let Some(b) = &report.best_of_n {
        series.push(line(format!("best of {}", b.samples), b.per_frame.iter().map(|&(f, p, _)| (f as f64 + 1.0, p)).collect()));
    }
    if report.context_frames > 0 {
        series.push(line("last context frame repeated".into(), report.per_frame.iter().map(|q| (q.frame as f64 + 1.0, q.last_frame_psnr_db)).collect()));
    }
    Chart { title: format!("PSNR per predicted frame ({} clips)", report.clips), x_label: "frame".into(), y_label: "PSNR (dB)".into(), log_y: false, series }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    video_io::atomic::write_bytes(path, &[text.as_bytes()]).with_context(|| format!("cannot write {}", path.display()))
}

/// Mean quality per predicted frame position, over all clips (and all samples of each clip).
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
    /// Predictions per real clip (`sid2 sample --samples-per-clip`), each clip's together.
    #[serde(default = "one")]
    pub samples_per_clip: usize,
    pub per_frame: Vec<FrameQuality>,
    /// Means over clips, frames and samples.
    pub mean_psnr_db: f64,
    pub mean_ssim: f64,
    /// 95 % intervals over clips of the per-clip means (1.96 · std / √clips).
    #[serde(default)]
    pub psnr_ci95_db: f64,
    #[serde(default)]
    pub ssim_ci95: f64,
    pub last_frame_psnr_db: f64,
    pub last_frame_ssim: f64,
    /// With several samples per clip: the best of them per clip and metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of_n: Option<BestOfN>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diversity: Option<Diversity>,
    /// PSNR and SSIM on the moving pixels only, with context frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Moving>,
    /// FVD and FID, when their weights were given.
    pub frechet: Vec<FrechetScore>,
}

fn one() -> usize {
    1
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
        let samples = if self.samples_per_clip > 1 { format!(" x {} samples", self.samples_per_clip) } else { String::new() };
        text += &format!(
            "mean over {} clips{samples}: PSNR {:.2} ± {:.2} dB, SSIM {:.4} ± {:.4} (last context frame repeated: {:.2} dB, {:.4})\n",
            self.clips, self.mean_psnr_db, self.psnr_ci95_db, self.mean_ssim, self.ssim_ci95, self.last_frame_psnr_db, self.last_frame_ssim
        );
        if let Some(b) = &self.best_of_n {
            text += &format!("best of {} per clip: PSNR {:.2} ± {:.2} dB, SSIM {:.4} ± {:.4}\n", b.samples, b.mean_psnr_db, b.psnr_ci95_db, b.mean_ssim, b.ssim_ci95);
        }
        if let Some(d) = &self.diversity {
            text += &format!("diversity between a clip's samples: pixel std {:.2} (of 255), pairwise PSNR {:.2} dB\n", d.pixel_std, d.pairwise_psnr_db);
        }
        if let Some(m) = &self.moving {
            let db = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} dB"));
            let ss = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
            match m.clips_with_motion {
                0 => text += &format!("moving pixels (> {} of 255 from the last context frame): none in any clip, no moving-pixel score\n", m.threshold),
                n => {
                    let best = if self.samples_per_clip > 1 { format!("; best of {}: {}, {}", self.samples_per_clip, db(m.best_of_n_psnr_db), ss(m.best_of_n_ssim)) } else { String::new() };
                    text += &format!(
                        "moving pixels (> {} of 255 from the last context frame, {:.1} % of pixels, {n} clips): PSNR {}, SSIM {}{best} (last context frame repeated: {}, {})\n",
                        m.threshold,
                        100.0 * m.fraction,
                        db(m.psnr_db),
                        ss(m.ssim),
                        db(m.last_frame_psnr_db),
                        ss(m.last_frame_ssim)
                    );
                }
            }
        }
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

/// Compares frames `context..T` of each predicted clip with the real clip it continues: `pred`
/// holds `N` samples per real clip (`N = pred.len / real.len`), each clip's together.
pub fn evaluate(pred: &Shard, real_shard: &Shard, context: usize) -> Result<EvalReport> {
    if real_shard.len == 0 {
        bail!("{}: holds no clips, nothing to evaluate", real_shard.path.display());
    }
    // Rollouts may run past the real clips: the frames that have a real one are scored.
    let same_frames = RecordLayout { frames: real_shard.layout.frames, ..pred.layout };
    if same_frames != real_shard.layout || pred.layout.frames < real_shard.layout.frames || pred.len == 0 || !pred.len.is_multiple_of(real_shard.len) {
        bail!(
            "{} ({} clips of {:?}) and {} ({} clips of {:?}) do not pair up (the predictions must be the same number of samples for every real clip)",
            pred.path.display(),
            pred.len,
            pred.layout,
            real_shard.path.display(),
            real_shard.len,
            real_shard.layout
        );
    }
    let frames = real_shard.layout.frames as usize;
    if context >= frames {
        bail!("--context {context}: clips have only {frames} frames");
    }
    if pred.layout.frames > real_shard.layout.frames {
        println!("the predictions have {} frames, the real clips {frames}: scoring frames {}-{frames}, the part with a real frame", pred.layout.frames, context + 1);
    }
    Ok(compare(&Clips::read(pred), &Clips::read(real_shard), context))
}

/// The report for predicted clips against their real clips: `pred.len() / real.len()` samples
/// per real clip, each clip's together, of the same layout but for predictions that run longer
/// (scored as far as the real clips go).
pub fn compare(pred: &Clips, real: &Clips, context: usize) -> EvalReport {
    let n = pred.len() / real.len();
    let clips: Vec<scores::ClipScores> = (0..real.len()).map(|i| scores::score_clip(pred, i * n, n, real, i, context)).collect();
    let per_frame: Vec<FrameQuality> = scores::per_frame_means(&clips)
        .into_iter()
        .enumerate()
        .map(|(j, [psnr_db, ssim, last_frame_psnr_db, last_frame_ssim])| FrameQuality { frame: context + j, psnr_db, ssim, last_frame_psnr_db, last_frame_ssim })
        .collect();
    let m = per_frame.len() as f64;
    let mean = |f: fn(&FrameQuality) -> f64| per_frame.iter().map(f).sum::<f64>() / m;
    let (psnrs, ssims) = scores::clip_means(&clips);
    EvalReport {
        clips: real.len(),
        context_frames: context,
        samples_per_clip: n,
        mean_psnr_db: mean(|q| q.psnr_db),
        mean_ssim: mean(|q| q.ssim),
        psnr_ci95_db: scores::ci95(&psnrs),
        ssim_ci95: scores::ci95(&ssims),
        last_frame_psnr_db: mean(|q| q.last_frame_psnr_db),
        last_frame_ssim: mean(|q| q.last_frame_ssim),
        best_of_n: (n > 1).then(|| scores::best_of_n(&clips, context)),
        diversity: scores::mean_diversity(&clips),
        moving: scores::moving_scores(&clips),
        per_frame,
        frechet: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::quality::psnr;
    use super::*;
    use ndarray::{Array5, s};

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

    /// Real clips of 6 frames of 16x16 whose frames 3-5 move (a bright square moving right) or
    /// stand still, and `n` noisy predictions of each.
    fn clips_and_samples(n: usize, still: bool) -> (Clips, Clips) {
        let real = Array5::from_shape_fn((3, 6, 16, 16, 3), |(i, f, y, x, _)| {
            let shift = if still { 0 } else { f.saturating_sub(2) * 2 };
            if (4..8).contains(&y) && (shift + i..shift + i + 4).contains(&x) { 220 } else { 40 + 10 * i as u8 }
        });
        let pred = Array5::from_shape_fn((3 * n, 6, 16, 16, 3), |(j, f, y, x, c)| {
            let v = real[[j / n, f, y, x, c]] as i32;
            let noise = ((j * 7919 + f * 104_729 + y * 31 + x * 17 + c * 5) % 23) as i32 - 11;
            (v + noise * (1 + (j % n) as i32)).clamp(0, 255) as u8
        });
        (Clips::new(pred, vec![0; 3 * n]), Clips::new(real, vec![0; 3]))
    }

    #[test]
    fn best_of_n_is_at_least_the_mean_and_one_sample_is_its_own_best() {
        let (pred, real) = clips_and_samples(4, false);
        let report = compare(&pred, &real, 3);
        assert_eq!((report.clips, report.samples_per_clip), (3, 4));
        let best = report.best_of_n.as_ref().unwrap();
        assert!(best.mean_psnr_db >= report.mean_psnr_db && best.mean_ssim >= report.mean_ssim, "{best:?} vs {report:?}");
        // Clip by clip: the best sample's mean PSNR is at least the mean over samples.
        for i in 0..3 {
            let one = compare(&Clips::new(pred.pixels.slice(s![i * 4..i * 4 + 4, .., .., .., ..]).to_owned(), vec![0; 4]), &Clips::new(real.pixels.slice(s![i..i + 1, .., .., .., ..]).to_owned(), vec![0]), 3);
            let b = one.best_of_n.unwrap();
            assert!(b.mean_psnr_db >= one.mean_psnr_db && b.mean_ssim >= one.mean_ssim, "clip {i}");
        }
        let d = report.diversity.as_ref().unwrap();
        assert!(d.pixel_std > 1.0 && d.pairwise_psnr_db < 60.0, "{d:?}");
        // One sample per clip: no best of N, no diversity, and the same means as before.
        let first: Vec<usize> = (0..3).map(|i| i * 4).collect();
        let single = Clips::new(ndarray::stack(ndarray::Axis(0), &first.iter().map(|&j| pred.pixels.index_axis(ndarray::Axis(0), j)).collect::<Vec<_>>()).unwrap(), vec![0; 3]);
        let r1 = compare(&single, &real, 3);
        assert!(r1.best_of_n.is_none() && r1.diversity.is_none() && r1.samples_per_clip == 1);
        let by_hand: f64 = (0..3).flat_map(|i| (3..6).map(move |f| (i, f))).map(|(i, f)| {
            let a: Vec<u8> = single.pixels.slice(s![i, f, .., .., ..]).iter().copied().collect();
            let b: Vec<u8> = real.pixels.slice(s![i, f, .., .., ..]).iter().copied().collect();
            psnr(&a, &b)
        }).sum::<f64>() / 9.0;
        assert!((r1.mean_psnr_db - by_hand).abs() < 1e-9);
    }

    #[test]
    fn moving_pixels_are_scored_apart_and_a_still_video_has_none() {
        let (pred, real) = clips_and_samples(2, false);
        let m = compare(&pred, &real, 3).moving.unwrap();
        assert_eq!((m.threshold, m.clips_with_motion), (scores::MOTION_THRESHOLD, 3));
        assert!(m.fraction > 0.0 && m.fraction < 0.2, "{m:?}");
        // Repeating the last frame is wrong exactly where things move; the noisy predictions are
        // close to the truth there.
        assert!(m.last_frame_psnr_db.unwrap() < 10.0 && m.psnr_db.unwrap() > 25.0, "{m:?}");
        assert!(m.best_of_n_psnr_db.unwrap() >= m.psnr_db.unwrap());
        let (pred, real) = clips_and_samples(2, true);
        let report = compare(&pred, &real, 3);
        let m = report.moving.as_ref().unwrap();
        assert_eq!((m.clips_with_motion, m.fraction, m.psnr_db, m.last_frame_psnr_db), (0, 0.0, None, None));
        assert!(report.summary().contains("none in any clip"), "{}", report.summary());
        // Without context frames there is nothing to move from.
        assert!(compare(&pred, &real, 0).moving.is_none());
    }
}
