//! A tiny Residual U-ViT learns a fixed real clip: the training path (noising, network, weighted
//! loss, autodiff, AdamW) works end to end on real frames.

mod common;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{real_clip, small_config};
use burn::tensor::DType;
use model3d::network::compute_copy;
use model3d::{Precision, UViT};

#[test]
fn tiny_model_overfits_a_real_clip() {
    overfits(Precision::F32);
}

/// The same in mixed precision: bf16 compute, f32 master weights, loss and AdamW.
#[test]
fn tiny_model_overfits_a_real_clip_in_bf16() {
    overfits(Precision::Bf16);
}

fn overfits(precision: Precision) {
    let device = Device::flex().autodiff();
    device.seed(0);
    let (frames, size, batch) = (4, 16, 6);
    // Real frames from ../shared/data, one context frame and three targets per clip.
    let clip = real_clip(frames, size).to_device(&device);
    let x = clip.repeat_dim(0, batch);
    let noise = common::randn([batch, frames, 3, size, size], 42).to_device(&device);
    let times: Vec<Vec<Option<f64>>> =
        (0..batch).map(|i| (0..frames).map(|f| (f > 0).then_some(0.15 + 0.7 * i as f64 / batch as f64)).collect()).collect();
    let diffusion = common::diffusion(frames, size, 1);
    let noised = diffusion.noise_batch(x, noise, &times);
    let labels = Tensor::<1, Int>::zeros([batch], &device);

    let mut model = UViT::new(&small_config(0), &device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut losses = Vec::new();
    for _ in 0..120 {
        let out = compute_copy(&model, precision).forward(noised.z.clone(), noised.logsnr.clone(), labels.clone());
        let loss = diffusion.loss(&noised, out.cast(DType::F32)).loss.mean();
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(2e-3, model, grads);
    }
    let first = losses[..5].iter().sum::<f32>() / 5.0;
    let last = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    eprintln!("{precision:?}: loss {first} -> {last}");
    assert!(first / last >= 5.0, "loss fell only from {first} to {last}: {losses:?}");
    // The trained weights also work without autodiff.
    let _ = model.valid();
}
