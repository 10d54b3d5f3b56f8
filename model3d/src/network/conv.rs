//! 3×3 convolutions (stride 1, padding 1) either through burn's `conv2d` (on the CPU the
//! project's own operation, [`crate::conv3x3`]) or as matrix products over the nine shifted
//! copies of the input (im2col by taps), in burn tensor ops:
//! `y[n, o, h, w] = b[o] + Σ_{dy, dx} Σ_c x_pad[n, c, h + dy, w + dx] · W[o, c, dy, dx]`.
//!
//! The matmul form computes `yᵀ = W · colsᵀ` per chunk of `R` pixels, the chunks as one batch:
//! - autodiff then forms the weight gradient as a batched matmul summed over chunks, a split-K
//!   over the pixel dimension that burn's convolution weight gradient lacks on CUDA;
//! - with `R > 2.25 C` and `R > O/4`, every matmul of the forward and backward passes has
//!   `m < 4n`: `W·colsᵀ` is `[O, 9C]×[9C, R]`, `dW = dyᵀ·cols` is `[O, R]×[R, 9C]`, and
//!   `d colsᵀ = Wᵀ·dyᵀ` is `[9C, O]×[O, R]`. That keeps every bf16 matmul away from the
//!   `m ≥ 4n` shapes whose TMA autotune candidate is suspected of failing on the H100.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use serde::{Deserialize, Serialize};

/// How 3×3 convolutions are computed (same weights, same results up to rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvImpl {
    /// burn's `conv2d`; on the CPU the project's operation in its place, with its own backward
    /// pass ([`crate::conv3x3`]), as `silu` and attention are.
    #[default]
    Burn,
    /// Nine shifted matmuls over chunks of pixels (see the module documentation); the patch
    /// (un-)embedding as matmuls over patches (patch.rs).
    Matmul,
}

/// `conv`'s 3×3, stride-1, padding-1 convolution of `x` `[N, C, H, W]`, through `how`.
pub fn conv3x3(conv: &Conv2d, x: Tensor<4>, how: ConvImpl) -> Tensor<4> {
    match how {
        ConvImpl::Burn => crate::conv3x3::conv3x3(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val())),
        ConvImpl::Matmul => conv3x3_matmul(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), None),
    }
}

/// The chunk of pixels per batch entry: the fewest pixels that keep every matmul at `m < 4n`
/// (at least 64), made to divide `rows`; all rows in one chunk when there are fewer.
pub fn chunk_rows(rows: usize, c: usize, o: usize) -> usize {
    let least = (9 * c / 4 + 1).max(o / 4 + 1).max(64);
    (least..=rows).find(|r| rows.is_multiple_of(*r)).unwrap_or(rows)
}

/// The matmul form; `rows_per_chunk` defaults to [`chunk_rows`].
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, `weight`: `[O, C, 3, 3]`, `bias`: `[O]`; returns `[N, O, H, W]`
pub fn conv3x3_matmul(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, rows_per_chunk: Option<usize>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [o, _, kh, kw] = weight.dims();
    assert_eq!((kh, kw), (3, 3), "a 3x3 kernel");
    let padded = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let taps: Vec<Tensor<4>> = (0..9).map(|t| padded.clone().slice([0..n, 0..c, t / 3..t / 3 + h, t % 3..t % 3 + w])).collect();
    let rows = n * h * w;
    let r = rows_per_chunk.filter(|r| rows % r == 0).unwrap_or_else(|| chunk_rows(rows, c, o));
    // [N, 9C, H, W] → [N·H·W, 9C] (tap-major columns) → [chunks, 9C, R]
    let cols_t = Tensor::cat(taps, 1).permute([0, 2, 3, 1]).reshape([rows / r, r, 9 * c]).swap_dims(1, 2);
    let kernel = weight.permute([0, 2, 3, 1]).reshape([1, o, 9 * c]); // the same column order
    let y = kernel.matmul(cols_t).swap_dims(1, 2).reshape([rows, o]); // [chunks, O, R] → [N·H·W, O]
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    y.reshape([n, h, w, o]).permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{randn, relative_error};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    #[test]
    fn values_and_gradients_equal_burns_conv2d() {
        for (shape, out, chunk, bias) in [([2, 3, 5, 7], 4, Some(10), true), ([1, 8, 8, 8], 8, Some(16), false), ([3, 2, 4, 4], 5, None, true)] {
            let ad = Device::flex().autodiff();
            let leaf = |t: Tensor<4>| t.autodiff().require_grad();
            let (x, weight) = (leaf(randn(shape, 1)), leaf(randn([out, shape[1], 3, 3], 2)));
            let b = randn([out], 3).autodiff().require_grad();
            let upstream = randn([shape[0], out, shape[2], shape[3]], 4).to_device(&ad);
            let run = |y: Tensor<4>| {
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let g = |t: &Tensor<4>| t.grad(&grads).unwrap();
                (y.inner(), g(&x), g(&weight), b.grad(&grads))
            };
            let ours = run(conv3x3_matmul(x.clone(), weight.clone(), bias.then(|| b.clone()), chunk));
            let theirs = run(conv2d(x.clone(), weight.clone(), bias.then(|| b.clone()), ConvOptions::new([1, 1], [1, 1], [1, 1], 1)));
            for (name, err) in [("y", relative_error(ours.0, theirs.0)), ("dx", relative_error(ours.1, theirs.1)), ("dW", relative_error(ours.2, theirs.2))] {
                assert!(err < 1e-5, "{shape:?} chunk {chunk:?}: {name} off by {err}");
            }
            if bias {
                let (a, r) = (ours.3.unwrap(), theirs.3.unwrap());
                assert!((a - r).abs().max().into_scalar::<f32>() < 1e-4);
            }
        }
    }

    #[test]
    fn chunks_keep_every_matmul_short_of_four_to_one() {
        // k600_64's level 0: batch 16 × 16 frames of 64x64 pixels, 128 channels.
        let (rows, c, o) = (16 * 16 * 64 * 64, 128, 128);
        let r = chunk_rows(rows, c, o);
        assert_eq!(rows % r, 0);
        for (m, n) in [(o, r), (o, 9 * c), (9 * c, r)] {
            assert!(m < 4 * n, "a [{m} × k] × [k × {n}] matmul");
        }
        assert_eq!(chunk_rows(10, 8, 8), 10, "fewer rows than a chunk: one chunk");
    }
}
