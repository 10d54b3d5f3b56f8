//! Token-major linear layers `y = x·W + b` (`x`: `[rows, in]`, burn's `W`: `[in, out]`) either
//! through burn's `Linear` or as a batched matmul over chunks of `R` rows, oriented so that every
//! matmul of the forward and backward passes has `m < 4n`, away from the bf16 shapes whose TMA
//! autotune candidate is suspected of failing on the H100 (the same aim as `conv.rs`).
//!
//! With the three products of each orientation (autodiff forms the gradients of a matmul as
//! `dA = dC·Bᵀ` and `dB = Aᵀ·dC`; the weight's is summed over the chunks):
//! - rows-major, `y = x·W` per chunk: `[R, in]×[in, out]`, `dx = dy·Wᵀ` is `[R, out]×[out, in]`,
//!   `dW = xᵀ·dy` is `[in, R]×[R, out]`: needs `R < 4 in`, `R < 4 out` and `in < 4 out`;
//! - transposed, `yᵀ = Wᵀ·xᵀ` per chunk: `[out, in]×[in, R]`, `dWᵀ = dyᵀ·x` is `[out, R]×[R, in]`,
//!   `dxᵀ = W·dyᵀ` is `[in, out]×[out, R]`: needs `R > in/4`, `R > out/4` and `out < 4 in`.
//!
//! A layer with `in ≥ 4 out` (the MLP's output projection) takes the transposed form, every
//! other one the rows-major form; `R` divides the rows.

use burn::nn::Linear;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// How the token-major linear layers of the Transformer and temporal blocks are computed (same
/// weights, same results up to rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearImpl {
    /// burn's `Linear`: one matmul with `m` = all rows.
    #[default]
    Burn,
    /// Chunks of rows, oriented per layer (see the module documentation).
    Chunked,
}

/// `layer` applied to the last axis of `x` `[..., in]`, through `how`; returns `[..., out]`.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>, how: LinearImpl) -> Tensor<D> {
    match how {
        LinearImpl::Burn => layer.forward(x),
        LinearImpl::Chunked => {
            let dims = x.dims();
            let rows = dims[..D - 1].iter().product();
            let y = linear_chunked(x.reshape([rows, dims[D - 1]]), layer.weight.val(), layer.bias.as_ref().map(|b| b.val()), None);
            let mut out = dims;
            out[D - 1] = y.dims()[1];
            y.reshape(out)
        }
    }
}

/// `layer` applied to `x` `[..., in]` as one product per consecutive range of `widths` output
/// columns: the same values as narrowing the whole output, without the narrowing's backward pass,
/// which writes every part's gradient into a zero tensor of the whole output's size before the
/// parts are summed (four full-size passes for a block's q, k, v and MLP). Here the parts'
/// gradients meet in the input's `[..., in]` and the weight's `[in, out]` instead.
pub fn linear_parts<const D: usize>(layer: &Linear, x: Tensor<D>, widths: &[usize], how: LinearImpl) -> Vec<Tensor<D>> {
    let (weight, bias) = (layer.weight.val(), layer.bias.as_ref().map(|b| b.val()));
    assert_eq!(widths.iter().sum::<usize>(), weight.dims()[1], "the parts cover the output");
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product();
    let x2 = x.reshape([rows, dims[D - 1]]);
    let mut start = 0;
    widths
        .iter()
        .map(|&width| {
            let (w, b) = (weight.clone().narrow(1, start, width), bias.clone().map(|b| b.narrow(0, start, width)));
            start += width;
            let y = match how {
                LinearImpl::Burn => burn::tensor::module::linear(x2.clone(), w, b),
                LinearImpl::Chunked => linear_chunked(x2.clone(), w, b, None),
            };
            let mut out = dims;
            out[D - 1] = width;
            y.reshape(out)
        })
        .collect()
}

/// Whether a layer takes the transposed form: its weight gradient `[in, R]×[R, out]` would
/// otherwise have `m = in ≥ 4 out`.
pub fn transposed(d_in: usize, d_out: usize) -> bool {
    d_in >= 4 * d_out
}

/// Rows per chunk, a divisor of `rows`: for the rows-major form the most rows below
/// `4 min(in, out)`, for the transposed form the fewest above `max(in, out)/4` (at least 64);
/// all rows in one chunk when no divisor qualifies.
pub fn chunk_rows(rows: usize, d_in: usize, d_out: usize) -> usize {
    let divides = |r: &usize| rows.is_multiple_of(*r);
    let best = if transposed(d_in, d_out) {
        ((d_in.max(d_out) / 4 + 1).max(64)..=rows).find(divides)
    } else {
        (1..=(4 * d_in.min(d_out) - 1).min(rows)).rev().find(divides)
    };
    best.filter(|&r| r >= 16).unwrap_or(rows)
}

/// The chunked form; `rows_per_chunk` defaults to [`chunk_rows`].
///
/// # Shapes
/// - `x`: `[rows, in]`, `weight`: `[in, out]`, `bias`: `[out]`; returns `[rows, out]`
pub fn linear_chunked(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>, rows_per_chunk: Option<usize>) -> Tensor<2> {
    let [rows, d_in] = x.dims();
    let d_out = weight.dims()[1];
    let r = rows_per_chunk.filter(|r| rows.is_multiple_of(*r)).unwrap_or_else(|| chunk_rows(rows, d_in, d_out));
    let chunks = x.reshape([rows / r, r, d_in]);
    let y = if transposed(d_in, d_out) {
        // [1, out, in] × [chunks, in, R] → [chunks, out, R]
        weight.transpose().unsqueeze::<3>().matmul(chunks.swap_dims(1, 2)).swap_dims(1, 2)
    } else {
        chunks.matmul(weight.unsqueeze::<3>()) // [chunks, R, in] × [1, in, out]
    };
    let y = y.reshape([rows, d_out]);
    match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{randn, relative_error};

    #[test]
    fn every_matmul_keeps_m_below_four_n() {
        // (rows, in, out) of tiny_video and k600_64 layers: qkv + MLP, attention out, MLP out.
        for (rows, d_in, d_out) in [(1024, 64, 448), (1024, 64, 64), (1024, 256, 64), (4096, 256, 1792), (4096, 1024, 256), (65536, 128, 384)] {
            let r = chunk_rows(rows, d_in, d_out);
            assert_eq!(rows % r, 0);
            let products: [(usize, usize); 3] = if transposed(d_in, d_out) { [(d_out, r), (d_out, d_in), (d_in, r)] } else { [(r, d_out), (r, d_in), (d_in, d_out)] };
            for (m, n) in products {
                assert!(m < 4 * n, "rows {rows}, {d_in} -> {d_out}: chunk {r} gives m {m}, n {n}");
            }
        }
    }

    #[test]
    fn values_and_gradients_equal_burns_linear() {
        // Both orientations (8 -> 2 and 64 -> 16 are transposed), given and chosen chunks.
        for (rows, d_in, d_out, chunk, bias) in [(12, 8, 5, Some(4), true), (12, 8, 2, Some(6), true), (120, 64, 16, None, false), (64, 12, 48, None, true)] {
            let ad = Device::flex().autodiff();
            let leaf = |t: Tensor<2>| t.autodiff().require_grad();
            let (x, weight) = (leaf(randn([rows, d_in], 1)), leaf(randn([d_in, d_out], 2)));
            let b = randn([d_out], 3).autodiff().require_grad();
            let upstream = randn([rows, d_out], 4).to_device(&ad);
            let run = |y: Tensor<2>| {
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let g = |t: &Tensor<2>| t.grad(&grads).unwrap();
                (y.inner(), g(&x), g(&weight), b.grad(&grads))
            };
            let ours = run(linear_chunked(x.clone(), weight.clone(), bias.then(|| b.clone()), chunk));
            let plain = x.clone().matmul(weight.clone());
            let theirs = run(if bias { plain + b.clone().unsqueeze::<2>() } else { plain });
            for (name, err) in [("y", relative_error(ours.0, theirs.0)), ("dx", relative_error(ours.1, theirs.1)), ("dW", relative_error(ours.2, theirs.2))] {
                assert!(err < 1e-5, "{rows}x{d_in} -> {d_out}, chunk {chunk:?}: {name} off by {err}");
            }
            if bias {
                let (a, r) = (ours.3.unwrap(), theirs.3.unwrap());
                assert!((a - r).abs().max().into_scalar::<f32>() < 1e-4);
            }
        }
    }

    #[test]
    fn parts_equal_the_narrowed_output_in_value_and_gradient() {
        let ad = Device::flex().autodiff();
        let layer = burn::nn::LinearConfig::new(6, 10).init(&ad);
        let x = randn([2, 5, 6], 1).autodiff().require_grad();
        let u = randn([2, 5, 10], 2).autodiff();
        for how in [LinearImpl::Burn, LinearImpl::Chunked] {
            let run = |parts: Vec<Tensor<3>>| {
                let y = Tensor::cat(parts, 2);
                let grads = (y.clone() * u.clone()).sum().backward();
                let g = |p: &burn::module::Param<Tensor<2>>| p.grad(&grads).expect("a gradient");
                let bias = layer.bias.as_ref().expect("a bias").grad(&grads).expect("a gradient");
                (y.inner(), x.grad(&grads).expect("a gradient"), g(&layer.weight), bias)
            };
            let whole = linear(&layer, x.clone(), how);
            let ours = run(linear_parts(&layer, x.clone(), &[3, 2, 5], how));
            let reference = run(vec![whole.clone().narrow(2, 0, 3), whole.clone().narrow(2, 3, 2), whole.narrow(2, 5, 5)]);
            for (name, err) in [("y", relative_error(ours.0, reference.0)), ("dx", relative_error(ours.1, reference.1)), ("dW", relative_error(ours.2, reference.2))] {
                assert!(err < 1e-6, "{how:?}: {name} off by {err}");
            }
            assert!(relative_error(ours.3.unsqueeze::<2>(), reference.3.unsqueeze::<2>()) < 1e-6, "{how:?}: db");
        }
    }
}
