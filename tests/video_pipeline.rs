//! The video pipeline end to end on the real clips: prepare → train (loss falls) → SIGKILL
//! mid-run and resume (same losses as an uninterrupted run) → sample → MP4 with the right frames.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{frames_per_ffprobe, ok, preset, s, shared, sid2};
use pipeline::run::metrics::read_train as read;

/// tiny_video at 16x16 so that the test stays short on two cores.
const SMALL: &[&str] = &[
    "--set", "data.size=16",
    "--set", "data.clips_per_video=4",
    "--set", "train.total_samples=288",
    "--set", "train.checkpoint_every=48",
    "--set", "train.log_every=8",
    "--set", "train.warmup_samples=16",
];

fn train_args<'a>(run: &'a str, data: &'a str, config: &'a str) -> Vec<&'a str> {
    let mut v = vec!["train", "--run", run, "--data", data, "--config", config];
    v.extend_from_slice(SMALL);
    v
}

#[test]
fn prepare_train_kill_resume_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, config) = (tmp.path().join("data"), preset("tiny_video.toml"));
    let videos = shared().join("videos");
    let mut prepare = vec!["prepare", "--config", s(&config), "--videos", s(&videos), "--out", s(&data)];
    prepare.extend_from_slice(SMALL);
    let out = ok(&prepare);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 inputs skipped"), "{}", String::from_utf8_lossy(&out.stdout));

    // Uninterrupted reference run.
    let reference = tmp.path().join("reference");
    ok(&train_args(s(&reference), s(&data), s(&config)));
    let ref_log = read(&reference.join("metrics.jsonl")).unwrap();
    assert_eq!(ref_log.last().unwrap().samples, 288);
    let first: f64 = ref_log[..3].iter().map(|r| r.loss).sum::<f64>() / 3.0;
    let last: f64 = ref_log[ref_log.len() - 3..].iter().map(|r| r.loss).sum::<f64>() / 3.0;
    assert!(last < 0.8 * first, "loss did not fall: {first} -> {last}");

    // The same run, killed with SIGKILL between checkpoints, then the same command again.
    let run = tmp.path().join("run");
    let mut child = sid2().args(train_args(s(&run), s(&data), s(&config))).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let metrics = run.join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed_at = loop {
        let seen = read(&metrics).ok().and_then(|l| l.last().map(|r| r.samples)).unwrap_or(0);
        if seen >= 72 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break seen;
        }
        assert!(Instant::now() < deadline, "training made no progress");
        assert!(child.try_wait().unwrap().is_none(), "training ended before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = ok(&train_args(s(&run), s(&data), s(&config)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let resumed: u64 = stdout.split("resumed at ").nth(1).and_then(|t| t.split(')').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{stdout}"));
    assert!(killed_at - resumed < 48 + 8, "lost more than a checkpoint interval: killed at {killed_at}, resumed at {resumed}");
    let log = read(&metrics).unwrap();
    assert_eq!(log.iter().map(|r| r.samples).collect::<Vec<_>>(), ref_log.iter().map(|r| r.samples).collect::<Vec<_>>());
    for (a, b) in log.iter().zip(&ref_log) {
        assert!((a.loss - b.loss).abs() <= 1e-6 * b.loss.abs(), "sample {}: resumed loss {} vs uninterrupted {}", a.samples, a.loss, b.loss);
    }

    // Predict 11 frames from 5 for two prepared clips.
    let samples = tmp.path().join("samples");
    ok(&["sample", "--run", s(&run), "--data", s(&data), "--count", "2", "--out", s(&samples), "--set", "sample.steps=8"]);
    for name in ["clip-000.mp4", "compare-000.mp4", "compare-001.mp4"] {
        assert_eq!(frames_per_ffprobe(&samples.join(name)), 16, "{name}");
    }
    let out = ok(&["eval", "--pred", s(&samples.join("predictions.bin")), "--real", s(&samples.join("real.bin")), "--context", "5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("frame")).count(), 11, "{text}");
    // Context frames are the real ones, exactly: eval over them from frame 0 reports 100 dB caps.
    let out = ok(&["eval", "--pred", s(&samples.join("predictions.bin")), "--real", s(&samples.join("real.bin")), "--context", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().take(5).all(|l| l.contains("PSNR 100.00 dB") && l.contains("SSIM 1.0000")), "{text}");
    // Any video file works as the source of context frames (here the MPEG-4 AVI with audio).
    let from_video = tmp.path().join("from_video");
    ok(&["sample", "--run", s(&run), "--video", s(&videos.join("test.avi")), "--count", "1", "--out", s(&from_video), "--set", "sample.steps=4"]);
    assert_eq!(frames_per_ffprobe(&from_video.join("compare-000.mp4")), 16);
    // Encoding the stored predictions again gives the same number of frames.
    let encoded = tmp.path().join("encoded");
    ok(&["encode", "--input", s(&samples.join("predictions.bin")), "--out", s(&encoded)]);
    assert_eq!(frames_per_ffprobe(&encoded.join("clip-001.mp4")), 16);
}
