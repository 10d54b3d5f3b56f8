//! The blockwise algorithm of [`super::kernel`] written in burn tensor ops, for backends without a
//! hand-written kernel (CUDA under autodiff): one block of keys at a time, so no more than
//! `N_q × BLOCK` scores per head exist at once. Computes in f32 and returns the inputs' type.

use burn::prelude::*;
use burn::tensor::DType;

/// Keys per block.
pub const BLOCK: usize = 256;

/// `(o, lse)` of `softmax(scale · q kᵀ) v`; `lse` is `[B, H, N_q, 1]` in f32.
pub fn forward(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f32) -> (Tensor<4>, Tensor<4>) {
    let dtype = q.dtype();
    let [q, k, v] = [q, k, v].map(|t| t.cast(DType::F32));
    let ([b, h, n_q, d], n_k) = (q.dims(), k.dims()[2]);
    let device = q.device();
    let q = q.mul_scalar(scale);
    let mut m = Tensor::<4>::full([b, h, n_q, 1], f32::NEG_INFINITY, &device);
    let mut l = Tensor::<4>::zeros([b, h, n_q, 1], &device);
    let mut acc = Tensor::<4>::zeros([b, h, n_q, d], &device);
    for j0 in (0..n_k).step_by(BLOCK) {
        let bc = BLOCK.min(n_k - j0);
        let s = q.clone().matmul(k.clone().narrow(2, j0, bc).swap_dims(2, 3)); // [B, H, N_q, bc]
        let m_new = m.clone().max_pair(s.clone().max_dim(3));
        let p = (s - m_new.clone()).exp();
        let correction = (m - m_new.clone()).exp();
        l = l * correction.clone() + p.clone().sum_dim(3);
        acc = acc * correction + p.matmul(v.clone().narrow(2, j0, bc));
        m = m_new;
    }
    let o = (acc / l.clone()).cast(dtype);
    (o, m + l.log())
}

/// `[dq, dk, dv]` from `[q, k, v, o, d_o]`, the forward's `lse` and `scale`.
pub fn backward([q, k, v, o, d_o]: [Tensor<4>; 5], lse: Tensor<4>, scale: f32) -> [Tensor<4>; 3] {
    let dtype = q.dtype();
    let [q, k, v, o, d_o] = [q, k, v, o, d_o].map(|t| t.cast(DType::F32));
    let n_k = k.dims()[2];
    let delta = (d_o.clone() * o).sum_dim(3); // [B, H, N_q, 1]
    let mut dq = q.zeros_like();
    let (mut dks, mut dvs) = (Vec::new(), Vec::new());
    for j0 in (0..n_k).step_by(BLOCK) {
        let bc = BLOCK.min(n_k - j0);
        let (kj, vj) = (k.clone().narrow(2, j0, bc), v.clone().narrow(2, j0, bc));
        let p = (q.clone().matmul(kj.clone().swap_dims(2, 3)).mul_scalar(scale) - lse.clone()).exp(); // [B, H, N_q, bc]
        dvs.push(p.clone().swap_dims(2, 3).matmul(d_o.clone()));
        let ds = p * (d_o.clone().matmul(vj.swap_dims(2, 3)) - delta.clone());
        dq = dq + ds.clone().matmul(kj).mul_scalar(scale);
        dks.push(ds.swap_dims(2, 3).matmul(q.clone()).mul_scalar(scale));
    }
    [dq, Tensor::cat(dks, 2), Tensor::cat(dvs, 2)].map(|t| t.cast(dtype))
}
