//! `sid2 demo` from a folder that is not the repository: the bundled clips travel in the binary.

mod common;

use common::{frames_per_ffprobe, s, sid2};

#[test]
fn the_demo_runs_from_any_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let tiny = [
        "--set", "data.size=16", "--set", "data.clips_per_video=2", "--set", "train.total_samples=16",
        "--set", "train.checkpoint_every=16", "--set", "train.log_every=8", "--set", "sample.steps=2",
    ];
    let output = sid2().current_dir(tmp.path()).args(["demo", "--out", s(&out), "--count", "1"]).args(tiny).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("mean over 1 clips x 4 samples: PSNR") && stdout.contains("best of 4: "), "{stdout}");
    assert!(stdout.contains("a 32-frame rollout of the held-out video"), "{stdout}");
    assert_eq!(frames_per_ffprobe(&out.join("samples/rollout/clip-000.mp4")), 32);
    let samples = out.join("samples");
    assert_eq!(frames_per_ffprobe(&samples.join("compare-000.mp4")), 16);
    let strip = image::open(samples.join("strip-000.png")).unwrap();
    assert_eq!((strip.width(), strip.height()), (16 * 16 * 4, 2 * 16 * 4), "two rows of 16 frames, upscaled 4x");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(samples.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["per_frame"].as_array().unwrap().len(), 11);
    let page = std::fs::read_to_string(out.join("run/report.html")).unwrap();
    assert!(page.contains("<h2>Evaluation</h2>") && page.contains("<h2>Newest samples</h2>"), "the demo's evaluation and samples reach its report");
}

#[test]
fn the_image_demo_draws_every_cifar10_class_from_the_bundled_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let output = sid2().current_dir(tmp.path()).args(["demo", "--images", "--out", s(&out), "--count", "2", "--set", "sample.steps=4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("20 CIFAR-10 images (2 per class"), "{stdout}");
    // Ten rows (one per class) of two 3x-upscaled 32x32 images, a name column before them.
    let grid = image::open(out.join("images/samples.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (104 + 2 * (96 + 2) + 2, 2 + 10 * (96 + 2)));
}
