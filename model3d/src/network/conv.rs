//! 3×3 convolutions (stride 1, padding 1) either through burn's `conv2d` or as matrix products
//! over the nine shifted copies of the input (im2col by taps):
//! `y[n, o, h, w] = b[o] + Σ_{dy, dx} Σ_c x_pad[n, c, h + dy, w + dx] · W[o, c, dy, dx]`.
//! The matmul form splits the `N·H·W` rows into chunks and multiplies them as one batch, so
//! autodiff computes the weight gradient as a batched matmul followed by a sum over chunks: a
//! split-K over the pixel dimension, which burn's convolution weight gradient lacks on CUDA.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use serde::{Deserialize, Serialize};

/// How 3×3 convolutions are computed (same weights, same results up to rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvImpl {
    /// burn's `conv2d`.
    #[default]
    Burn,
    /// Nine shifted matmuls with rows in [`ROW_CHUNKS`] batches.
    Matmul,
}

/// Row batches of the matmul form.
pub const ROW_CHUNKS: usize = 8;

/// `conv`'s 3×3, stride-1, padding-1 convolution of `x` `[N, C, H, W]`, through `how`.
pub fn conv3x3(conv: &Conv2d, x: Tensor<4>, how: ConvImpl) -> Tensor<4> {
    match how {
        ConvImpl::Burn => conv.forward(x),
        ConvImpl::Matmul => conv3x3_matmul(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), ROW_CHUNKS),
    }
}

/// The matmul form.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`, `weight`: `[O, C, 3, 3]`, `bias`: `[O]`; returns `[N, O, H, W]`
pub fn conv3x3_matmul(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, chunks: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let [o, _, kh, kw] = weight.dims();
    assert_eq!((kh, kw), (3, 3), "a 3x3 kernel");
    let padded = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let taps: Vec<Tensor<4>> = (0..9).map(|t| padded.clone().slice([0..n, 0..c, t / 3..t / 3 + h, t % 3..t % 3 + w])).collect();
    let rows = n * h * w;
    let cols = Tensor::cat(taps, 1).permute([0, 2, 3, 1]).reshape([rows, 9 * c]); // [N·H·W, 9C], tap-major
    let kernel = weight.permute([2, 3, 1, 0]).reshape([9 * c, o]); // [9C, O] in the same order
    let chunks = (1..=chunks.max(1)).rev().find(|k| rows % k == 0).unwrap_or(1);
    let y = cols.reshape([chunks, rows / chunks, 9 * c]).matmul(kernel.unsqueeze::<3>()).reshape([rows, o]);
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    y.reshape([n, h, w, o]).permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    fn randn<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::<1>::from_data(TensorData::new(crate::noise::gaussian(seed, n), [n]), &Device::flex()).reshape(shape)
    }

    #[test]
    fn values_and_gradients_equal_burns_conv2d() {
        for (shape, out, chunks, bias) in [([2, 3, 5, 7], 4, 8, true), ([1, 8, 8, 8], 8, 4, false), ([3, 2, 4, 4], 5, 1, true)] {
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
            let ours = run(conv3x3_matmul(x.clone(), weight.clone(), bias.then(|| b.clone()), chunks));
            let theirs = run(conv2d(x.clone(), weight.clone(), bias.then(|| b.clone()), ConvOptions::new([1, 1], [1, 1], [1, 1], 1)));
            let close = |a: Tensor<4>, r: Tensor<4>| (a - r.clone()).abs().max().into_scalar::<f32>() / r.abs().max().into_scalar::<f32>();
            for (name, err) in [("y", close(ours.0, theirs.0)), ("dx", close(ours.1, theirs.1)), ("dW", close(ours.2, theirs.2))] {
                assert!(err < 1e-5, "{shape:?} chunks {chunks}: {name} off by {err}");
            }
            if bias {
                let (a, r) = (ours.3.unwrap(), theirs.3.unwrap());
                assert!((a - r).abs().max().into_scalar::<f32>() < 1e-4);
            }
        }
    }
}
