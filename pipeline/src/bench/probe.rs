//! `sid2 bench probe`: one kernel family on the device, checked against an f32 reference
//! computed on the CPU, and timed. The GPU check runs each probe under its own timeout, so a
//! kernel that fails or hangs (the bf16 convolution backward an H100 once hit) costs one stage.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Distribution};
use model3d::Precision;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// `[n, n] × [n, n]`.
    MatmulSquare,
    /// `[m, k] × [k, n]` with `m ≥ 4n`, `n > 32`: the shape of a convolution's data gradient and
    /// of token-major Linear layers, where a bf16 TMA autotune candidate is suspected to fail.
    MatmulSkewed,
    /// A 3×3 convolution, forward and backward (data and weight gradients), through burn.
    Conv3x3,
    /// The same through nine shifted matmuls over chunks of pixels (every matmul m < 4n).
    Conv3x3Matmul,
    /// The project's attention operation, forward and backward.
    Attention,
}

#[derive(Debug, Serialize)]
pub struct Probe {
    pub case: Case,
    pub dtype: Precision,
    /// Sizes (see [`Case`]).
    pub shape: Vec<usize>,
    /// Largest difference from the f32 CPU reference, relative to the reference's largest value,
    /// over every output and gradient.
    pub max_relative_error: f64,
    pub tolerance: f64,
    pub ok: bool,
    /// One pass on the device after a warm-up pass.
    pub seconds: f64,
}

/// Runs `case` on `device` in `dtype` at full size divided by `shrink` (1 on a GPU; larger for
/// dry runs on the CPU).
pub fn run(case: Case, dtype: Precision, device: &Device, shrink: usize) -> Result<Probe> {
    let cpu = Device::flex();
    let s = |n: usize| (n / shrink).max(1);
    let (shape, outputs): (Vec<usize>, fn(&[Tensor<4>], DType) -> Vec<Tensor<4>>) = match case {
        Case::MatmulSquare => (vec![1, 1, s(4096), s(4096), s(4096)], matmul),
        Case::MatmulSkewed => (vec![1, 1, s(16384), s(1152), s(128).max(33)], matmul),
        Case::Conv3x3 => (vec![s(8).max(1), s(128), s(64), s(64)], conv),
        Case::Conv3x3Matmul => (vec![s(8).max(1), s(128), s(64), s(64)], conv_matmul),
        Case::Attention => (vec![1, 4, s(4096), 64], attention),
    };
    let inputs = |device: &Device| -> Vec<Tensor<4>> {
        device.seed(7);
        let normal = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
        match case {
            Case::MatmulSquare | Case::MatmulSkewed => vec![normal([1, 1, shape[2], shape[3]]), normal([1, 1, shape[3], shape[4]])],
            Case::Conv3x3 | Case::Conv3x3Matmul => vec![normal([shape[0], shape[1], shape[2], shape[3]]), normal([shape[1], shape[1], 3, 3]).mul_scalar(1.0 / (9.0 * shape[1] as f64).sqrt())],
            Case::Attention => (0..3).map(|_| normal([shape[0], shape[1], shape[2], shape[3]])).collect(),
        }
    };
    // The same random inputs on both sides: drawn on the CPU, copied to the device.
    let host = inputs(&cpu);
    // The reference is burn's own f32 operation on the CPU (for the matmul convolution too).
    let reference = if case == Case::Conv3x3Matmul { conv(&host, DType::F32) } else { outputs(&host, DType::F32) };
    let on_device: Vec<Tensor<4>> = host.iter().map(|t| t.clone().to_device(device)).collect();
    let _ = outputs(&on_device, dtype.dtype()); // warm-up: compilation, autotune
    let start = Instant::now();
    let got: Vec<Tensor<4>> = outputs(&on_device, dtype.dtype()).into_iter().map(|t| t.to_device(&cpu)).collect();
    let seconds = start.elapsed().as_secs_f64();
    let max_relative_error = got
        .into_iter()
        .zip(reference)
        .map(|(a, r)| {
            let scale = r.clone().abs().max().into_scalar::<f64>().max(1e-12);
            (a - r).abs().max().into_scalar::<f64>() / scale
        })
        .fold(0.0, f64::max);
    let tolerance = if dtype == Precision::Bf16 { 3e-2 } else { 2e-3 };
    Ok(Probe { case, dtype, shape, max_relative_error, tolerance, ok: max_relative_error.is_finite() && max_relative_error < tolerance, seconds })
}

/// `a × b` in `dtype`, back in f32.
fn matmul(x: &[Tensor<4>], dtype: DType) -> Vec<Tensor<4>> {
    vec![x[0].clone().cast(dtype).matmul(x[1].clone().cast(dtype)).cast(DType::F32)]
}

/// A 3×3 convolution's output and its data and weight gradients for the loss `Σ y`.
fn conv(x: &[Tensor<4>], dtype: DType) -> Vec<Tensor<4>> {
    conv_through(x, dtype, |input, weight| conv2d(input, weight, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1)))
}

fn conv_matmul(x: &[Tensor<4>], dtype: DType) -> Vec<Tensor<4>> {
    conv_through(x, dtype, |input, weight| model3d::network::conv::conv3x3_matmul(input, weight, None, None))
}

fn conv_through(x: &[Tensor<4>], dtype: DType, f: impl Fn(Tensor<4>, Tensor<4>) -> Tensor<4>) -> Vec<Tensor<4>> {
    let (input, weight) = (x[0].clone().autodiff().cast(dtype).require_grad(), x[1].clone().autodiff().cast(dtype).require_grad());
    let y = f(input.clone(), weight.clone());
    let grads = y.clone().cast(DType::F32).sum().backward();
    let grad = |t: &Tensor<4>| t.grad(&grads).expect("a gradient").cast(DType::F32);
    vec![y.cast(DType::F32).inner(), grad(&input), grad(&weight)]
}

/// The project's attention op: output and the gradients of `Σ o`.
fn attention(x: &[Tensor<4>], dtype: DType) -> Vec<Tensor<4>> {
    let [q, k, v] = [0, 1, 2].map(|i| x[i].clone().autodiff().cast(dtype).require_grad());
    let o = model3d::attention::attention(q.clone(), k.clone(), v.clone());
    let grads = o.clone().cast(DType::F32).sum().backward();
    let grad = |t: &Tensor<4>| t.grad(&grads).expect("a gradient").cast(DType::F32);
    vec![o.cast(DType::F32).inner(), grad(&q), grad(&k), grad(&v)]
}
