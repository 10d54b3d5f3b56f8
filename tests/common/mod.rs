//! Helpers for the end-to-end tests: the `sid2` binary, the real data in ../shared/data, ffprobe.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mmaction2")
}

/// Unpacks `per_class` training and test images of each of `classes` from the shared CIFAR-10
/// archive into `dir/{train,test}/<class>/` and returns the two folders.
pub fn cifar10(dir: &Path, classes: &[&str], per_class: usize) -> (PathBuf, PathBuf) {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10/cifar10-jpg.tar.xz");
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar").arg("-xJf").arg(&archive).arg("-C").arg(&unpacked).args(["--wildcards", "*/test/*", "*/train/*"]).status().expect("tar runs");
    assert!(status.success(), "cannot unpack {}", archive.display());
    let root = unpacked.join("cifar10-jpg-YoongiKim");
    let mut out = Vec::new();
    for split in ["train", "test"] {
        for class in classes {
            let (from, to) = (root.join(split).join(class), dir.join(split).join(class));
            std::fs::create_dir_all(&to).unwrap();
            let mut names: Vec<_> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            for name in names.into_iter().take(per_class) {
                std::fs::rename(from.join(&name), to.join(&name)).unwrap();
            }
        }
        out.push(dir.join(split));
    }
    std::fs::remove_dir_all(&unpacked).unwrap();
    (out.remove(0), out.remove(0))
}

pub fn preset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(name)
}

pub fn sid2() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sid2"));
    c.arg("--quiet");
    c
}

/// Runs `sid2 args…` and returns its output, panicking with stderr if it fails.
pub fn ok(args: &[&str]) -> Output {
    let out = sid2().args(args).output().expect("sid2 runs");
    assert!(out.status.success(), "sid2 {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `sid2 args…`, expects failure, and returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = sid2().args(args).output().expect("sid2 runs");
    assert!(!out.status.success(), "sid2 {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn frames_per_ffprobe(path: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("ffprobe on {}: {:?}", path.display(), out))
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `dir` with its bytes, sorted by path.
pub fn walk(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()))
            }
        }
    }
    out.sort();
    out
}

/// tiny_video at 16x16, one clip per shared video, prepared under `dir` and trained for 16
/// samples: returns (data, run).
pub fn tiny_video_run(dir: &Path) -> (PathBuf, PathBuf) {
    let (config, videos, data, run) = (preset("tiny_video.toml"), shared().join("videos"), dir.join("data"), dir.join("run"));
    let small = ["--set", "data.size=16", "--set", "data.clips_per_video=1"];
    let mut prepare = vec!["prepare", "--config", s(&config), "--videos", s(&videos), "--out", s(&data)];
    prepare.extend(small);
    ok(&prepare);
    let mut train = vec!["train", "--run", s(&run), "--data", s(&data), "--config", s(&config), "--set", "train.total_samples=16", "--set", "train.checkpoint_every=16", "--set", "train.log_every=8"];
    train.extend(small);
    ok(&train);
    (data, run)
}
