//! RMSNorm (Zhang & Sennrich 2019) with FiLM conditioning as one operation with its own backward
//! pass on the CPU: `y = (g∘x̂)∘(1 + s) + h`, `x̂ = x·r`, `r = 1/√(mean(x²) + ε)` over the last
//! dimension, with `s`, `h` one FiLM vector per frame, broadcast over the frame's tokens (the
//! Transformer and temporal blocks' input norm, method.md §3.2).
//!
//! Run one after another, the norm and FiLM's product leave the graph the norm's output to keep
//! (the product's gradient with respect to `s` needs it), an activation-sized tensor per block.
//! Here the graph keeps the input, which it holds anyway, and recomputes `x̂` per row. With `n =
//! g∘x̂` and `d = dy∘(1 + s)`:
//! - `dh = Σ dy` and `ds = Σ dy∘n` per FiLM vector, over the rows it is broadcast to,
//! - `dg = Σ_rows d∘x̂`, `dx = r·(d∘g − x̂·mean(d∘g∘x̂))`, as in [`crate::rms_norm`].
//!
//! The same mechanism as [`crate::activation`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written `Backward` step. Other devices take burn's `RmsNorm`, product and sum.

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
use burn::tensor::DType;
use rayon::prelude::*;

use crate::cpu::{f32_values, from_f32, wide};
use crate::rms_norm::inverse_rms;

/// `norm(x)∘(1 + scale) + shift` over the last dimension: the project's operation on the CPU,
/// burn's elsewhere (the norm in f32 whatever the activations' type, as mixed-precision autocast
/// does). The result has `x`'s type.
///
/// # Shapes
/// - `x`: `[A, M, K, D]`
/// - `scale`, `shift`: `[A, M, 1, D]` or `[A, 1, K, D]`, broadcast over the other axis
pub fn rms_norm_film(norm: &RmsNorm, x: Tensor<4>, scale: Tensor<4>, shift: Tensor<4>) -> Tensor<4> {
    let ([a, m, k, d], [fa, fm, fk, fd]) = (x.dims(), scale.dims());
    assert!((fa, fd) == (a, d) && ((fm, fk) == (m, 1) || (fm, fk) == (1, k)) && shift.dims() == scale.dims(), "FiLM of shapes {:?}, {:?} for a {:?} input", scale.dims(), shift.dims(), x.dims());
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        let dtype = x.dtype();
        return norm.forward(x.cast(DType::F32)).cast(dtype) * scale.add_scalar(1.0) + shift;
    }
    let f32 = |t: Tensor<4>| t.cast(DType::F32).into_dispatch();
    let gamma = norm.gamma.val().cast(DType::F32).into_dispatch();
    Tensor::from_dispatch(<Dispatch as RmsNormFilmBackend>::rms_norm_film(x.into_dispatch(), gamma, f32(scale), f32(shift), norm.epsilon))
}

#[backend_extension(Flex, Autodiff)]
pub trait RmsNormFilmBackend: Backend {
    /// `(g ∘ x / √(mean(x²) + ε))∘(1 + scale) + shift` over the last dimension of `x` `[A, M, K,
    /// D]`, with `scale`, `shift` `[A, M, 1, D]` or `[A, 1, K, D]`.
    fn rms_norm_film(x: FloatTensor<Self>, gamma: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait RmsNormFilmKernels: Backend {
    fn rms_norm_film_forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// `[dx, dg, dscale, dshift]` from the forward's inputs and the output gradient.
    fn rms_norm_film_backward(saved: Saved<Self>, grad: FloatTensor<Self>) -> [FloatTensor<Self>; 4];
}

/// What the backward pass keeps: the forward's inputs.
#[derive(Clone, Debug)]
pub struct Saved<B: Backend> {
    pub x: FloatTensor<B>,
    pub gamma: FloatTensor<B>,
    pub scale: FloatTensor<B>,
    pub shift: FloatTensor<B>,
    pub epsilon: f64,
}

impl RmsNormFilmBackend for Flex {
    fn rms_norm_film(x: FlexTensor, gamma: FlexTensor, scale: FlexTensor, shift: FlexTensor, epsilon: f64) -> FlexTensor {
        Self::rms_norm_film_forward(x, gamma, scale, shift, epsilon)
    }
}

#[derive(Debug)]
struct RmsNormFilmBackward;

impl<B: RmsNormFilmKernels> Backward<B, 4> for RmsNormFilmBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let computed = B::rms_norm_film_backward(ops.state, grad);
        for (node, grad) in ops.parents.into_iter().zip(computed) {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: RmsNormFilmKernels, C: CheckpointStrategy> RmsNormFilmBackend for Autodiff<B, C> {
    fn rms_norm_film(x: FloatTensor<Self>, gamma: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        // The state is the inputs, which the graph holds anyway: kept, never recomputed.
        match RmsNormFilmBackward.prepare::<C>([x.node(), gamma.node(), scale.node(), shift.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [x, gamma, scale, shift] = [x, gamma, scale, shift].map(|t| t.into_primitive());
                let y = B::rms_norm_film_forward(x.clone(), gamma.clone(), scale.clone(), shift.clone(), epsilon);
                prep.finish(Saved { x, gamma, scale, shift, epsilon }, y)
            }
            OpsKind::UnTracked(prep) => {
                let [x, gamma, scale, shift] = [x, gamma, scale, shift].map(|t| t.into_primitive());
                prep.finish(B::rms_norm_film_forward(x, gamma, scale, shift, epsilon))
            }
        }
    }
}

/// Where the rows of one leading index `a` of `x` `[A, M, K, D]` find their FiLM vectors: row
/// `(m, k)` takes vector `m` of the `M` (FiLM `[A, M, 1, D]`) or `k` of the `K` (`[A, 1, K, D]`).
#[derive(Clone, Copy, Debug)]
struct Broadcast {
    k: usize,
    per_m: bool,
}

impl Broadcast {
    #[inline(always)]
    fn vector(self, row: usize) -> usize {
        if self.per_m { row / self.k } else { row % self.k }
    }
}

/// The rows `[M·K, D]` of one leading index: `y = (g∘x̂)∘(1 + s) + h` with `s`, `h` `[M or K, D]`.
#[inline(always)]
fn forward_body(x: &[f32], gamma: &[f32], scale: &[f32], shift: &[f32], at: Broadcast, epsilon: f32, y: &mut [f32]) {
    let d = gamma.len();
    for (row, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let r = inverse_rms(x, epsilon);
        let f = at.vector(row) * d;
        let (s, h) = (&scale[f..f + d], &shift[f..f + d]);
        y.iter_mut().zip(x.iter().zip(gamma)).zip(s.iter().zip(h)).for_each(|((y, (&x, &g)), (&s, &h))| *y = x * r * g * (s + 1.0) + h);
    }
}

/// The same rows' `dx`, with their `d∘x̂` added onto `dgamma` and their `dy∘n`, `dy` onto the
/// `dscale`, `dshift` of their FiLM vectors.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body(x: &[f32], gamma: &[f32], scale: &[f32], at: Broadcast, epsilon: f32, grad: &[f32], dx: &mut [f32], [dgamma, dscale, dshift]: [&mut [f32]; 3]) {
    let d = gamma.len();
    for (row, ((x, dy), dx)) in x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).enumerate() {
        let r = inverse_rms(x, epsilon);
        let f = at.vector(row) * d;
        let (s, ds, dh) = (&scale[f..f + d], &mut dscale[f..f + d], &mut dshift[f..f + d]);
        let mut projection = 0f32; // Σ d∘g∘x̂
        for (((((&x, &dy), &g), &s), dg), (ds, dh)) in x.iter().zip(dy).zip(gamma).zip(s).zip(dgamma.iter_mut()).zip(ds.iter_mut().zip(dh.iter_mut())) {
            let x_hat = x * r;
            let dn = dy * (s + 1.0);
            *ds += dy * g * x_hat;
            *dh += dy;
            projection += dn * g * x_hat;
            *dg += dn * x_hat;
        }
        let mean = projection / d as f32;
        dx.iter_mut().zip(x.iter().zip(dy).zip(gamma.iter().zip(s))).for_each(|(dx, ((&x, &dy), (&g, &s)))| *dx = r * (dy * (s + 1.0) * g - x * r * mean));
    }
}

wide!(
    /// One leading index's output rows.
    fn forward_rows = forward_body(x: &[f32], gamma: &[f32], scale: &[f32], shift: &[f32], at: Broadcast, epsilon: f32, y: &mut [f32])
);
wide!(
    /// One leading index's gradients.
    fn backward_rows = backward_body(x: &[f32], gamma: &[f32], scale: &[f32], at: Broadcast, epsilon: f32, grad: &[f32], dx: &mut [f32], sums: [&mut [f32]; 3])
);

/// `(rows of one leading index, FiLM vectors of one, where rows find theirs)` for `x` `[A, M, K,
/// D]` and FiLM `[A, 1, K, D]` (broadcast over `M`) or `[A, M, 1, D]` (over `K`).
fn layout(x: &Shape, film: &Shape) -> (usize, usize, Broadcast) {
    let [[_, m, k, _], [_, fm, fk, _]] = [x, film].map(|s| <[usize; 4]>::try_from(s.as_slice()).expect("rank 4"));
    (m * k, fm * fk, Broadcast { k, per_m: !(fm == 1 && fk == k) })
}

impl RmsNormFilmKernels for Flex {
    fn rms_norm_film_forward(x: FlexTensor, gamma: FlexTensor, scale: FlexTensor, shift: FlexTensor, epsilon: f64) -> FlexTensor {
        let (shape, dtype) = (x.layout().shape().clone(), x.dtype());
        let (rows, vectors, at) = layout(&shape, scale.layout().shape());
        let [x, gamma, scale, shift] = [&x, &gamma, &scale, &shift].map(|t| t.to_contiguous());
        let [x, gamma, scale, shift] = [&x, &gamma, &scale, &shift].map(|t| f32_values(t));
        let d = gamma.len();
        let (per_a, film) = (rows * d, vectors * d);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(per_a).zip(x.par_chunks(per_a)).enumerate().for_each(|(a, (y, x))| {
            let [s, h] = [&scale, &shift].map(|t| &t[a * film..(a + 1) * film]);
            forward_rows(x, &gamma, s, h, at, epsilon as f32, y);
        });
        from_f32(y, shape, dtype)
    }

    fn rms_norm_film_backward(saved: Saved<Self>, grad: FlexTensor) -> [FlexTensor; 4] {
        let (shape, dtype, film_shape) = (saved.x.layout().shape().clone(), saved.x.dtype(), saved.scale.layout().shape().clone());
        let (g_dtype, s_dtype, h_dtype) = (saved.gamma.dtype(), saved.scale.dtype(), saved.shift.dtype());
        let (rows, vectors, at) = layout(&shape, &film_shape);
        let [x, gamma, scale, grad] = [&saved.x, &saved.gamma, &saved.scale, &grad].map(|t| t.to_contiguous());
        let [x, gamma, scale, grad] = [&x, &gamma, &scale, &grad].map(|t| f32_values(t));
        let d = gamma.len();
        let (per_a, film) = (rows * d, vectors * d);
        let (mut dx, mut dscale, mut dshift) = (vec![0f32; x.len()], vec![0f32; scale.len()], vec![0f32; scale.len()]);
        // One task per leading index: its FiLM vectors are its own; its `dg` is added in order.
        let sums: Vec<Vec<f32>> = dx
            .par_chunks_mut(per_a)
            .zip(dscale.par_chunks_mut(film).zip(dshift.par_chunks_mut(film)))
            .enumerate()
            .map(|(a, (dx, (ds, dh)))| {
                let mut dgamma = vec![0f32; d];
                let [x, grad] = [&x, &grad].map(|t| &t[a * per_a..(a + 1) * per_a]);
                backward_rows(x, &gamma, &scale[a * film..(a + 1) * film], at, saved.epsilon as f32, grad, dx, [&mut dgamma, ds, dh]);
                dgamma
            })
            .collect();
        let mut dgamma = vec![0f32; d];
        for task in sums {
            dgamma.iter_mut().zip(task).for_each(|(a, b)| *a += b);
        }
        [
            from_f32(dx, shape, dtype),
            from_f32(dgamma, Shape::new([d]), g_dtype),
            from_f32(dscale, film_shape.clone(), s_dtype),
            from_f32(dshift, film_shape, h_dtype),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::relative_error;
    use burn::nn::RmsNormConfig;

    /// Output and the gradients of `Σ y ∘ u` on the autodiff CPU device, as f32: `y` by the
    /// operation (`ours`) or by burn's `RmsNorm`, product and sum in f32.
    fn run(ours: bool, x: &Tensor<4>, film: [usize; 4], u: &Tensor<4>, dtype: DType) -> Vec<Tensor<4>> {
        let ad = Device::flex().autodiff();
        let d = x.dims()[3];
        let random = |seed, shape: [usize; 4]| Tensor::<4>::from_data(TensorData::new(crate::noise::gaussian(seed, shape.iter().product()), shape), &ad);
        let mut norm = RmsNormConfig::new(d).with_epsilon(1e-6).init(&ad);
        norm.gamma = burn::module::Param::from_tensor(random(7, [1, 1, 1, d]).reshape([d]));
        let [scale, shift] = [8, 9].map(|seed| random(seed, film).cast(dtype).require_grad());
        let x = x.clone().autodiff().cast(dtype).require_grad();
        // A permuted view, as the temporal block passes: the operation must read it in its
        // logical order.
        let input = x.clone().swap_dims(1, 2);
        let y = if ours {
            rms_norm_film(&norm, input, scale.clone(), shift.clone())
        } else {
            let f32 = |t: Tensor<4>| t.cast(DType::F32);
            (norm.forward(f32(input)) * f32(scale.clone()).add_scalar(1.0) + f32(shift.clone())).cast(dtype)
        };
        let grads = (y.clone().cast(DType::F32) * u.clone().autodiff()).sum().backward();
        let f32 = |t: Tensor<4>| t.cast(DType::F32);
        let grad = |t: &Tensor<4>| f32(t.grad(&grads).expect("a gradient"));
        let dg = f32(norm.gamma.grad(&grads).expect("a gradient").reshape([1, 1, 1, d]));
        vec![f32(y.inner()), grad(&x), dg, grad(&scale), grad(&shift)]
    }

    #[test]
    fn values_and_gradients_match_burns_rms_norm_product_and_sum_in_f32_and_bf16() {
        let device = Device::flex();
        // FiLM per `M` (the Transformer block) and per `K` (the temporal block), and one vector
        // for every row; 70-wide rows (not a multiple of 8 lanes), scales from 10⁻³ to 10³.
        for ([a, m, k, d], film) in [([3, 5, 7, 70], [3, 5, 1, 70]), ([3, 5, 7, 70], [3, 1, 7, 70]), ([2, 3, 1, 16], [2, 1, 1, 16])] {
            let len = a * m * k * d;
            let values: Vec<f32> = crate::noise::gaussian(1, len).into_iter().enumerate().map(|(i, v)| v * 10f32.powi((i / d) as i32 % 7 - 3)).collect();
            // Stored [A, K, M, D]; the operation sees it as [A, M, K, D].
            let x = Tensor::<4>::from_data(TensorData::new(values, [a, k, m, d]), &device);
            let u = Tensor::<4>::from_data(TensorData::new(crate::noise::gaussian(2, len), [a, m, k, d]), &device);
            for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
                let (ours, reference) = (run(true, &x, film, &u, dtype), run(false, &x, film, &u, dtype));
                for (name, (a, r)) in ["y", "dx", "dg", "dscale", "dshift"].into_iter().zip(ours.into_iter().zip(reference)) {
                    let err = relative_error(a, r);
                    assert!(err < tolerance, "FiLM {film:?}, {dtype:?}: {name} off by {err}");
                }
            }
        }
    }
}
