//! `sid2 bench` runs and reports what it measures (the numbers themselves are never asserted:
//! they go to BENCHMARKS.md).

mod common;

use common::{ok, preset, s};
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    serde_json::from_slice(&ok(&all).stdout).expect("bench prints JSON")
}

#[test]
fn bench_commands_report_their_measurements() {
    let video = preset("tiny_video.toml");
    let image = preset("tiny_image.toml");

    let train = bench(&["train", "--config", s(&video), "--warmup", "1", "--steps", "1", "--set", "data.size=16", "--set", "train.precision=bf16"]);
    assert_eq!(train["precision"], "bf16");
    assert!(train["step_s"].as_f64().unwrap() > 0.0 && train["train_gflop_per_sample"].as_f64().unwrap() > 0.0);

    // Unconditional video: one network pass per step.
    let sample = bench(&["sample", "--config", s(&video), "--batch", "1", "--set", "data.size=16", "--set", "sample.steps=3"]);
    assert_eq!((sample["steps"].as_u64(), sample["network_passes"].as_u64()), (Some(3), Some(3)));
    // Guided images: two passes per step inside the guidance interval, one outside.
    let sample = bench(&["sample", "--config", s(&image), "--batch", "2", "--set", "data.size=16", "--set", "sample.steps=8"]);
    let passes = sample["network_passes"].as_u64().unwrap();
    assert!(passes > 8 && passes < 16, "{sample}");

    // 2 images of 8x8 (128 pixels, below the Winograd floor): the direct kernels where the CPU
    // has AVX2.
    let conv = bench(&["conv", "--batch", "2", "--c-in", "3", "--c-out", "8", "--size", "8", "--reps", "1"]);
    assert_eq!((conv["shape"][1].as_u64(), conv["c_out"].as_u64()), (Some(3), Some(8)));
    assert!(conv["forward_gflops"].as_f64().unwrap() > 0.0 && conv["forward_backward_gflops"].as_f64().unwrap() > 0.0, "{conv}");

    let matmul = bench(&["matmul", "--n", "64", "--reps", "1", "--dtype", "bf16"]);
    assert_eq!(matmul["dtype"], "BF16");
    assert!(matmul["tflops"].as_f64().unwrap() > 0.0);
}
