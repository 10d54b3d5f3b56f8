//! The project's attention operation against burn's decomposed attention: values and gradients
//! (dq, dk, dv) on random inputs, f32 and bf16, token counts on and off the block size, head
//! widths 8 to 128, one token, heads stored head-major and token-major, scores spanning a large
//! range; the tensor-op version used on CUDA; and a small model trained with each path on real
//! frames.

mod common;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::DType;
use common::{device, max_abs_diff, real_clip, small_config};
use model3d::attention::{attention, composed, decomposed};
use model3d::{AttentionImpl, UViT, UViTConfig};

fn randn(shape: [usize; 4], seed: u64, spread: f32) -> Tensor<4> {
    let n = shape.iter().product();
    let values: Vec<f32> = model3d::noise::gaussian(seed, n).into_iter().map(|v| v * spread).collect();
    Tensor::from_data(TensorData::new(values, shape), &device())
}

/// Output and the gradients of `Σ out ∘ w` for `f`, on the autodiff device.
fn run(f: fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>, [q, k, v, w]: [Tensor<4>; 4], dtype: DType) -> [Tensor<4>; 4] {
    let ad = device().autodiff();
    let [q, k, v] = [q, k, v].map(|t| t.autodiff().cast(dtype).require_grad());
    let out = f(q.clone(), k.clone(), v.clone());
    let grads = (out.clone().cast(DType::F32) * w.to_device(&ad)).sum().backward();
    let grad = |t: &Tensor<4>| t.grad(&grads).expect("a gradient").cast(DType::F32);
    [out.cast(DType::F32).inner(), grad(&q), grad(&k), grad(&v)]
}

/// Largest difference relative to the reference's largest magnitude (absolute below 1: with one
/// token, dq is zero up to rounding).
fn relative(a: Tensor<4>, reference: Tensor<4>) -> f32 {
    max_abs_diff(a, reference.clone()) / reference.abs().max().into_scalar::<f32>().max(1.0)
}

#[test]
fn values_and_gradients_match_the_decomposed_path() {
    // (batch, heads, tokens, head width, score spread): token counts below, at, between and above
    // the CPU kernel's blocks; a single token; and scores in the hundreds (spread 8 on q and k).
    let block = model3d::attention::kernel::BLOCK;
    let cases = [(2, 3, 1, 8, 1.0), (1, 2, 17, 16, 1.0), (2, 2, block, 32, 1.0), (1, 2, block + 2, 64, 1.0), (1, 1, 100, 128, 1.0), (1, 2, 70, 16, 8.0), (1, 1, 2 * block + 44, 16, 1.0)];
    for (i, &(b, h, n, d, spread)) in cases.iter().enumerate() {
        let seed = 10 * i as u64;
        // Every other case takes q, k and v as the blocks do: token-major [B, N, H, D] seen as
        // [B, H, N, D]; the operation reads them in place and writes its results in that order.
        let heads = |seed, spread| match i % 2 {
            0 => randn([b, h, n, d], seed, spread),
            _ => randn([b, n, h, d], seed, spread).swap_dims(1, 2),
        };
        let inputs = [heads(seed, spread), heads(seed + 1, spread), heads(seed + 2, 1.0), randn([b, h, n, d], seed + 3, 1.0)];
        // f32: the two paths differ only by summation order. bf16: the operation computes in f32
        // from bf16 inputs and rounds its results to bf16 (2^-9 relative); the reference is the
        // decomposed path in f32 on the same bf16-rounded inputs.
        let rounded = inputs.clone().map(|t| t.cast(DType::BF16).cast(DType::F32));
        for (dtype, tolerance, reference_inputs) in [(DType::F32, 2e-5, inputs.clone()), (DType::BF16, 1e-2, rounded)] {
            let ours = run(attention, inputs.clone(), dtype);
            let reference = run(decomposed, reference_inputs, DType::F32);
            for (name, (a, r)) in ["out", "dq", "dk", "dv"].iter().zip(ours.into_iter().zip(reference)) {
                let err = relative(a.clone(), r);
                assert!(err < tolerance && a.is_finite().all().into_scalar::<bool>(), "{dtype:?} b{b} h{h} n{n} d{d} spread {spread}: {name} off by {err}");
            }
        }
    }
}

#[test]
fn the_tensor_op_version_matches_the_decomposed_path() {
    // composed:: runs on CUDA under autodiff; here it runs on the CPU against the reference.
    let [q, k, v, d_o] = [0, 1, 2, 3].map(|s| randn([1, 2, 300, 16], 40 + s, if s < 2 { 3.0 } else { 1.0 }));
    let scale = 0.25;
    let (o, lse) = composed::forward(q.clone(), k.clone(), v.clone(), scale);
    let reference = run(decomposed, [q.clone(), k.clone(), v.clone(), d_o.clone()], DType::F32);
    assert!(relative(o.clone(), reference[0].clone()) < 2e-5);
    let grads = composed::backward([q, k, v, o, d_o], lse, scale);
    for (name, (a, r)) in ["dq", "dk", "dv"].iter().zip(grads.into_iter().zip(reference.into_iter().skip(1))) {
        let err = relative(a, r);
        assert!(err < 2e-5, "{name} off by {err}");
    }
}

#[test]
fn a_small_model_trains_the_same_with_either_attention() {
    // Real frames, a Transformer level over 4 frames of 8x8 tokens and temporal attention: the
    // loss curves of 12 AdamW steps agree to float rounding.
    let losses = |attention: AttentionImpl| {
        let ad = device().autodiff();
        ad.seed(3);
        let config = UViTConfig { temporal: vec![true, false, false], attention, ..small_config(0) };
        let mut model = UViT::new(&config, &ad);
        let clip = real_clip(4, 32).to_device(&ad);
        let diffusion = common::diffusion(4, 32, 1);
        let times = vec![(0..4).map(|f| (f > 0).then_some(0.4)).collect(); 2];
        let noised = diffusion.noise_batch(clip.repeat_dim(0, 2), common::randn([2, 4, 3, 32, 32], 5).to_device(&ad), &times);
        let mut optim = AdamWConfig::new().init();
        (0..12)
            .map(|_| {
                let out = model.forward(noised.z.clone(), noised.logsnr.clone(), Tensor::zeros([2], &ad));
                let loss = diffusion.loss(&noised, out).loss.mean();
                let value = loss.clone().into_scalar::<f32>();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(1e-3, model.clone(), grads);
                value
            })
            .collect::<Vec<f32>>()
    };
    let (flash, reference) = (losses(AttentionImpl::Flash), losses(AttentionImpl::Decomposed));
    assert!(flash[11] < 0.99 * flash[0], "the model learns: {flash:?}");
    for (a, b) in flash.iter().zip(&reference) {
        assert!((a - b).abs() <= 1e-3 * b.abs(), "{flash:?} vs {reference:?}");
    }
    let _ = UViT::new(&small_config(0), &device()).valid();
}
