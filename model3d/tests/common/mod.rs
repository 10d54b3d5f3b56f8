//! Helpers shared by the model3d integration tests.
#![allow(dead_code)]

use burn::prelude::*;
use model3d::{BlockKind, UViTConfig};

pub fn device() -> Device {
    Device::flex()
}

/// A small image/video network: a ResBlock level, a Transformer level, a Transformer middle.
pub fn small_config(num_classes: usize) -> UViTConfig {
    UViTConfig {
        in_channels: 3,
        patch_size: 2,
        channels: vec![32, 64, 64],
        kinds: vec![BlockKind::Res, BlockKind::Transformer, BlockKind::Transformer],
        blocks: vec![1, 1],
        mid_blocks: 1,
        emb_channels: 64,
        fourier_features: 32,
        heads: 4,
        dropout: vec![],
        temporal: vec![],
        attention: Default::default(),
        conv: Default::default(),
        linear: Default::default(),
        skips: Default::default(),
        norm_groups: 8,
        num_classes,
    }
}

/// The process the tests train with: shifted cosine, v-prediction, sigmoid weighting (bias −2,
/// VDM++ form), `context` clean frames of `frames`, `side × side` pixels.
pub fn diffusion(frames: usize, side: usize, context: usize) -> model3d::Diffusion {
    model3d::DiffusionConfig {
        schedule: model3d::ScheduleConfig::default(),
        prediction: model3d::Prediction::V,
        weighting: model3d::LossWeighting::Sigmoid { bias: -2.0, jacobian: true },
        time_sampling: model3d::TimeSampling::Uniform,
        context_frames: context,
        per_frame_noise: false,
    }
    .build(frames, side)
    .unwrap()
}

pub fn randn(shape: [usize; 5], seed: u64) -> Tensor<5> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(model3d::noise::gaussian(seed, n), shape), &device())
}

pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// The first `frames` of the real decoded video frames in ../shared/data (SOURCES.md), centre
/// cropped to a square and box-downsampled to `size`, scaled to [−1, 1]: `[1, frames, 3, size, size]`.
pub fn real_clip(frames: usize, size: usize) -> Tensor<5> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mmaction2/frames");
    let mut values = Vec::with_capacity(frames * 3 * size * size);
    for f in 0..frames {
        let path = dir.join(format!("img_{:05}.jpg", f + 1));
        let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
        let (w, h) = img.dimensions();
        let side = w.min(h);
        let (x0, y0) = ((w - side) / 2, (h - side) / 2);
        let cell = side as usize / size;
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let mut acc = 0.0f32;
                    for dy in 0..cell {
                        for dx in 0..cell {
                            let p = img.get_pixel(x0 + (x * cell + dx) as u32, y0 + (y * cell + dy) as u32);
                            acc += p[c] as f32;
                        }
                    }
                    values.push(acc / (cell * cell) as f32 / 127.5 - 1.0);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [1, frames, 3, size, size]), &device())
}

/// Adds small deterministic noise to every weight, so zero-initialised layers stop hiding the
/// rest of the network. The result keeps the parameter's id and is a leaf again.
pub struct Jitter;

impl burn::module::ModuleMapper for Jitter {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let n = tensor.shape().num_elements();
        let noise = Tensor::<1>::from_data(TensorData::new(model3d::noise::gaussian(n as u64, n), [n]), &tensor.device())
            .reshape(tensor.shape())
            .mul_scalar(0.05);
        let grad = tensor.is_require_grad();
        burn::module::Param::from_mapped_value(id, (tensor + noise).detach().set_require_grad(grad), mapper)
    }
}
