//! The loss on held-out clips during training, comparable across steps and runs: a fixed set of
//! clips (`train.val_clips` of `--val`, spread evenly over it, so that a data set prepared class
//! by class is validated on every class), a fixed grid of noise levels
//! `t_k = (k + ½) / train.val_levels`, and noise that depends only on (clip, level). Scored with
//! the weights sampling uses (the first EMA), without autodiff.

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::DType;
use model3d::network::compute_copy;
use model3d::philox::Stream;
use model3d::{Diffusion, Precision, UViT};
use video_io::prepare::ShardDataset;

use super::trainer::Trainer;
use crate::config::RunConfig;
use crate::run::metrics::{ValLevel, ValRecord};
use crate::tensor::clips_to_tensor;

/// Keys the validation noise apart from any training noise.
const NOISE_KEY: u64 = 0x7A11_DA7E;

pub struct Validation {
    /// `[N, T, C, H, W]` clean clips and their labels.
    clips: Tensor<5>,
    labels: Vec<i64>,
    diffusion: Diffusion,
    /// Clips per forward pass.
    batch: usize,
    levels: usize,
    precision: Precision,
}

impl Validation {
    pub fn new(data: &ShardDataset, config: &RunConfig, device: &Device) -> Result<Self> {
        let clips = data.spread(config.train.val_clips);
        Ok(Self {
            clips: clips_to_tensor(&clips, device),
            labels: clips.labels.iter().map(|&l| l as i64).collect(),
            diffusion: config.diffusion.build(config.data.frames, config.data.size)?,
            batch: config.train.batch_size.max(1),
            levels: config.train.val_levels,
            precision: config.train.precision,
        })
    }

    /// Scores the trainer's sampling weights after `samples` training samples.
    pub fn run(&self, trainer: &Trainer, samples: u64) -> ValRecord {
        let (weights, model) = trainer.sampling_weights();
        self.score(&model, weights, samples)
    }

    /// Scores `model` (weights called `weights`, after `samples` training samples).
    pub fn score(&self, model: &UViT, weights: String, samples: u64) -> ValRecord {
        let model = compute_copy(model, self.precision);
        let [n, t, c, h, w] = self.clips.dims();
        let levels: Vec<ValLevel> = (0..self.levels)
            .map(|k| {
                let time = (k as f64 + 0.5) / self.levels as f64;
                let (mut loss, mut v_mse) = (0.0, 0.0);
                for start in (0..n).step_by(self.batch) {
                    let b = self.batch.min(n - start);
                    let x = self.clips.clone().narrow(0, start, b);
                    let noise = Stream { seed: NOISE_KEY, stream: k as u64 }.normals(start as u64, b, t * c * h * w, &x.device()).reshape([b, t, c, h, w]);
                    let times = vec![(0..t).map(|f| (f >= self.diffusion.context_frames).then_some(time)).collect(); b];
                    let noised = self.diffusion.noise_batch(x, noise, &times);
                    let labels = Tensor::<1, Int>::from_data(TensorData::new(self.labels[start..start + b].to_vec(), [b]), &noised.z.device());
                    let out = model.forward(noised.z.clone(), noised.logsnr.clone(), labels).cast(DType::F32);
                    let terms = self.diffusion.loss(&noised, out);
                    loss += terms.loss.sum().into_scalar::<f64>();
                    v_mse += terms.v_mse.sum().into_scalar::<f64>();
                }
                ValLevel { t: time, logsnr: self.diffusion.schedule.logsnr(time), loss: loss / n as f64, v_mse: v_mse / n as f64 }
            })
            .collect();
        let mean = |f: fn(&ValLevel) -> f64| levels.iter().map(f).sum::<f64>() / levels.len() as f64;
        ValRecord { samples, weights, clips: n, loss: mean(|l| l.loss), v_mse: mean(|l| l.v_mse), levels }
    }
}
