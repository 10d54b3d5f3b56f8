//! GroupNorm (Wu & He 2018) as one operation with its own backward pass on the CPU: for each
//! image and group of `C/G` channels, `x̂ = (x − μ)/√(σ² + ε)` over the group's channels and
//! pixels, then `y = γ∘x̂ + β` per channel. burn 0.22's `GroupNorm` is a mean, a difference, a
//! square, a second mean, a square root, a division, a product and a sum: eight passes forward
//! and more for the gradient. Here a group is two passes forward (its moments, then the output)
//! and two back, with `g = dy∘γ` and `m` elements per group:
//! - `dx = (g − mean(g) − x̂·mean(g∘x̂)) / √(σ² + ε)`,
//! - `dγ = Σ dy∘x̂` and `dβ = Σ dy` per channel, over images and pixels.
//!
//! The same mechanism as [`crate::activation`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written `Backward` step whose state is the input and `γ`. Other devices take burn's
//! `GroupNorm`.

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
use rayon::prelude::*;

use crate::cpu::{f32_values, from_f32, lane_sums, wide};

/// Images per parallel task of the backward pass is `⌈N / TASKS⌉`: each task sums its own
/// `dγ`, `dβ` and the tasks' sums are added in order, so the result depends on the shape alone,
/// never on how rayon schedules the tasks.
const TASKS: usize = 16;

/// `norm` applied to `x` `[N, C, ..]`: the project's operation on the CPU, burn's
/// `GroupNorm::forward` elsewhere. Without an affine part, `γ = 1` and `β = 0` take no gradient.
pub fn group_norm<const D: usize>(norm: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        return norm.forward(x);
    }
    let (c, device) = (norm.num_channels, x.device());
    let gamma = norm.gamma.as_ref().map(|g| g.val()).unwrap_or_else(|| Tensor::ones([c], &device));
    let beta = norm.beta.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([c], &device));
    let y = <Dispatch as GroupNormBackend>::group_norm(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), norm.num_groups, norm.epsilon);
    Tensor::from_dispatch(y)
}

#[backend_extension(Flex, Autodiff)]
pub trait GroupNormBackend: Backend {
    /// `γ∘(x − μ)/√(σ² + ε) + β` with the moments over each image's groups of channels.
    fn group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait GroupNormKernels: Backend {
    fn group_norm_forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self>;
    /// `[dx, dγ, dβ]`, each when `wanted`.
    fn group_norm_backward(saved: Saved<Self>, grad: FloatTensor<Self>, wanted: [bool; 3]) -> [Option<FloatTensor<Self>>; 3];
}

/// What the backward pass keeps: the input, `γ` (and `β` only for its type).
#[derive(Clone, Debug)]
pub struct Saved<B: Backend> {
    pub x: FloatTensor<B>,
    pub gamma: FloatTensor<B>,
    pub beta: FloatTensor<B>,
    pub groups: usize,
    pub epsilon: f64,
}

impl GroupNormBackend for Flex {
    fn group_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, groups: usize, epsilon: f64) -> FlexTensor {
        Self::group_norm_forward(x, gamma, beta, groups, epsilon)
    }
}

#[derive(Debug)]
struct GroupNormBackward;

impl<B: GroupNormKernels> Backward<B, 3> for GroupNormBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let computed = B::group_norm_backward(ops.state, grad, wanted);
        for (node, grad) in ops.parents.into_iter().zip(computed) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: GroupNormKernels, C: CheckpointStrategy> GroupNormBackend for Autodiff<B, C> {
    fn group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, epsilon: f64) -> FloatTensor<Self> {
        // The state is the inputs, which the graph holds anyway: kept, never recomputed.
        match GroupNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let y = B::group_norm_forward(x.clone(), gamma.clone(), beta.clone(), groups, epsilon);
                prep.finish(Saved { x, gamma, beta, groups, epsilon }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::group_norm_forward(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), groups, epsilon)),
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

/// One image `[C, P]`: `y = γ∘x̂ + β` per group of `C/G` channels.
#[inline(always)]
fn forward_body(x: &[f32], gamma: &[f32], beta: &[f32], groups: usize, epsilon: f32, y: &mut [f32]) {
    let (c, per_group) = (gamma.len(), x.len() / groups);
    let pixels = x.len() / c;
    for (g, (x, y)) in x.chunks_exact(per_group).zip(y.chunks_exact_mut(per_group)).enumerate() {
        let (mean, inv) = moments(x, epsilon);
        for (k, (x, y)) in x.chunks_exact(pixels).zip(y.chunks_exact_mut(pixels)).enumerate() {
            let channel = g * (c / groups) + k;
            let (scale, shift) = (gamma[channel] * inv, beta[channel] - gamma[channel] * inv * mean);
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * scale + shift);
        }
    }
}

/// One image's `dx` `[C, P]` (written when `dx` is not empty), with its `Σ dy∘x̂` and `Σ dy` per
/// channel added onto `dgamma` and `dbeta`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body(x: &[f32], gamma: &[f32], groups: usize, epsilon: f32, dy: &[f32], dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32]) {
    let (c, per_group) = (gamma.len(), x.len() / groups);
    let (pixels, channels) = (x.len() / c, c / groups);
    for (g, (x, dy)) in x.chunks_exact(per_group).zip(dy.chunks_exact(per_group)).enumerate() {
        let (mean, inv) = moments(x, epsilon);
        // Σ g and Σ g∘x̂ over the group, with g = dy∘γ per channel.
        let (mut sum_g, mut sum_gx) = (0f32, 0f32);
        for (k, (x, dy)) in x.chunks_exact(pixels).zip(dy.chunks_exact(pixels)).enumerate() {
            let channel = g * channels + k;
            let [s, sx] = lane_sums(dy, x, |dy, x| [dy, dy * (x - mean) * inv]);
            dbeta[channel] += s;
            dgamma[channel] += sx;
            sum_g += gamma[channel] * s;
            sum_gx += gamma[channel] * sx;
        }
        if dx.is_empty() {
            continue;
        }
        let m = per_group as f32;
        let (mean_g, mean_gx) = (sum_g / m, sum_gx / m);
        let dx = &mut dx[g * per_group..(g + 1) * per_group];
        for (k, ((x, dy), dx)) in x.chunks_exact(pixels).zip(dy.chunks_exact(pixels)).zip(dx.chunks_exact_mut(pixels)).enumerate() {
            let gamma = gamma[g * channels + k];
            dx.iter_mut().zip(dy.iter().zip(x)).for_each(|(dx, (&dy, &x))| {
                let x_hat = (x - mean) * inv;
                *dx = inv * (gamma * dy - mean_g - x_hat * mean_gx);
            });
        }
    }
}

wide!(
    /// One image's output.
    fn forward_image = forward_body(x: &[f32], gamma: &[f32], beta: &[f32], groups: usize, epsilon: f32, y: &mut [f32])
);
wide!(
    /// One image's gradients.
    fn backward_image = backward_body(x: &[f32], gamma: &[f32], groups: usize, epsilon: f32, dy: &[f32], dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32])
);

impl GroupNormKernels for Flex {
    fn group_norm_forward(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, groups: usize, epsilon: f64) -> FlexTensor {
        let (shape, dtype) = (x.layout().shape().clone(), x.dtype());
        let image = image_len(&shape, groups);
        let [x, gamma, beta] = [&x, &gamma, &beta].map(|t| t.to_contiguous());
        let [x, gamma, beta] = [&x, &gamma, &beta].map(|t| f32_values(t));
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(image).zip(x.par_chunks(image)).for_each(|(y, x)| forward_image(x, &gamma, &beta, groups, epsilon as f32, y));
        from_f32(y, shape, dtype)
    }

    fn group_norm_backward(saved: Saved<Self>, grad: FlexTensor, [want_x, want_gamma, want_beta]: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let (shape, dtype) = (saved.x.layout().shape().clone(), saved.x.dtype());
        let (g_dtype, b_dtype) = (saved.gamma.dtype(), saved.beta.dtype());
        let (image, groups, epsilon) = (image_len(&shape, saved.groups), saved.groups, saved.epsilon as f32);
        let [x, gamma, dy] = [&saved.x, &saved.gamma, &grad].map(|t| t.to_contiguous());
        let [x, gamma, dy] = [&x, &gamma, &dy].map(|t| f32_values(t));
        let (c, n) = (gamma.len(), x.len() / image);
        let per_task = n.div_ceil(TASKS).max(1) * image;
        let mut dx = vec![0f32; if want_x { x.len() } else { 0 }];
        let body = |x: &[f32], dy: &[f32], dx: &mut [f32]| {
            let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
            let dx_images = dx.chunks_mut(image).chain(std::iter::repeat_with(|| &mut [][..]));
            for ((x, dy), dx) in x.chunks_exact(image).zip(dy.chunks_exact(image)).zip(dx_images) {
                backward_image(x, &gamma, groups, epsilon, dy, dx, &mut dgamma, &mut dbeta);
            }
            (dgamma, dbeta)
        };
        let sums: Vec<(Vec<f32>, Vec<f32>)> = match want_x {
            true => dx.par_chunks_mut(per_task).zip(x.par_chunks(per_task).zip(dy.par_chunks(per_task))).map(|(dx, (x, dy))| body(x, dy, dx)).collect(),
            false => x.par_chunks(per_task).zip(dy.par_chunks(per_task)).map(|(x, dy)| body(x, dy, &mut [])).collect(),
        };
        let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
        for (task_dgamma, task_dbeta) in sums {
            dgamma.iter_mut().zip(task_dgamma).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(task_dbeta).for_each(|(a, b)| *a += b);
        }
        [
            want_x.then(|| from_f32(dx, shape, dtype)),
            want_gamma.then(|| from_f32(dgamma, Shape::new([c]), g_dtype)),
            want_beta.then(|| from_f32(dbeta, Shape::new([c]), b_dtype)),
        ]
    }
}

/// Elements of one image, `C·P`, checked to split into `groups` whole channels.
fn image_len(shape: &Shape, groups: usize) -> usize {
    let dims = shape.as_slice();
    assert!(dims.len() >= 3 && dims[1] % groups == 0, "GroupNorm of {groups} groups over a {dims:?} tensor");
    dims[1..].iter().product()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::relative_error;
    use burn::nn::GroupNormConfig;
    use burn::tensor::DType;

    /// Output and the gradients of `Σ norm(x) ∘ u` on the autodiff CPU device, as f32.
    fn run(ours: bool, affine: bool, x: &Tensor<4>, u: &Tensor<4>, dtype: DType) -> Vec<Tensor<4>> {
        let ad = Device::flex().autodiff();
        let c = x.dims()[1];
        let mut norm = GroupNormConfig::new(4, c).with_epsilon(1e-6).with_affine(affine).init(&ad);
        if affine {
            let random = |seed| burn::module::Param::from_tensor(Tensor::<1>::from_data(TensorData::new(crate::noise::gaussian(seed, c), [c]), &ad));
            (norm.gamma, norm.beta) = (Some(random(7)), Some(random(8)));
        }
        let x = x.clone().autodiff().cast(dtype).require_grad();
        // A transposed view: the operation must read it in its logical order.
        let input = x.clone().swap_dims(2, 3);
        // burn's GroupNorm takes bf16 only through f32 (the network's `in_f32` does the same).
        let y = if ours { group_norm(&norm, input) } else { norm.forward(input.cast(DType::F32)).cast(dtype) };
        let grads = (y.clone().cast(DType::F32) * u.clone().autodiff()).sum().backward();
        let f32 = |t: Tensor<4>| t.cast(DType::F32);
        let param = |p: &Option<burn::module::Param<Tensor<1>>>| p.as_ref().map(|p| f32(p.grad(&grads).expect("a gradient").reshape([1, 1, 1, -1])));
        [Some(f32(y.inner())), Some(f32(x.grad(&grads).expect("a gradient"))), param(&norm.gamma), param(&norm.beta)].into_iter().flatten().collect()
    }

    #[test]
    fn values_and_gradients_match_burns_group_norm_in_f32_and_bf16() {
        let device = Device::flex();
        // 19 images (the tasks split them unevenly), 12 channels in 4 groups, a large mean.
        let (n, c, w, h) = (19, 12, 5, 3);
        let values: Vec<f32> = crate::noise::gaussian(1, n * c * w * h).into_iter().map(|v| 30.0 + 3.0 * v).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [n, c, w, h]), &device);
        let u = Tensor::<4>::from_data(TensorData::new(crate::noise::gaussian(2, n * c * h * w), [n, c, h, w]), &device);
        for affine in [true, false] {
            for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::BF16, 3e-2)] {
                let (ours, reference) = (run(true, affine, &x, &u, dtype), run(false, affine, &x, &u, dtype));
                assert_eq!(ours.len(), reference.len());
                for (name, (a, r)) in ["y", "dx", "dγ", "dβ"].into_iter().zip(ours.into_iter().zip(reference)) {
                    let err = relative_error(a, r);
                    assert!(err < tolerance, "affine {affine}, {dtype:?}: {name} off by {err}");
                }
            }
        }
    }
}
