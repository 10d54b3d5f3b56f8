//! The GPU code path under test without a GPU: burn's wgpu backend (the burn-cubecl kernels,
//! fusion and autotuner that burn-cuda runs, compiled to WGSL) on Mesa's software Vulkan driver,
//! lavapipe. Each test runs the same work on the CPU (burn-flex, the project's own kernels) and on
//! wgpu and compares them: the Philox words bit for bit, losses and sampled pixels within what
//! f32 arithmetic in another order allows.
//!
//! Built only with `--features wgpu` (the README's test command builds it); it needs a Vulkan
//! adapter, a GPU or lavapipe (`scripts/install-deps.sh` installs Debian's `mesa-vulkan-drivers`).
//! lavapipe has no bf16 (Vulkan 1.3 with f16 only, docs/wgpu.md), so everything here runs in f32.
#![cfg(any(feature = "wgpu", feature = "wgpu-untuned"))]

mod common;

use std::path::Path;

use burn::prelude::*;
use common::{ok, preset, s, shared};
use model3d::philox::Stream;
use pipeline::globals::{Backend, Globals};
use video_io::clips::Clips;
use video_io::shard::Shard;

fn wgpu() -> Device {
    Globals { backend: Backend::Wgpu, progress: false, autotune: None }.device().expect("a wgpu adapter (lavapipe: apt install mesa-vulkan-drivers)")
}

fn floats(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn philox_noise_is_the_cpus() {
    let stream = Stream { seed: 0xFFFF_FFFF_1234_5678, stream: (7 << 32) | 3 };
    let (first, clips, blocks) = (u32::MAX as u64 - 1, 3, 257); // clip indices wrap past 2^32
    let words = |device: &Device| stream.bits(first, clips, blocks, device).map(|t| t.into_data().convert::<i64>().try_into_vec::<i64>().unwrap());
    assert_eq!(words(&wgpu()), words(&Device::flex()), "the integer words are exact on every backend");
    // The Box–Muller step runs in f32 through each backend's `ln`, `sqrt`, `cos` and `sin`.
    let (gpu, cpu) = (floats(stream.normals(first, clips, 4 * blocks, &wgpu())), floats(stream.normals(first, clips, 4 * blocks, &Device::flex())));
    let worst = gpu.iter().zip(&cpu).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
    assert!(worst <= 1e-5, "normals differ by {worst} (relative)");
}

/// The GPU forms of the network's operations, as `gpu-check.sh` trains with them.
const GPU_FORMS: &[&str] = &["--set", "model.conv=\"matmul\"", "--set", "model.linear=\"chunked\""];

/// tiny_video at 16x16, few samples: prepare once, on the CPU.
fn prepare(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    ok(&["prepare", "--config", s(&preset("tiny_video.toml")), "--videos", s(&shared().join("videos")), "--out", s(&data), "--set", "data.size=16", "--set", "data.clips_per_video=1"]);
    data
}

fn train(device: &str, run: &Path, data: &Path) -> Vec<f64> {
    let config = preset("tiny_video.toml");
    let mut args = vec!["--device", device, "train", "--run", s(run), "--data", s(data), "--config", s(&config)];
    args.extend_from_slice(&["--set", "data.size=16", "--set", "data.clips_per_video=1", "--set", "train.batch_size=2", "--set", "train.total_samples=8", "--set", "train.log_every=2"]);
    args.extend_from_slice(&["--set", "train.checkpoint_every=8", "--set", "train.warmup_samples=2", "--set", "train.val_every=0"]);
    args.extend_from_slice(GPU_FORMS);
    ok(&args);
    pipeline::run::metrics::read_train(&run.join("metrics.jsonl")).unwrap().iter().map(|r| r.loss).collect()
}

fn sample(device: &str, run: &Path, data: &Path, out: &Path) -> Clips {
    // The run's saved config carries the GPU forms it trained with.
    ok(&["--device", device, "sample", "--run", s(run), "--data", s(data), "--count", "2", "--out", s(out), "--set", "sample.steps=4"]);
    Clips::read(&Shard::open(&out.join("predictions.bin")).unwrap())
}

#[test]
fn tiny_video_trains_and_samples_as_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepare(tmp.path());
    let (cpu_run, gpu_run) = (tmp.path().join("cpu"), tmp.path().join("wgpu"));
    let (cpu, gpu) = (train("cpu", &cpu_run, &data), train("wgpu", &gpu_run, &data));
    assert_eq!(cpu.len(), gpu.len());
    // The first loss is the same weights on the same batch and noise: only the order of f32 sums
    // differs (about 1e-7 relative per sum). Each Adam step then moves every weight by about the
    // learning rate times the sign of its gradient, so weights whose gradient is near zero step
    // apart and the losses drift: measured 1.5e-4, 3.7e-4 and 4.3e-4 relative at steps 2 to 4.
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let tolerance = if i == 0 { 1e-5 } else { 2e-3 };
        assert!((c - g).abs() <= tolerance * c.abs(), "log step {i}: wgpu loss {g} against the CPU's {c}");
    }
    // Both devices sample the CPU run's weights with the same noise.
    let (c, g) = (sample("cpu", &cpu_run, &data, &tmp.path().join("s-cpu")), sample("wgpu", &cpu_run, &data, &tmp.path().join("s-wgpu")));
    same_pixels(&c, &g);
}

/// Pixels from f32 values that differ by about 1e-6: equal after rounding to 8 bits but where a
/// value lies within that of a rounding boundary (measured: none of the video test's 16,384).
fn same_pixels(cpu: &Clips, gpu: &Clips) {
    assert_eq!(cpu.pixels.shape(), gpu.pixels.shape());
    let diff: Vec<i32> = cpu.pixels.iter().zip(gpu.pixels.iter()).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
    let worst = diff.iter().max().copied().unwrap();
    let off = diff.iter().filter(|&&d| d > 0).count() as f64 / diff.len() as f64;
    assert!(worst <= 1 && off < 0.01, "sampled pixels differ by up to {worst} levels, {:.2} % of them", 100.0 * off);
}

#[test]
fn the_image_demo_samples_as_on_the_cpu() {
    // The bundled CIFAR-10 weights, every class, guidance inside its interval: burn's direct
    // convolution and its fused attention forward on wgpu (no autodiff), the project's on the CPU.
    let tmp = tempfile::tempdir().unwrap();
    let demo = |device: &str| {
        let out = tmp.path().join(device);
        ok(&["--device", device, "demo", "--images", "--out", s(&out), "--count", "1", "--set", "sample.steps=4"]);
        Clips::read(&Shard::open(&out.join("images/predictions.bin")).unwrap())
    };
    let (cpu, gpu) = (demo("cpu"), demo("wgpu"));
    assert_eq!(cpu.labels, gpu.labels);
    same_pixels(&cpu, &gpu);
}

#[test]
fn bf16_is_refused_by_name_on_wgpu() {
    // WGSL has no bf16: the k600_64 preset (train.precision = "bf16") stops before any kernel runs.
    let err = common::fails(&["--device", "wgpu", "bench", "train", "--config", s(&preset("k600_64.toml")), "--steps", "1"]);
    assert!(err.contains("train.precision") && err.trim().lines().count() == 1, "{err}");
}
