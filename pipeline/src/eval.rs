//! `sid2 eval`: per-frame PSNR and SSIM of predicted continuations against the real ones
//! (FVD and FID, which need weights, are in [`crate::fidelity`]).

use anyhow::{Result, bail};
use serde::Serialize;
use video_io::shard::Shard;

use crate::fidelity::FrechetScore;
use crate::quality::{psnr, ssim};

/// Mean quality per predicted frame position, over all clips.
#[derive(Clone, Debug, Serialize)]
pub struct FrameQuality {
    pub frame: usize,
    pub psnr_db: f64,
    pub ssim: f64,
    /// The same for the trivial prediction "the last context frame, repeated".
    pub last_frame_psnr_db: f64,
    pub last_frame_ssim: f64,
}

#[derive(Clone, Debug, Serialize)]
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
    let l = pred.layout;
    let (frames, side) = (l.frames as usize, l.width as usize);
    if context >= frames {
        bail!("--context {context}: clips have only {frames} frames");
    }
    let n = side * side * 3;
    let mut per_frame: Vec<FrameQuality> = (context..frames)
        .map(|frame| FrameQuality { frame, psnr_db: 0.0, ssim: 0.0, last_frame_psnr_db: 0.0, last_frame_ssim: 0.0 })
        .collect();
    for i in 0..pred.len {
        let (p, r) = (pred.get(i).pixels, real_shard.get(i).pixels);
        for q in &mut per_frame {
            let (a, b) = (&p[q.frame * n..][..n], &r[q.frame * n..][..n]);
            // Identical frames have infinite PSNR; cap at 100 dB so means stay finite.
            q.psnr_db += psnr(a, b).min(100.0) / pred.len as f64;
            q.ssim += ssim(a, b, side, side) / pred.len as f64;
            if context > 0 {
                let last = &r[(context - 1) * n..][..n];
                q.last_frame_psnr_db += psnr(last, b).min(100.0) / pred.len as f64;
                q.last_frame_ssim += ssim(last, b, side, side) / pred.len as f64;
            }
        }
    }
    let m = per_frame.len() as f64;
    Ok(EvalReport {
        clips: pred.len,
        context_frames: context,
        mean_psnr_db: per_frame.iter().map(|q| q.psnr_db).sum::<f64>() / m,
        mean_ssim: per_frame.iter().map(|q| q.ssim).sum::<f64>() / m,
        last_frame_psnr_db: per_frame.iter().map(|q| q.last_frame_psnr_db).sum::<f64>() / m,
        last_frame_ssim: per_frame.iter().map(|q| q.last_frame_ssim).sum::<f64>() / m,
        per_frame,
        frechet: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::save_clips;

    #[test]
    fn scores_predicted_frames_and_the_repeat_last_frame_baseline() {
        // Two-pixel-wide frames of constant grey: frame f of the real clip is 10·f everywhere.
        let (side, frames) = (2, 4);
        let n = side * side * 3;
        let real: Vec<u8> = (0..frames).flat_map(|f| vec![10 * f as u8; n]).collect();
        let mut pred = real.clone();
        pred[3 * n..].iter_mut().for_each(|v| *v += 5); // frame 3 off by 5
        let dir = tempfile::tempdir().unwrap();
        let (p, r) = (dir.path().join("p.bin"), dir.path().join("r.bin"));
        save_clips(&p, frames, side, &[pred], &[0]).unwrap();
        save_clips(&r, frames, side, &[real], &[0]).unwrap();
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
