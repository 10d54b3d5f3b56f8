//! Fréchet distance between Gaussian fits of feature sets (the distance behind FID and FVD;
//! Heusel et al. 2017, eq. 6; Dowson & Landau 1982):
//!
//! `d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{½} Σ₂ Σ₁^{½})^{½})`
//!
//! All in f64. Matrix square roots go through symmetric eigendecompositions with negative
//! eigenvalues (round-off on rank-deficient covariances) clamped to zero, so near-singular
//! covariances give a finite distance instead of NaN.

use anyhow::{Result, bail};
use nalgebra::{DMatrix, DVector};

/// Mean and covariance of a feature set.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
}

impl Gaussian {
    /// Fits rows of `features` (`n × d`, row-major); the covariance is the unbiased one (n − 1).
    pub fn fit(features: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || features.len() % dim != 0 {
            bail!("{} feature values do not split into rows of {dim}", features.len());
        }
        let n = features.len() / dim;
        if n < 2 {
            bail!("a covariance needs at least 2 feature vectors, got {n}");
        }
        let x = DMatrix::from_row_iterator(n, dim, features.iter().map(|&v| v as f64));
        let mean = DVector::from_iterator(dim, x.column_iter().map(|c| c.mean()));
        let centred = DMatrix::from_fn(n, dim, |i, j| x[(i, j)] - mean[j]);
        let cov = centred.transpose() * &centred / (n as f64 - 1.0);
        Ok(Self { mean, cov })
    }
}

/// Symmetric PSD square root: `V diag(√max(λ, 0)) Vᵀ`.
fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// The squared Fréchet distance `d²` between two Gaussians.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.mean.len() != b.mean.len() {
        bail!("feature sizes differ: {} and {}", a.mean.len(), b.mean.len());
    }
    let s = sqrt_psd(&a.cov);
    let middle = &s * &b.cov * &s;
    let cross = middle.symmetric_eigen().eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum::<f64>();
    let d = (&a.mean - &b.mean).norm_squared() + a.cov.trace() + b.cov.trace() - 2.0 * cross;
    Ok(d.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(mean: &[f64], cov: &[f64]) -> Gaussian {
        let d = mean.len();
        Gaussian { mean: DVector::from_column_slice(mean), cov: DMatrix::from_row_slice(d, d, cov) }
    }

    #[test]
    fn diagonal_covariances_have_the_closed_form() {
        // d² = ‖Δμ‖² + Σ (√a_i − √b_i)².
        let a = gaussian(&[0.0, 1.0, 2.0], &[4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0]);
        let b = gaussian(&[1.0, 1.0, 0.0], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 16.0]);
        let expected = (1.0 + 0.0 + 4.0) + (2.0f64 - 1.0).powi(2) + 0.0 + (3.0f64 - 4.0).powi(2);
        assert!((frechet_distance(&a, &b).unwrap() - expected).abs() < 1e-10);
        assert!(frechet_distance(&a, &a).unwrap().abs() < 1e-10);
    }

    #[test]
    fn full_covariances_that_do_not_commute() {
        // For 2×2 PSD M, tr √M = √(tr M + 2 √det M); here M ~ Σ₁Σ₂ (same trace and determinant).
        let (s1, s2) = ([2.0, 0.8, 0.8, 1.0], [1.5, -0.6, -0.6, 0.7]);
        let a = gaussian(&[0.3, -0.2], &s1);
        let b = gaussian(&[-0.1, 0.4], &s2);
        let tr_prod = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let det = |m: [f64; 4]| m[0] * m[3] - m[1] * m[2];
        let cross = (tr_prod + 2.0 * (det(s1) * det(s2)).sqrt()).sqrt();
        let expected = (0.4f64.powi(2) + 0.6f64.powi(2)) + (s1[0] + s1[3]) + (s2[0] + s2[3]) - 2.0 * cross;
        assert!((frechet_distance(&a, &b).unwrap() - expected).abs() < 1e-10);
        // Symmetric in its arguments.
        assert!((frechet_distance(&b, &a).unwrap() - expected).abs() < 1e-10);
    }

    #[test]
    fn near_singular_covariances_stay_finite() {
        // 5 samples in 16 dimensions: rank ≤ 4, many zero (or slightly negative) eigenvalues.
        let f1: Vec<f32> = (0..5 * 16).map(|i| ((i * 7919) % 113) as f32 / 113.0).collect();
        let f2: Vec<f32> = (0..5 * 16).map(|i| ((i * 104_729) % 127) as f32 / 127.0).collect();
        let (a, b) = (Gaussian::fit(&f1, 16).unwrap(), Gaussian::fit(&f2, 16).unwrap());
        let d = frechet_distance(&a, &b).unwrap();
        assert!(d.is_finite() && d > 0.0, "{d}");
        assert!(frechet_distance(&a, &a).unwrap() < 1e-8);
    }

    #[test]
    fn fit_is_the_sample_mean_and_unbiased_covariance() {
        let g = Gaussian::fit(&[1.0, 2.0, 3.0, 6.0], 2).unwrap();
        assert_eq!(g.mean.as_slice(), &[2.0, 4.0]);
        assert_eq!(g.cov.as_slice(), &[2.0, 4.0, 4.0, 8.0]);
        assert!(Gaussian::fit(&[1.0, 2.0], 2).is_err());
    }
}
