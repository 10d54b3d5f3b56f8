//! The rotary position embedding's rotation (RoFormer, Su et al. 2021, eq. 34, rotate-half
//! layout) as one operation with its own backward pass on the CPU:
//! `y = x∘cos + rot(x)∘sin` with `rot([x₁, x₂]) = [−x₂, x₁]` over the halves of each head. burn
//! would take two slices, a negation, a concatenation, two products and a sum, and as many
//! passes back; here it is one pass each way. The rotation is orthogonal, so the input gradient
//! is the inverse rotation: `dx = dy∘cos + rotᵀ(dy∘sin)` with `rotᵀ([g₁, g₂]) = [g₂, −g₁]`.
//! The tables take no gradient.
//!
//! The same mechanism as [`crate::activation`]: a burn backend extension (`#[backend_extension]`,
//! routed by burn-dispatch) implemented for burn-flex, and for `Autodiff<B, C>` with a
//! hand-written `Backward` step whose state is the tables. Other devices take burn's tensor ops
//! ([`crate::network::rope::Rope::apply`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, Shape, backend_extension};
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu::{contiguous_strides, dense, dims, f32_values, from_f32, strides, wide, with_strides};

/// Elements per parallel task: large enough that splitting costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// `x∘cos + rot(x)∘sin` on the CPU device.
///
/// # Shapes
/// - `x`: `[B, heads, N, D]`, `cos` and `sin`: `[N, D]`; returns the shape of `x`
pub fn rotate(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as RotaryBackend>::rotate(x.into_dispatch(), cos.into_dispatch(), sin.into_dispatch()))
}

#[backend_extension(Flex, Autodiff)]
pub trait RotaryBackend: Backend {
    /// `x∘cos + rot(x)∘sin` for `x` `[B, H, N, D]` and tables `[N, D]`.
    fn rotate(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The two passes on a concrete backend.
pub trait RotaryKernels: Backend {
    /// `x∘cos + rot(x)∘sin`.
    fn rotate_forward(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dy∘cos + rotᵀ(dy∘sin)`.
    fn rotate_backward(grad: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl RotaryBackend for Flex {
    fn rotate(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        Self::rotate_forward(x, cos, sin)
    }
}

#[derive(Debug)]
struct RotaryBackward;

impl<B: RotaryKernels> Backward<B, 1> for RotaryBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (cos, sin) = ops.state;
            grads.register::<B>(node.id, B::rotate_backward(grad, cos, sin));
        }
    }
}

impl<B: RotaryKernels, C: CheckpointStrategy> RotaryBackend for Autodiff<B, C> {
    fn rotate(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        // The state is the tables, which the caller holds anyway: kept, never recomputed.
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        match RotaryBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::rotate_forward(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotate_forward(x.into_primitive(), cos, sin)),
        }
    }
}

/// Where each stored row of `x` `[B, H, N, D]` takes its angles: row `r` (of `D` values) is token
/// `(r / per_token) mod N`. `per_token` is 1 for a contiguous `x`, `H` for heads stored
/// token-major (`[B, N, H, D]` seen as `[B, H, N, D]`).
#[derive(Clone, Copy, Debug)]
struct Tokens {
    n: usize,
    per_token: usize,
}

/// `y = x∘cos + rot(x)∘sin`, or with `inverse`, `y = x∘cos + rotᵀ(x∘sin)`, for stored rows
/// `first..` of `d` values.
#[inline(always)]
fn rotate_body(x: &[f32], cos: &[f32], sin: &[f32], d: usize, tokens: Tokens, first: usize, inverse: bool, y: &mut [f32]) {
    let half = d / 2;
    for (r, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        let token = (first + r) / tokens.per_token % tokens.n;
        let (cos, sin) = (&cos[token * d..][..d], &sin[token * d..][..d]);
        let ((x1, x2), (y1, y2)) = (x.split_at(half), y.split_at_mut(half));
        let ((c1, c2), (s1, s2)) = (cos.split_at(half), sin.split_at(half));
        for j in 0..half {
            if inverse {
                y1[j] = x1[j] * c1[j] + x2[j] * s2[j];
                y2[j] = x2[j] * c2[j] - x1[j] * s1[j];
            } else {
                y1[j] = x1[j] * c1[j] - x2[j] * s1[j];
                y2[j] = x2[j] * c2[j] + x1[j] * s2[j];
            }
        }
    }
}

wide!(
    /// One chunk of stored rows, from row `first`.
    fn rotate_rows = rotate_body(x: &[f32], cos: &[f32], sin: &[f32], d: usize, tokens: Tokens, first: usize, inverse: bool, y: &mut [f32])
);

/// The rotation (or its transpose) of `x` `[B, H, N, D]` by tables `[N, D]`, in `x`'s type and
/// in the order `x` stores its values (contiguous, or heads stored token-major).
fn rotate_flex(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, inverse: bool) -> FlexTensor {
    let (dims, dtype) = (dims::<4>(&x), x.dtype());
    let x = dense(&x);
    let mut strides = strides::<4>(&x);
    let x = if strides[3] == 1 || dims[3] == 1 { x } else { strides = contiguous_strides(dims); x.to_contiguous() };
    let [cos, sin] = [&cos, &sin].map(|t| t.to_contiguous());
    let [x, cos, sin] = [&x, &cos, &sin].map(|t| f32_values(t));
    let [_, _, n, d] = dims;
    assert_eq!(cos.len(), n * d, "tables [N, D] for an input {dims:?}");
    let tokens = Tokens { n, per_token: (strides[2] / d).max(1) };
    let rows = (CHUNK / d).max(1);
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(rows * d).zip(x.par_chunks(rows * d)).enumerate().for_each(|(i, (y, x))| rotate_rows(x, &cos, &sin, d, tokens, i * rows, inverse, y));
    with_strides(from_f32(y, Shape::new(dims), dtype), dims, strides)
}

impl RotaryKernels for Flex {
    fn rotate_forward(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        rotate_flex(x, cos, sin, false)
    }

    fn rotate_backward(grad: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        rotate_flex(grad, cos, sin, true)
    }
}
