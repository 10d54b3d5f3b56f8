//! Samplers over a logSNR schedule: ancestral (method.md §5.1) and DDIM, with classifier-free guidance
//! restricted to a noise interval (Kynkäänniemi et al. 2024, method.md §5.4) and frame conditioning.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::diffusion::{Prediction, frame_tensor};
use crate::philox::Stream;
use crate::schedule::{Schedule, alpha_sigma};

/// What a sampler needs of a network: a pure function of (z, λ, label).
pub trait Denoiser {
    /// # Shapes
    /// - `z`: `[B, T, C, H, W]`, `logsnr`: `[B, T]`, `labels`: `[B]`; returns `[B, T, C, H, W]`
    fn predict(&self, z: Tensor<5>, logsnr: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<5>;
    /// The "no class" label for guidance; `None` for an unconditional model.
    fn null_label(&self) -> Option<i64>;
}

impl Denoiser for crate::network::UViT {
    /// The prediction in f32 whatever the network computes in: the sampler's updates are f32.
    fn predict(&self, z: Tensor<5>, logsnr: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<5> {
        self.forward(z, logsnr, labels).cast(burn::tensor::DType::F32)
    }
    fn null_label(&self) -> Option<i64> {
        crate::network::UViT::null_label(self)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// DDPM ancestral step with the posterior variance (method.md §5.1).
    #[default]
    Ancestral,
    /// Deterministic DDIM step (Song et al. 2021, eq. 12 with η = 0).
    Ddim,
}

/// Where guidance applies, as a logSNR range `[min, max)` or an EDM σ range `(lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuidanceInterval {
    Logsnr { min: f64, max: f64 },
    /// EDM's σ is `σ_t/α_t = e^{−λ/2}`, so `σ ∈ (lo, hi] ⇔ λ ∈ [−2 ln hi, −2 ln lo)` (method.md §5.4).
    EdmSigma { lo: f64, hi: f64 },
}

impl GuidanceInterval {
    /// The interval as `[λ_min, λ_max)`.
    pub fn logsnr_range(&self) -> (f64, f64) {
        match *self {
            Self::Logsnr { min, max } => (min, max),
            Self::EdmSigma { lo, hi } => (-2.0 * hi.ln(), -2.0 * lo.ln()),
        }
    }

    pub fn contains(&self, logsnr: f64) -> bool {
        let (min, max) = self.logsnr_range();
        (min..max).contains(&logsnr)
    }
}

/// Sampler settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    #[serde(default)]
    pub kind: SamplerKind,
    pub steps: usize,
    /// Guidance scale g: `ṽ = v_u + g (v_c − v_u)`; 1 is no guidance (method.md §5.3).
    #[serde(default = "one")]
    pub guidance: f64,
    /// Apply guidance only here; `None` applies it at every step.
    #[serde(default)]
    pub interval: Option<GuidanceInterval>,
    /// Clip x̂ to the data range [−1, 1] at each step.
    #[serde(default = "yes")]
    pub clip_x: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self { kind: SamplerKind::Ancestral, steps: 256, guidance: 1.0, interval: None, clip_x: true }
    }
}

impl SamplerConfig {
    /// Errors name keys relative to the `[sample]` section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        /// Far past any useful count (SiD2 samples in 256 steps at most): a value beyond it is a typo
        /// that would run for hours.
        const MAX_STEPS: usize = 10_000;
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(ConfigError::value("steps", self.steps, format!("must be from 1 to {MAX_STEPS}")));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return Err(ConfigError::value("guidance", self.guidance, "must be a finite number ≥ 0"));
        }
        match self.interval {
            Some(GuidanceInterval::EdmSigma { lo, hi }) if !(lo > 0.0 && hi > lo) => {
                Err(ConfigError::key("interval", format!("need 0 < lo < hi, got lo = {lo}, hi = {hi}")))
            }
            Some(GuidanceInterval::Logsnr { min, max }) if !(min < max) => {
                Err(ConfigError::key("interval", format!("need min < max, got min = {min}, max = {max}")))
            }
            _ => Ok(()),
        }
    }

    /// Whether the step at `logsnr` runs the unconditional pass.
    fn guides_at(&self, logsnr: f64) -> bool {
        self.guidance != 1.0 && self.interval.is_none_or(|i| i.contains(logsnr))
    }
}

/// What a sampling run did, per clip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleStats {
    /// Network evaluations per clip, conditional and unconditional.
    pub evaluations: usize,
    /// Unconditional evaluations skipped because the step lay outside the guidance interval.
    pub skipped_unconditional: usize,
}

/// The clips to generate: shape, labels, known context frames and noise identity.
pub struct SampleRequest {
    /// `[B, T, C, H, W]`.
    pub shape: [usize; 5],
    /// `[B]` class labels (ignored by an unconditional model).
    pub labels: Tensor<1, Int>,
    /// `[B, K, C, H, W]` clean frames held fixed as the first `K` frames, if any.
    pub context: Option<Tensor<5>>,
    pub seed: u64,
    /// Global index of the first clip: clip `b` draws noise from `(seed, first_index + b)`.
    pub first_index: u64,
}

/// Gaussian noise for clips `first..first + B` at sampler `step`, drawn on the device
/// (Philox, stream = step) and independent of how clips are batched.
pub fn clip_noise(seed: u64, first: u64, step: u64, shape: [usize; 5], device: &Device) -> Tensor<5> {
    let per_clip: usize = shape[1..].iter().product();
    Stream { seed, stream: step }.normals(first, shape[0], per_clip, device).reshape(shape)
}

/// Generates clips from pure noise, keeping any context frames clean at every step.
pub fn sample<N: Denoiser>(
    net: &N,
    schedule: &Schedule,
    prediction: Prediction,
    config: &SamplerConfig,
    request: &SampleRequest,
    device: &Device,
) -> (Tensor<5>, SampleStats) {
    let [b, t, ..] = request.shape;
    let k = request.context.as_ref().map_or(0, |c| c.dims()[1]);
    assert!(k < t, "context frames ({k}) must leave at least one frame to generate ({t})");
    let null = net.null_label();
    let with_context = |z: Tensor<5>| match &request.context {
        Some(ctx) => Tensor::cat(vec![ctx.clone(), z.narrow(1, k, t - k)], 1),
        None => z,
    };
    let clean = schedule.logsnr_clean();
    let mut stats = SampleStats::default();
    let mut z = clip_noise(request.seed, request.first_index, 0, request.shape, device);
    let steps = config.steps;
    for i in (1..=steps).rev() {
        let (l_t, l_s) = (schedule.logsnr(i as f64 / steps as f64), schedule.logsnr((i - 1) as f64 / steps as f64));
        let frame_logsnr: Vec<f64> = (0..b * t).map(|j| if j % t < k { clean } else { l_t }).collect();
        let logsnr = frame_tensor(&frame_logsnr, b, t, device).reshape([b, t]);
        let (a_t, s_t) = alpha_sigma(l_t);
        let alpha = frame_tensor(&frame_logsnr.iter().map(|&l| alpha_sigma(l).0).collect::<Vec<_>>(), b, t, device);
        let sigma = frame_tensor(&frame_logsnr.iter().map(|&l| alpha_sigma(l).1).collect::<Vec<_>>(), b, t, device);
        let z_in = with_context(z.clone());

        let out = match null.filter(|_| config.guides_at(l_t)) {
            Some(null) => {
                // One pass over [conditional; unconditional] (method.md §5.3).
                let nulls = Tensor::<1, Int>::full([b], null, device);
                let both = net.predict(
                    Tensor::cat(vec![z_in.clone(), z_in.clone()], 0),
                    Tensor::cat(vec![logsnr.clone(), logsnr], 0),
                    Tensor::cat(vec![request.labels.clone(), nulls], 0),
                );
                stats.evaluations += 2;
                let (cond, uncond) = (both.clone().narrow(0, 0, b), both.narrow(0, b, b));
                uncond.clone() + (cond - uncond).mul_scalar(config.guidance)
            }
            None => {
                stats.evaluations += 1;
                if null.is_some() && config.guidance != 1.0 {
                    stats.skipped_unconditional += 1;
                }
                net.predict(z_in.clone(), logsnr, request.labels.clone())
            }
        };
        let mut x_hat = prediction.to_x(out, z_in.clone(), alpha, sigma);
        if config.clip_x {
            x_hat = x_hat.clamp(-1.0, 1.0);
        }
        z = match config.kind {
            SamplerKind::Ancestral => {
                let noise = (i > 1).then(|| clip_noise(request.seed, request.first_index, i as u64, request.shape, device));
                ancestral_step(z_in, x_hat, l_t, l_s, noise)
            }
            SamplerKind::Ddim => ddim_step(z_in, x_hat, (a_t, s_t), l_s),
        };
    }
    (with_context(z), stats)
}

/// Spec §5.1: `c = −expm1(λ_t − λ_s)`, `mean = α_s (z_t (1 − c)/α_t + c x̂)`, `var = σ_s² c`.
pub fn ancestral_step(z_t: Tensor<5>, x_hat: Tensor<5>, l_t: f64, l_s: f64, noise: Option<Tensor<5>>) -> Tensor<5> {
    let c = -(l_t - l_s).exp_m1();
    let ((a_t, _), (a_s, s_s)) = (alpha_sigma(l_t), alpha_sigma(l_s));
    let mean = z_t.mul_scalar(a_s * (1.0 - c) / a_t) + x_hat.mul_scalar(a_s * c);
    match noise {
        Some(n) => mean + n.mul_scalar((s_s * s_s * c).sqrt()),
        None => mean,
    }
}

/// DDIM: `ε̂ = (z_t − α_t x̂)/σ_t`, `z_s = α_s x̂ + σ_s ε̂`.
pub fn ddim_step(z_t: Tensor<5>, x_hat: Tensor<5>, (a_t, s_t): (f64, f64), l_s: f64) -> Tensor<5> {
    let (a_s, s_s) = alpha_sigma(l_s);
    let eps = (z_t - x_hat.clone().mul_scalar(a_t)).div_scalar(s_t);
    x_hat.mul_scalar(a_s) + eps.mul_scalar(s_s)
}
