//! Softmax attention `softmax(q kᵀ / √d) v` that scales under autodiff: a project-owned operation
//! with its own backward pass (FlashAttention-2, Dao 2023, Alg. 1 and 2), so training keeps
//! `O(N·d)` per head for the backward pass instead of burn 0.22's materialised `N × N` scores.
//!
//! It is a burn *backend extension* (`#[backend_extension]`, burn-backend-extension, routed by
//! burn-dispatch): [`FlashAttentionBackend`] is implemented for the concrete backends with a
//! [`FlashKernels`] forward (output and per-row log-sum-exp) and backward, and for
//! `Autodiff<B, C>` with a hand-written `Backward` step (burn-autodiff's `Backward` trait) whose
//! state is `q, k, v, o, lse`. On the CPU (burn-flex) the kernels are [`kernel`], tiled and
//! parallel over batch × heads; on CUDA they are [`composed`], the same blockwise algorithm in
//! burn tensor ops. Without autodiff on CUDA, burn's fused flash forward runs instead.

pub mod composed;
pub mod heads;
pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, DispatchDevice, Flex, Shape, backend_extension};
use burn::prelude::*;
use burn::tensor::ops::AttentionModuleOptions;
use rayon::prelude::*;

use crate::cpu::{SharedRows, dense, dims, f32_values, from_f32, strides, with_strides};
use heads::Heads;

/// Attention of `[B, H, N, D]` queries over keys and values, scale `1/√D`. Routes to the
/// project's operation on the CPU (with or without autodiff) and under autodiff on CUDA.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let scale = (q.dims()[3] as f32).powf(-0.5);
    if !uses_own_kernels(&q.device()) {
        return burn::tensor::module::attention(q, k, v, None, None, AttentionModuleOptions::default());
    }
    flash(q, k, v, scale)
}

/// The project's operation at any length, on the backends it is implemented for (the CPU, and
/// CUDA under autodiff).
pub fn flash(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f32) -> Tensor<4> {
    let out = <Dispatch as FlashAttentionBackend>::flash_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), scale);
    Tensor::from_dispatch(out)
}

/// The same attention with every score materialised: burn's own decomposed path, for checks.
pub fn decomposed(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let scale = (q.dims()[3] as f64).powf(-0.5);
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, H, N_q, N_k]
    burn::tensor::activation::softmax(scores, 3).matmul(v)
}

fn uses_own_kernels(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "cube")]
        DispatchDevice::Cube(_) => device.is_autodiff(),
        _ => false,
    }
}

/// The two halves of the operation on a concrete backend.
pub trait FlashKernels: Backend {
    /// `(o, lse)`: `o` `[B, H, N_q, D]` in the inputs' type, `lse` `[B, H, N_q]` in f32.
    fn flash_forward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `(dq, dk, dv)` from the forward's inputs, output and log-sum-exp, and the output gradient.
    fn flash_backward(saved: Saved<Self>, d_o: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// What the backward pass keeps from the forward: all `O(N·d)`.
#[derive(Clone, Debug)]
pub struct Saved<B: Backend> {
    pub q: FloatTensor<B>,
    pub k: FloatTensor<B>,
    pub v: FloatTensor<B>,
    pub o: FloatTensor<B>,
    pub lse: FloatTensor<B>,
    pub scale: f32,
}

#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cube"))]
pub trait FlashAttentionBackend: Backend {
    /// `softmax(scale · q kᵀ) v` for `[B, H, N, D]` tensors.
    fn flash_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
}

impl FlashAttentionBackend for Flex {
    fn flash_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f32) -> FlexTensor {
        Self::flash_forward(q, k, v, scale).0
    }
}

#[cfg(feature = "cube")]
impl FlashAttentionBackend for burn::backend::Cube {
    fn flash_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        Self::flash_forward(q, k, v, scale).0
    }
}

#[derive(Debug)]
struct FlashBackward;

impl<B: FlashKernels> Backward<B, 3> for FlashBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_o = grads.consume::<B>(&ops.node);
        let (dq, dk, dv) = B::flash_backward(ops.state, d_o);
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: FlashKernels, C: CheckpointStrategy> FlashAttentionBackend for Autodiff<B, C> {
    fn flash_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        // Compute-bound: the state is kept, never recomputed by a checkpointing strategy.
        match FlashBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let (o, lse) = B::flash_forward(q.clone(), k.clone(), v.clone(), scale);
                prep.finish(Saved { q, k, v, o: o.clone(), lse, scale }, o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::flash_forward(q.into_primitive(), k.into_primitive(), v.into_primitive(), scale).0),
        }
    }
}

/// One parallel task's scratch: its heads gathered when they do not lie contiguous, and its
/// outputs before they are written into the output's order.
#[derive(Default)]
struct Scratch {
    inputs: [Vec<f32>; 5],
    outputs: [Vec<f32>; 3],
}

/// A tensor from [`dense`] and its heads' places.
fn heads_of(t: &FlexTensor) -> (FlexTensor, Heads) {
    let t = dense(t);
    let heads = Heads { dims: dims(&t), strides: strides(&t) };
    (t, heads)
}

/// An output's values, stored in `order` (an order from [`Heads::output`]), as a tensor.
fn stored_in(order: &Heads, values: Vec<f32>, dtype: DType) -> FlexTensor {
    with_strides(from_f32(values, Shape::new(order.dims), dtype), order.dims, order.strides)
}

impl FlashKernels for Flex {
    fn flash_forward(q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f32) -> (FlexTensor, FlexTensor) {
        let dtype = q.dtype();
        let ([b, h, n_q, d], n_k) = (dims(&q), dims::<4>(&k)[2]);
        let [(q, q_heads), (k, k_heads), (v, v_heads)] = [&q, &k, &v].map(heads_of);
        let [q, k, v] = [&q, &k, &v].map(|t| f32_values(t));
        let (mut o, mut lse) = (vec![0f32; b * h * n_q * d], vec![0f32; b * h * n_q]);
        let o_heads = q_heads.output();
        let o_rows = SharedRows::new(&mut o);
        lse.par_chunks_mut(n_q).enumerate().for_each_init(Scratch::default, |scratch, (i, lse)| {
            let (bi, hi) = (i / h, i % h);
            let [sq, sk, sv, _, _] = &mut scratch.inputs;
            let (qi, ki, vi) = (q_heads.read(&q, bi, hi, sq), k_heads.read(&k, bi, hi, sk), v_heads.read(&v, bi, hi, sv));
            let o_i = &mut scratch.outputs[0];
            o_i.resize(n_q * d, 0.0);
            kernel::forward(qi, ki, vi, [n_q, n_k, d], scale, o_i, lse);
            // SAFETY: head (bi, hi) belongs to this task alone.
            unsafe { o_heads.write(&o_rows, bi, hi, o_i) };
        });
        (stored_in(&o_heads, o, dtype), from_f32(lse, Shape::new([b, h, n_q, 1]), DType::F32))
    }

    fn flash_backward(s: Saved<Self>, d_o: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
        let dtype = s.q.dtype();
        let ([b, h, n_q, d], n_k) = (dims(&s.q), dims::<4>(&s.k)[2]);
        let [(q, q_heads), (k, k_heads), (v, v_heads), (o, o_heads), (d_o, d_o_heads)] = [&s.q, &s.k, &s.v, &s.o, &d_o].map(heads_of);
        let lse = s.lse.to_contiguous();
        let [q, k, v, o, d_o, lse] = [&q, &k, &v, &o, &d_o, &lse].map(|t| f32_values(t));
        let (mut dq, mut dk, mut dv) = (vec![0f32; b * h * n_q * d], vec![0f32; b * h * n_k * d], vec![0f32; b * h * n_k * d]);
        let out_heads = [q_heads.output(), k_heads.output(), v_heads.output()];
        let out_rows = [&mut dq, &mut dk, &mut dv].map(|t| SharedRows::new(t));
        (0..b * h).into_par_iter().for_each_init(Scratch::default, |scratch, i| {
            let (bi, hi) = (i / h, i % h);
            let [sq, sk, sv, so, sd] = &mut scratch.inputs;
            let head = [q_heads.read(&q, bi, hi, sq), k_heads.read(&k, bi, hi, sk), v_heads.read(&v, bi, hi, sv), o_heads.read(&o, bi, hi, so), d_o_heads.read(&d_o, bi, hi, sd)];
            let [dq_i, dk_i, dv_i] = &mut scratch.outputs;
            dq_i.resize(n_q * d, 0.0);
            dk_i.resize(n_k * d, 0.0);
            dv_i.resize(n_k * d, 0.0);
            kernel::backward(head, &lse[i * n_q..][..n_q], [n_q, n_k, d], s.scale, dq_i, dk_i, dv_i);
            for ((heads, rows), grad) in out_heads.iter().zip(&out_rows).zip([&*dq_i, &*dk_i, &*dv_i]) {
                // SAFETY: head (bi, hi) belongs to this task alone.
                unsafe { heads.write(rows, bi, hi, grad) };
            }
        });
        let [dq_order, dk_order, dv_order] = &out_heads;
        (stored_in(dq_order, dq, dtype), stored_in(dk_order, dk, dtype), stored_in(dv_order, dv, dtype))
    }
}

#[cfg(feature = "cube")]
impl FlashKernels for burn::backend::Cube {
    fn flash_forward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [q, k, v] = [q, k, v].map(Tensor::<4>::from_primitive::<Self>);
        let (o, lse) = composed::forward(q, k, v, scale);
        (o.try_into_primitive::<Self>().expect("a CUDA tensor"), lse.try_into_primitive::<Self>().expect("a CUDA tensor"))
    }

    fn flash_backward(s: Saved<Self>, d_o: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [q, k, v, o, lse, d_o] = [s.q, s.k, s.v, s.o, s.lse, d_o].map(Tensor::<4>::from_primitive::<Self>);
        let [dq, dk, dv] = composed::backward([q, k, v, o, d_o], lse, s.scale).map(|t| t.try_into_primitive::<Self>().expect("a CUDA tensor"));
        (dq, dk, dv)
    }
}

