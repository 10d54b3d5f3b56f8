//! Bilinear resizing exactly as the reference FID and FVD code does it, as two matrix products
//! (rows, then columns) with interpolation matrices built on the host.

use burn::prelude::*;

/// Where output pixel `i` samples the input, for an `n_in → n_out` resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleGrid {
    /// `src = (i + ½)·n_in/n_out − ½`, clamped at 0: PyTorch's `F.interpolate(...,
    /// mode="bilinear", align_corners=False)`, which pytorch-fid uses before Inception.
    HalfPixel,
    /// `src = i·n_in/n_out`: TF1's `tf.image.resize_bilinear` (align_corners=False,
    /// half_pixel_centers=False), which the reference FVD code uses before I3D.
    TfLegacy,
}

/// The `n_out × n_in` row-major matrix `R` with `resized = R · x` along one axis.
pub fn interpolation_matrix(n_in: usize, n_out: usize, grid: SampleGrid) -> Vec<f32> {
    let scale = n_in as f64 / n_out as f64;
    let mut r = vec![0f32; n_out * n_in];
    for i in 0..n_out {
        let src = match grid {
            SampleGrid::HalfPixel => ((i as f64 + 0.5) * scale - 0.5).max(0.0),
            SampleGrid::TfLegacy => i as f64 * scale,
        };
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let frac = src - i0 as f64;
        r[i * n_in + i0] += (1.0 - frac) as f32;
        r[i * n_in + i1] += frac as f32;
    }
    r
}

/// Resizes images bilinearly to `size × size`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - returns `[N, C, size, size]`
pub fn resize_bilinear(x: Tensor<4>, size: usize, grid: SampleGrid) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let matrix = |n_in: usize| {
        // [n_in, size]: the transpose of R, so that rows of x multiply it from the left.
        Tensor::<2>::from_data(TensorData::new(interpolation_matrix(n_in, size, grid), [size, n_in]), &device).transpose()
    };
    let x = x.reshape([n * c * h, w]).matmul(matrix(w)); // [N·C·H, size]
    let x = x.reshape([n * c, h, size]).swap_dims(1, 2).reshape([n * c * size, h]);
    let x = x.matmul(matrix(h)); // [N·C·size(w), size(h)]
    x.reshape([n * c, size, size]).swap_dims(1, 2).reshape([n, c, size, size])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_pixel_weights_match_hand_computed_values() {
        // 2 → 4: sources −0.25 (clamped to 0), 0.25, 0.75, 1.25 (upper neighbour clamped).
        let r = interpolation_matrix(2, 4, SampleGrid::HalfPixel);
        assert_eq!(r, vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
    }

    #[test]
    fn tf_legacy_weights_match_hand_computed_values() {
        // 2 → 4: sources 0, 0.5, 1, 1.5; the last two both read pixel 1.
        let r = interpolation_matrix(2, 4, SampleGrid::TfLegacy);
        assert_eq!(r, vec![1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0]);
        // 64 → 224: every row sums to 1 and output 7 reads input 2 (7·64/224 = 2 exactly).
        let r = interpolation_matrix(64, 224, SampleGrid::TfLegacy);
        assert!(r.chunks(64).all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-6));
        assert_eq!(r[7 * 64 + 2], 1.0);
    }

    #[test]
    fn resizing_a_ramp_is_separable_and_exact() {
        let device = Device::flex();
        // x[h, w] = 10·h + w on a 2×2 image; half-pixel 2 → 4 along both axes.
        let x = Tensor::<4>::from_data(TensorData::new(vec![0f32, 1.0, 10.0, 11.0], [1, 1, 2, 2]), &device);
        let y: Vec<f32> = resize_bilinear(x, 4, SampleGrid::HalfPixel).into_data().try_to_vec().unwrap();
        let axis = [0.0, 0.25, 0.75, 1.0];
        let expected: Vec<f32> = axis.iter().flat_map(|&h| axis.iter().map(move |&w| 10.0 * h + w)).collect();
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{y:?} vs {expected:?}");
        }
    }
}
