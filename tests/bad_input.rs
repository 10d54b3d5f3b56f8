//! Bad input to the `sid2` command: a clear message naming the problem, a non-zero exit, and
//! nothing already written is lost.

mod common;

use common::{fails, ok, preset, s, shared, walk};

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
fn flipped_bytes_in_checkpoints_are_caught_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, config) = prepared(tmp.path());
    let mut train = train_command(&data, &run, &config);
    train.extend(["--set", "train.total_samples=16", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]);
    ok(&train);
    let flip = |checkpoint: &str| {
        let weights = run.join("checkpoints").join(checkpoint).join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0x40;
        std::fs::write(&weights, &bytes).unwrap();
    };
    // The newest damaged: sampling uses the one before and names the damaged file.
    flip("samples-000000000016");
    let out = common::sid2().args(["sample", "--run", s(&run), "--data", s(&data), "--count", "1", "--out", s(&tmp.path().join("o")), "--set", "sample.steps=2"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("samples-000000000016/model.safetensors is damaged") && err.contains("samples-000000000008"), "{err}");
    // Every checkpoint damaged: resume and sampling refuse, and change nothing.
    flip("samples-000000000008");
    let before: Vec<_> = walk(&run).into_iter().filter(|(p, _)| !p.ends_with(".lock")).collect();
    let mut more = train.clone();
    more.extend(["--set", "train.total_samples=24"]);
    for args in [more, train] {
        let err = fails(&args);
        assert!(err.contains("no intact checkpoint") && err.contains("model.safetensors") && err.contains("damaged"), "{err}");
    }
    let err = fails(&["sample", "--run", s(&run), "--data", s(&data), "--out", s(&tmp.path().join("o2"))]);
    assert!(err.contains("no intact checkpoint") && err.contains("damaged"), "{err}");
    let after: Vec<_> = walk(&run).into_iter().filter(|(p, _)| !p.ends_with(".lock")).collect();
    assert_eq!(after, before, "files changed after the failed commands");
}

#[test]
fn non_finite_gradients_are_zeroed_then_training_stops_without_a_bad_checkpoint() {
    // An absurd learning rate without clipping sends the weights to infinity within a step or two;
    // every later gradient is non-finite (its entries are zeroed on the device), and the first
    // log step that sees 3 or more in a row stops training.
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, config) = prepared(tmp.path());
    let mut train = train_command(&data, &run, &config);
    train.extend([
        "--set", "train.lr=1e30", "--set", "train.grad_clip=0", "--set", "train.warmup_samples=0",
        "--set", "train.max_nonfinite=3", "--set", "train.total_samples=400", "--set", "train.checkpoint_every=400",
    ]);
    let err = fails(&train);
    assert!(err.contains("non-finite updates in a row") && err.contains("train.max_nonfinite = 3"), "{err}");
    // No checkpoint was written (the only one would have come at 400 samples).
    assert!(!run.join("checkpoints").exists() || std::fs::read_dir(run.join("checkpoints")).unwrap().next().is_none());
}

#[test]
fn sampling_refuses_bad_flags_and_inputs_that_do_not_fit_the_run_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, config) = prepared(tmp.path());
    let mut train = train_command(&data, &run, &config);
    train.extend(["--set", "train.total_samples=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]);
    ok(&train);
    let out = tmp.path().join("out");
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--run", s(&run), "--data", s(&data), "--out", s(&out), "--set", "sample.steps=2"];
        args.extend_from_slice(extra);
        fails(&args)
    };
    for (flag, value) in [("--batch", "0"), ("--count", "0"), ("--fps", "0"), ("--upscale", "0"), ("--ema", "fast")] {
        let err = sample(&[flag, value]);
        assert!(err.contains(flag) && err.contains(value) && err.trim().lines().count() == 1, "{flag} {value}: {err}");
    }
    // Shards of another frame size.
    let big = tmp.path().join("data32");
    ok(&["prepare", "--config", s(&config), "--videos", s(&shared().join("videos")), "--out", s(&big), "--set", "data.size=32", "--set", "data.clips_per_video=1"]);
    let err = fails(&["sample", "--run", s(&run), "--data", s(&big), "--out", s(&out)]);
    assert!(err.contains("data32") && err.contains("16 frames of 32x32x3") && err.contains("16 frames of 16x16x3"), "{err}");
    let err = fails(&["sample", "--run", s(&run), "--data", s(&data), "--out", s(&out), "--set", "train.lr=1"]);
    assert!(err.contains("only sample.* keys"), "{err}");
    assert!(!out.exists(), "nothing may be written before the checks pass");

    // A half-written config, a checkpoint without its state, a config from another model.
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        copy_dir(&run, &to);
        to
    };
    let half = copy("half");
    let text = std::fs::read(half.join("config.toml")).unwrap();
    std::fs::write(half.join("config.toml"), &text[..text.len() / 2]).unwrap();
    let err = fails(&["sample", "--run", s(&half), "--data", s(&data), "--out", s(&out)]);
    assert!(err.contains("half/config.toml"), "{err}");
    let no_state = copy("no_state");
    std::fs::remove_file(no_state.join("checkpoints/samples-000000000008/state.json")).unwrap();
    let err = fails(&["sample", "--run", s(&no_state), "--data", s(&data), "--out", s(&out)]);
    assert!(err.contains("state.json") && err.contains("incomplete checkpoint"), "{err}");
    let other = copy("other");
    let text = std::fs::read_to_string(other.join("config.toml")).unwrap();
    assert!(text.contains("emb_channels = 64"), "{text}");
    let text = text.replace("emb_channels = 64", "emb_channels = 32");
    std::fs::write(other.join("config.toml"), text).unwrap();
    let err = fails(&["sample", "--run", s(&other), "--data", s(&data), "--out", s(&out)]);
    assert!(err.contains("do not fit the run's model"), "{err}");
    let err = fails(&["sample", "--run", s(&tmp.path().join("missing")), "--data", s(&data), "--out", s(&out)]);
    assert!(err.contains("missing: no run folder here"), "{err}");
    assert!(!out.exists());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &target) } else { std::fs::copy(&p, &target).unwrap(); }
    }
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

