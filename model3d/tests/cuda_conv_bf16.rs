//! Reproducer for the bf16 convolution backward that an H100 run recorded failing (BENCHMARKS.md, H100) with
//! burn-cuda 0.22.1: `Tile shape must be non-zero and <= 256`, then a hang. Ignored: it needs
//! a GPU (`cargo test --features cuda,autotune -p model3d --test cuda_conv_bf16 -- --ignored`), and it
//! has not run yet; the first GPU session runs it and records what it shows.
#![cfg(feature = "cuda")]

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

#[test]
#[ignore = "needs a CUDA GPU"]
fn conv3x3_forward_and_backward_in_bf16() {
    let device = Device::cuda(0).autodiff();
    // The shape measured then: batch 64, 128 -> 128 channels, 64x64, 3x3, padding 1.
    let x = Tensor::<4>::random([64, 128, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device).cast(DType::BF16);
    let w = Tensor::<4>::random([128, 128, 3, 3], burn::tensor::Distribution::Normal(0.0, 0.03), &device)
        .cast(DType::BF16)
        .require_grad();
    let y = conv2d(x, w.clone(), None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    let grads = y.cast(DType::F32).powi_scalar(2).mean().backward();
    let g = w.grad(&grads).expect("weight gradient");
    assert!(g.cast(DType::F32).abs().sum().into_scalar::<f32>().is_finite());
}
