//! Helpers for the video_io tests: the real clips in ../shared/data and the FFmpeg command line.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mmaction2")
}

/// The four real clips (H.264 MP4 and MPEG-4 AVI with audio).
pub fn real_clips() -> Vec<PathBuf> {
    ["demo.mp4", "part_0.mp4", "test.mp4", "test.avi"].iter().map(|f| shared().join("videos").join(f)).collect()
}

/// Runs a command and returns stdout, panicking with stderr on failure.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `(frames, width, height)` of the first video stream according to ffprobe (decoding every frame).
pub fn ffprobe(path: &std::path::Path) -> (usize, usize, usize) {
    let out = run(Command::new("ffprobe").args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0"]).arg(path));
    let text = String::from_utf8(out).unwrap();
    let v: Vec<usize> = text.trim().split(',').map(|s| s.parse().unwrap()).collect();
    (v[2], v[0], v[1])
}

pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}
