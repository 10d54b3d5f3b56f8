//! RMSNorm (Zhang & Sennrich 2019), `y = g ∘ x / √(mean(x²) + ε)` over the last dimension, as one
//! operation with its own backward pass on the CPU. burn 0.22's `RmsNorm` is a square, a mean, a
//! square root, a division and a product: five passes and five allocations forward, more for
//! the gradient, on every block's input and on every query and key head. Here each row is one
//! pass each way, with `r = 1/√(mean(x²) + ε)` and `x̂ = x·r` recomputed in the backward pass:
//! - `dx = r·(dy∘g − x̂·mean(dy∘g∘x̂))`,
//! - `dg = Σ_rows dy∘x̂`.
//!
//! The same mechanism as [`crate::activation`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written `Backward` step whose state is the input and `g`. Other devices take burn's
//! `RmsNorm`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, Shape, backend_extension};
use burn::nn::RmsNorm;
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu::{f32_values, from_f32, lane_sums, wide};

/// Elements per parallel task (whole rows): large enough that splitting costs nothing next to
/// the work. The backward pass sums `dg` per task and adds the tasks' sums in order, so the
/// result depends on the shape alone, never on how rayon schedules the tasks.
const CHUNK: usize = 1 << 14;

/// `norm` applied to `x` over its last dimension: the project's operation on the CPU, burn's
/// `RmsNorm::forward` elsewhere.
pub fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        return norm.forward(x);
    }
    let gamma = norm.gamma.val().into_dispatch();
    Tensor::from_dispatch(<Dispatch as RmsNormBackend>::rms_norm(x.into_dispatch(), gamma, norm.epsilon))
}

#[backend_extension(Flex, Autodiff)]
pub trait RmsNormBackend: Backend {
    /// `g ∘ x / √(mean(x²) + ε)` over the last dimension of `x`; `g` has that dimension's size.
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait RmsNormKernels: Backend {
    fn rms_norm_forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// `(dx, dg)` from the forward's inputs and the output gradient.
    fn rms_norm_backward(saved: Saved<Self>, grad: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// What the backward pass keeps: the forward's inputs.
#[derive(Clone, Debug)]
pub struct Saved<B: Backend> {
    pub x: FloatTensor<B>,
    pub gamma: FloatTensor<B>,
    pub epsilon: f64,
}

impl RmsNormBackend for Flex {
    fn rms_norm(x: FlexTensor, gamma: FlexTensor, epsilon: f64) -> FlexTensor {
        Self::rms_norm_forward(x, gamma, epsilon)
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: RmsNormKernels> Backward<B, 2> for RmsNormBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (dx, dgamma) = B::rms_norm_backward(ops.state, grad);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: RmsNormKernels, C: CheckpointStrategy> RmsNormBackend for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        // The state is the inputs, which the graph holds anyway: kept, never recomputed.
        match RmsNormBackward.prepare::<C>([x.node(), gamma.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.into_primitive(), gamma.into_primitive());
                let y = B::rms_norm_forward(x.clone(), gamma.clone(), epsilon);
                prep.finish(Saved { x, gamma, epsilon }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm_forward(x.into_primitive(), gamma.into_primitive(), epsilon)),
        }
    }
}

/// `1/√(mean(row²) + ε)`.
#[inline(always)]
pub(crate) fn inverse_rms(row: &[f32], epsilon: f32) -> f32 {
    let [squares] = lane_sums(row, row, |v, _| [v * v]);
    1.0 / (squares / row.len() as f32 + epsilon).sqrt()
}

#[inline(always)]
fn forward_body(x: &[f32], gamma: &[f32], epsilon: f32, y: &mut [f32]) {
    let d = gamma.len();
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let r = inverse_rms(x, epsilon);
        y.iter_mut().zip(x.iter().zip(gamma)).for_each(|(y, (&x, &g))| *y = x * r * g);
    }
}

#[inline(always)]
fn backward_body(x: &[f32], gamma: &[f32], epsilon: f32, grad: &[f32], dx: &mut [f32], dgamma: &mut [f32]) {
    let d = gamma.len();
    for ((x, dy), dx) in x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
        let r = inverse_rms(x, epsilon);
        let mut projection = 0f32; // Σ dy∘g∘x̂
        for (((&x, &dy), &g), dg) in x.iter().zip(dy).zip(gamma).zip(dgamma.iter_mut()) {
            let x_hat = x * r;
            projection += dy * g * x_hat;
            *dg += dy * x_hat;
        }
        let mean = projection / d as f32;
        dx.iter_mut().zip(x.iter().zip(dy).zip(gamma)).for_each(|(dx, ((&x, &dy), &g))| *dx = r * (dy * g - x * r * mean));
    }
}

wide!(
    /// `y = g ∘ x / √(mean(x²) + ε)` for rows of `gamma.len()` values.
    fn forward_rows = forward_body(x: &[f32], gamma: &[f32], epsilon: f32, y: &mut [f32])
);
wide!(
    /// `dx` of the rows, and their `dy∘x̂` added onto `dgamma`.
    fn backward_rows = backward_body(x: &[f32], gamma: &[f32], epsilon: f32, grad: &[f32], dx: &mut [f32], dgamma: &mut [f32])
);

impl RmsNormKernels for Flex {
    fn rms_norm_forward(x: FlexTensor, gamma: FlexTensor, epsilon: f64) -> FlexTensor {
        let (shape, dtype) = (x.layout().shape().clone(), x.dtype());
        let [x, gamma] = [&x, &gamma].map(|t| t.to_contiguous());
        let [x, gamma] = [&x, &gamma].map(|t| f32_values(t));
        let rows = rows_per_task(gamma.len()) * gamma.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(rows).zip(x.par_chunks(rows)).for_each(|(y, x)| forward_rows(x, &gamma, epsilon as f32, y));
        from_f32(y, shape, dtype)
    }

    fn rms_norm_backward(saved: Saved<Self>, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (shape, dtype, g_dtype) = (saved.x.layout().shape().clone(), saved.x.dtype(), saved.gamma.dtype());
        let [x, gamma, grad] = [&saved.x, &saved.gamma, &grad].map(|t| t.to_contiguous());
        let [x, gamma, grad] = [&x, &gamma, &grad].map(|t| f32_values(t));
        let (d, epsilon) = (gamma.len(), saved.epsilon as f32);
        let rows = rows_per_task(d) * d;
        let mut dx = vec![0f32; x.len()];
        let sums: Vec<Vec<f32>> = dx
            .par_chunks_mut(rows)
            .zip(x.par_chunks(rows).zip(grad.par_chunks(rows)))
            .map(|(dx, (x, grad))| {
                let mut dgamma = vec![0f32; d];
                backward_rows(x, &gamma, epsilon, grad, dx, &mut dgamma);
                dgamma
            })
            .collect();
        let mut dgamma = vec![0f32; d];
        for task in sums {
            dgamma.iter_mut().zip(task).for_each(|(a, b)| *a += b);
        }
        (from_f32(dx, shape, dtype), from_f32(dgamma, Shape::new([d]), g_dtype))
    }
}

/// Whole rows of `d` values per parallel task.
fn rows_per_task(d: usize) -> usize {
    (CHUNK / d.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::relative_error;
    use burn::nn::RmsNormConfig;
    use burn::tensor::DType;

    /// Output and the gradients of `Σ norm(x) ∘ u` on the autodiff CPU device, as f32.
    fn run(ours: bool, x: &Tensor<3>, u: &Tensor<3>, dtype: DType) -> [Tensor<3>; 3] {
        let ad = Device::flex().autodiff();
        let mut norm = RmsNormConfig::new(x.dims()[1]).with_epsilon(1e-6).init(&ad);
        let gamma = Tensor::<1>::from_data(TensorData::new(crate::noise::gaussian(7, x.dims()[1]), [x.dims()[1]]), &ad);
        norm.gamma = burn::module::Param::from_tensor(gamma);
        let x = x.clone().autodiff().cast(dtype).require_grad();
        // A transposed view: the operation must read it in its logical order.
        let input = x.clone().swap_dims(1, 2);
        // burn's RmsNorm takes bf16 only through f32 (the network's `in_f32` does the same).
        let y = if ours { rms_norm(&norm, input) } else { norm.forward(input.cast(DType::F32)).cast(dtype) };
        let grads = (y.clone().cast(DType::F32) * u.clone().autodiff()).sum().backward();
        let f32 = |t: Tensor<3>| t.cast(DType::F32);
        let dg = norm.gamma.grad(&grads).expect("a gradient").reshape([1, 1, -1]);
        [f32(y.inner()), f32(x.grad(&grads).expect("a gradient")), f32(dg)]
    }

    #[test]
    fn values_and_gradients_match_burns_rms_norm_in_f32_and_bf16() {
        let device = Device::flex();
        // Rows at scales from 10⁻³ to 10³ (ε matters at the small end), 70-wide rows (not a
        // multiple of 8 lanes), and more rows than one task holds.
        let (b, d, n) = (3, 70, 400);
        let values: Vec<f32> = crate::noise::gaussian(1, b * d * n).into_iter().enumerate().map(|(i, v)| v * 10f32.powi((i % n) as i32 % 7 - 3)).collect();
        let x = Tensor::<3>::from_data(TensorData::new(values, [b, d, n]), &device);
        let u = Tensor::<3>::from_data(TensorData::new(crate::noise::gaussian(2, b * n * d), [b, n, d]), &device);
        for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let (ours, reference) = (run(true, &x, &u, dtype), run(false, &x, &u, dtype));
            for (name, a, r) in ["y", "dx", "dg"].into_iter().zip(ours).zip(reference).map(|((n, a), r)| (n, a, r)) {
                let err = relative_error(a, r);
                assert!(err < tolerance, "{dtype:?}: {name} off by {err}");
            }
        }
    }
}
