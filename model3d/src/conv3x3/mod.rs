//! The 3×3 convolution with stride 1 and padding 1 of the ResBlocks and the down- and upsampling
//! layers, as one operation with its own backward pass on the CPU. burn-flex 0.22.1's `conv2d`
//! transposes the whole input to channels-last and builds its im2col tiles on one core with a
//! scalar loop, and its input gradient is a transposed convolution with a scalar col2im; together
//! they took about a third of a tiny_video training step (BENCHMARKS.md). Here every image is one
//! task. Its three passes (forward, input gradient, weight gradient) run by Winograd's F(2×2, 3×3)
//! where the plane allows it ([`winograd`], AVX2: 4 multiply-adds per output pixel and input
//! channel instead of 9), else straight from the zero-padded plane ([`direct`], AVX2), else, on
//! other CPUs and shapes, through each tap's columns as one shifted copy of the plane and one
//! matrix product ([`kernel`]).
//!
//! The same mechanism as [`crate::attention`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written `Backward` step whose state is the input and the weight. Other devices take
//! burn's `conv2d`.

pub mod direct;
pub mod kernel;
#[cfg(test)]
mod reference;
pub mod winograd;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, Shape, backend_extension};
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use crate::cpu::{dims, f32_values, from_f32, transpose};
use kernel::Image;

/// Tasks of the backward pass, each over consecutive images. Each task sums its own weight
/// gradient and the tasks' sums are added in order, so the result depends on the batch alone,
/// never on how rayon schedules the tasks (training resumes exactly). All tasks' sums are alive
/// until they are added: 8 of them for a 128 → 128 convolution in the Winograd domain
/// (`16·C·O` each) take less memory than the 16 `9·C·O` sums of the direct kernels did.
const TASKS: usize = 8;

/// Fewest tasks of a backward pass whose weight gradient runs in the Winograd domain: there a
/// task takes up to one full pass of [`winograd::group`] images rather than one of [`TASKS`]
/// (so a small plane's sums, `16·C·O` each, are not kept once per image), but never fewer than
/// this many, so that two threads still share the work.
const MIN_TASKS: usize = 4;

/// Output pixels of one op call (images × plane) below which Winograd's kernels are not taken:
/// their weight transform (some 40 scalar operations per pair of channels, per pass) then costs
/// more than the products save. Measured with `sid2 bench conv` (BENCHMARKS.md): 2 or 4 images
/// of 8×8 were up to 30 % slower than the direct kernels, 8 of 8×8 and 4 of 16×16 faster.
const WINOGRAD_MIN_PIXELS: usize = 512;

/// Whether Winograd's kernels take a call over `n` images of `im`.
fn winograd(im: Image, n: usize) -> bool {
    n * im.pixels() >= WINOGRAD_MIN_PIXELS && winograd::available(im)
}

/// How the forward and input-gradient passes of one op call run: by Winograd's F(2×2, 3×3) where
/// [`winograd::available`] and the call is large enough, else straight from the padded input
/// where [`direct::available`], else through im2col columns and gemm.
enum Plan<'a> {
    Winograd(winograd::Transformed),
    Direct(direct::Packed),
    Columns(&'a [f32]),
}

impl<'a> Plan<'a> {
    /// For `weight` `[O, C, 3, 3]` (contiguous) applied to `n` images of `im`.
    fn new(weight: &'a [f32], o: usize, im: Image, n: usize) -> Self {
        if winograd(im, n) {
            Self::Winograd(winograd::Transformed::new(weight, o, im.c))
        } else if direct::available(im) {
            Self::Direct(direct::Packed::new(weight, o, im.c))
        } else {
            Self::Columns(weight)
        }
    }

    /// Scratch elements one image needs for `o` output channels.
    fn scratch_len(&self, im: Image, o: usize) -> usize {
        match self {
            Self::Winograd(_) => winograd::scratch_len(im, o),
            Self::Direct(_) => direct::padded_len(im),
            Self::Columns(_) => im.cols_len(),
        }
    }

    /// One image's `y` `[O, H, W]` from `x` `[C, H, W]` and `bias` `[O]`.
    fn forward(&self, x: &[f32], bias: &[f32], im: Image, scratch: &mut [f32], y: &mut [f32]) {
        match self {
            Self::Winograd(transformed) => winograd::forward(x, transformed, bias, im, scratch, y),
            Self::Direct(packed) => direct::forward(x, packed, bias, im, scratch, y),
            Self::Columns(weight) => kernel::forward(x, weight, bias, im, scratch, y),
        }
    }
}

/// How the weight gradient of one op call runs: by Winograd's F(2×2, 3×3) in its transformed
/// domain, straight from the padded input, or through im2col columns and gemm. Each task adds its
/// images onto a sum in the plan's own layout; [`WeightPlan::transposed`] turns the tasks' total
/// into `dWᵀ` `[9C, O]`, which the op transposes once.
enum WeightPlan {
    /// Sums `dUᵀ` `[16, C, O]`.
    Winograd,
    /// Sums `dWᵀ` `[9C, O]`.
    Direct,
    /// Sums `dWᵀ` `[9C, O]`.
    Columns,
}

impl WeightPlan {
    /// For `n` images of `im` into `o` channels.
    fn new(im: Image, o: usize, n: usize) -> Self {
        if winograd(im, n) && winograd::weight_grads_available(im, o) {
            Self::Winograd
        } else if direct::weight_grads_available(o) {
            Self::Direct
        } else {
            Self::Columns
        }
    }

    /// Images per task of a backward pass over `n` images of `im`.
    fn images_per_task(&self, im: Image, n: usize) -> usize {
        let per_task = n.div_ceil(TASKS).max(1);
        match self {
            Self::Winograd => per_task.max(winograd::group(im).min(n.div_ceil(MIN_TASKS))),
            Self::Direct | Self::Columns => per_task,
        }
    }

    /// Elements of a task's sum.
    fn sum_len(&self, c: usize, o: usize) -> usize {
        match self {
            Self::Winograd => 16 * c * o,
            Self::Direct | Self::Columns => 9 * c * o,
        }
    }

    /// The two scratch buffers a group of `k` images needs: for the inputs, for the gradients.
    fn scratch_lens(&self, im: Image, o: usize, k: usize) -> [usize; 2] {
        match self {
            Self::Winograd => winograd::weight_scratch_lens(im, o, k),
            Self::Direct => [k * direct::padded_len(im), k * o * im.pixels()],
            Self::Columns => [k * im.cols_len(), k * o * im.pixels()],
        }
    }

    /// Adds the images `xs` `[k, C, H, W]` with their output gradients `dys` `[k, O, H, W]` onto
    /// `sum`.
    fn add(&self, xs: &[f32], dys: &[f32], im: Image, [inputs, grads]: [&mut [f32]; 2], sum: &mut [f32]) {
        match self {
            Self::Winograd => winograd::weight_grads(xs, dys, im, [inputs, grads], sum),
            Self::Direct => direct::weight_grads(xs, dys, im, inputs, grads, sum),
            Self::Columns => kernel::weight_grads(xs, dys, im, inputs, grads, sum),
        }
    }

    /// `dWᵀ` `[9C, O]` from the total of the tasks' sums.
    fn transposed(&self, sum: Vec<f32>, o: usize, c: usize) -> Vec<f32> {
        match self {
            Self::Winograd => winograd::weight_grads_finish(&sum, o, c),
            Self::Direct | Self::Columns => sum,
        }
    }
}

/// `y[n, o, i, j] = b[o] + Σ_{c, dy, dx} x[n, c, i + dy − 1, j + dx − 1] · W[o, c, dy, dx]`,
/// zero outside the image: the project's operation on the CPU, burn's `conv2d` elsewhere.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, `weight`: `[O, C, 3, 3]`, `bias`: `[O]`; returns `[N, O, H, W]`
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [o, _, kh, kw] = weight.dims();
    assert_eq!((kh, kw), (3, 3), "a 3x3 kernel");
    if !matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) {
        return conv2d(x, weight, bias, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    }
    // Without a bias the op adds zeros that take no gradient: one code path, no extra pass.
    let bias = bias.unwrap_or_else(|| Tensor::<1>::zeros([o], &weight.device()).cast(weight.dtype()));
    Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch()))
}

#[backend_extension(Flex, Autodiff)]
pub trait Conv3x3Backend: Backend {
    /// `[N, C, H, W]` input, `[O, C, 3, 3]` weight, `[O]` bias → `[N, O, H, W]`.
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait Conv3x3Kernels: Backend {
    fn conv3x3_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradients of the input, the weight and the bias that `wanted` asks for.
    fn conv3x3_backward(saved: Saved<Self>, grad: FloatTensor<Self>, wanted: [bool; 3]) -> [Option<FloatTensor<Self>>; 3];
}

/// What the backward pass keeps: the forward's inputs (the bias only for its type and shape).
#[derive(Clone, Debug)]
pub struct Saved<B: Backend> {
    pub x: FloatTensor<B>,
    pub weight: FloatTensor<B>,
    pub bias: FloatTensor<B>,
}

impl Conv3x3Backend for Flex {
    fn conv3x3(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        Self::conv3x3_forward(x, weight, bias)
    }
}

#[derive(Debug)]
struct Conv3x3Backward;

impl<B: Conv3x3Kernels> Backward<B, 3> for Conv3x3Backward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let computed = B::conv3x3_backward(ops.state, grad, wanted);
        for (node, grad) in ops.parents.into_iter().zip(computed) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Conv3x3Kernels, C: CheckpointStrategy> Conv3x3Backend for Autodiff<B, C> {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        // Compute-bound: the state is kept, never recomputed by a checkpointing strategy.
        match Conv3x3Backward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
                let y = B::conv3x3_forward(x.clone(), weight.clone(), bias.clone());
                prep.finish(Saved { x, weight, bias }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3_forward(x.into_primitive(), weight.into_primitive(), bias.into_primitive())),
        }
    }
}

impl Conv3x3Kernels for Flex {
    fn conv3x3_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let ([n, c, h, w], [o, c_w, _, _]) = (dims(&x), dims(&weight));
        assert_eq!(c, c_w, "the input has {c} channels, the weight {c_w}");
        let (dtype, im) = (x.dtype(), Image { c, h, w });
        let [x, weight, bias] = [&x, &weight, &bias].map(|t| t.to_contiguous());
        let [x, weight, bias] = [&x, &weight, &bias].map(|t| f32_values(t));
        let plan = Plan::new(&weight, o, im, n);
        let mut y = vec![0f32; n * o * h * w];
        y.par_chunks_mut(o * h * w).zip(x.par_chunks(c * h * w)).for_each_init(
            || vec![0f32; plan.scratch_len(im, o)],
            |scratch, (y, x)| plan.forward(x, &bias, im, scratch, y),
        );
        from_f32(y, Shape::new([n, o, h, w]), dtype)
    }

    fn conv3x3_backward(saved: Saved<Self>, grad: FlexTensor, [want_x, want_w, want_b]: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let ([n, c, h, w], [o, _, _, _]) = (dims(&saved.x), dims(&saved.weight));
        let (x_dtype, w_dtype, im) = (saved.x.dtype(), saved.weight.dtype(), Image { c, h, w });
        let [x, weight, dy] = [&saved.x, &saved.weight, &grad].map(|t| t.to_contiguous());
        let [x, weight, dy] = [&x, &weight, &dy].map(|t| f32_values(t));
        let (image, out) = (c * h * w, o * h * w);
        let (out_im, zeros) = (Image { c: o, h, w }, vec![0f32; c]);
        let flipped = kernel::flipped(&weight, o, c);
        let input_grad = Plan::new(&flipped, c, out_im, n);
        let weight_plan = WeightPlan::new(im, o, n);
        let per_task = weight_plan.images_per_task(im, n);
        let (mut dx, mut db) = (vec![0f32; n * image], vec![0f32; o]);
        // Each task: its images' input gradients (its own part of dx) and its own sums for the
        // weight's gradient (in the plan's layout) and db. Scratch kept across the tasks a thread
        // runs: every element of it is written before it is read, so it is never zeroed again.
        let sums: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(per_task * image)
            .zip(x.par_chunks(per_task * image).zip(dy.par_chunks(per_task * out)))
            .map_init(
                || (Vec::new(), Vec::new()),
                |(inputs, grads): &mut (Vec<f32>, Vec<f32>), (dx, (x, dy))| {
                    let images = x.len() / image;
                    let [inputs_len, grads_len] = if want_w { weight_plan.scratch_lens(im, o, images) } else { [0, 0] };
                    inputs.resize(inputs.len().max(inputs_len.max(input_grad.scratch_len(out_im, c))), 0.0);
                    grads.resize(grads.len().max(grads_len), 0.0);
                    let (mut dw, mut db) = (vec![0f32; weight_plan.sum_len(c, o)], vec![0f32; o]);
                    if want_b {
                        kernel::bias_grads(dy, h * w, &mut db);
                    }
                    if want_w {
                        weight_plan.add(x, dy, im, [inputs, grads], &mut dw);
                    }
                    if want_x {
                        for (dx, dy) in dx.chunks_exact_mut(image).zip(dy.chunks_exact(out)) {
                            input_grad.forward(dy, &zeros, out_im, inputs, dx);
                        }
                    }
                    (dw, db)
                },
            )
            .collect();
        // The tasks' sums added in their own layout (contiguous adds), then turned into dW once.
        let mut dw_sum = vec![0f32; weight_plan.sum_len(c, o)];
        for (task_dw, task_db) in sums {
            dw_sum.iter_mut().zip(task_dw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(task_db).for_each(|(a, b)| *a += b);
        }
        let mut dw = vec![0f32; o * 9 * c];
        transpose(&weight_plan.transposed(dw_sum, o, c), [9 * c, o], &mut dw);
        [
            want_x.then(|| from_f32(dx, Shape::new([n, c, h, w]), x_dtype)),
            want_w.then(|| from_f32(dw, Shape::new([o, c, 3, 3]), w_dtype)),
            want_b.then(|| from_f32(db, Shape::new([o]), saved.bias.dtype())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{randn, relative_error};
    use burn::tensor::DType;

    /// Output and the gradients of `Σ conv(x, W, b) ∘ u` on the autodiff CPU device, as f32.
    fn run(conv: fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>, [x, w, b, u]: [&Tensor<4>; 4], bias: bool, x_grad: bool, dtype: DType) -> [Option<Tensor<4>>; 4] {
        let leaf = |t: &Tensor<4>| t.clone().autodiff().cast(dtype).require_grad();
        let (x, w) = (if x_grad { leaf(x) } else { x.clone().autodiff().cast(dtype) }, leaf(w));
        let b = b.clone().autodiff().cast(dtype).reshape([-1]).require_grad();
        // The input as a transposed view: the operation must read it in its logical order.
        let y = conv(x.clone().swap_dims(2, 3), w.clone(), bias.then(|| b.clone()));
        let grads = (y.clone().cast(DType::F32) * u.clone().autodiff()).sum().backward();
        let f32 = |t: Tensor<4>| t.cast(DType::F32);
        [Some(f32(y.inner())), x.grad(&grads).map(f32), w.grad(&grads).map(f32), b.grad(&grads).map(|g| f32(g.reshape([1, 1, 1, -1])))]
    }

    fn burns(x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>) -> Tensor<4> {
        conv2d(x, w, b, ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
    }

    #[test]
    fn values_and_gradients_match_burns_conv2d_in_f32_and_bf16() {
        // 17 images do not fill the 8 tasks evenly; a one-pixel-high plane; no bias; no input
        // gradient. Where the CPU has AVX2, 8 or 20 images of 8×8 and 4 of 8×16 (512 pixels) take
        // the Winograd kernels (8 and 20 in 4 tasks of 2 and 5 images), 2 of 8×8 and width 4 (with
        // an even height) the direct ones, the others the columns; 8 and 16 output channels the
        // Winograd or direct weight gradient.
        for ([n, c, w, h], o, bias, x_grad) in [([17, 3, 7, 5], 4, true, true), ([8, 8, 8, 8], 8, false, true), ([3, 2, 4, 1], 5, true, true), ([4, 6, 6, 5], 3, true, false), ([3, 5, 4, 6], 16, true, true), ([4, 3, 16, 8], 16, true, true), ([2, 4, 8, 8], 8, true, true), ([20, 4, 8, 8], 8, true, true)] {
            let (x, weight, b) = (randn([n, c, w, h], 1), randn([o, c, 3, 3], 2), randn([1, 1, 1, o], 3));
            let upstream = randn([n, o, h, w], 4);
            for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
                let args = [&x, &weight, &b, &upstream];
                let (ours, reference) = (run(conv3x3, args, bias, x_grad, dtype), run(burns, args, bias, x_grad, dtype));
                for (name, a, r) in ["y", "dx", "dW", "db"].into_iter().zip(ours).zip(reference).map(|((n, a), r)| (n, a, r)) {
                    match (a, r) {
                        (Some(a), Some(r)) => {
                            let err = relative_error(a, r);
                            assert!(err < tolerance, "{n}x{c}x{h}x{w}→{o} {dtype:?}: {name} off by {err}");
                        }
                        (None, None) => {}
                        (a, r) => panic!("{name}: ours {}, burn's {}", a.is_some(), r.is_some()),
                    }
                }
            }
        }
    }
}
