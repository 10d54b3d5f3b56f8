//! Bad input to the `sid2` command: a clear message naming the problem, a non-zero exit, and
//! nothing already written is lost.

mod common;

use common::{fails, ok, preset, s, shared};

#[test]
fn missing_data_folder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&["train", "--run", s(&tmp.path().join("run")), "--data", "/nonexistent/shards", "--config", s(&preset("tiny_video.toml"))]);
    assert!(err.contains("/nonexistent/shards") && err.contains("sid2 prepare"), "{err}");
    let err = fails(&["prepare", "--config", s(&preset("tiny_video.toml")), "--videos", "/nonexistent/clips", "--out", s(&tmp.path().join("d"))]);
    assert!(err.contains("/nonexistent/clips"), "{err}");
}

#[test]
fn bad_configs_are_named_with_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    let text = std::fs::read_to_string(preset("tiny_video.toml")).unwrap().replace("[train]\n", "[train]\nlearning_rate = 0.1\n");
    std::fs::write(&bad, text).unwrap();
    let err = fails(&["info", "--config", s(&bad)]);
    assert!(err.contains("bad.toml") && err.contains("train.learning_rate") && err.contains("unknown field"), "{err}");
    let err = fails(&["info", "--config", s(&preset("tiny_video.toml")), "--set", "train.lr=-0.001"]);
    assert!(err.contains("train.lr = -0.001") && err.contains("positive"), "{err}");
    let err = fails(&["info", "--config", s(&preset("tiny_video.toml")), "--set", "diffusion.context_frames=16"]);
    assert!(err.contains("diffusion.context_frames = 16"), "{err}");
}

#[test]
fn a_flipped_byte_in_a_checkpoint_stops_resume_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, config) = prepared(tmp.path());
    let mut train = train_command(&data, &run, &config);
    train.extend(["--set", "train.total_samples=16", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]);
    ok(&train);
    let latest = run.join("checkpoints/samples-000000000016");
    let weights = latest.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(&weights, &bytes).unwrap();
    let before: Vec<_> = walk(&run);
    // Ask for more training: the resume must refuse the damaged checkpoint.
    let mut more = train.clone();
    more.extend(["--set", "train.total_samples=24"]);
    let err = fails(&more);
    assert!(err.contains("model.safetensors") && err.contains("damaged"), "{err}");
    let err = fails(&train);
    assert!(err.contains("model.safetensors") && err.contains("damaged"), "{err}");
    let err = fails(&["sample", "--run", s(&run), "--data", s(&data), "--out", s(&tmp.path().join("o"))]);
    assert!(err.contains("model.safetensors") && err.contains("damaged"), "{err}");
    assert_eq!(walk(&run), before, "files changed after the failed commands");
}

#[test]
fn non_finite_updates_are_skipped_then_training_stops_without_a_bad_checkpoint() {
    // An absurd learning rate without clipping sends the weights to infinity within a step or two;
    // every later update is non-finite and skipped, and after 3 in a row training stops.
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, config) = prepared(tmp.path());
    let mut train = train_command(&data, &run, &config);
    train.extend([
        "--set", "train.lr=1e30", "--set", "train.grad_clip=0", "--set", "train.warmup_samples=0",
        "--set", "train.max_nonfinite=3", "--set", "train.total_samples=400", "--set", "train.checkpoint_every=400",
    ]);
    let err = fails(&train);
    assert!(err.contains("3 non-finite updates in a row") && err.contains("train.max_nonfinite"), "{err}");
    // No checkpoint was written (the only one would have come at 400 samples).
    assert!(!run.join("checkpoints").exists() || std::fs::read_dir(run.join("checkpoints")).unwrap().next().is_none());
}

/// tiny_video at 16x16, one clip per video.
const SMALL: [&str; 4] = ["--set", "data.size=16", "--set", "data.clips_per_video=1"];

/// The shared real clips prepared under `dir`: returns (data, run folder, config).
fn prepared(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (data, run, config) = (dir.join("data"), dir.join("run"), preset("tiny_video.toml"));
    let videos = shared().join("videos");
    let mut args = vec!["prepare", "--config", s(&config), "--videos", s(&videos), "--out", s(&data)];
    args.extend(SMALL);
    ok(&args);
    (data, run, config)
}

/// `sid2 train` on the prepared data with the same small settings.
fn train_command<'a>(data: &'a std::path::Path, run: &'a std::path::Path, config: &'a std::path::Path) -> Vec<&'a str> {
    let mut args = vec!["train", "--run", s(run), "--data", s(data), "--config", s(config)];
    args.extend(SMALL);
    args
}

/// Every file under `dir` with its bytes.
fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { out.push((p.clone(), std::fs::read(&p).unwrap())) }
        }
    }
    out.sort();
    out
}
