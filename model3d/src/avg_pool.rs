//! The Downsample layers' 2×2 average pooling (stride 2) as one operation with its own backward
//! pass on the CPU: `y[i, j] = ¼·Σ_{a, b ∈ {0, 1}} x[2i + a, 2j + b]`, and the gradient spreads
//! each `dy[i, j] / 4` over the four pixels it averaged. burn-flex 0.22.1 runs it as a 3-D pool
//! with per-window index arithmetic, and its backward pass as a scatter through the same windows
//! (together 2.7 % of a tiny_video step, four times PyTorch's pool); here each output row reads
//! two input rows, and each gradient row writes them.
//!
//! The same mechanism as [`crate::activation`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written, stateless `Backward` step. Other devices take burn's `avg_pool2d`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, Shape, backend_extension};
use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use rayon::prelude::*;

use crate::cpu::{dims, f32_values, from_f32, wide};

/// Output rows per parallel task: large enough that splitting costs nothing next to the work.
const ROWS: usize = 1 << 9;

/// The mean of each 2×2 block of pixels: the project's operation on the CPU, burn's
/// `avg_pool2d` elsewhere.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` with `H` and `W` even; returns `[N, C, H/2, W/2]`
pub fn avg_pool2x2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    assert!(h % 2 == 0 && w % 2 == 0, "2x2 pooling of an even plane, not {h}x{w}");
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        return avg_pool2d(x, AvgPoolOptions::new([2, 2]));
    }
    Tensor::from_dispatch(<Dispatch as AvgPoolBackend>::avg_pool2x2(x.into_dispatch()))
}

#[backend_extension(Flex, Autodiff)]
pub trait AvgPoolBackend: Backend {
    /// `[N, C, H, W]` → `[N, C, H/2, W/2]`, the mean of each 2×2 block.
    fn avg_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait AvgPoolKernels: Backend {
    fn avg_pool2x2_forward(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dx`, `[N, C, 2H, 2W]`, from the output gradient `[N, C, H, W]`.
    fn avg_pool2x2_backward(grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl AvgPoolBackend for Flex {
    fn avg_pool2x2(x: FlexTensor) -> FlexTensor {
        Self::avg_pool2x2_forward(x)
    }
}

#[derive(Debug)]
struct AvgPoolBackward;

impl<B: AvgPoolKernels> Backward<B, 1> for AvgPoolBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::avg_pool2x2_backward(grad));
        }
    }
}

impl<B: AvgPoolKernels, C: CheckpointStrategy> AvgPoolBackend for Autodiff<B, C> {
    fn avg_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // The gradient needs only the output gradient's shape: nothing kept.
        let prep = AvgPoolBackward.prepare::<C>([x.node()]).compute_bound();
        let y = B::avg_pool2x2_forward(x.into_primitive());
        prep.stateless(y)
    }
}

/// Output rows of `w` pixels from the pairs of input rows, `[2, 2w]`, they average.
#[inline(always)]
fn forward_body(x: &[f32], w: usize, y: &mut [f32]) {
    for (pair, out) in x.chunks_exact(4 * w).zip(y.chunks_exact_mut(w)) {
        let (top, bottom) = pair.split_at(2 * w);
        for ((o, t), b) in out.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
            *o = 0.25 * (t[0] + t[1] + b[0] + b[1]);
        }
    }
}

/// Input-gradient row pairs, `[2, 2w]`, from the output-gradient rows of `w` pixels.
#[inline(always)]
fn backward_body(grad: &[f32], w: usize, dx: &mut [f32]) {
    for (g, pair) in grad.chunks_exact(w).zip(dx.chunks_exact_mut(4 * w)) {
        let (top, bottom) = pair.split_at_mut(2 * w);
        for ((&g, t), b) in g.iter().zip(top.chunks_exact_mut(2)).zip(bottom.chunks_exact_mut(2)) {
            t.fill(0.25 * g);
            b.fill(0.25 * g);
        }
    }
}

wide!(
    /// Whole output rows of `w` pixels.
    fn forward_rows = forward_body(x: &[f32], w: usize, y: &mut [f32])
);
wide!(
    /// Whole output-gradient rows of `w` pixels.
    fn backward_rows = backward_body(grad: &[f32], w: usize, dx: &mut [f32])
);

impl AvgPoolKernels for Flex {
    fn avg_pool2x2_forward(x: FlexTensor) -> FlexTensor {
        let ([n, c, h, w], dtype) = (dims(&x), x.dtype());
        let x = x.to_contiguous();
        let x = f32_values(&x);
        let (rows, w_out) = (ROWS * w / 2, w / 2);
        let mut y = vec![0f32; n * c * h * w / 4];
        y.par_chunks_mut(rows).zip(x.par_chunks(4 * rows)).for_each(|(y, x)| forward_rows(x, w_out, y));
        from_f32(y, Shape::new([n, c, h / 2, w / 2]), dtype)
    }

    fn avg_pool2x2_backward(grad: FlexTensor) -> FlexTensor {
        let ([n, c, h, w], dtype) = (dims(&grad), grad.dtype());
        let grad = grad.to_contiguous();
        let grad = f32_values(&grad);
        let rows = ROWS * w;
        let mut dx = vec![0f32; 4 * n * c * h * w];
        dx.par_chunks_mut(4 * rows).zip(grad.par_chunks(rows)).for_each(|(dx, grad)| backward_rows(grad, w, dx));
        from_f32(dx, Shape::new([n, c, 2 * h, 2 * w]), dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{randn, relative_error};
    use burn::tensor::DType;

    /// Output and input gradient of `Σ pool(x) ∘ u` on the autodiff CPU device, as f32.
    fn run(pool: fn(Tensor<4>) -> Tensor<4>, x: &Tensor<4>, u: &Tensor<4>, dtype: DType) -> [Tensor<4>; 2] {
        let x = x.clone().autodiff().cast(dtype).require_grad();
        // A transposed view: the operation must read it in its logical order.
        let y = pool(x.clone().swap_dims(2, 3));
        let grads = (y.clone().cast(DType::F32) * u.clone().autodiff()).sum().backward();
        [y.inner().cast(DType::F32), x.grad(&grads).expect("a gradient").cast(DType::F32)]
    }

    #[test]
    fn values_and_gradients_match_burns_avg_pool2d_in_f32_and_bf16() {
        // Planes wider than high and the reverse, a 2x2 plane, and more rows than one task holds.
        for [n, c, w, h] in [[2, 3, 6, 4], [1, 2, 2, 10], [3, 1, 2, 2], [2, 40, 32, 16]] {
            let (x, u) = (randn([n, c, w, h], 1), randn([n, c, h / 2, w / 2], 2));
            for (dtype, tolerance) in [(DType::F32, 1e-6), (DType::BF16, 1e-2)] {
                let burns = |x: Tensor<4>| avg_pool2d(x, AvgPoolOptions::new([2, 2]));
                let (ours, reference) = (run(avg_pool2x2, &x, &u, dtype), run(burns, &x, &u, dtype));
                for (name, a, r) in ["y", "dx"].into_iter().zip(ours).zip(reference).map(|((n, a), r)| (n, a, r)) {
                    let err = relative_error(a, r);
                    assert!(err < tolerance, "{n}x{c}x{h}x{w} {dtype:?}: {name} off by {err}");
                }
            }
        }
    }
}
