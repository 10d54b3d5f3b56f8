//! One training step and the state it updates: model, AdamW, EMAs.

use std::path::Path;

use anyhow::{Result, anyhow};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::DType;
use model3d::network::compute_copy;
use model3d::noise::key;
use model3d::philox::Stream;
use model3d::{Diffusion, UViT};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::loader::Batch;
use super::params::{ema_update, ema_warmup, finite_and_clipped, stable_ids};
use crate::config::RunConfig;
use super::power_ema;
use crate::run::checkpoint::{Checkpoint, TrainState, ema_name, load_module, power_name};
use crate::tensor::to_tensor;

/// The Philox stream of training noise (sampling uses the step index as its stream).
pub const TRAINING_NOISE: u64 = 1 << 40;

pub struct Trainer {
    /// Always `Some` between steps; taken during the optimizer update so it can work in place.
    model: Option<UViT>,
    pub optim: ModuleOptimizer,
    pub emas: Vec<(f64, UViT)>,
    /// Power-function EMAs (`train.ema`), for post-hoc reconstruction.
    pub power: Vec<PowerEma>,
    pub diffusion: Diffusion,
    config: RunConfig,
    device: Device,
}

/// A power-function EMA being tracked: its width, the exponent that width has (solved once),
/// and its weights.
pub struct PowerEma {
    pub sigma_rel: f64,
    gamma: f64,
    pub weights: UViT,
}

/// What one step did, on the device: nothing here is read back until a log step asks.
#[derive(Clone, Debug)]
pub struct StepResult {
    /// `[1]`: the batch mean of the weighted loss.
    pub loss: Tensor<1>,
    /// `[1]`: the global gradient norm (non-finite entries zeroed), before clipping.
    pub grad_norm: Tensor<1>,
    /// `[1]`: 1 when a gradient was not finite (the update went ahead with those entries zeroed).
    pub nonfinite: Tensor<1>,
    pub lr: f64,
    /// Batch means of the unweighted v-, ε- and x-MSE, computed only when asked (log steps).
    pub monitor: Option<[f64; 3]>,
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
        let power = tc.power_sigma_rels().iter().map(|&sigma_rel| PowerEma { sigma_rel, gamma: power_ema::exponent(sigma_rel), weights: model.valid() }).collect();
        let diffusion = config.diffusion.build(config.data.frames, config.data.size)?;
        Ok(Self { model: Some(model), optim, emas, power, diffusion, config: config.clone(), device })
    }

    pub fn model(&self) -> &UViT {
        self.model.as_ref().expect("model present between steps")
    }

    /// Every average kept, by its name in checkpoints: the EMAs, then the power-function EMAs.
    pub fn averages(&self) -> Vec<(String, &UViT)> {
        let emas = self.emas.iter().map(|(d, e)| (ema_name(*d), e));
        emas.chain(self.power.iter().map(|p| (power_name(p.sigma_rel), &p.weights))).collect()
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
        for ema in self.emas.iter_mut().map(|(_, e)| e).chain(self.power.iter_mut().map(|p| &mut p.weights)) {
            *ema = model.valid();
        }
        Ok(())
    }

    /// Loads weights, optimizer state and EMAs from a checkpoint verified as `state`.
    pub fn resume(&mut self, checkpoint: &Checkpoint, state: TrainState) -> Result<TrainState> {
        let model = self.model.take().expect("model present between steps");
        self.model = Some(stable_ids(load_module(model, &checkpoint.model_file())?));
        let optim_path = checkpoint.optimizer_file();
        self.optim = self.optim.clone().load(&optim_path).map_err(|e| anyhow!("{}: {e:?}", optim_path.display()))?;
        for (decay, ema) in &mut self.emas {
            *ema = stable_ids(load_module(ema.clone(), &checkpoint.ema_file(*decay))?);
        }
        for p in &mut self.power {
            p.weights = stable_ids(load_module(p.weights.clone(), &checkpoint.weights_file(&power_name(p.sigma_rel)))?);
        }
        tracing::info!(samples = state.samples_seen, checkpoint = %checkpoint.path().display(), "resumed");
        Ok(state)
    }

    /// One update on `batch`, the batch that starts at sample `p` of the run. Everything random
    /// (t, noise, label dropout, network dropout) is keyed by `(seed, p)`, so resumes reproduce;
    /// the noise is drawn on the device (Philox, keyed by each clip's sample index). Nothing is
    /// read back to the host unless `monitor` asks for the MSE terms.
    pub fn step(&mut self, batch: Batch, p: u64, monitor: bool) -> StepResult {
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
        let noise = Stream { seed: tc.seed, stream: TRAINING_NOISE }.normals(p, b, t * c * h * w, &self.device).reshape([b, t, c, h, w]);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &self.device);

        let noised = self.diffusion.noise_batch(x, noise, &times);
        // bf16 runs through a cast copy whose backward lands f32 gradients on the master weights.
        let out = compute_copy(self.model(), tc.precision).forward(noised.z.clone(), noised.logsnr.clone(), labels);
        let terms = self.diffusion.loss(&noised, out.cast(DType::F32));
        let loss = terms.loss.mean();
        let monitor = monitor.then(|| {
            let m = Tensor::cat(vec![terms.v_mse.mean(), terms.eps_mse.mean(), terms.x_mse.mean()], 0).into_data().convert::<f64>().try_into_vec::<f64>().expect("f64 values");
            [m[0], m[1], m[2]]
        });
        let mut grads = GradientsParams::from_grads(loss.backward(), self.model());
        let stats = finite_and_clipped(self.model(), &mut grads, tc.grad_clip);
        let warmup = if tc.warmup_samples > 0 { ((p + b as u64) as f64 / tc.warmup_samples as f64).min(1.0) } else { 1.0 };
        let lr = tc.lr * warmup;
        let model = self.model.take().expect("model present between steps");
        let model = self.model.insert(self.optim.step(lr, model, grads));
        // Updates since the run started, counted from the sample index so resumes agree.
        let updates = p / b as u64 + 1;
        for (decay, ema) in &mut self.emas {
            let decay = if tc.ema_warmup { ema_warmup(*decay, updates) } else { *decay };
            *ema = ema_update(ema.clone(), model, decay);
        }
        for p in &mut self.power {
            p.weights = ema_update(p.weights.clone(), model, power_ema::decay(p.gamma, updates));
        }
        StepResult { loss: loss.inner(), grad_norm: stats.norm.inner(), nonfinite: stats.nonfinite.inner(), lr, monitor }
    }
}
