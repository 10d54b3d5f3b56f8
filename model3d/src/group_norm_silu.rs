//! GroupNorm (Wu & He 2018), an affine map per image and channel, and SiLU (Elfwing et al.
//! 2018) as one operation with its own backward pass on the CPU:
//! `h = SiLU(a)`, `a = p∘x̂ + q`, `x̂ = (x − μ)/√(σ² + ε)` over each image's groups of `C/G`
//! channels and their pixels. `p`, `q` are `[N, C]`: the norm's own `γ`, `β` for every image
//! (a ResBlock's first norm), or FiLM's `γ∘(1 + scale)`, `β∘(1 + scale) + shift` (its second,
//! method.md §3.2).
//!
//! Run one after another, the norm, the FiLM product and sum, and SiLU leave the graph three or
//! four activation-sized tensors to keep for the backward pass (the norm's output, the product,
//! the modulated input of SiLU). Here it keeps the input, which it holds anyway, and each group's
//! `μ` and `1/√(σ² + ε)`: the backward pass recomputes `a` from them. With `m` elements per group,
//! - `da = dh∘σ(a)∘(1 + a∘(1 − σ(a)))`,
//! - `dq = Σ da` and `dp = Σ da∘x̂` per image and channel, over its pixels,
//! - `dx = (g − mean(g) − x̂·mean(g∘x̂)) / √(σ² + ε)` with `g = da∘p`, the means over the group.
//!
//! The same mechanism as [`crate::activation`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written `Backward` step. Other devices take burn's `GroupNorm`, products and `silu`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, Shape, backend_extension};
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::activation::{silu, sigmoid};
use crate::cpu::{f32_values, from_f32, lane_sums, wide};

/// `SiLU(norm(x)∘(1 + scale) + shift)`, or `SiLU(norm(x))` without `film`: the project's operation
/// on the CPU, burn's elsewhere (the norm in f32 whatever the activations' type, as
/// mixed-precision autocast does). The result has `x`'s type.
///
/// # Shapes
/// - `x`: `[N, C, ..]`
/// - `film`: `(scale, shift)`, `[N, C]` each
pub fn group_norm_silu<const D: usize>(norm: &GroupNorm, x: Tensor<D>, film: Option<(Tensor<2>, Tensor<2>)>) -> Tensor<D> {
    let [n, c] = [x.dims()[0], norm.num_channels];
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        let dtype = x.dtype();
        let h = norm.forward(x.cast(DType::F32)).cast(dtype);
        let Some((scale, shift)) = film else { return silu(h) };
        let mut per_channel = [1; D];
        (per_channel[0], per_channel[1]) = (n, c);
        return silu(h * scale.add_scalar(1.0).reshape(per_channel) + shift.reshape(per_channel));
    }
    let device = x.device();
    let row = |t: Tensor<1>| t.cast(DType::F32).reshape([1, c]);
    let (gamma, beta) = (norm.gamma.as_ref().map(|g| row(g.val())), norm.beta.as_ref().map(|b| row(b.val())));
    let (p, q) = match film {
        None => (
            gamma.unwrap_or_else(|| Tensor::ones([1, c], &device)).expand([n, c]),
            beta.unwrap_or_else(|| Tensor::zeros([1, c], &device)).expand([n, c]),
        ),
        Some((scale, shift)) => {
            let (m, shift) = (scale.cast(DType::F32).add_scalar(1.0), shift.cast(DType::F32));
            let q = match beta {
                Some(beta) => beta * m.clone() + shift,
                None => shift,
            };
            (gamma.map_or(m.clone(), |gamma| gamma * m), q)
        }
    };
    let h = <Dispatch as GroupNormSiluBackend>::group_norm_silu(x.into_dispatch(), p.into_dispatch(), q.into_dispatch(), norm.num_groups, norm.epsilon);
    Tensor::from_dispatch(h)
}

#[backend_extension(Flex, Autodiff)]
pub trait GroupNormSiluBackend: Backend {
    /// `SiLU(p∘(x − μ)/√(σ² + ε) + q)` with the moments over each image's groups of channels.
    fn group_norm_silu(x: FloatTensor<Self>, p: FloatTensor<Self>, q: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait GroupNormSiluKernels: Backend {
    /// `h` and each group's `(μ, 1/√(σ² + ε))`, `[N, G, 2]`.
    fn group_norm_silu_forward(x: FloatTensor<Self>, p: FloatTensor<Self>, q: FloatTensor<Self>, groups: usize, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `[dx, dp, dq]`.
    fn group_norm_silu_backward(saved: Saved<Self>, grad: FloatTensor<Self>) -> [FloatTensor<Self>; 3];
}

/// What the backward pass keeps: the inputs and the moments.
#[derive(Clone, Debug)]
pub struct Saved<B: Backend> {
    pub x: FloatTensor<B>,
    pub p: FloatTensor<B>,
    pub q: FloatTensor<B>,
    /// `[N, G, 2]`: `(μ, 1/√(σ² + ε))` per image and group.
    pub moments: FloatTensor<B>,
}

impl GroupNormSiluBackend for Flex {
    fn group_norm_silu(x: FlexTensor, p: FlexTensor, q: FlexTensor, groups: usize, epsilon: f64) -> FlexTensor {
        Self::group_norm_silu_forward(x, p, q, groups, epsilon).0
    }
}

#[derive(Debug)]
struct GroupNormSiluBackward;

impl<B: GroupNormSiluKernels> Backward<B, 3> for GroupNormSiluBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let computed = B::group_norm_silu_backward(ops.state, grad);
        for (node, grad) in ops.parents.into_iter().zip(computed) {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: GroupNormSiluKernels, C: CheckpointStrategy> GroupNormSiluBackend for Autodiff<B, C> {
    fn group_norm_silu(x: FloatTensor<Self>, p: FloatTensor<Self>, q: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self> {
        // The state is the inputs, which the graph holds anyway, and the small moments.
        match GroupNormSiluBackward.prepare::<C>([x.node(), p.node(), q.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, p, q) = (x.into_primitive(), p.into_primitive(), q.into_primitive());
                let (h, moments) = B::group_norm_silu_forward(x.clone(), p.clone(), q.clone(), groups, epsilon);
                prep.finish(Saved { x, p, q, moments }, h)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::group_norm_silu_forward(x.into_primitive(), p.into_primitive(), q.into_primitive(), groups, epsilon).0),
        }
    }
}

/// `(μ, 1/√(σ² + ε))` of a group's values, the variance as the mean squared deviation (two
/// passes, as burn does: no cancellation when the mean is large), each sum in vector lanes.
#[inline(always)]
fn moments(x: &[f32], epsilon: f32) -> (f32, f32) {
    let m = x.len() as f32;
    let [sum] = lane_sums(x, x, |v, _| [v]);
    let mean = sum / m;
    let [squares] = lane_sums(x, x, |v, _| [(v - mean) * (v - mean)]);
    (mean, 1.0 / (squares / m + epsilon).sqrt())
}

/// `a = x·scale + shift` for one channel of a group, with `scale = p/√(σ² + ε)` and
/// `shift = q − scale·μ`: the forward pass and the backward pass's recomputation round alike.
#[inline(always)]
fn affine(p: f32, q: f32, (mean, inv): (f32, f32)) -> (f32, f32) {
    (p * inv, q - p * inv * mean)
}

/// One image `[C, P]`: `h = SiLU(p∘x̂ + q)` per group of `C/G` channels, and its `moments` `[G, 2]`.
#[inline(always)]
fn forward_body(x: &[f32], p: &[f32], q: &[f32], epsilon: f32, h: &mut [f32], moments: &mut [f32]) {
    let (c, groups) = (p.len(), moments.len() / 2);
    let (per_group, pixels) = (x.len() / groups, x.len() / c);
    for (g, ((x, h), stats)) in x.chunks_exact(per_group).zip(h.chunks_exact_mut(per_group)).zip(moments.chunks_exact_mut(2)).enumerate() {
        let (mean, inv) = self::moments(x, epsilon);
        stats.copy_from_slice(&[mean, inv]);
        for (k, (x, h)) in x.chunks_exact(pixels).zip(h.chunks_exact_mut(pixels)).enumerate() {
            let channel = g * (c / groups) + k;
            let (scale, shift) = affine(p[channel], q[channel], (mean, inv));
            h.iter_mut().zip(x).for_each(|(h, &x)| {
                let a = x * scale + shift;
                *h = a * sigmoid(a);
            });
        }
    }
}

/// One image's `dx` `[C, P]` from `dh`, and its `dp`, `dq` `[C]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body(x: &[f32], p: &[f32], q: &[f32], moments: &[f32], dh: &[f32], dx: &mut [f32], dp: &mut [f32], dq: &mut [f32]) {
    let (c, groups) = (p.len(), moments.len() / 2);
    let (per_group, pixels) = (x.len() / groups, x.len() / c);
    let channels = c / groups;
    for (g, ((x, dh), dx)) in x.chunks_exact(per_group).zip(dh.chunks_exact(per_group)).zip(dx.chunks_exact_mut(per_group)).enumerate() {
        let (mean, inv) = (moments[2 * g], moments[2 * g + 1]);
        // `da` into `dx`, then Σ g and Σ g∘x̂ over the group, with g = da∘p per channel.
        let (mut sum_g, mut sum_gx) = (0f32, 0f32);
        for (k, ((x, dh), da)) in x.chunks_exact(pixels).zip(dh.chunks_exact(pixels)).zip(dx.chunks_exact_mut(pixels)).enumerate() {
            let channel = g * channels + k;
            let (scale, shift) = affine(p[channel], q[channel], (mean, inv));
            da.iter_mut().zip(x.iter().zip(dh)).for_each(|(da, (&x, &dh))| {
                let a = x * scale + shift;
                let s = sigmoid(a);
                *da = dh * s * (1.0 + a * (1.0 - s));
            });
            let [s, sx] = lane_sums(da, x, |da, x| [da, da * (x - mean) * inv]);
            (dq[channel], dp[channel]) = (s, sx);
            sum_g += p[channel] * s;
            sum_gx += p[channel] * sx;
        }
        let m = per_group as f32;
        let (mean_g, mean_gx) = (sum_g / m, sum_gx / m);
        for (k, (x, dx)) in x.chunks_exact(pixels).zip(dx.chunks_exact_mut(pixels)).enumerate() {
            let p = p[g * channels + k];
            dx.iter_mut().zip(x).for_each(|(dx, &x)| {
                let x_hat = (x - mean) * inv;
                *dx = inv * (p * *dx - mean_g - x_hat * mean_gx);
            });
        }
    }
}

wide!(
    /// One image's output and moments.
    fn forward_image = forward_body(x: &[f32], p: &[f32], q: &[f32], epsilon: f32, h: &mut [f32], moments: &mut [f32])
);
wide!(
    /// One image's gradients.
    fn backward_image = backward_body(x: &[f32], p: &[f32], q: &[f32], moments: &[f32], dh: &[f32], dx: &mut [f32], dp: &mut [f32], dq: &mut [f32])
);

impl GroupNormSiluKernels for Flex {
    fn group_norm_silu_forward(x: FlexTensor, p: FlexTensor, q: FlexTensor, groups: usize, epsilon: f64) -> (FlexTensor, FlexTensor) {
        let (shape, dtype) = (x.layout().shape().clone(), x.dtype());
        let (n, image) = image_len(&shape, groups);
        let [x, p, q] = [&x, &p, &q].map(|t| t.to_contiguous());
        let [x, p, q] = [&x, &p, &q].map(|t| f32_values(t));
        let c = shape.as_slice()[1];
        assert_eq!((p.len(), q.len()), (n * c, n * c), "GroupNorm's p, q of an [{n}, {c}, ..] input");
        let (mut h, mut moments) = (vec![0f32; x.len()], vec![0f32; n * groups * 2]);
        h.par_chunks_mut(image).zip(moments.par_chunks_mut(2 * groups)).enumerate().for_each(|(i, (h, moments))| {
            let [x, p, q] = [(&x, image), (&p, c), (&q, c)].map(|(t, len)| &t[i * len..(i + 1) * len]);
            forward_image(x, p, q, epsilon as f32, h, moments);
        });
        (from_f32(h, shape, dtype), from_f32(moments, Shape::new([n, groups, 2]), DType::F32))
    }

    fn group_norm_silu_backward(saved: Saved<Self>, grad: FlexTensor) -> [FlexTensor; 3] {
        let (shape, dtype, p_dtype, q_dtype) = (saved.x.layout().shape().clone(), saved.x.dtype(), saved.p.dtype(), saved.q.dtype());
        let groups = saved.moments.layout().shape().as_slice()[1];
        let (n, image) = image_len(&shape, groups);
        let c = shape.as_slice()[1];
        let [x, p, q, moments, dh] = [&saved.x, &saved.p, &saved.q, &saved.moments, &grad].map(|t| t.to_contiguous());
        let [x, p, q, moments, dh] = [&x, &p, &q, &moments, &dh].map(|t| f32_values(t));
        let (mut dx, mut dp, mut dq) = (vec![0f32; x.len()], vec![0f32; n * c], vec![0f32; n * c]);
        dx.par_chunks_mut(image).zip(dp.par_chunks_mut(c).zip(dq.par_chunks_mut(c))).enumerate().for_each(|(i, (dx, (dp, dq)))| {
            let [x, dh] = [&x, &dh].map(|t| &t[i * image..(i + 1) * image]);
            let [p, q] = [&p, &q].map(|t| &t[i * c..(i + 1) * c]);
            backward_image(x, p, q, &moments[i * 2 * groups..(i + 1) * 2 * groups], dh, dx, dp, dq);
        });
        [from_f32(dx, shape, dtype), from_f32(dp, Shape::new([n, c]), p_dtype), from_f32(dq, Shape::new([n, c]), q_dtype)]
    }
}

/// `(N, C·P)`: images and the elements of one, checked to split into `groups` whole channels.
fn image_len(shape: &Shape, groups: usize) -> (usize, usize) {
    let dims = shape.as_slice();
    assert!(dims.len() >= 3 && dims[1] % groups == 0, "GroupNorm of {groups} groups over a {dims:?} tensor");
    (dims[0], dims[1..].iter().product())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::relative_error;
    use burn::nn::GroupNormConfig;

    /// Output and the gradients of `Σ h ∘ u` on the autodiff CPU device, as f32: `h` by the
    /// operation (`ours`) or by burn's `GroupNorm`, FiLM product and sum, and `silu`, in f32.
    fn run(ours: bool, affine: bool, film: bool, x: &Tensor<4>, u: &Tensor<4>, dtype: DType) -> Vec<Tensor<4>> {
        let ad = Device::flex().autodiff();
        let [n, c, _, _] = x.dims();
        let random = |seed, len| Tensor::<1>::from_data(TensorData::new(crate::noise::gaussian(seed, len), [len]), &ad);
        let mut norm = GroupNormConfig::new(4, c).with_epsilon(1e-6).with_affine(affine).init(&ad);
        if affine {
            let param = |seed| burn::module::Param::from_tensor(random(seed, c));
            (norm.gamma, norm.beta) = (Some(param(7)), Some(param(8)));
        }
        let film = film.then(|| [9, 10].map(|seed| random(seed, n * c).reshape([n, c]).cast(dtype).require_grad()));
        let x = x.clone().autodiff().cast(dtype).require_grad();
        // A transposed view: the operation must read it in its logical order.
        let input = x.clone().swap_dims(2, 3);
        let h = if ours {
            group_norm_silu(&norm, input, film.clone().map(|[scale, shift]| (scale, shift)))
        } else {
            let normed = norm.forward(input.cast(DType::F32));
            let a = match &film {
                Some([scale, shift]) => normed * scale.clone().cast(DType::F32).add_scalar(1.0).reshape([n, c, 1, 1]) + shift.clone().cast(DType::F32).reshape([n, c, 1, 1]),
                None => normed,
            };
            burn::tensor::activation::silu(a).cast(dtype)
        };
        let grads = (h.clone().cast(DType::F32) * u.clone().autodiff()).sum().backward();
        let f32 = |t: Tensor<4>| t.cast(DType::F32);
        let grad = |t: &Tensor<2>| f32(t.grad(&grads).expect("a gradient").reshape([1, 1, n, c]));
        let param = |p: &Option<burn::module::Param<Tensor<1>>>| p.as_ref().map(|p| f32(p.grad(&grads).expect("a gradient").reshape([1, 1, 1, c])));
        let film = film.iter().flat_map(|[scale, shift]| [grad(scale), grad(shift)]).collect::<Vec<_>>();
        [Some(f32(h.inner())), Some(f32(x.grad(&grads).expect("a gradient"))), param(&norm.gamma), param(&norm.beta)].into_iter().flatten().chain(film).collect()
    }

    #[test]
    fn values_and_gradients_match_burns_group_norm_film_and_silu_in_f32_and_bf16() {
        let device = Device::flex();
        // 19 images, 12 channels in 4 groups, a large mean.
        let (n, c, w, h) = (19, 12, 5, 3);
        let values: Vec<f32> = crate::noise::gaussian(1, n * c * w * h).into_iter().map(|v| 30.0 + 3.0 * v).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [n, c, w, h]), &device);
        let u = Tensor::<4>::from_data(TensorData::new(crate::noise::gaussian(2, n * c * h * w), [n, c, h, w]), &device);
        for (affine, film, names) in [(true, false, &["h", "dx", "dγ", "dβ"][..]), (false, true, &["h", "dx", "dscale", "dshift"]), (true, true, &["h", "dx", "dγ", "dβ", "dscale", "dshift"])] {
            for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::BF16, 3e-2)] {
                let (ours, reference) = (run(true, affine, film, &x, &u, dtype), run(false, affine, film, &x, &u, dtype));
                assert_eq!((ours.len(), reference.len()), (names.len(), names.len()));
                for (name, (a, r)) in names.iter().zip(ours.into_iter().zip(reference)) {
                    let err = relative_error(a, r);
                    assert!(err < tolerance, "affine {affine}, film {film}, {dtype:?}: {name} off by {err}");
                }
            }
        }
    }
}
