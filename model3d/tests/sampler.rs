//! Samplers: oracle predictions recover the data, guidance respects its interval, context frames
//! stay fixed, and noise depends only on (seed, clip index).

mod common;

use burn::prelude::*;
use common::{device, max_abs_diff, randn};
use model3d::sampler::{ancestral_step, sample};
use model3d::schedule::alpha_sigma;
use model3d::{Denoiser, GuidanceInterval, Prediction, SampleRequest, SamplerConfig, SamplerKind, ScheduleConfig};

/// Predicts x̂ = the known data, whatever it is shown (an oracle, method.md §5.1).
struct Oracle(Tensor<5>);
impl Denoiser for Oracle {
    fn predict(&self, _z: Tensor<5>, _logsnr: Tensor<2>, _labels: Tensor<1, Int>) -> Tensor<5> {
        self.0.clone()
    }
    fn null_label(&self) -> Option<i64> {
        None
    }
}

/// A class-conditional stand-in network: x̂ = 0.5·tanh(z) + 0.1·label, per element.
struct Labelled;
impl Denoiser for Labelled {
    fn predict(&self, z: Tensor<5>, _logsnr: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<5> {
        let [b, ..] = z.dims();
        let shift = labels.float().mul_scalar(0.1).reshape([b, 1, 1, 1, 1]);
        z.tanh().mul_scalar(0.5) + shift
    }
    fn null_label(&self) -> Option<i64> {
        Some(7)
    }
}

fn data(shape: [usize; 5]) -> Tensor<5> {
    randn(shape, 11).mul_scalar(0.4).clamp(-1.0, 1.0)
}

fn request(shape: [usize; 5], labels: Vec<i64>, first_index: u64) -> SampleRequest {
    SampleRequest {
        shape,
        labels: Tensor::from_data(TensorData::new(labels, [shape[0]]), &device()),
        context: None,
        seed: 5,
        first_index,
    }
}

#[test]
fn oracle_sampler_returns_the_data() {
    let schedule = ScheduleConfig::default().build(16).unwrap();
    let shape = [2, 2, 3, 16, 16];
    let x = data(shape);
    for kind in [SamplerKind::Ancestral, SamplerKind::Ddim] {
        let config = SamplerConfig { kind, steps: 50, ..SamplerConfig::default() };
        let (out, stats) = sample(&Oracle(x.clone()), &schedule, Prediction::X, &config, &request(shape, vec![0, 0], 0), &device());
        assert!(max_abs_diff(out, x.clone()) < 1e-3, "{kind:?}");
        assert_eq!(stats.evaluations, 50);
    }
}

#[test]
fn oracle_ancestral_chain_has_the_forward_marginals() {
    // With x̂ = x, ancestral steps from t = 1 keep z_t ~ N(α_t x, σ_t² I) (method.md §1.1, §5.1).
    let schedule = ScheduleConfig::default().build(64).unwrap();
    let shape = [1, 1, 3, 64, 64];
    let x = data(shape);
    let (a1, s1) = alpha_sigma(schedule.logsnr(1.0));
    let mut z = x.clone().mul_scalar(a1) + randn(shape, 1).mul_scalar(s1);
    let steps = 40;
    for i in (steps / 2 + 1..=steps).rev() {
        let (l_t, l_s) = (schedule.logsnr(i as f64 / steps as f64), schedule.logsnr((i - 1) as f64 / steps as f64));
        z = ancestral_step(z, x.clone(), l_t, l_s, Some(randn(shape, 100 + i as u64)));
    }
    let (a, s) = alpha_sigma(schedule.logsnr(0.5));
    let resid = z - x.mul_scalar(a);
    let n = resid.shape().num_elements() as f32;
    let mean = resid.clone().sum().into_scalar::<f32>() / n;
    let var = resid.square().sum().into_scalar::<f32>() / n;
    assert!(mean.abs() < 0.03 * s as f32, "mean {mean}");
    assert!((var / (s * s) as f32 - 1.0).abs() < 0.05, "var {var} vs σ² {}", s * s);
}

#[test]
fn guidance_outside_its_interval_is_the_conditional_sampler() {
    let schedule = ScheduleConfig::default().build(8).unwrap();
    let shape = [2, 1, 3, 8, 8];
    let req = request(shape, vec![1, 4], 0);
    let plain = SamplerConfig { steps: 20, ..SamplerConfig::default() };
    let (reference, stats) = sample(&Labelled, &schedule, Prediction::X, &plain, &req, &device());
    assert_eq!(stats.skipped_unconditional, 0);
    // An interval above every λ the grid visits: guidance never applies.
    let outside = SamplerConfig { guidance: 3.0, interval: Some(GuidanceInterval::Logsnr { min: 40.0, max: 50.0 }), ..plain.clone() };
    let (out, stats) = sample(&Labelled, &schedule, Prediction::X, &outside, &req, &device());
    assert_eq!(max_abs_diff(out, reference.clone()), 0.0);
    assert_eq!(stats.evaluations, 20);
    assert_eq!(stats.skipped_unconditional, 20);
    // Guidance everywhere doubles the passes and changes the result.
    let everywhere = SamplerConfig { guidance: 3.0, interval: None, ..plain.clone() };
    let (out, stats) = sample(&Labelled, &schedule, Prediction::X, &everywhere, &req, &device());
    assert_eq!(stats.evaluations, 40);
    assert!(max_abs_diff(out, reference) > 1e-2);
    // A middle interval guides only the steps whose λ lies inside it.
    let (lo, hi) = (-2.0, 2.5);
    let inside = (1..=20).filter(|&i| (lo..hi).contains(&schedule.logsnr(i as f64 / 20.0))).count();
    assert!(inside > 0 && inside < 20);
    let middle = SamplerConfig { guidance: 3.0, interval: Some(GuidanceInterval::Logsnr { min: lo, max: hi }), ..plain };
    let (_, stats) = sample(&Labelled, &schedule, Prediction::X, &middle, &req, &device());
    assert_eq!(stats.evaluations, 20 + inside);
    assert_eq!(stats.skipped_unconditional, 20 - inside);
}

#[test]
fn edm_sigma_interval_converts_to_logsnr() {
    // method.md §5.4: σ ∈ (0.28, 2.9] ⇔ λ ∈ [−2.13, 2.53).
    let (min, max) = GuidanceInterval::EdmSigma { lo: 0.28, hi: 2.9 }.logsnr_range();
    assert!((min + 2.13).abs() < 0.01 && (max - 2.546).abs() < 0.01, "{min} {max}");
    let i = GuidanceInterval::EdmSigma { lo: 0.28, hi: 2.9 };
    assert!(i.contains(min) && !i.contains(max));
}

#[test]
fn context_frames_are_held_and_targets_generated() {
    let schedule = ScheduleConfig::default().build(8).unwrap();
    let shape = [1, 4, 3, 8, 8];
    let clip = data(shape);
    let context = clip.clone().narrow(1, 0, 2);
    let req = SampleRequest { context: Some(context.clone()), ..request(shape, vec![0], 0) };
    let config = SamplerConfig { steps: 10, ..SamplerConfig::default() };
    let (out, _) = sample(&Labelled, &schedule, Prediction::X, &config, &req, &device());
    assert_eq!(max_abs_diff(out.clone().narrow(1, 0, 2), context), 0.0);
    assert!(max_abs_diff(out.narrow(1, 2, 2), clip.narrow(1, 2, 2)) > 1e-2);
}

#[test]
fn noise_depends_on_clip_index_not_batch() {
    let schedule = ScheduleConfig::default().build(8).unwrap();
    let config = SamplerConfig { steps: 8, ..SamplerConfig::default() };
    let run = |shape: [usize; 5], labels: Vec<i64>, first| {
        sample(&Labelled, &schedule, Prediction::X, &config, &request(shape, labels, first), &device()).0
    };
    let whole = run([4, 1, 3, 8, 8], vec![0, 1, 2, 3], 0);
    let head = run([2, 1, 3, 8, 8], vec![0, 1], 0);
    let tail = run([2, 1, 3, 8, 8], vec![2, 3], 2);
    assert!(max_abs_diff(whole, Tensor::cat(vec![head, tail], 0)) < 1e-6);
}
