//! Noise schedules in logSNR form, λ(t) for t ∈ [0, 1] (t = 0 clean, t = 1 noise), each with its
//! closed-form Jacobian dλ/dt. All schedule maths runs in f64 on the host: the per-example values
//! are few and the network only ever sees λ, never t (method.md §1.3–1.6).

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// Which end of the interpolated schedule carries the strong shift (method.md §1.5; sources disagree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationOrientation {
    /// `λ = t·λ_low + (1 − t)·λ_high`: strong shift at high noise (LR pseudo-code; the default).
    StrongShiftAtNoise,
    /// `λ = t·λ_high + (1 − t)·λ_low`: the opposite orientation (SiD notes eq. 6 as transcribed).
    StrongShiftAtData,
}

/// A schedule family and its parameters, as written in a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Truncated cosine, spanning exactly `[logsnr_min, logsnr_max]`.
    Cosine {
        #[serde(default = "default_logsnr_min")]
        logsnr_min: f64,
        #[serde(default = "default_logsnr_max")]
        logsnr_max: f64,
    },
    /// Cosine shifted by `2 ln(d_ref / d)` for an image side `d` (SiD eq. 4–5).
    Shifted {
        d_ref: f64,
        #[serde(default = "default_logsnr_min")]
        logsnr_min: f64,
        #[serde(default = "default_logsnr_max")]
        logsnr_max: f64,
    },
    /// Log-space interpolation of two shifted cosines (SiD §3.1, method.md §1.5).
    Interpolated {
        d_low: f64,
        d_high: f64,
        #[serde(default = "default_orientation")]
        orientation: InterpolationOrientation,
        #[serde(default = "default_logsnr_min")]
        logsnr_min: f64,
        #[serde(default = "default_logsnr_max")]
        logsnr_max: f64,
    },
}

fn default_logsnr_min() -> f64 {
    -15.0
}
fn default_logsnr_max() -> f64 {
    15.0
}
fn default_orientation() -> InterpolationOrientation {
    InterpolationOrientation::StrongShiftAtNoise
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self::Shifted { d_ref: 64.0, logsnr_min: -15.0, logsnr_max: 15.0 }
    }
}

impl ScheduleConfig {
    /// Resolves the config for data whose image side is `d` pixels.
    /// Errors name keys relative to the schedule table (`d_ref`, `logsnr_min`).
    pub fn build(&self, d: usize) -> Result<Schedule, ConfigError> {
        let d = d as f64;
        let (lo, hi) = match *self {
            Self::Cosine { logsnr_min, logsnr_max }
            | Self::Shifted { logsnr_min, logsnr_max, .. }
            | Self::Interpolated { logsnr_min, logsnr_max, .. } => (logsnr_min, logsnr_max),
        };
        if !(lo < hi) || !lo.is_finite() || !hi.is_finite() {
            return Err(ConfigError::value("logsnr_min", lo, format!("must be finite and below logsnr_max ({hi})")));
        }
        let positive = |key: &str, v: f64| {
            if v > 0.0 && v.is_finite() { Ok(v) } else { Err(ConfigError::value(key, v, "must be a positive side length")) }
        };
        let cosine = Cosine::new(lo, hi);
        Ok(match *self {
            Self::Cosine { .. } => Schedule::Shifted { cosine, shift: 0.0 },
            Self::Shifted { d_ref, .. } => {
                Schedule::Shifted { cosine, shift: 2.0 * (positive("d_ref", d_ref)? / d).ln() }
            }
            Self::Interpolated { d_low, d_high, orientation, .. } => {
                let s_low = 2.0 * (positive("d_low", d_low)? / d).ln();
                let s_high = 2.0 * (positive("d_high", d_high)? / d).ln();
                let (shift_at_0, shift_at_1) = match orientation {
                    InterpolationOrientation::StrongShiftAtNoise => (s_high, s_low),
                    InterpolationOrientation::StrongShiftAtData => (s_low, s_high),
                };
                Schedule::Interpolated { cosine, shift_at_0, shift_at_1 }
            }
        })
    }
}

/// The truncated cosine `λ_cos(t) = −2 ln tan(t_min + t (t_max − t_min))` (method.md §1.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cosine {
    t_min: f64,
    t_max: f64,
}

impl Cosine {
    /// `t_min = atan(e^{−λ_max/2})`, `t_max = atan(e^{−λ_min/2})`.
    pub fn new(logsnr_min: f64, logsnr_max: f64) -> Self {
        Self { t_min: (-logsnr_max / 2.0).exp().atan(), t_max: (-logsnr_min / 2.0).exp().atan() }
    }

    fn angle(&self, t: f64) -> f64 {
        self.t_min + t * (self.t_max - self.t_min)
    }

    pub fn logsnr(&self, t: f64) -> f64 {
        -2.0 * self.angle(t).tan().ln()
    }

    /// Spec §1.6: `dλ_cos/dt = −4 cosh(λ_cos/2) (t_max − t_min)`, written through the angle
    /// (`d/dθ [−2 ln tan θ] = −2 / (sin θ cos θ)`) so it stays exact at both ends.
    pub fn dlogsnr_dt(&self, t: f64) -> f64 {
        let theta = self.angle(t);
        -2.0 * (self.t_max - self.t_min) / (theta.sin() * theta.cos())
    }

    /// Inverse of [`Self::logsnr`]: `t = (atan(e^{−λ/2}) − t_min) / (t_max − t_min)`.
    pub fn t_of_logsnr(&self, logsnr: f64) -> f64 {
        ((-logsnr / 2.0).exp().atan() - self.t_min) / (self.t_max - self.t_min)
    }
}

/// A resolved schedule: a function `t ↦ λ(t)` with its derivative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `λ(t) = λ_cos(t) + shift`; `shift = 0` is the plain cosine.
    Shifted { cosine: Cosine, shift: f64 },
    /// `λ(t) = λ_cos(t) + (1 − t)·shift_at_0 + t·shift_at_1` (method.md §1.5, derived form).
    Interpolated { cosine: Cosine, shift_at_0: f64, shift_at_1: f64 },
}

impl Schedule {
    pub fn logsnr(&self, t: f64) -> f64 {
        match *self {
            Self::Shifted { cosine, shift } => cosine.logsnr(t) + shift,
            Self::Interpolated { cosine, shift_at_0, shift_at_1 } => {
                cosine.logsnr(t) + (1.0 - t) * shift_at_0 + t * shift_at_1
            }
        }
    }

    /// Spec §1.6: shifted `dλ/dt = −4 cosh((λ − s)/2)(t_max − t_min)`; interpolated adds
    /// `shift_at_1 − shift_at_0 = 2 ln(d_low / d_high)` (for the default orientation).
    pub fn dlogsnr_dt(&self, t: f64) -> f64 {
        match *self {
            Self::Shifted { cosine, .. } => cosine.dlogsnr_dt(t),
            Self::Interpolated { cosine, shift_at_0, shift_at_1 } => {
                cosine.dlogsnr_dt(t) + (shift_at_1 - shift_at_0)
            }
        }
    }

    /// λ of clean data, `λ(0)`: what context frames are labelled with.
    pub fn logsnr_clean(&self) -> f64 {
        self.logsnr(0.0)
    }

    /// `t` with `λ(t) = logsnr`, found by bisection (λ is strictly decreasing in t); clamped to
    /// `[0, 1]` outside the schedule's range. Used to place a guidance interval on the time grid.
    pub fn t_of_logsnr(&self, logsnr: f64) -> f64 {
        if let Self::Shifted { cosine, shift } = *self {
            return cosine.t_of_logsnr(logsnr - shift).clamp(0.0, 1.0);
        }
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if self.logsnr(mid) > logsnr { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    }
}

/// Variance-preserving coefficients from λ: `α² = sigmoid(λ)`, `σ² = sigmoid(−λ)` (method.md §1.1).
pub fn alpha_sigma(logsnr: f64) -> (f64, f64) {
    (sigmoid(logsnr).sqrt(), sigmoid(-logsnr).sqrt())
}

/// Numerically stable logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { let e = x.exp(); e / (1.0 + e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_schedules(d: usize) -> Vec<Schedule> {
        let configs = [
            ScheduleConfig::Cosine { logsnr_min: -15.0, logsnr_max: 15.0 },
            ScheduleConfig::Shifted { d_ref: 64.0, logsnr_min: -15.0, logsnr_max: 15.0 },
            ScheduleConfig::Shifted { d_ref: 32.0, logsnr_min: -15.0, logsnr_max: 15.0 },
            ScheduleConfig::Interpolated {
                d_low: 32.0,
                d_high: 256.0,
                orientation: InterpolationOrientation::StrongShiftAtNoise,
                logsnr_min: -15.0,
                logsnr_max: 15.0,
            },
            ScheduleConfig::Interpolated {
                d_low: 32.0,
                d_high: 256.0,
                orientation: InterpolationOrientation::StrongShiftAtData,
                logsnr_min: -15.0,
                logsnr_max: 15.0,
            },
        ];
        configs.iter().map(|c| c.build(d).unwrap()).collect()
    }

    #[test]
    fn variance_is_preserved() {
        for l in [-20.0, -15.0, -3.3, 0.0, 1.7, 15.0, 30.0] {
            let (a, s) = alpha_sigma(l);
            assert!((a * a + s * s - 1.0).abs() < 1e-12, "λ={l}");
            assert!(((a * a / (s * s)).ln() - l).abs() < 1e-9 * (1.0 + l.abs()), "λ={l}");
        }
    }

    #[test]
    fn cosine_spans_its_clipping_range() {
        let c = Cosine::new(-15.0, 15.0);
        assert!((c.logsnr(0.0) - 15.0).abs() < 1e-9);
        assert!((c.logsnr(1.0) + 15.0).abs() < 1e-9);
        // method.md §1.3: t_min = 5.53e-4, t_max − t_min = 1.56969
        assert!((c.t_min - 5.53e-4).abs() < 1e-6);
        assert!((c.t_max - c.t_min - 1.56969).abs() < 1e-5);
    }

    #[test]
    fn shift_follows_the_resolution_rule() {
        // method.md §1.4: s = 2 ln(d_ref/d); 512 with d_ref 64 is −4.159.
        let s = ScheduleConfig::Shifted { d_ref: 64.0, logsnr_min: -15.0, logsnr_max: 15.0 }.build(512).unwrap();
        assert!((s.logsnr(0.5) - Cosine::new(-15.0, 15.0).logsnr(0.5) + 4.159).abs() < 1e-3);
    }

    #[test]
    fn jacobian_matches_finite_differences() {
        // method.md §1.6: −7.7585 at t = 0.3 for the unshifted cosine.
        let c = Cosine::new(-15.0, 15.0);
        assert!((c.dlogsnr_dt(0.3) + 7.7585).abs() < 1e-3);
        for d in [32, 64, 256, 512] {
            for s in all_schedules(d) {
                for t in [0.01, 0.1, 0.3, 0.5, 0.77, 0.99] {
                    let h = 1e-6;
                    let fd = (s.logsnr(t + h) - s.logsnr(t - h)) / (2.0 * h);
                    let an = s.dlogsnr_dt(t);
                    assert!((fd - an).abs() < 1e-5 * an.abs().max(1.0), "{s:?} t={t}: {fd} vs {an}");
                    assert!(an < 0.0, "λ must decrease");
                }
            }
        }
    }

    #[test]
    fn jacobian_matches_its_cosh_form() {
        let s = ScheduleConfig::Shifted { d_ref: 32.0, logsnr_min: -15.0, logsnr_max: 15.0 }.build(128).unwrap();
        let Schedule::Shifted { cosine, shift } = s else { unreachable!() };
        for t in [0.2, 0.5, 0.9] {
            let spec = -4.0 * ((s.logsnr(t) - shift) / 2.0).cosh() * (cosine.t_max - cosine.t_min);
            assert!((spec - s.dlogsnr_dt(t)).abs() < 1e-9 * spec.abs());
        }
    }

    #[test]
    fn interpolation_moves_the_shift_linearly() {
        // method.md §1.5: the shift goes from 2ln(d_high/d) at t=0 to 2ln(d_low/d) at t=1.
        let s = all_schedules(512)[3];
        let c = Cosine::new(-15.0, 15.0);
        assert!((s.logsnr(0.0) - c.logsnr(0.0) - 2.0 * (256.0_f64 / 512.0).ln()).abs() < 1e-9);
        assert!((s.logsnr(1.0) - c.logsnr(1.0) - 2.0 * (32.0_f64 / 512.0).ln()).abs() < 1e-9);
        let flipped = all_schedules(512)[4];
        assert!((flipped.logsnr(1.0) - c.logsnr(1.0) - 2.0 * (256.0_f64 / 512.0).ln()).abs() < 1e-9);
    }

    #[test]
    fn inverse_recovers_t() {
        for s in all_schedules(128) {
            for t in [0.05, 0.4, 0.95] {
                assert!((s.t_of_logsnr(s.logsnr(t)) - t).abs() < 1e-9, "{s:?}");
            }
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = ScheduleConfig::Shifted { d_ref: -1.0, logsnr_min: -15.0, logsnr_max: 15.0 }.build(64).unwrap_err();
        assert_eq!(err.key, "d_ref");
        let err = ScheduleConfig::Cosine { logsnr_min: 5.0, logsnr_max: 1.0 }.build(64).unwrap_err();
        assert_eq!(err.key, "logsnr_min");
    }
}
