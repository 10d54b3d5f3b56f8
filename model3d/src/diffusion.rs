//! The diffusion process around a network: parameterisation, noising, and the weighted loss.
//! No network lives here; the network is any [`Denoiser`], a pure function of (z, λ, class).
//!
//! Tensors are clips `[batch, frames, channels, height, width]`; an image is a clip of one frame.
//! Per-frame quantities (λ, α, σ, loss weights) are `[batch, frames]` and computed on the host in
//! f64, so the schedule and loss maths stay exact whatever the network's precision.

use burn::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::schedule::{Schedule, ScheduleConfig, alpha_sigma, sigmoid};

/// The quantity the network outputs (method.md §1.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// `v = α ε − σ x` (SiD, SiD2): the default.
    #[default]
    V,
    Eps,
    X,
}

impl Prediction {
    /// Converts a network output to `v̂` given `z = α x + σ ε`.
    /// `ε̂ = σ z + α v̂` and `x̂ = α z − σ v̂` (method.md §1.2) solved for `v̂`.
    pub fn to_v(self, out: Tensor<5>, z: Tensor<5>, alpha: Tensor<5>, sigma: Tensor<5>) -> Tensor<5> {
        match self {
            Self::V => out,
            Self::Eps => (out - sigma * z) / alpha,
            Self::X => (alpha * z - out) / sigma,
        }
    }

    /// Converts a network output to `x̂`.
    pub fn to_x(self, out: Tensor<5>, z: Tensor<5>, alpha: Tensor<5>, sigma: Tensor<5>) -> Tensor<5> {
        match self {
            Self::V => alpha * z - sigma * out,
            Self::Eps => (z - sigma * out) / alpha,
            Self::X => out,
        }
    }
}

/// `v = α ε − σ x`.
pub fn v_target(x: Tensor<5>, noise: Tensor<5>, alpha: Tensor<5>, sigma: Tensor<5>) -> Tensor<5> {
    alpha * noise - sigma * x
}

/// `ε̂ = σ z + α v̂`.
pub fn eps_from_v(v: Tensor<5>, z: Tensor<5>, alpha: Tensor<5>, sigma: Tensor<5>) -> Tensor<5> {
    sigma * z + alpha * v
}

/// How the per-element squared error is weighted over noise levels (method.md §2.1–2.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossWeighting {
    /// VDM++ sigmoid weighting `w(λ) = sigmoid(b − λ)` on the ε-loss. With `jacobian = true`
    /// (VDM++ form) the loss is multiplied by `−dλ/dt`, making the objective schedule-invariant;
    /// `false` is the variant used by DFoT (method.md §2.2).
    Sigmoid {
        bias: f64,
        #[serde(default = "yes")]
        jacobian: bool,
    },
    /// `‖ε − ε̂‖²` ("L_simple").
    EpsMse,
    /// `‖v − v̂‖²`.
    VMse,
}

fn yes() -> bool {
    true
}

impl Default for LossWeighting {
    fn default() -> Self {
        Self::Sigmoid { bias: -2.0, jacobian: true }
    }
}

impl LossWeighting {
    /// The factor multiplying `‖ε − ε̂‖²` at `λ` with `dλ/dt = dlogsnr_dt` (method.md §2.2 table).
    pub fn eps_weight(&self, logsnr: f64, dlogsnr_dt: f64) -> f64 {
        match *self {
            Self::Sigmoid { bias, jacobian } => {
                let j = if jacobian { -dlogsnr_dt } else { 1.0 };
                j * sigmoid(bias - logsnr)
            }
            Self::EpsMse => 1.0,
            Self::VMse => 1.0 / sigmoid(logsnr),
        }
    }

    /// The factor multiplying `‖v − v̂‖²`: `‖ε − ε̂‖² = sigmoid(λ)‖v − v̂‖²` (method.md §1.2).
    pub fn v_weight(&self, logsnr: f64, dlogsnr_dt: f64) -> f64 {
        match *self {
            Self::VMse => 1.0,
            _ => self.eps_weight(logsnr, dlogsnr_dt) * sigmoid(logsnr),
        }
    }

    /// The factor multiplying `‖x − x̂‖²`: `‖ε − ε̂‖² = e^λ ‖x − x̂‖²` (method.md §1.2). For the sigmoid
    /// weighting this is `J e^b sigmoid(λ − b)`, written that way to avoid overflowing `e^λ`.
    pub fn x_weight(&self, logsnr: f64, dlogsnr_dt: f64) -> f64 {
        match *self {
            Self::Sigmoid { bias, jacobian } => {
                let j = if jacobian { -dlogsnr_dt } else { 1.0 };
                j * bias.exp() * sigmoid(logsnr - bias)
            }
            _ => self.eps_weight(logsnr, dlogsnr_dt) * logsnr.exp(),
        }
    }

    /// Errors name keys relative to the weighting table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Sigmoid { bias, .. } if !bias.is_finite() => Err(ConfigError::value("bias", bias, "must be finite")),
            _ => Ok(()),
        }
    }
}

/// How training draws `t` for a batch (method.md §2.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSampling {
    /// `t ~ U(0, 1)` i.i.d. per example.
    #[default]
    Uniform,
    /// Low-discrepancy: `t_i = (u + i / B) mod 1` with one `u ~ U(0, 1)` per batch (VDM).
    Stratified,
}

impl TimeSampling {
    /// Draws one `t` per example.
    pub fn draw(self, batch: usize, rng: &mut impl rand::Rng) -> Vec<f64> {
        match self {
            Self::Uniform => (0..batch).map(|_| rng.random::<f64>()).collect(),
            Self::Stratified => {
                let u: f64 = rng.random();
                (0..batch).map(|i| (u + i as f64 / batch as f64).fract()).collect()
            }
        }
    }
}

/// The `[diffusion]` section of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionConfig {
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub prediction: Prediction,
    pub weighting: LossWeighting,
    #[serde(default)]
    pub time_sampling: TimeSampling,
    /// Leading frames of each clip given clean and excluded from the loss (5 for Kinetics-600).
    #[serde(default)]
    pub context_frames: usize,
    /// Draw an independent t for every target frame instead of one per clip.
    #[serde(default)]
    pub per_frame_noise: bool,
}

impl DiffusionConfig {
    /// The process for clips of `frames` frames of `side × side` pixels. Errors name keys
    /// relative to the `[diffusion]` section.
    pub fn build(&self, frames: usize, side: usize) -> Result<Diffusion, ConfigError> {
        self.weighting.validate().map_err(|e| e.within("weighting"))?;
        if self.context_frames >= frames {
            return Err(ConfigError::value("context_frames", self.context_frames, format!("must be below data.frames ({frames})")));
        }
        Ok(Diffusion {
            schedule: self.schedule.build(side).map_err(|e| e.within("schedule"))?,
            prediction: self.prediction,
            weighting: self.weighting.clone(),
            time_sampling: self.time_sampling,
            context_frames: self.context_frames,
            per_frame_noise: self.per_frame_noise,
        })
    }
}

/// Everything about the process that is not the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Diffusion {
    pub schedule: Schedule,
    pub prediction: Prediction,
    pub weighting: LossWeighting,
    pub time_sampling: TimeSampling,
    /// Leading frames of every clip that are given clean: the condition of video prediction.
    pub context_frames: usize,
    /// One `t` per target frame instead of one per clip.
    pub per_frame_noise: bool,
}

/// A noised training batch: the network input and what the loss needs.
#[derive(Clone, Debug)]
pub struct NoisedBatch {
    /// `[B, T, C, H, W]`: `α x + σ ε` on target frames, `x` on context frames.
    pub z: Tensor<5>,
    /// `[B, T]`: λ per frame (context frames carry the schedule's clean λ).
    pub logsnr: Tensor<2>,
    pub x: Tensor<5>,
    pub noise: Tensor<5>,
    /// `[B, T, 1, 1, 1]` each.
    pub alpha: Tensor<5>,
    pub sigma: Tensor<5>,
    /// Loss factor on `‖v − v̂‖²` per frame, zero on context frames.
    pub v_weight: Tensor<5>,
    /// 1 on target frames, 0 on context frames.
    pub mask: Tensor<5>,
}

/// Loss terms per example (VDM returns its terms unreduced the same way).
#[derive(Clone, Debug)]
pub struct LossTerms {
    /// `[B]`: the weighted diffusion loss, mean over target elements.
    pub loss: Tensor<1>,
    /// `[B]`: unweighted mean squared errors in each parameterisation, for monitoring.
    pub v_mse: Tensor<1>,
    pub eps_mse: Tensor<1>,
    pub x_mse: Tensor<1>,
}

/// Frame-level times for a batch: `t[b][f]`, with `None` for clean context frames.
pub type FrameTimes = Vec<Vec<Option<f64>>>;

impl Diffusion {
    /// Per-frame training times for `batch` clips of `frames` frames: `None` (clean) for the
    /// context frames, the clip's `t` (drawn by [`TimeSampling`]) for the others, or a fresh
    /// `t ~ U(0, 1)` per frame with `per_frame_noise`.
    pub fn draw_times(&self, batch: usize, frames: usize, rng: &mut impl Rng) -> FrameTimes {
        self.time_sampling
            .draw(batch, rng)
            .into_iter()
            .map(|clip_t| {
                (0..frames)
                    .map(|f| (f >= self.context_frames).then(|| if self.per_frame_noise { rng.random() } else { clip_t }))
                    .collect()
            })
            .collect()
    }

    /// Noises `x` at the given per-frame times (method.md §1.1: `z = α x + σ ε`).
    ///
    /// # Shapes
    /// - `x`, `noise`: `[B, T, C, H, W]`
    /// - `times`: `B` rows of `T` entries
    pub fn noise_batch(&self, x: Tensor<5>, noise: Tensor<5>, times: &FrameTimes) -> NoisedBatch {
        let [b, t, ..] = x.dims();
        assert_eq!(times.len(), b, "one row of frame times per example");
        let device = x.device();
        let clean = self.schedule.logsnr_clean();
        let (mut logsnr, mut alpha, mut sigma, mut weight, mut mask) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in times {
            assert_eq!(row.len(), t, "one time per frame");
            for time in row {
                match *time {
                    Some(time) => {
                        let l = self.schedule.logsnr(time);
                        let (a, s) = alpha_sigma(l);
                        logsnr.push(l);
                        alpha.push(a);
                        sigma.push(s);
                        weight.push(self.weighting.v_weight(l, self.schedule.dlogsnr_dt(time)));
                        mask.push(1.0);
                    }
                    None => {
                        logsnr.push(clean);
                        alpha.push(1.0);
                        sigma.push(0.0);
                        weight.push(0.0);
                        mask.push(0.0);
                    }
                }
            }
        }
        let alpha = frame_tensor(&alpha, b, t, &device);
        let sigma = frame_tensor(&sigma, b, t, &device);
        let z = alpha.clone() * x.clone() + sigma.clone() * noise.clone();
        NoisedBatch {
            z,
            logsnr: Tensor::<1>::from_data(TensorData::new(to_f32(&logsnr), [b * t]), &device).reshape([b, t]),
            x,
            noise,
            alpha,
            sigma,
            v_weight: frame_tensor(&weight, b, t, &device),
            mask: frame_tensor(&mask, b, t, &device),
        }
    }

    /// The per-example loss for a network output on a noised batch (method.md §2.2, v-space form).
    pub fn loss(&self, batch: &NoisedBatch, out: Tensor<5>) -> LossTerms {
        let [b, _, c, h, w] = out.dims();
        let NoisedBatch { z, x, noise, alpha, sigma, v_weight, mask, .. } = batch.clone();
        let v_hat = self.prediction.to_v(out, z.clone(), alpha.clone(), sigma.clone());
        let v = v_target(x.clone(), noise.clone(), alpha.clone(), sigma.clone());
        let v_err = v_hat.clone() - v;
        let x_hat = alpha.clone() * z.clone() - sigma.clone() * v_hat.clone();
        let eps_hat = eps_from_v(v_hat, z, alpha, sigma);
        // Per-example mean over target elements only.
        let count = mask.clone().sum_dims(&[1, 2, 3, 4]).reshape([b]).mul_scalar((c * h * w) as f64);
        let masked_mean = |e: Tensor<5>| e.sum_dims(&[1, 2, 3, 4]).reshape([b]) / count.clone();
        LossTerms {
            loss: masked_mean(v_err.clone().square() * v_weight),
            v_mse: masked_mean(v_err.square() * mask.clone()),
            eps_mse: masked_mean((eps_hat - noise).square() * mask.clone()),
            x_mse: masked_mean((x_hat - x).square() * mask),
        }
    }
}

/// `[B·T]` host values as a `[B, T, 1, 1, 1]` tensor that broadcasts over pixels.
pub fn frame_tensor(values: &[f64], b: usize, t: usize, device: &Device) -> Tensor<5> {
    Tensor::<1>::from_data(TensorData::new(to_f32(values), [b * t]), device).reshape([b, t, 1, 1, 1])
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;

    fn device() -> Device {
        Device::flex()
    }

    fn config(weighting: LossWeighting, context_frames: usize) -> DiffusionConfig {
        DiffusionConfig {
            schedule: ScheduleConfig::default(),
            prediction: Prediction::V,
            weighting,
            time_sampling: TimeSampling::Uniform,
            context_frames,
            per_frame_noise: false,
        }
    }

    fn randn(shape: [usize; 5], seed: u64) -> Tensor<5> {
        Tensor::from_data(TensorData::new(crate::noise::gaussian(seed, shape.iter().product()), shape), &device())
    }

    fn close(a: Tensor<5>, b: Tensor<5>, tol: f32) {
        let d = (a - b).abs().max().into_scalar::<f32>();
        assert!(d < tol, "max abs difference {d}");
    }

    #[test]
    fn conversions_round_trip() {
        let shape = [2, 3, 3, 4, 4];
        let (x, eps) = (randn(shape, 1), randn(shape, 2));
        let lambdas = [-12.0, -3.0, 0.0, 1.5, 6.0, 11.0];
        let (alpha, sigma): (Vec<f64>, Vec<f64>) = lambdas.iter().map(|&l| alpha_sigma(l)).unzip();
        let alpha = frame_tensor(&alpha, 2, 3, &device());
        let sigma = frame_tensor(&sigma, 2, 3, &device());
        let z = alpha.clone() * x.clone() + sigma.clone() * eps.clone();
        let v = v_target(x.clone(), eps.clone(), alpha.clone(), sigma.clone());
        // x = α z − σ v and ε = σ z + α v (method.md §1.2).
        close(Prediction::V.to_x(v.clone(), z.clone(), alpha.clone(), sigma.clone()), x.clone(), 1e-5);
        close(eps_from_v(v.clone(), z.clone(), alpha.clone(), sigma.clone()), eps.clone(), 1e-5);
        // Each parameterisation's true output converts back to the true v.
        close(Prediction::X.to_v(x.clone(), z.clone(), alpha.clone(), sigma.clone()), v.clone(), 1e-3);
        close(Prediction::Eps.to_v(eps.clone(), z.clone(), alpha.clone(), sigma.clone()), v.clone(), 1e-3);
        close(Prediction::Eps.to_x(eps, z.clone(), alpha.clone(), sigma.clone()), x.clone(), 1e-3);
        close(Prediction::X.to_x(x.clone(), z, alpha, sigma), x, 0.0 + 1e-7);
    }

    #[test]
    fn sigmoid_loss_agrees_in_eps_v_and_x_space() {
        // method.md §2.2: the three forms are one function of the network output.
        let schedule = ScheduleConfig::default().build(128).unwrap();
        for weighting in [
            LossWeighting::Sigmoid { bias: -3.0, jacobian: true },
            LossWeighting::Sigmoid { bias: 1.0, jacobian: false },
            LossWeighting::EpsMse,
            LossWeighting::VMse,
        ] {
            for t in [0.05, 0.3, 0.6, 0.95] {
                let (l, j) = (schedule.logsnr(t), schedule.dlogsnr_dt(t));
                let (a, s) = alpha_sigma(l);
                // A scalar "pixel": any x, ε and a wrong prediction v̂.
                let (x, eps, v_hat) = (0.7, -1.3, 0.4);
                let z = a * x + s * eps;
                let v = a * eps - s * x;
                let (x_hat, eps_hat) = (a * z - s * v_hat, s * z + a * v_hat);
                let le = weighting.eps_weight(l, j) * (eps - eps_hat).powi(2);
                let lv = weighting.v_weight(l, j) * (v - v_hat).powi(2);
                let lx = weighting.x_weight(l, j) * (x - x_hat).powi(2);
                assert!((le - lv).abs() < 1e-9 * le.abs().max(1e-12), "{weighting:?} t={t}: {le} {lv}");
                assert!((le - lx).abs() < 1e-7 * le.abs().max(1e-12), "{weighting:?} t={t}: {le} {lx}");
            }
        }
    }

    #[test]
    fn sigmoid_weight_is_the_vdmpp_formula() {
        let w = LossWeighting::Sigmoid { bias: -2.0, jacobian: true };
        let (l, j) = (1.0, -7.0);
        assert!((w.eps_weight(l, j) - 7.0 / (1.0 + (3.0f64).exp())).abs() < 1e-12);
        let no_j = LossWeighting::Sigmoid { bias: -2.0, jacobian: false };
        assert!((no_j.eps_weight(l, j) - 1.0 / (1.0 + (3.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn loss_ignores_context_frames_and_is_per_example() {
        let d = config(LossWeighting::VMse, 1).build(3, 8).unwrap();
        let shape = [2, 3, 3, 8, 8];
        let (x, eps) = (randn(shape, 3), randn(shape, 4));
        let times = vec![vec![None, Some(0.5), Some(0.5)], vec![None, None, Some(0.2)]];
        let batch = d.noise_batch(x.clone(), eps, &times);
        // Context frames are clean and labelled with the clean λ.
        close(batch.z.clone().narrow(1, 0, 1), x.narrow(1, 0, 1), 1e-7);
        let logsnr = batch.logsnr.clone().into_data().try_to_vec::<f32>().unwrap();
        assert!((logsnr[0] as f64 - d.schedule.logsnr_clean()).abs() < 1e-4);
        // The true v has zero loss; garbage only on context frames still has zero loss.
        let v = v_target(batch.x.clone(), batch.noise.clone(), batch.alpha.clone(), batch.sigma.clone());
        let garbage = Tensor::<5>::ones(shape, &device()).mul_scalar(100.0) * (batch.mask.clone().neg().add_scalar(1.0));
        let terms = d.loss(&batch, v.clone() + garbage);
        assert!(terms.loss.clone().abs().max().into_scalar::<f32>() < 1e-8);
        assert_eq!(terms.loss.dims(), [2]);
        // A unit error on target frames gives exactly 1 per example with v-MSE.
        let terms = d.loss(&batch, v + batch.mask.clone());
        let per = terms.loss.into_data().try_to_vec::<f32>().unwrap();
        assert!(per.iter().all(|l| (l - 1.0).abs() < 1e-5), "{per:?}");
    }

    #[test]
    fn drawn_times_leave_context_frames_clean() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let shared = config(LossWeighting::VMse, 2).build(5, 8).unwrap();
        for row in shared.draw_times(3, 5, &mut rng) {
            assert_eq!(row[..2], [None, None]);
            assert!(row[2..].iter().all(|t| t.is_some() && *t == row[2]), "one t per clip: {row:?}");
        }
        let per_frame = DiffusionConfig { per_frame_noise: true, ..config(LossWeighting::VMse, 1) }.build(4, 8).unwrap();
        let row = &per_frame.draw_times(1, 4, &mut rng)[0];
        assert!(row[0].is_none() && row[1] != row[2], "{row:?}");
        let err = config(LossWeighting::VMse, 5).build(5, 8).unwrap_err();
        assert_eq!(err.to_string(), "context_frames = 5: must be below data.frames (5)");
    }

    #[test]
    fn stratified_times_cover_the_interval() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut t = TimeSampling::Stratified.draw(8, &mut rng);
        t.sort_by(f64::total_cmp);
        for (i, w) in t.windows(2).enumerate() {
            assert!((w[1] - w[0] - 0.125).abs() < 1e-12, "gap {i}");
        }
    }
}
