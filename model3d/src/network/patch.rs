//! The patch embedding (a p×p convolution with stride p) and un-embedding (the transposed
//! convolution that mirrors it), through burn's kernels or as matmuls over patches:
//! - embedding: `y[n, o, i, j] = b[o] + Σ_{c, u, v} x[n, c, p·i + u, p·j + v] · W[o, c, u, v]`,
//!   the patches `[N·H'·W', C·p²]` (space-to-depth) times `W` flattened to `[C·p², O]`;
//! - un-embedding: `y[n, o, p·i + u, p·j + v] = b[o] + Σ_c h[n, c, i, j] · W[c, o, u, v]`, the
//!   tokens `[N·H'·W', C]` times `W` flattened to `[C, O·p²]`, then depth-to-space.
//!
//! Both are `linear`'s chunked matmuls, so that with `model.conv = "matmul"` every matmul of a
//! training step keeps `m < 4n` (conv.rs says why). The embedding's input is pixels, which take no
//! gradient, so its chunks only need the forward `[R, C·p²]×[C·p², O]` and the weight gradient
//! `[C·p², R]×[R, O]` short of 4:1: `R < 4·O` (with `C·p² = 3`, `linear`'s own rule would have to
//! keep the pixel gradient short of 4:1 too, which no chunk of 16 rows or more can).

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::prelude::*;

use super::conv::ConvImpl;
use super::linear::{linear_chunked, transposed};

/// `conv`'s patch embedding of `x` `[N, C, H, W]` through `how`; returns `[N, O, H/p, W/p]`.
pub fn embed(conv: &Conv2d, x: Tensor<4>, how: ConvImpl) -> Tensor<4> {
    match how {
        ConvImpl::Burn => conv.forward(x),
        ConvImpl::Matmul => embed_matmul(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val())),
    }
}

/// `conv`'s un-embedding of `x` `[N, C, H', W']` through `how`; returns `[N, O, p·H', p·W']`.
pub fn unembed(conv: &ConvTranspose2d, x: Tensor<4>, how: ConvImpl) -> Tensor<4> {
    match how {
        ConvImpl::Burn => conv.forward(x),
        ConvImpl::Matmul => unembed_matmul(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val())),
    }
}

/// The embedding as matmuls.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, `weight`: `[O, C, p, p]`, `bias`: `[O]`; returns `[N, O, H/p, W/p]`
pub fn embed_matmul(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [o, _, p, _] = weight.dims();
    let (hp, wp, k) = (h / p, w / p, c * p * p);
    let rows = n * hp * wp;
    // [N, C, H', p, W', p] → [N, H', W', C, p, p] → [N·H'·W', C·p²]: the kernel's column order.
    let patches = x.reshape([n, c, hp, p, wp, p]).permute([0, 2, 4, 1, 3, 5]).reshape([rows, k]);
    let kernel = weight.reshape([o, k]).transpose();
    let chunk = (!transposed(k, o)).then(|| embed_rows(rows, o));
    linear_chunked(patches, kernel, bias, chunk).reshape([n, hp, wp, o]).permute([0, 3, 1, 2])
}

/// Rows per chunk of the embedding: the most below `4·O` that divide `rows`.
pub fn embed_rows(rows: usize, o: usize) -> usize {
    (1..(4 * o).min(rows + 1)).rev().find(|r| rows.is_multiple_of(*r)).unwrap_or(rows)
}

/// The un-embedding as matmuls.
///
/// # Shapes
/// - `x`: `[N, C, H', W']`, `weight`: `[C, O, p, p]`, `bias`: `[O]`; returns `[N, O, p·H', p·W']`
pub fn unembed_matmul(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [n, c, hp, wp] = x.dims();
    let [_, o, p, _] = weight.dims();
    let tokens = x.permute([0, 2, 3, 1]).reshape([n * hp * wp, c]);
    let y = linear_chunked(tokens, weight.reshape([c, o * p * p]), None, None); // [N·H'·W', O·p²]
    // [N, H', W', O, p, p] → [N, O, H', p, W', p]: each token's block back in place.
    let y = y.reshape([n, hp, wp, o, p, p]).permute([0, 3, 1, 4, 2, 5]).reshape([n, o, hp * p, wp * p]);
    match bias {
        Some(b) => y + b.reshape([1, o, 1, 1]),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::linear::chunk_rows;
    use crate::testing::{randn, relative_error};
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};

    /// The values of a layer's output `y` and the gradients of `y · upstream` with respect to
    /// `x` (when tracked), the weight and the bias, for `ConvImpl::Matmul` and `ConvImpl::Burn`.
    fn both(layer: impl Fn(ConvImpl) -> Tensor<4>, upstream: &Tensor<4>, x: &Tensor<4>, weight: &Tensor<4>, bias: &Tensor<1>) -> [(Tensor<4>, Option<Tensor<4>>, Tensor<4>, Tensor<1>); 2] {
        [ConvImpl::Matmul, ConvImpl::Burn].map(|how| {
            let y = layer(how);
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (y.inner(), x.grad(&grads), weight.grad(&grads).unwrap(), bias.grad(&grads).unwrap())
        })
    }

    fn assert_same(case: &str, [ours, theirs]: [(Tensor<4>, Option<Tensor<4>>, Tensor<4>, Tensor<1>); 2]) {
        assert!(relative_error(ours.0, theirs.0) < 1e-5, "{case}: values");
        assert_eq!(ours.1.is_some(), theirs.1.is_some(), "{case}: input gradient");
        if let (Some(a), Some(r)) = (ours.1, theirs.1) {
            assert!(relative_error(a, r) < 1e-5, "{case}: input gradient");
        }
        assert!(relative_error(ours.2, theirs.2) < 1e-5, "{case}: weight gradient");
        assert!((ours.3 - theirs.3).abs().max().into_scalar::<f32>() < 1e-4, "{case}: bias gradient");
    }

    #[test]
    fn the_embedding_equals_burns_strided_convolution() {
        for (p, c, o, h) in [(1, 3, 8, 4), (2, 3, 8, 6), (4, 2, 5, 8)] {
            let ad = Device::flex().autodiff();
            let conv = Conv2dConfig::new([c, o], [p, p]).with_stride([p, p]).init(&ad);
            let x = randn([2, c, h, h], 1).to_device(&ad); // pixels: no gradient
            let upstream = randn([2, o, h / p, h / p], 2).to_device(&ad);
            let results = both(|how| embed(&conv, x.clone(), how), &upstream, &x, &conv.weight.val(), &conv.bias.as_ref().unwrap().val());
            assert_same(&format!("patch {p}"), results);
        }
    }

    #[test]
    fn the_unembedding_equals_burns_transposed_convolution() {
        for (p, c, o, h) in [(1, 8, 3, 4), (2, 8, 3, 3), (4, 6, 2, 2)] {
            let ad = Device::flex().autodiff();
            let conv = ConvTranspose2dConfig::new([c, o], [p, p]).with_stride([p, p]).init(&ad);
            let x = randn([2, c, h, h], 1).autodiff().require_grad();
            let upstream = randn([2, o, h * p, h * p], 2).to_device(&ad);
            let results = both(|how| unembed(&conv, x.clone(), how), &upstream, &x, &conv.weight.val(), &conv.bias.as_ref().unwrap().val());
            assert!(results[1].1.is_some());
            assert_same(&format!("patch {p}"), results);
        }
    }

    #[test]
    fn every_matmul_keeps_m_below_four_n() {
        // k600_64 (patch 1, batch 16 × 16 frames of 64x64) and imagenet256 (patch 2, batch 64 of
        // 256x256): 3 colour channels in and out, 128 channels at level 0.
        for (rows, p) in [(16 * 16 * 64 * 64, 1), (64 * 128 * 128, 2)] {
            let (k, o) = (3 * p * p, 128);
            let r = embed_rows(rows, o);
            assert_eq!(rows % r, 0);
            // Embedding: forward [R, k]×[k, O], weight gradient [k, R]×[R, O].
            for (m, n) in [(r, o), (k, o)] {
                assert!(m < 4 * n, "patch {p}: embedding chunk {r} gives a [{m} × ·] × [· × {n}] matmul");
            }
            // Un-embedding, 128 → k as a linear layer: forward, weight and input gradients.
            let r = chunk_rows(rows, o, k);
            assert!(transposed(o, k));
            for (m, n) in [(k, r), (k, o), (o, r)] {
                assert!(m < 4 * n, "patch {p}: un-embedding chunk {r} gives a [{m} × ·] × [· × {n}] matmul");
            }
        }
    }
}
