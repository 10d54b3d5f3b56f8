//! Fréchet distance between Gaussian fits of feature sets (the distance behind FID and FVD;
//! Heusel et al. 2017, eq. 6; Dowson & Landau 1982):
//!
//! `d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{½} Σ₂ Σ₁^{½})^{½})`
//!
//! All in f64. The trace term goes through a pivoted Cholesky factor and a symmetric
//! eigenvalue decomposition, with negative eigenvalues (round-off on rank-deficient
//! covariances) clamped to zero, so near-singular covariances give a finite distance, not NaN.

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
        if dim == 0 || !features.len().is_multiple_of(dim) {
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

/// Pivoted Cholesky factor of a PSD matrix (Higham 2009, §2): `L` (d × r) with `m ≈ L Lᵀ`,
/// pivoting on the largest remaining diagonal and stopping once it falls below `tol`, so `r` is
/// the numerical rank and rank-deficient covariances (fewer samples than features) stay exact.
fn pivoted_cholesky(m: &DMatrix<f64>, tol: f64) -> DMatrix<f64> {
    let d = m.nrows();
    let mut residual: Vec<f64> = m.diagonal().iter().copied().collect();
    let mut pivoted = vec![false; d];
    let mut l = DMatrix::<f64>::zeros(d, d);
    let mut rank = 0;
    while rank < d {
        let Some((p, &largest)) = residual.iter().enumerate().filter(|(i, _)| !pivoted[*i]).max_by(|a, b| a.1.total_cmp(b.1)) else { break };
        if largest <= tol {
            break;
        }
        // Column `rank`: (m[:, p] − L[:, :rank] · L[p, :rank]ᵀ) / √residual[p]; rows already
        // pivoted are fitted exactly and stay zero.
        let fitted = l.columns(0, rank) * l.row(p).columns(0, rank).transpose();
        let root = largest.sqrt();
        for i in 0..d {
            if !pivoted[i] {
                let v = (m[(i, p)] - fitted[i]) / root;
                l[(i, rank)] = v;
                residual[i] -= v * v;
            }
        }
        pivoted[p] = true;
        rank += 1;
    }
    l.columns(0, rank).into_owned()
}

/// The squared Fréchet distance `d²` between two Gaussians.
///
/// `tr (Σ₁^{½} Σ₂ Σ₁^{½})^{½} = tr (Σ₁Σ₂)^{½}`, and with `Σ₂ = L Lᵀ` the matrix `Σ₁Σ₂` has the
/// non-zero eigenvalues of the symmetric PSD `Lᵀ Σ₁ L` (r × r): one factorisation and one
/// eigenvalue-only decomposition, no eigenvectors.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.mean.len() != b.mean.len() {
        bail!("feature sizes differ: {} and {}", a.mean.len(), b.mean.len());
    }
    let scale = b.cov.diagonal().max().max(f64::MIN_POSITIVE);
    let l = pivoted_cholesky(&b.cov, 1e-12 * scale);
    let middle = l.transpose() * &a.cov * &l;
    let middle = (&middle + middle.transpose()) * 0.5;
    let cross = middle.symmetric_eigenvalues().iter().map(|v| v.max(0.0).sqrt()).sum::<f64>();
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
    fn a_singular_covariance_has_the_closed_form() {
        // Σ₂ = diag(4, 0) has rank 1: Σ₁Σ₂ = [[8, 0], [2, 0]], eigenvalues 8 and 0.
        let a = gaussian(&[1.0, 0.0], &[2.0, 0.5, 0.5, 1.0]);
        let b = gaussian(&[0.0, 0.0], &[4.0, 0.0, 0.0, 0.0]);
        let expected = 1.0 + 3.0 + 4.0 - 2.0 * 8f64.sqrt();
        assert!((frechet_distance(&a, &b).unwrap() - expected).abs() < 1e-12);
        assert!((frechet_distance(&b, &a).unwrap() - expected).abs() < 1e-12);
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
