//! One training step and the state it updates: model, AdamW, EMAs.

use std::path::Path;

use anyhow::{Result, anyhow};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::DType;
use model3d::network::compute_copy;
use model3d::noise::{gaussian, key};
use model3d::{Diffusion, UViT};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::loader::Batch;
use super::params::{clip_grad_norm, ema_update, ema_warmup, stable_ids};
use crate::config::RunConfig;
use crate::run::checkpoint::{Checkpoint, TrainState, load_module};
use crate::tensor::to_tensor;

pub struct Trainer {
    /// Always `Some` between steps; taken during the optimizer update so it can work in place.
    model: Option<UViT>,
    pub optim: ModuleOptimizer,
    pub emas: Vec<(f64, UViT)>,
    pub diffusion: Diffusion,
    config: RunConfig,
    device: Device,
}

/// What one step did.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    /// Batch means of the weighted loss and of the v-, ε- and x-MSE.
    pub means: [f64; 4],
    pub grad_norm: f64,
    pub lr: f64,
    /// False when the loss or the gradients were not finite and the update was skipped.
    pub applied: bool,
}

impl Trainer {
    /// A freshly initialised model on `device` (with autodiff), seeded by `train.seed`.
    pub fn new(config: &RunConfig, device: &Device) -> Result<Self> {
        let tc = &config.train;
        let device = device.clone().autodiff();
        device.seed(tc.seed);
        let model = stable_ids(UViT::new(&config.model, &device));
        let optim = AdamWConfig::new()
            .with_beta_1(tc.adam_beta1 as f32)
            .with_beta_2(tc.adam_beta2 as f32)
            .with_weight_decay(tc.weight_decay as f32)
            .init();
        let emas = tc.ema_decays.iter().map(|&d| (d, model.valid())).collect();
        let diffusion = config.diffusion.build(config.data.frames, config.data.size)?;
        Ok(Self { model: Some(model), optim, emas, diffusion, config: config.clone(), device })
    }

    pub fn model(&self) -> &UViT {
        self.model.as_ref().expect("model present between steps")
    }

    /// The weights validation and sampling use: the first EMA, or the raw weights without one.
    pub fn sampling_weights(&self) -> (String, UViT) {
        match self.emas.first() {
            Some((decay, ema)) => (format!("ema-{decay}"), ema.clone()),
            None => ("raw".into(), self.model().valid()),
        }
    }

    /// Starts from the weights in `path` (EMAs too); the optimizer starts fresh.
    pub fn init_from(&mut self, path: &Path) -> Result<()> {
        let model = self.model.take().expect("model present between steps");
        let model = self.model.insert(stable_ids(load_module(model, path)?));
        for (_, ema) in &mut self.emas {
            *ema = model.valid();
        }
        Ok(())
    }

    /// Loads weights, optimizer state and EMAs from a checkpoint, verified first.
    pub fn resume(&mut self, checkpoint: &Checkpoint) -> Result<TrainState> {
        let state = checkpoint.verify()?;
        let model = self.model.take().expect("model present between steps");
        self.model = Some(stable_ids(load_module(model, &checkpoint.model_file())?));
        let optim_path = checkpoint.optimizer_file();
        self.optim = self.optim.clone().load(&optim_path).map_err(|e| anyhow!("{}: {e:?}", optim_path.display()))?;
        for (decay, ema) in &mut self.emas {
            *ema = stable_ids(load_module(ema.clone(), &checkpoint.ema_file(*decay))?);
        }
        tracing::info!(samples = state.samples_seen, checkpoint = %checkpoint.path().display(), "resumed");
        Ok(state)
    }

    /// One update on `batch`, the batch that starts at sample `p` of the run. Everything random
    /// (t, noise, label dropout, network dropout) is keyed by `(seed, p)`, so resumes reproduce.
    pub fn step(&mut self, batch: Batch, p: u64) -> StepResult {
        let tc = &self.config.train;
        let [b, t, c, h, w] = batch.shape();
        self.device.seed(key(&[tc.seed, p, 1]));
        let mut rng = StdRng::seed_from_u64(key(&[tc.seed, p, 2]));
        let times = self.diffusion.draw_times(b, t, &mut rng);
        let null = self.model().null_label();
        let labels: Vec<i64> = batch
            .labels
            .iter()
            .map(|&l| match null {
                Some(null) if rng.random::<f64>() < tc.label_dropout => null,
                Some(_) => l,
                None => 0,
            })
            .collect();
        let x = to_tensor(batch.pixels, &self.device);
        let n = b * t * c * h * w;
        let noise = Tensor::<1>::from_data(TensorData::new(gaussian(key(&[tc.seed, p, 3]), n), [n]), &self.device).reshape([b, t, c, h, w]);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &self.device);

        let noised = self.diffusion.noise_batch(x, noise, &times);
        // bf16 runs through a cast copy whose backward lands f32 gradients on the master weights.
        let out = compute_copy(self.model(), tc.precision).forward(noised.z.clone(), noised.logsnr.clone(), labels);
        let terms = self.diffusion.loss(&noised, out.cast(DType::F32));
        let loss = terms.loss.clone().mean();
        let means: Vec<f64> = Tensor::cat(vec![loss.clone(), terms.v_mse.mean(), terms.eps_mse.mean(), terms.x_mse.mean()], 0)
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .expect("f64 values");
        let means = [means[0], means[1], means[2], means[3]];
        let mut grads = GradientsParams::from_grads(loss.backward(), self.model());
        let grad_norm = clip_grad_norm(self.model(), &mut grads, tc.grad_clip);
        let warmup = if tc.warmup_samples > 0 { ((p + b as u64) as f64 / tc.warmup_samples as f64).min(1.0) } else { 1.0 };
        let lr = tc.lr * warmup;
        let applied = means.iter().all(|v| v.is_finite()) && grad_norm.is_finite();
        if applied {
            let model = self.model.take().expect("model present between steps");
            let model = self.model.insert(self.optim.step(lr, model, grads));
            // Updates since the run started, counted from the sample index so resumes agree.
            let updates = p / b as u64 + 1;
            for (decay, ema) in &mut self.emas {
                let decay = if tc.ema_warmup { ema_warmup(*decay, updates) } else { *decay };
                *ema = ema_update(ema.clone(), model, decay);
            }
        }
        StepResult { means, grad_norm, lr, applied }
    }
}
