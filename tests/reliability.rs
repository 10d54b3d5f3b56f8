//! What users lose data to, each case from a careless or hostile session on the real clips: two
//! writers on one run, outputs over inputs, failed starts, damaged or half-deleted checkpoints,
//! interrupts, commands that did nothing, and words that did not say what was wrong.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{fails, ok, preset, s, shared, sid2, walk};

/// tiny_video at 16x16, one clip per video.
const SMALL: [&str; 4] = ["--set", "data.size=16", "--set", "data.clips_per_video=1"];

/// The shared real clips prepared under `dir` at the small size.
fn prepared(dir: &Path) -> PathBuf {
    let (data, videos) = (dir.join("data"), shared().join("videos"));
    let mut args = vec!["prepare", "--config", s(&TINY_VIDEO), "--videos", s(&videos), "--out", s(&data)];
    args.extend(SMALL);
    ok(&args);
    data
}

static TINY_VIDEO: LazyLock<PathBuf> = LazyLock::new(|| preset("tiny_video.toml"));

/// `sid2 train` of tiny_video at the small size, with `extra` settings.
fn train<'a>(run: &'a Path, data: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--run", s(run), "--data", s(data), "--config", s(&TINY_VIDEO)];
    args.extend(SMALL);
    args.extend_from_slice(extra);
    args
}

/// A long training run in the background, returned once it has written its first checkpoint.
fn background(run: &Path, data: &Path) -> Child {
    let args = train(run, data, &["--set", "train.total_samples=800000", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]);
    let mut child = sid2().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !run.join("checkpoints/samples-000000000008/state.json").exists() {
        assert!(child.try_wait().unwrap().is_none(), "training ended early");
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Files under `dir` with their bytes, leaving out the lock file (whose holder line each writer
/// rewrites).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(dir).into_iter().filter(|(p, _)| !p.ends_with(".lock")).collect()
}

#[test]
fn one_writer_per_run_readers_meanwhile_and_no_stale_lock_after_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let run = tmp.path().join("run");
    let mut first = background(&run, &data);
    // A second writer is refused at once, naming the holder; nothing of the run changes.
    let err = fails(&train(&run, &data, &["--set", "train.total_samples=800000", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]));
    assert!(err.contains("is in use by `sid2 train`") && err.contains(&format!("pid {}", first.id())), "{err}");
    // Readers work while it trains.
    let out = tmp.path().join("samples");
    ok(&["sample", "--run", s(&run), "--data", s(&data), "--count", "1", "--out", s(&out), "--set", "sample.steps=2"]);
    ok(&["report", "--run", s(&run)]);
    first.kill().unwrap(); // SIGKILL: the kernel releases the lock with the process.
    first.wait().unwrap();
    let out = ok(&train(&run, &data, &["--set", "train.total_samples=16", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed at"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn an_interrupt_writes_a_checkpoint_at_the_next_step_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let run = tmp.path().join("run");
    let child = background(&run, &data);
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("sh").args(["-c", &format!("kill -INT {}", child.id())]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let at: u64 = err.split("interrupted at sample ").nth(1).and_then(|t| t.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{err}"));
    let checkpoint = run.join(format!("checkpoints/samples-{at:012}"));
    assert!(err.contains(&checkpoint.display().to_string()) && checkpoint.join("state.json").exists(), "{err}");
    // The same command resumes there.
    let out = ok(&train(&run, &data, &["--set", "train.total_samples=800000", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8", "--set", &format!("train.total_samples={}", at + 8)]));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("resumed at {at}")), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_failed_start_leaves_nothing_behind_and_the_corrected_command_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let run = tmp.path().join("new");
    let short = ["--set", "train.total_samples=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"];
    let folder = tmp.path().to_path_buf();
    let not_weights = data.join("manifest.json");
    // A preparation that was stopped part-way (its manifest says so) is not trained on.
    let half = tmp.path().join("half-prepared");
    std::fs::create_dir(&half).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, half.join(p.file_name().unwrap())).unwrap();
    }
    let manifest = std::fs::read_to_string(half.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"complete\": true"), "{manifest}");
    std::fs::write(half.join("manifest.json"), manifest.replace("\"complete\": true", "\"complete\": false")).unwrap();
    let err = fails(&train(&run, &half, &short));
    assert!(err.contains("preparation did not finish") && err.contains("sid2 prepare"), "{err}");
    assert!(!run.exists());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--set", "data.size=32"], "16x16"),
        (vec!["--val", "/nonexistent/heldout"], "/nonexistent/heldout"),
        (vec!["--init", s(&folder)], "is a folder"),
        (vec!["--init", s(&not_weights)], "manifest.json"),
        (vec!["--device", "cuda"], "--device cuda"),
    ];
    for (extra, named) in cases {
        let mut args = train(&run, &data, &short);
        args.extend(extra.iter().copied());
        let err = fails(&args);
        assert!(err.contains(named) && err.trim().lines().count() == 1, "{extra:?}: {err}");
        assert!(!run.exists(), "{extra:?} left {:?}", walk(tmp.path()).iter().filter(|(p, _)| p.starts_with(&run)).map(|(p, _)| p.clone()).collect::<Vec<_>>());
    }
    ok(&train(&run, &data, &short));
}

#[test]
fn resume_passes_over_damaged_and_half_deleted_checkpoints_and_refuses_another_config() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let run = tmp.path().join("run");
    let every = ["--set", "train.checkpoint_every=8", "--set", "train.log_every=8", "--set", "train.keep_checkpoints=2"];
    let upto = |n: &'static str| {
        let mut extra = every.to_vec();
        extra.extend(["--set", n]);
        extra
    };
    ok(&train(&run, &data, &upto("train.total_samples=24")));
    let checkpoints = run.join("checkpoints");
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&checkpoints), ["samples-000000000016", "samples-000000000024"]);
    // A flipped byte in the newest: the resume takes the one before and names the damaged one.
    let weights = checkpoints.join("samples-000000000024/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(&weights, &bytes).unwrap();
    // A kill while deleting an old one left an empty folder under a checkpoint's name, and one
    // already renamed away.
    std::fs::create_dir(checkpoints.join("samples-000000000008")).unwrap();
    std::fs::create_dir(checkpoints.join(".deleting-samples-000000000004")).unwrap();
    let mut more = train(&run, &data, &upto("train.total_samples=32"));
    let out = sid2().args(&more).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("passed over damaged checkpoint") && stderr.contains("samples-000000000024/model.safetensors"), "{stderr}");
    assert!(stdout.contains("resumed at 16"), "{stdout}");
    assert!(!stderr.contains("\u{1b}["), "colours on a stderr that is not a terminal: {stderr:?}");
    assert_eq!(names(&checkpoints), ["samples-000000000024", "samples-000000000032"], "keep_checkpoints = 2, and no half-deleted folder left");

    // Without config.toml, the checkpoints still know their config: another learning rate is
    // refused with its key, the same config resumes.
    std::fs::remove_file(run.join("config.toml")).unwrap();
    let before = files(&run);
    more = train(&run, &data, &upto("train.total_samples=40"));
    let mut other = more.clone();
    other.extend(["--set", "train.lr=0.05"]);
    let err = fails(&other);
    assert!(err.contains("train.lr = 0.001") && err.contains("gives 0.05") && err.contains("samples-000000000032"), "{err}");
    assert_eq!(files(&run), before, "a refused resume changed the run");
    // With config.toml, the refusal names the key too.
    ok(&more);
    let mut other = more.clone();
    other.extend(["--set", "train.batch_size=2"]);
    let err = fails(&other);
    assert!(err.contains("train.batch_size = 4, given 2"), "{err}");
}

#[test]
fn outputs_never_overwrite_inputs_or_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let run = tmp.path().join("run");
    ok(&train(&run, &data, &["--set", "train.total_samples=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]));
    let samples = tmp.path().join("samples");
    ok(&["sample", "--run", s(&run), "--data", s(&data), "--count", "1", "--out", s(&samples), "--set", "sample.steps=2"]);
    let before = files(tmp.path());
    let weights = run.join("checkpoints/samples-000000000008/model.safetensors");
    let err = fails(&["export", "--run", s(&run), "--to", s(&weights)]);
    assert!(err.contains("--to") && err.contains("inside the checkpoints of run"), "{err}");
    let twisted = run.join("checkpoints/../checkpoints/samples-000000000008/ema-0.95.safetensors");
    let err = fails(&["export", "--run", s(&run), "--to", s(&twisted)]);
    assert!(err.contains("is an input of this command") || err.contains("inside the checkpoints"), "{err}");
    let (pred, real) = (samples.join("predictions.bin"), samples.join("real.bin"));
    let err = fails(&["eval", "--pred", s(&pred), "--real", s(&real), "--context", "5", "--out", s(&real)]);
    assert!(err.contains("--out") && err.contains("is an input"), "{err}");
    let err = fails(&["encode", "--input", s(&pred), "--out", s(&run.join("checkpoints"))]);
    assert!(err.contains("inside the checkpoints"), "{err}");
    assert_eq!(files(tmp.path()), before, "a refused command wrote something");
    // Said on purpose, it is done.
    let copy = tmp.path().join("real-copy.bin");
    std::fs::copy(&real, &copy).unwrap();
    ok(&["eval", "--pred", s(&pred), "--real", s(&copy), "--context", "5", "--out", s(&copy), "--overwrite"]);
    assert!(std::fs::read_to_string(&copy).unwrap().contains("mean_psnr_db"));
}

#[test]
fn inputs_that_used_to_panic_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let config = preset("tiny_video.toml");
    // A file name that is not UTF-8 among real videos: skipped and listed, the others prepared.
    let videos = tmp.path().join("videos");
    std::fs::create_dir(&videos).unwrap();
    std::fs::copy(shared().join("videos/part_0.mp4"), videos.join("good.mp4")).unwrap();
    std::fs::copy(shared().join("videos/demo.mp4"), videos.join("good2.mp4")).unwrap();
    let bad_name = std::ffi::OsStr::from_bytes(b"bad-\xff.mp4");
    std::fs::copy(shared().join("videos/test.mp4"), videos.join(bad_name)).unwrap();
    let data = tmp.path().join("data");
    let mut args = vec!["prepare", "--config", s(&config), "--videos", s(&videos), "--out", s(&data)];
    args.extend(SMALL);
    let out = ok(&args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 inputs skipped"), "{}", String::from_utf8_lossy(&out.stdout));
    let manifest = std::fs::read_to_string(data.join("manifest.json")).unwrap();
    assert!(manifest.contains("bad-\u{fffd}.mp4") && manifest.contains("not valid UTF-8"), "{manifest}");
    let run = tmp.path().join("run");
    ok(&train(&run, &data, &["--set", "train.total_samples=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]));
    let bad_video = videos.join(bad_name);
    let out = sid2().args(["sample", "--run", s(&run), "--out", s(&tmp.path().join("o")), "--video"]).arg(&bad_video).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");

    let info = |set: &str| fails(&["info", "--config", s(&config), "--set", set]);
    for (set, named) in [
        ("model.channels=[32,64,0]", "model.channels[2] = 0"),
        ("model.in_channels=1", "model.in_channels = 1: must be 3"),
        ("train.max_nonfinite=0", "train.max_nonfinite = 0"),
        ("sample.steps=1000000000000", "sample.steps = 1000000000000: must be from 1 to 10000"),
        ("model.channels=[1000000000000,64,64]", "model.channels[0]"),
        ("data.size=100000000000", "data.size"),
    ] {
        let err = info(set);
        assert!(err.contains(named), "{set}: {err}");
    }
    for args in [vec!["bench", "attention", "--tokens", "0"], vec!["bench", "matmul", "--n", "1000000000000"], vec!["bench", "decode", "--videos", "x", "--size", "0"]] {
        let out = sid2().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn commands_that_would_do_nothing_fail_and_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let config = preset("tiny_video.toml");
    let image_config = preset("tiny_image.toml");
    let out = tmp.path().join("k");
    let classes = tmp.path().join("classes.txt");
    std::fs::write(&classes, "abseiling\n").unwrap();
    let junk = tmp.path().join("junk.csv");
    std::fs::write(&junk, [0x00u8, 0x13, 0xff, 0x7f, 0x10].repeat(20)).unwrap();
    let kinetics = |csv: &Path, root: &Path| fails(&["prepare", "--config", s(&config), "--out", s(&out), "--kinetics-csv", s(csv), "--kinetics-root", s(root), "--classes", s(&classes)]);
    let err = kinetics(tmp.path(), tmp.path());
    assert!(err.contains("--kinetics-csv") && err.contains("is a folder"), "{err}");
    let err = kinetics(&junk, tmp.path());
    assert!(err.contains("junk.csv") && err.contains("not a Kinetics annotation CSV"), "{err}");
    let csv = tmp.path().join("k600.csv");
    std::fs::write(&csv, "label,youtube_id,time_start,time_end,split\nabseiling,0wR5jVB-WPk,417,427,val\n").unwrap();
    let err = kinetics(&csv, &tmp.path().join("missing-root"));
    assert!(err.contains("--kinetics-root") && err.contains("no such file or folder"), "{err}");
    let err = kinetics(&csv, tmp.path());
    assert!(err.contains("no clips were made") && err.contains("1 missing"), "{err}");

    // An empty shard, a report of a folder that is no run.
    let empty = tmp.path().join("empty.bin");
    video_io::clips::Clips::new(ndarray::Array5::zeros((0, 16, 8, 8, 3)), Vec::new()).write(&empty).unwrap();
    let err = fails(&["encode", "--input", s(&empty), "--out", s(&tmp.path().join("e"))]);
    assert!(err.contains("holds no clips"), "{err}");
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let err = fails(&["report", "--run", s(&bare)]);
    assert!(err.contains("not a run folder"), "{err}");
    assert_eq!(std::fs::read_dir(&bare).unwrap().count(), 0);

    // A truncated JPEG among real images is skipped, not read as a grey image.
    let images = tmp.path().join("images/cat");
    std::fs::create_dir_all(&images).unwrap();
    let frames = shared().join("frames");
    let jpegs: Vec<PathBuf> = std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "jpg")).take(2).collect();
    std::fs::copy(&jpegs[0], images.join("whole.jpg")).unwrap();
    let bytes = std::fs::read(&jpegs[1]).unwrap();
    std::fs::write(images.join("cut.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    let data = tmp.path().join("img");
    let out = ok(&["prepare", "--config", s(&image_config), "--images", s(&tmp.path().join("images")), "--out", s(&data)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 inputs skipped"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(std::fs::read_to_string(data.join("manifest.json")).unwrap().contains("truncated JPEG"));

    // --video on an image run.
    let run = tmp.path().join("image-run");
    ok(&["train", "--run", s(&run), "--data", s(&data), "--config", s(&image_config), "--set", "train.total_samples=8", "--set", "train.checkpoint_every=8", "--set", "train.log_every=8"]);
    let err = fails(&["sample", "--run", s(&run), "--video", s(&shared().join("videos/part_0.mp4")), "--out", s(&tmp.path().join("o"))]);
    assert!(err.contains("--video") && err.contains("class-conditional images"), "{err}");
}

#[test]
fn command_line_words_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&["train"]);
    assert!(err.contains("--run <RUN>") && err.contains("--data <DATA>") && err.trim().lines().count() == 1, "{err}");
    let err = fails(&["eval", "--pred", s(tmp.path()), "--real", s(tmp.path()), "--context", "5"]);
    assert!(err.contains("--pred") && err.contains("is a folder, expected a file"), "{err}");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[train]\nlr = = 2\n").unwrap();
    let err = fails(&["info", "--config", s(&bad)]);
    assert!(err.contains("bad.toml") && err.contains("line 2, column"), "{err}");
}
