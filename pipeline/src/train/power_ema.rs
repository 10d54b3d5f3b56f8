//! Power-function EMA and its post-hoc reconstruction (Karras et al. 2024, "Analyzing and Improving
//! the Training Dynamics of Diffusion Models", §3 and appendix C; docs/method.md §6).
//!
//! An EMA with exponent γ averages the weights of the whole run so far with weight ∝ τ^γ over
//! training time τ ∈ [0, t]. Its width relative to the run is
//! `σ_rel = (γ+1)^½ (γ+2)^−1 (γ+3)^−½`. Per update `t` (1-based) it is
//! `θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t` with `β_t = (1 − 1/t)^(γ+1)`. Snapshots of two such EMAs,
//! saved during training, span other profiles: any σ_rel, ending at any snapshot time, is the
//! least-squares combination of the snapshots whose profiles best match it.

use nalgebra::{DMatrix, DVector};

/// The exponent γ > 0 of relative width `sigma_rel` in `(0, MAX_SIGMA_REL)`: the root of
/// `f(γ) = γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²)`, which is `σ² (γ+2)² (γ+3) = γ + 1` multiplied
/// out. `f(0) = 12 − σ⁻² < 0` and `f` is convex on `γ ≥ 0`, so the root there is one: bisected.
pub fn exponent(sigma_rel: f64) -> f64 {
    assert!(sigma_rel > 0.0 && sigma_rel < MAX_SIGMA_REL, "σ_rel {sigma_rel} outside (0, {MAX_SIGMA_REL})");
    let c = 1.0 / (sigma_rel * sigma_rel);
    let f = |g: f64| ((g + 7.0) * g + 16.0 - c) * g + 12.0 - c;
    let (mut lo, mut hi) = (0.0, 1e6);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > 0.0 { hi = mid } else { lo = mid }
    }
    0.5 * (lo + hi)
}

/// The relative width of exponent `gamma`.
pub fn sigma_rel(gamma: f64) -> f64 {
    (gamma + 1.0).sqrt() / ((gamma + 2.0) * (gamma + 3.0).sqrt())
}

/// The σ_rel of γ = 0, the plain mean of the whole run (1/√12): the widest profile whose weight
/// does not fall over time.
pub const MAX_SIGMA_REL: f64 = 0.288_675_134_594_812_9;

/// `β_t` of update `t` (1-based) for exponent `gamma`.
pub fn decay(gamma: f64, t: u64) -> f64 {
    (1.0 - 1.0 / t as f64).powf(gamma + 1.0)
}

/// A profile: an EMA of exponent `gamma` as it stood at training time `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    pub t: f64,
    pub gamma: f64,
}

/// `∫₀^∞ p_a(τ) p_b(τ) dτ` for `p(τ) = (γ+1) τ^γ / t^(γ+1)` on `[0, t]` (0 after):
/// `(γa+1)(γb+1) m^(γa+γb+1) / ((γa+γb+1) ta^(γa+1) tb^(γb+1))`, `m = min(ta, tb)`.
pub fn inner(a: Profile, b: Profile) -> f64 {
    let m = a.t.min(b.t);
    let g = a.gamma + b.gamma + 1.0;
    // In logs: the powers of times of millions of samples overflow for large γ.
    let log = (a.gamma + 1.0).ln() + (b.gamma + 1.0).ln() + g * m.ln() - g.ln() - (a.gamma + 1.0) * a.t.ln() - (b.gamma + 1.0) * b.t.ln();
    log.exp()
}

/// The combination of `snapshots` that best matches `target`: weights `x` minimising
/// `‖p_target − Σ xᵢ p_snapshotᵢ‖²` (normal equations `A x = b`, `Aᵢⱼ = ⟨pᵢ, pⱼ⟩`,
/// `bᵢ = ⟨pᵢ, p_target⟩`, solved by SVD), and the residual relative to `‖p_target‖²`.
pub fn solve(snapshots: &[Profile], target: Profile) -> (Vec<f64>, f64) {
    let n = snapshots.len();
    let a = DMatrix::from_fn(n, n, |i, j| inner(snapshots[i], snapshots[j]));
    let b = DVector::from_fn(n, |i, _| inner(snapshots[i], target));
    let x = a.clone().svd(true, true).solve(&b, 1e-12 * a.norm()).expect("SVD with both factors");
    let own = inner(target, target);
    let residual = (own - 2.0 * x.dot(&b) + (x.transpose() * &a * &x)[(0, 0)]).max(0.0) / own;
    (x.iter().copied().collect(), residual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_exponents_are_inverse_and_match_edm2() {
        for s in [0.01, 0.05, 0.1, 0.2, 0.28] {
            assert!((sigma_rel(exponent(s)) - s).abs() < 1e-12, "{s}");
        }
        // edm2's two tracked widths: γ = 16.97 for σ_rel 0.05 and 6.94 for 0.10.
        assert!((exponent(0.05) - 16.97).abs() < 0.01, "{}", exponent(0.05));
        assert!((exponent(0.10) - 6.94).abs() < 0.01, "{}", exponent(0.10));
        assert!((sigma_rel(0.0) - MAX_SIGMA_REL).abs() < 1e-15);
    }

    #[test]
    fn the_inner_product_has_its_closed_form_and_a_snapshot_reconstructs_itself() {
        // ⟨p, p⟩ = (γ+1)² / ((2γ+1) t).
        let p = Profile { t: 300.0, gamma: 4.0 };
        assert!((inner(p, p) - 25.0 / (9.0 * 300.0)).abs() < 1e-15);
        // A profile among the snapshots is that snapshot alone, with nothing left over.
        let snaps: Vec<Profile> = (1..=8).flat_map(|k| [exponent(0.05), exponent(0.10)].map(|g| Profile { t: 100.0 * k as f64, gamma: g })).collect();
        let (x, residual) = solve(&snaps, snaps[9]);
        assert!(residual < 1e-10, "{residual}");
        for (i, w) in x.iter().enumerate() {
            assert!((w - if i == 9 { 1.0 } else { 0.0 }).abs() < 1e-5, "{x:?}");
        }
    }

    #[test]
    fn a_reconstructed_ema_matches_one_tracked_directly() {
        // A weight that drifts and oscillates over 4000 updates, tracked by power EMAs of
        // σ_rel 0.05 and 0.10 snapshotted every 250 updates, and by one of σ_rel 0.075 directly.
        let theta = |t: u64| (t as f64 / 300.0).sin() + t as f64 / 2000.0;
        let (g1, g2, g3) = (exponent(0.05), exponent(0.10), exponent(0.075));
        let (mut e1, mut e2, mut e3) = (0.0, 0.0, 0.0);
        let (mut snaps, mut values) = (Vec::new(), Vec::new());
        for t in 1..=4000u64 {
            for (e, g) in [(&mut e1, g1), (&mut e2, g2), (&mut e3, g3)] {
                let b = decay(g, t);
                *e = b * *e + (1.0 - b) * theta(t);
            }
            if t % 250 == 0 {
                snaps.extend([Profile { t: t as f64, gamma: g1 }, Profile { t: t as f64, gamma: g2 }]);
                values.extend([e1, e2]);
            }
        }
        let (x, residual) = solve(&snaps, Profile { t: 4000.0, gamma: g3 });
        let rebuilt: f64 = x.iter().zip(&values).map(|(w, v)| w * v).sum();
        // The profiles are matched to a small residual; the weight then agrees with the tracked
        // EMA to a small fraction of how far the two tracked EMAs are apart (the discrete update
        // is the continuous profile exactly, for weights held between updates: docs/method.md §7).
        assert!(residual < 1e-3, "{residual}");
        assert!((rebuilt - e3).abs() < 0.05 * (e1 - e2).abs(), "rebuilt {rebuilt}, tracked {e3}, tracked 0.05/0.10: {e1}/{e2}");
    }
}
