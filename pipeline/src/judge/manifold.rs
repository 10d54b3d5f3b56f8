//! Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
//! for Assessing Generative Models", §2): each set of feature vectors stands for a manifold, the
//! union of balls around its points whose radius is the distance to the point's k-th nearest
//! neighbour in the same set. Precision is the fraction of generated points inside the real
//! manifold (are the samples realistic?), recall the fraction of real points inside the
//! generated manifold (is the variety covered?). A model that draws one good image per class has
//! high precision and low recall; one that blurs everything has low precision.

use ndarray::{Array2, ArrayView2, Axis, s};

/// k of the paper's experiments.
pub const K: usize = 3;

/// Rows per block of the pairwise distance matrix (blocks of `ROWS × n` distances).
const ROWS: usize = 512;

/// Squared Euclidean distances between the rows of `a` and of `b`:
/// `‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j`, clamped at 0 against rounding.
fn squared_distances(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, b_norms: &[f32]) -> Array2<f32> {
    let mut d = a.dot(&b.t()) * -2.0;
    for (i, mut row) in d.axis_iter_mut(Axis(0)).enumerate() {
        let a_norm = a.row(i).dot(&a.row(i));
        for (v, &b_norm) in row.iter_mut().zip(b_norms) {
            *v = (*v + a_norm + b_norm).max(0.0);
        }
    }
    d
}

fn norms(x: ArrayView2<'_, f32>) -> Vec<f32> {
    x.rows().into_iter().map(|r| r.dot(&r)).collect()
}

/// The squared distance from each row of `x` to its k-th nearest other row.
pub fn radii(x: ArrayView2<'_, f32>, k: usize) -> Vec<f32> {
    let n = x.nrows();
    assert!(n > k, "k-th neighbours of {n} points need more than {k} of them");
    let x_norms = norms(x);
    let mut radii = Vec::with_capacity(n);
    for start in (0..n).step_by(ROWS) {
        let block = squared_distances(x.slice(s![start..(start + ROWS).min(n), ..]), x, &x_norms);
        for (i, row) in block.axis_iter(Axis(0)).enumerate() {
            let mut others: Vec<f32> = row.iter().enumerate().filter(|&(j, _)| j != start + i).map(|(_, &v)| v).collect();
            let (_, kth, _) = others.select_nth_unstable_by(k - 1, f32::total_cmp);
            radii.push(*kth);
        }
    }
    radii
}

/// The fraction of rows of `query` within the manifold of `points` (whose k-NN squared radii
/// are `radii`): inside the ball of at least one point.
pub fn coverage(query: ArrayView2<'_, f32>, points: ArrayView2<'_, f32>, radii: &[f32]) -> f64 {
    let p_norms = norms(points);
    let mut inside = 0usize;
    for start in (0..query.nrows()).step_by(ROWS) {
        let block = squared_distances(query.slice(s![start..(start + ROWS).min(query.nrows()), ..]), points, &p_norms);
        inside += block.axis_iter(Axis(0)).filter(|row| row.iter().zip(radii).any(|(d, r)| d <= r)).count();
    }
    inside as f64 / query.nrows() as f64
}

/// `(precision, recall)` of `generated` against `real`, both `n × d` feature rows.
pub fn precision_recall(real: ArrayView2<'_, f32>, generated: ArrayView2<'_, f32>, k: usize) -> (f64, f64) {
    let (real_radii, generated_radii) = (radii(real, k), radii(generated, k));
    (coverage(generated, real, &real_radii), coverage(real, generated, &generated_radii))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Points on a line at 0, 1, 2, ...: the k-th neighbour of an inner point is at distance
    /// ⌈k/2⌉, of an end point at distance k.
    #[test]
    fn radii_are_kth_neighbour_distances() {
        let x = Array2::from_shape_fn((6, 2), |(i, j)| if j == 0 { i as f32 } else { 0.0 });
        assert_eq!(radii(x.view(), 1), vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(radii(x.view(), 3), vec![9.0, 4.0, 4.0, 4.0, 4.0, 9.0]);
    }

    /// A collapsed generator (every sample on one real point) is precise and covers nothing.
    #[test]
    fn collapse_keeps_precision_and_loses_recall() {
        let real = Array2::from_shape_fn((40, 2), |(i, j)| if j == 0 { (i % 8) as f32 } else { (i / 8) as f32 });
        let collapsed = Array2::from_shape_fn((40, 2), |(i, j)| if j == 0 { 3.0 + i as f32 * 1e-3 } else { 2.0 });
        let (precision, recall) = precision_recall(real.view(), collapsed.view(), K);
        assert_eq!(precision, 1.0);
        assert!(recall < 0.1, "recall {recall}");
        let (p, r) = precision_recall(real.view(), real.view(), K);
        assert_eq!((p, r), (1.0, 1.0));
    }
}
