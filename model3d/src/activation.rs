//! SiLU, `x·σ(x)` (Elfwing et al. 2018, "Sigmoid-weighted linear units"), as one operation with
//! its own backward pass on the CPU. burn 0.22's `silu` is `x * sigmoid(x)`: on burn-flex that is
//! a scalar `expf` per element on one core, a product, and three element-wise passes more for the
//! gradient. Here the forward pass is one vectorised, parallel pass, and the backward pass one
//! more from the saved input: `d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))`.
//!
//! The same mechanism as [`crate::attention`]: a burn backend extension
//! (`#[backend_extension]`, routed by burn-dispatch) implemented for burn-flex, and for
//! `Autodiff<B, C>` with a hand-written `Backward` step. Other devices take burn's `silu`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu::{exp, f32_values, from_f32, wide};

/// Elements per parallel task: large enough that splitting costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// SiLU of any tensor: the project's operation on the CPU, burn's `silu` elsewhere.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        return burn::tensor::activation::silu(x);
    }
    Tensor::from_dispatch(<Dispatch as SiluBackend>::silu(x.into_dispatch()))
}

#[backend_extension(Flex, Autodiff)]
pub trait SiluBackend: Backend {
    /// `x·σ(x)` element-wise.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait SiluKernels: Backend {
    /// `x·σ(x)`.
    fn silu_forward(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `grad·σ(x)·(1 + x·(1 − σ(x)))`.
    fn silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SiluBackend for Flex {
    fn silu(x: FlexTensor) -> FlexTensor {
        Self::silu_forward(x)
    }
}

#[derive(Debug)]
struct SiluBackward;

impl<B: SiluKernels> Backward<B, 1> for SiluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::silu_backward(ops.state, grad));
        }
    }
}

impl<B: SiluKernels, C: CheckpointStrategy> SiluBackend for Autodiff<B, C> {
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // The state is the input, which the graph holds anyway: kept, never recomputed.
        match SiluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                prep.finish(x.clone(), B::silu_forward(x))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::silu_forward(x.into_primitive())),
        }
    }
}

/// `σ(x) = 1 / (1 + e^(−x))`; for `x < −88.3` the clamped `e^(−x)` still gives σ below 10⁻³⁸.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn forward_body(x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * sigmoid(x));
}

#[inline(always)]
fn backward_body(x: &[f32], grad: &[f32], dx: &mut [f32]) {
    dx.iter_mut().zip(x.iter().zip(grad)).for_each(|(dx, (&x, &g))| {
        let s = sigmoid(x);
        *dx = g * s * (1.0 + x * (1.0 - s));
    });
}

wide!(
    /// `y = x·σ(x)` over one chunk.
    fn forward_chunk = forward_body(x: &[f32], y: &mut [f32])
);
wide!(
    /// `dx = grad·σ(x)·(1 + x·(1 − σ(x)))` over one chunk.
    fn backward_chunk = backward_body(x: &[f32], grad: &[f32], dx: &mut [f32])
);

impl SiluKernels for Flex {
    fn silu_forward(x: FlexTensor) -> FlexTensor {
        let (shape, dtype) = (x.layout().shape().clone(), x.dtype());
        let x = x.to_contiguous();
        let x = f32_values(&x);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| forward_chunk(x, y));
        from_f32(y, shape, dtype)
    }

    fn silu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let (shape, dtype) = (x.layout().shape().clone(), x.dtype());
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let (x, grad) = (f32_values(&x), f32_values(&grad));
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK))).for_each(|(dx, (x, g))| backward_chunk(x, g, dx));
        from_f32(dx, shape, dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;

    #[test]
    fn the_derivative_is_the_closed_form_and_the_values_match_f64() {
        let x: Vec<f32> = (0..=4000).map(|i| -100.0 + 0.05 * i as f32).collect();
        let (mut y, mut dx) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        forward_chunk(&x, &mut y);
        backward_chunk(&x, &vec![1.0; x.len()], &mut dx);
        for ((&x, &y), &dx) in x.iter().zip(&y).zip(&dx) {
            let (x, s) = (x as f64, 1.0 / (1.0 + (-(x as f64)).exp()));
            let (y_ref, dx_ref) = (x * s, s * (1.0 + x * (1.0 - s)));
            assert!((y as f64 - y_ref).abs() <= 1e-6 * y_ref.abs().max(1e-30) + 1e-37, "silu({x}) = {y}, not {y_ref}");
            assert!((dx as f64 - dx_ref).abs() <= 1e-6 * dx_ref.abs().max(1.0), "silu'({x}) = {dx}, not {dx_ref}");
        }
    }

    /// Output and input gradient of `Σ f(x) ∘ w` on the autodiff CPU device, as f32.
    fn run(f: fn(Tensor<3>) -> Tensor<3>, x: Tensor<3>, w: Tensor<3>, dtype: DType) -> (Tensor<3>, Tensor<3>) {
        let x = x.autodiff().cast(dtype).require_grad();
        // A transposed view: the operation must read it in its logical order.
        let out = f(x.clone().swap_dims(1, 2));
        let grads = (out.clone().cast(DType::F32) * w.autodiff()).sum().backward();
        (out.cast(DType::F32).inner(), x.grad(&grads).expect("a gradient").cast(DType::F32))
    }

    #[test]
    fn values_and_gradients_match_burns_silu_in_f32_and_bf16() {
        let device = Device::flex();
        let randn = |seed, spread: f32| {
            let values: Vec<f32> = crate::noise::gaussian(seed, 2 * 300 * 70).into_iter().map(|v| v * spread).collect();
            Tensor::<3>::from_data(TensorData::new(values, [2, 300, 70]), &device)
        };
        let (x, w) = (randn(1, 6.0), randn(2, 1.0).swap_dims(1, 2));
        for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let (ours, reference) = (run(silu, x.clone(), w.clone(), dtype), run(burn::tensor::activation::silu, x.clone(), w.clone(), dtype));
            for (name, a, r) in [("out", ours.0, reference.0), ("dx", ours.1, reference.1)] {
                let err = ((a - r.clone()).abs().max() / r.abs().max()).into_scalar::<f32>();
                assert!(err < tolerance, "{dtype:?} {name} off by {err}");
            }
        }
    }
}
