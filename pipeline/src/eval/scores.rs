//! Per-clip scores of predicted continuations, with several samples per clip as the stochastic
//! video prediction literature scores them (SVG, SAVP, SRVP): the mean over samples, the best of
//! N chosen per clip and per metric, 95 % intervals over clips, the diversity between a clip's
//! samples, and PSNR/SSIM on the moving pixels only (docs/evaluation.md).

use ndarray::s;
use serde::{Deserialize, Serialize};
use video_io::clips::Clips;

use super::quality::{masked_squared_error, moving, psnr, psnr_of_mse, ssim_map};

/// PSNR is capped here so that means stay finite (identical frames have infinite PSNR).
pub const PSNR_CAP_DB: f64 = 100.0;

/// A pixel moves when a channel of the real frame differs from the last context frame by more
/// than this (of 255): above the few levels that H.264/JPEG noise moves a still pixel.
pub const MOTION_THRESHOLD: u8 = 16;

/// The best of N samples per clip, chosen per clip and per metric (SRVP): the PSNR columns come
/// from each clip's sample of best mean PSNR, the SSIM columns from its sample of best mean SSIM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestOfN {
    pub samples: usize,
    /// Per predicted frame: `(frame, psnr_db, ssim)`.
    pub per_frame: Vec<(usize, f64, f64)>,
    pub mean_psnr_db: f64,
    pub psnr_ci95_db: f64,
    pub mean_ssim: f64,
    pub ssim_ci95: f64,
}

/// How much a clip's samples differ from one another (means over clips and predicted frames).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diversity {
    /// Standard deviation over samples of each pixel value (of 255).
    pub pixel_std: f64,
    /// PSNR between two samples of the same clip, over every pair.
    pub pairwise_psnr_db: f64,
}

/// PSNR and SSIM over the moving pixels of the predicted frames (docs/evaluation.md): pooled over
/// a clip's predicted frames, then averaged over the clips that have any. `None` where no pixel
/// moves in any clip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moving {
    pub threshold: u8,
    /// Fraction of the predicted frames' pixels that move.
    pub fraction: f64,
    pub clips_with_motion: usize,
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
    /// With several samples: each clip's best sample, per metric.
    pub best_of_n_psnr_db: Option<f64>,
    pub best_of_n_ssim: Option<f64>,
    /// "Repeat the last context frame", which scores badly here by design.
    pub last_frame_psnr_db: Option<f64>,
    pub last_frame_ssim: Option<f64>,
}

/// One sample's scores of one clip.
struct SampleScores {
    /// Per predicted frame.
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    /// Over the moving pixels of all predicted frames: (squared error, values) and (SSIM sum,
    /// window positions).
    moving_se: (f64, usize),
    moving_ssim: (f64, usize),
}

impl SampleScores {
    fn mean_psnr(&self) -> f64 {
        mean(&self.psnr)
    }
    fn mean_ssim(&self) -> f64 {
        mean(&self.ssim)
    }
    fn moving_psnr(&self) -> Option<f64> {
        (self.moving_se.1 > 0).then(|| psnr_of_mse(self.moving_se.0 / self.moving_se.1 as f64).min(PSNR_CAP_DB))
    }
    fn moving_ssim(&self) -> Option<f64> {
        (self.moving_ssim.1 > 0).then(|| self.moving_ssim.0 / self.moving_ssim.1 as f64)
    }
}

/// Everything scored for one clip: each sample's scores and the last-frame baseline's.
pub struct ClipScores {
    samples: Vec<SampleScores>,
    baseline: Option<SampleScores>,
    moving_pixels: usize,
    pixels: usize,
    diversity: Option<(f64, f64)>,
}

fn frame(clips: &Clips, i: usize, f: usize) -> Vec<u8> {
    clips.pixels.slice(s![i, f, .., .., ..]).iter().copied().collect()
}

/// Scores `samples` (predicted clips of real clip `i`, frames `context..T`) against it.
pub fn score_clip(pred: &Clips, first: usize, samples: usize, real: &Clips, i: usize, context: usize) -> ClipScores {
    let [frames, height, width, _] = real.layout().dims();
    let last = (context > 0).then(|| frame(real, i, context - 1));
    let truth: Vec<Vec<u8>> = (context..frames).map(|f| frame(real, i, f)).collect();
    let masks: Vec<Vec<bool>> = match &last {
        Some(last) => truth.iter().map(|t| moving(t, last, MOTION_THRESHOLD)).collect(),
        None => truth.iter().map(|t| vec![false; t.len() / 3]).collect(),
    };
    // One prediction's frames `context..T` against the truth; one SSIM map per frame serves the
    // whole-frame and the moving-pixel SSIM.
    let score = |predicted: &[&[u8]]| {
        let mut s = SampleScores { psnr: Vec::new(), ssim: Vec::new(), moving_se: (0.0, 0), moving_ssim: (0.0, 0) };
        for ((p, t), mask) in predicted.iter().zip(&truth).zip(&masks) {
            let map = ssim_map(p, t, width, height);
            s.psnr.push(psnr(p, t).min(PSNR_CAP_DB));
            s.ssim.push(map.mean());
            let (se, n) = masked_squared_error(p, t, mask);
            let (ss, m) = map.masked_sum(mask);
            s.moving_se = (s.moving_se.0 + se, s.moving_se.1 + n);
            s.moving_ssim = (s.moving_ssim.0 + ss, s.moving_ssim.1 + m);
        }
        s
    };
    let predicted: Vec<Vec<Vec<u8>>> = (0..samples).map(|k| (context..frames).map(|f| frame(pred, first + k, f)).collect()).collect();
    let scored = predicted.iter().map(|p| score(&p.iter().map(Vec::as_slice).collect::<Vec<_>>())).collect();
    let baseline = last.as_ref().map(|last| score(&vec![last.as_slice(); truth.len()]));
    ClipScores {
        samples: scored,
        baseline,
        moving_pixels: masks.iter().flatten().filter(|m| **m).count(),
        pixels: masks.iter().map(Vec::len).sum(),
        diversity: (samples > 1).then(|| diversity(&predicted)),
    }
}

/// (mean per-value standard deviation over samples, mean pairwise PSNR) of one clip's samples.
fn diversity(samples: &[Vec<Vec<u8>>]) -> (f64, f64) {
    let n = samples.len() as f64;
    let values: usize = samples[0].iter().map(Vec::len).sum();
    let mut std_sum = 0.0;
    for f in 0..samples[0].len() {
        for v in 0..samples[0][f].len() {
            let m = samples.iter().map(|s| s[f][v] as f64).sum::<f64>() / n;
            let var = samples.iter().map(|s| (s[f][v] as f64 - m).powi(2)).sum::<f64>() / (n - 1.0);
            std_sum += var.sqrt();
        }
    }
    let mut pairs = Vec::new();
    for a in 0..samples.len() {
        for b in a + 1..samples.len() {
            let se: f64 = samples[a].iter().flatten().zip(samples[b].iter().flatten()).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
            pairs.push(psnr_of_mse(se / values as f64).min(PSNR_CAP_DB));
        }
    }
    (std_sum / values as f64, mean(&pairs))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Half-width of the 95 % interval of the mean of `v`: 1.96 · std / √n (0 for one value).
pub fn ci95(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    1.96 * (var / v.len() as f64).sqrt()
}

/// Per-clip means over samples of (PSNR, SSIM), for the intervals of the mean scores.
pub fn clip_means(clips: &[ClipScores]) -> (Vec<f64>, Vec<f64>) {
    clips.iter().map(|c| (mean(&c.samples.iter().map(SampleScores::mean_psnr).collect::<Vec<_>>()), mean(&c.samples.iter().map(SampleScores::mean_ssim).collect::<Vec<_>>()))).unzip()
}

/// The index of the largest value (the first of equal ones).
fn best(values: impl Iterator<Item = f64>) -> usize {
    values.enumerate().fold((0, f64::NEG_INFINITY), |(bi, bv), (i, v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

/// Best of N over `clips` (first predicted frame index `context`).
pub fn best_of_n(clips: &[ClipScores], context: usize) -> BestOfN {
    let picks: Vec<(&SampleScores, &SampleScores)> = clips
        .iter()
        .map(|c| (&c.samples[best(c.samples.iter().map(SampleScores::mean_psnr))], &c.samples[best(c.samples.iter().map(SampleScores::mean_ssim))]))
        .collect();
    let frames = clips[0].samples[0].psnr.len();
    let per_frame = (0..frames).map(|j| (context + j, mean(&picks.iter().map(|(p, _)| p.psnr[j]).collect::<Vec<_>>()), mean(&picks.iter().map(|(_, s)| s.ssim[j]).collect::<Vec<_>>()))).collect();
    let psnrs: Vec<f64> = picks.iter().map(|(p, _)| p.mean_psnr()).collect();
    let ssims: Vec<f64> = picks.iter().map(|(_, s)| s.mean_ssim()).collect();
    BestOfN { samples: clips[0].samples.len(), per_frame, mean_psnr_db: mean(&psnrs), psnr_ci95_db: ci95(&psnrs), mean_ssim: mean(&ssims), ssim_ci95: ci95(&ssims) }
}

/// The mean diversity over clips, with several samples per clip.
pub fn mean_diversity(clips: &[ClipScores]) -> Option<Diversity> {
    let d: Vec<(f64, f64)> = clips.iter().filter_map(|c| c.diversity).collect();
    (!d.is_empty()).then(|| Diversity { pixel_std: mean(&d.iter().map(|x| x.0).collect::<Vec<_>>()), pairwise_psnr_db: mean(&d.iter().map(|x| x.1).collect::<Vec<_>>()) })
}

/// The moving-pixel scores over clips (context frames needed; `None` without them).
pub fn moving_scores(clips: &[ClipScores]) -> Option<Moving> {
    clips.first()?.baseline.as_ref()?;
    let with_motion: Vec<&ClipScores> = clips.iter().filter(|c| c.moving_pixels > 0).collect();
    let over = |f: &dyn Fn(&ClipScores) -> Option<f64>| {
        let v: Vec<f64> = with_motion.iter().filter_map(|c| f(c)).collect();
        (!v.is_empty()).then(|| mean(&v))
    };
    let mean_over_samples = |g: fn(&SampleScores) -> Option<f64>| move |c: &ClipScores| Some(mean(&c.samples.iter().filter_map(g).collect::<Vec<_>>()));
    let best_sample = |g: fn(&SampleScores) -> Option<f64>| move |c: &ClipScores| c.samples.iter().filter_map(g).reduce(f64::max);
    let pixels: usize = clips.iter().map(|c| c.pixels).sum();
    Some(Moving {
        threshold: MOTION_THRESHOLD,
        fraction: clips.iter().map(|c| c.moving_pixels).sum::<usize>() as f64 / pixels.max(1) as f64,
        clips_with_motion: with_motion.len(),
        psnr_db: over(&mean_over_samples(SampleScores::moving_psnr)),
        ssim: over(&mean_over_samples(SampleScores::moving_ssim)),
        best_of_n_psnr_db: over(&best_sample(SampleScores::moving_psnr)),
        best_of_n_ssim: over(&best_sample(SampleScores::moving_ssim)),
        last_frame_psnr_db: over(&|c| c.baseline.as_ref().and_then(SampleScores::moving_psnr)),
        last_frame_ssim: over(&|c| c.baseline.as_ref().and_then(SampleScores::moving_ssim)),
    })
}

/// Per predicted frame, the mean over clips and samples of (PSNR, SSIM) and of the baseline's.
pub fn per_frame_means(clips: &[ClipScores]) -> Vec<[f64; 4]> {
    let frames = clips[0].samples[0].psnr.len();
    let all: Vec<&SampleScores> = clips.iter().flat_map(|c| &c.samples).collect();
    let base: Vec<&SampleScores> = clips.iter().filter_map(|c| c.baseline.as_ref()).collect();
    (0..frames)
        .map(|j| {
            let m = |v: &[&SampleScores], f: fn(&SampleScores, usize) -> f64| if v.is_empty() { 0.0 } else { mean(&v.iter().map(|s| f(s, j)).collect::<Vec<_>>()) };
            [m(&all, |s, j| s.psnr[j]), m(&all, |s, j| s.ssim[j]), m(&base, |s, j| s.psnr[j]), m(&base, |s, j| s.ssim[j])]
        })
        .collect()
}
