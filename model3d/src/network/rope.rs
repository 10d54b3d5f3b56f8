//! 3-D rotary position embedding for joint space-time attention (RoFormer, Su et al. 2021,
//! eq. 34, in the rotate-half layout), one band of frequencies per axis (t, y, x).

use burn::backend::DispatchDevice;
use burn::prelude::*;

const BASE: f64 = 10_000.0;

/// Cosines and sines for every token of a `frames × height × width` grid.
#[derive(Clone, Debug)]
pub struct Rope {
    /// `[N, D]` with `N = frames·height·width` tokens and head width `D`.
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    /// Splits the `D/2` rotation pairs over the axes: a quarter to time, the rest to y and x.
    pub fn new(head_dim: usize, [frames, height, width]: [usize; 3], device: &Device) -> Self {
        let pairs = head_dim / 2;
        let pt = pairs / 4;
        let py = (pairs - pt) / 2;
        Self::with_bands(head_dim, [frames, height, width], [pt, py, pairs - pt - py], device)
    }

    /// Every rotation pair on the time axis: for attention across the `frames` of one position.
    pub fn temporal(head_dim: usize, frames: usize, device: &Device) -> Self {
        Self::with_bands(head_dim, [frames, 1, 1], [head_dim / 2, 0, 0], device)
    }

    /// `[pt, py, px]` rotation pairs for the t, y and x axes (they sum to `head_dim / 2`).
    fn with_bands(head_dim: usize, [frames, height, width]: [usize; 3], [pt, py, px]: [usize; 3], device: &Device) -> Self {
        let pairs = head_dim / 2;
        let bands = [(0, pt), (pt, py), (pt + py, px)];
        let n = frames * height * width;
        let mut cos = vec![0f32; n * head_dim];
        let mut sin = vec![0f32; n * head_dim];
        for f in 0..frames {
            for y in 0..height {
                for x in 0..width {
                    let token = (f * height + y) * width + x;
                    for (axis, &(start, len)) in bands.iter().enumerate() {
                        let pos = [f, y, x][axis] as f64;
                        for k in 0..len {
                            let angle = pos * BASE.powf(-(k as f64) / len as f64);
                            let (s, c) = angle.sin_cos();
                            for col in [start + k, start + k + pairs] {
                                cos[token * head_dim + col] = c as f32;
                                sin[token * head_dim + col] = s as f32;
                            }
                        }
                    }
                }
            }
        }
        let data = |v| Tensor::<1>::from_data(TensorData::new(v, [n * head_dim]), device).reshape([n, head_dim]);
        Self { cos: data(cos), sin: data(sin) }
    }

    /// Rotates `x` by each token's angles: `x·cos + rotate_half(x)·sin`, in `x`'s type (the
    /// tables are built in f64 and stored in f32); on the CPU as one operation with its own
    /// backward pass ([`crate::rotary`]).
    ///
    /// # Shapes
    /// - `x`: `[B, heads, N, D]`
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let (cos, sin) = (self.cos.clone().cast(x.dtype()), self.sin.clone().cast(x.dtype()));
        match x.device().inner().as_dispatch() {
            DispatchDevice::Flex(_) => crate::rotary::rotate(x, cos, sin),
            _ => Self::composed(x, cos, sin),
        }
    }

    /// The rotation in burn's tensor ops.
    pub(crate) fn composed(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
        let [_, _, n, d] = x.dims();
        let half = d / 2;
        let rotated = Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
        x * cos.reshape([1, 1, n, d]) + rotated * sin.reshape([1, 1, n, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_rope_encodes_only_the_frame_offset() {
        let device = Device::flex();
        let rope = Rope::temporal(8, 5, &device);
        let rq = rope.apply(Tensor::<4>::ones([1, 1, 5, 8], &device));
        let dot = |a: usize, b: usize| (rq.clone().narrow(2, a, 1) * rq.clone().narrow(2, b, 1)).sum().into_scalar::<f32>();
        assert!((dot(0, 1) - dot(3, 4)).abs() < 1e-5);
        assert!((dot(0, 1) - dot(0, 2)).abs() > 1e-3);
    }

    #[test]
    fn rotation_preserves_norms_and_encodes_relative_position() {
        let device = Device::flex();
        let d = 16;
        let rope = Rope::new(d, [3, 4, 5], &device);
        let q = Tensor::<4>::ones([1, 1, 60, d], &device);
        let rq = rope.apply(q.clone());
        let norms = rq.clone().square().sum_dim(3).sqrt();
        let err = (norms - (d as f64).sqrt()).abs().max().into_scalar::<f32>();
        assert!(err < 1e-4);
        // <R_m q, R_n q> depends only on m − n: tokens (0,0,0)·(0,0,1) equals (1,2,3)·(1,2,4).
        let dot = |a: usize, b: usize| {
            (rq.clone().narrow(2, a, 1) * rq.clone().narrow(2, b, 1)).sum().into_scalar::<f32>()
        };
        let tok = |f: usize, y: usize, x: usize| (f * 4 + y) * 5 + x;
        assert!((dot(tok(0, 0, 0), tok(0, 0, 1)) - dot(tok(1, 2, 3), tok(1, 2, 4))).abs() < 1e-4);
        assert!((dot(tok(0, 0, 0), tok(1, 0, 0)) - dot(tok(1, 3, 2), tok(2, 3, 2))).abs() < 1e-4);
        // Different offsets along an axis give different similarities: position is encoded.
        assert!((dot(tok(0, 0, 0), tok(0, 0, 1)) - dot(tok(0, 0, 0), tok(0, 0, 3))).abs() > 1e-3);
        assert!((dot(tok(0, 0, 0), tok(1, 0, 0)) - dot(tok(0, 0, 0), tok(2, 0, 0))).abs() > 1e-3);
    }

    #[test]
    fn the_cpu_operation_matches_the_tensor_ops_in_value_and_gradient() {
        let device = Device::flex();
        let (b, h, d) = (2, 3, 12);
        let rope = Rope::new(d, [2, 3, 4], &device.clone().autodiff());
        let n = 24;
        let u = Tensor::<4>::from_data(TensorData::new(crate::noise::gaussian(2, b * h * n * d), [b, h, n, d]), &device).autodiff();
        // Views the operation reads in their logical order: tokens and widths transposed
        // (copied first), and heads stored token-major, [B, N, H, D] (read and written in place).
        let values = crate::noise::gaussian(1, b * h * n * d);
        let views: [(Tensor<4>, fn(Tensor<4>) -> Tensor<4>); 2] = [
            (Tensor::from_data(TensorData::new(values.clone(), [b, h, d, n]), &device), |x| x.swap_dims(2, 3)),
            (Tensor::from_data(TensorData::new(values, [b, n, h, d]), &device), |x| x.swap_dims(1, 2)),
        ];
        for (x, view) in views {
            let run = |ours: bool| {
                let x = x.clone().autodiff().require_grad();
                let input = view(x.clone());
                let y = if ours { rope.apply(input) } else { Rope::composed(input, rope.cos.clone(), rope.sin.clone()) };
                let grads = (y.clone() * u.clone()).sum().backward();
                (y.inner(), x.grad(&grads).expect("a gradient"))
            };
            let (ours, reference) = (run(true), run(false));
            for (name, a, r) in [("y", ours.0, reference.0), ("dx", ours.1, reference.1)] {
                let err = ((a - r.clone()).abs().max() / r.abs().max()).into_scalar::<f32>();
                assert!(err < 1e-6, "{name} off by {err}");
            }
        }
    }
}
