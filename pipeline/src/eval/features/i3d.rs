//! Inception-v1 I3D, RGB stream (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"),
//! laid out as in pytorch-i3d (`InceptionI3d`), whose Kinetics-400 logits are the FVD features.
//!
//! Every convolution and max pool pads like TensorFlow's "SAME" (computed from the input size,
//! the smaller half in front, zeros), batch norm has ε = 10⁻³, and the head averages a 2×7×7
//! window before a 1×1×1 convolution to 400 logits. Field names are the pytorch-i3d keys with
//! the top-level names lower-cased (`Mixed_3b.b1b.conv3d.weight` → `mixed_3b.b1b.conv3d.weight`).

use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, conv3d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};

use super::HE;
use super::resize::{SampleGrid, resize_bilinear};

/// Kinetics-400 classes: the width of the logits, and of the FVD features.
pub const CLASSES: usize = 400;
/// The spatial size I3D sees (frames are resized to it).
pub const INPUT_SIZE: usize = 224;

/// TF "SAME" padding of one axis as pytorch-i3d computes it: a total of `max(k − s, 0)` when
/// `s` divides `n`, else `max(k − n mod s, 0)`, with the smaller half in front.
fn same_padding(n: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let total = if n.is_multiple_of(stride) { kernel.saturating_sub(stride) } else { kernel.saturating_sub(n % stride) };
    (total / 2, total - total / 2)
}

/// Zero-pads `[B, C, T, H, W]` for a SAME window of `kernel` and `stride`.
fn pad_same(x: Tensor<5>, kernel: [usize; 3], stride: [usize; 3]) -> Tensor<5> {
    let [_, _, t, h, w] = x.dims();
    let pads = [same_padding(t, kernel[0], stride[0]), same_padding(h, kernel[1], stride[1]), same_padding(w, kernel[2], stride[2])];
    if pads.iter().all(|&(a, b)| a + b == 0) {
        return x;
    }
    x.pad(pads, PadMode::Constant(0.0))
}

/// 3-D max pooling with SAME zero padding (`MaxPool3dSamePadding`). Max is separable, so it
/// runs as a 2-D pool over (H, W) followed by a 2-D pool over (T, H·W) with a width-1 window.
///
/// # Shapes
/// `[B, C, T, H, W]` → `[B, C, ⌈T/sₜ⌉, ⌈H/sₕ⌉, ⌈W/s_w⌉]`
fn max_pool3d_same(x: Tensor<5>, kernel: [usize; 3], stride: [usize; 3]) -> Tensor<5> {
    let x = pad_same(x, kernel, stride);
    let [b, c, t, h, w] = x.dims();
    let x = max_pool2d(x.reshape([b, c * t, h, w]), MaxPoolOptions::new([kernel[1], kernel[2]]).with_stride([stride[1], stride[2]]));
    let [_, _, ho, wo] = x.dims();
    let x = max_pool2d(x.reshape([b * c, 1, t, ho * wo]), MaxPoolOptions::new([kernel[0], 1]).with_stride([stride[0], 1]));
    let [_, _, to, _] = x.dims();
    x.reshape([b, c, to, ho, wo])
}

/// 3-D average pooling without padding, stride 1 (`nn.AvgPool3d(kernel, stride=1)`), separable
/// like [`max_pool3d_same`].
fn avg_pool3d_valid(x: Tensor<5>, kernel: [usize; 3]) -> Tensor<5> {
    let [b, c, t, h, w] = x.dims();
    let x = avg_pool2d(x.reshape([b, c * t, h, w]), AvgPoolOptions::new([kernel[1], kernel[2]]).with_stride([1, 1]));
    let [_, _, ho, wo] = x.dims();
    let x = avg_pool2d(x.reshape([b * c, 1, t, ho * wo]), AvgPoolOptions::new([kernel[0], 1]).with_stride([1, 1]));
    let [_, _, to, _] = x.dims();
    x.reshape([b, c, to, ho, wo])
}

/// `Unit3D`: SAME-padded Conv3d, then batch norm and ReLU (the logits layer has neither but
/// has a bias).
#[derive(Module, Debug)]
pub struct Unit3d {
    pub conv3d: Conv3d,
    pub bn: Option<BatchNorm>,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
}

impl Unit3d {
    fn new(c_in: usize, c_out: usize, kernel: [usize; 3], stride: [usize; 3], device: &Device) -> Self {
        Self {
            conv3d: Conv3dConfig::new([c_in, c_out], kernel).with_stride(stride).with_bias(false).with_initializer(HE).init(device),
            bn: Some(BatchNormConfig::new(c_out).with_epsilon(1e-3).init(device)),
            kernel,
            stride,
        }
    }

    fn logits(c_in: usize, classes: usize, device: &Device) -> Self {
        Self { conv3d: Conv3dConfig::new([c_in, classes], [1, 1, 1]).init(device), bn: None, kernel: [1; 3], stride: [1; 3] }
    }

    /// # Shapes
    /// `[B, C_in, T, H, W]` → `[B, C_out, ⌈T/sₜ⌉, ⌈H/sₕ⌉, ⌈W/s_w⌉]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = pad_same(x, self.kernel, self.stride);
        let bias = self.conv3d.bias.as_ref().map(|b| b.val());
        let x = conv3d(x, self.conv3d.weight.val(), bias, ConvOptions::new(self.stride, [0; 3], [1; 3], 1));
        match &self.bn {
            Some(bn) => relu(bn.forward(x)),
            None => x,
        }
    }
}

/// `InceptionModule`: four branches (1×1; 1×1 → 3×3×3; 1×1 → 3×3×3; 3×3×3 max pool → 1×1)
/// concatenated along channels.
#[derive(Module, Debug)]
pub struct Mixed {
    pub b0: Unit3d,
    pub b1a: Unit3d,
    pub b1b: Unit3d,
    pub b2a: Unit3d,
    pub b2b: Unit3d,
    pub b3b: Unit3d,
}

impl Mixed {
    /// `widths` as in the paper's table and pytorch-i3d: [b0, b1a, b1b, b2a, b2b, b3b].
    fn new(c_in: usize, widths: [usize; 6], device: &Device) -> Self {
        let unit = |c_in, c_out, k| Unit3d::new(c_in, c_out, [k; 3], [1; 3], device);
        Self {
            b0: unit(c_in, widths[0], 1),
            b1a: unit(c_in, widths[1], 1),
            b1b: unit(widths[1], widths[2], 3),
            b2a: unit(c_in, widths[3], 1),
            b2b: unit(widths[3], widths[4], 3),
            b3b: unit(c_in, widths[5], 1),
        }
    }

    /// # Shapes
    /// `[B, C_in, T, H, W]` → `[B, b0 + b1b + b2b + b3b, T, H, W]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let b0 = self.b0.forward(x.clone());
        let b1 = self.b1b.forward(self.b1a.forward(x.clone()));
        let b2 = self.b2b.forward(self.b2a.forward(x.clone()));
        let b3 = self.b3b.forward(max_pool3d_same(x, [3; 3], [1; 3]));
        Tensor::cat(vec![b0, b1, b2, b3], 1)
    }
}

/// I3D up to its Kinetics-400 logits (`final_endpoint="Logits"`, 3 input channels).
#[derive(Module, Debug)]
pub struct I3d {
    pub conv3d_1a_7x7: Unit3d,
    pub conv3d_2b_1x1: Unit3d,
    pub conv3d_2c_3x3: Unit3d,
    pub mixed_3b: Mixed,
    pub mixed_3c: Mixed,
    pub mixed_4b: Mixed,
    pub mixed_4c: Mixed,
    pub mixed_4d: Mixed,
    pub mixed_4e: Mixed,
    pub mixed_4f: Mixed,
    pub mixed_5b: Mixed,
    pub mixed_5c: Mixed,
    pub logits: Unit3d,
}

impl I3d {
    /// The architecture with freshly initialised weights; load real ones with
    /// [`Pretrained::I3D`](super::Pretrained::I3D).
    pub fn new(device: &Device) -> Self {
        Self {
            conv3d_1a_7x7: Unit3d::new(3, 64, [7; 3], [2; 3], device),
            conv3d_2b_1x1: Unit3d::new(64, 64, [1; 3], [1; 3], device),
            conv3d_2c_3x3: Unit3d::new(64, 192, [3; 3], [1; 3], device),
            mixed_3b: Mixed::new(192, [64, 96, 128, 16, 32, 32], device),
            mixed_3c: Mixed::new(256, [128, 128, 192, 32, 96, 64], device),
            mixed_4b: Mixed::new(480, [192, 96, 208, 16, 48, 64], device),
            mixed_4c: Mixed::new(512, [160, 112, 224, 24, 64, 64], device),
            mixed_4d: Mixed::new(512, [128, 128, 256, 24, 64, 64], device),
            mixed_4e: Mixed::new(512, [112, 144, 288, 32, 64, 64], device),
            mixed_4f: Mixed::new(528, [256, 160, 320, 32, 128, 128], device),
            mixed_5b: Mixed::new(832, [256, 160, 320, 32, 128, 128], device),
            mixed_5c: Mixed::new(832, [384, 192, 384, 48, 128, 128], device),
            logits: Unit3d::logits(1024, CLASSES, device),
        }
    }

    /// Logits per output time step, as pytorch-i3d's `forward` (dropout is the identity at
    /// evaluation).
    ///
    /// # Shapes
    /// - `x`: `[B, 3, T, 224, 224]`, RGB in [−1, 1]; T ≥ 9 (16 gives one output step)
    /// - returns `[B, 400, T']` with `T' = ⌈T/8⌉ − 1`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = self.conv3d_1a_7x7.forward(x); // [B, 64, T/2, 112, 112]
        let x = max_pool3d_same(x, [1, 3, 3], [1, 2, 2]); // [B, 64, T/2, 56, 56]
        let x = self.conv3d_2c_3x3.forward(self.conv3d_2b_1x1.forward(x)); // [B, 192, T/2, 56, 56]
        let x = max_pool3d_same(x, [1, 3, 3], [1, 2, 2]); // [B, 192, T/2, 28, 28]
        let x = self.mixed_3c.forward(self.mixed_3b.forward(x)); // [B, 480, T/2, 28, 28]
        let x = max_pool3d_same(x, [3, 3, 3], [2, 2, 2]); // [B, 480, T/4, 14, 14]
        let x = [&self.mixed_4b, &self.mixed_4c, &self.mixed_4d, &self.mixed_4e, &self.mixed_4f].iter().fold(x, |x, m| m.forward(x));
        let x = max_pool3d_same(x, [2, 2, 2], [2, 2, 2]); // [B, 832, T/8, 7, 7]
        let x = self.mixed_5c.forward(self.mixed_5b.forward(x)); // [B, 1024, T/8, 7, 7]
        self.logits.forward(avg_pool3d_valid(x, [2, 7, 7])) // [B, 400, T/8 − 1, 1, 1]
    }

    /// FVD features of clips: each frame resized to 224×224 with TF1's bilinear resize, values
    /// mapped from [0, 255] to [−1, 1], and the logits averaged over time, as the reference
    /// FVD code (Unterthiner et al. 2018) feeds the TF-Hub I3D.
    ///
    /// # Shapes
    /// - `clips`: `[B, T, 3, H, W]`, RGB in [0, 255]
    /// - returns `[B, 400]`
    pub fn features(&self, clips: Tensor<5>) -> Tensor<2> {
        let [b, t, c, h, w] = clips.dims();
        let frames = resize_bilinear(clips.reshape([b * t, c, h, w]), INPUT_SIZE, SampleGrid::TfLegacy);
        let x = frames.mul_scalar(2.0 / 255.0).sub_scalar(1.0).reshape([b, t, c, INPUT_SIZE, INPUT_SIZE]).swap_dims(1, 2);
        let logits = self.forward(x); // [B, 400, T', 1, 1]
        logits.mean_dim(2).reshape([b, CLASSES])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_follows_tensorflow() {
        // 7-tap stride-2 window over 16 steps: 5 in total, 2 in front (TF puts the odd one last).
        assert_eq!(same_padding(16, 7, 2), (2, 3));
        // Stride 2 over an odd length 7: total k − (n mod s) = 3 − 1 = 2.
        assert_eq!(same_padding(7, 3, 2), (1, 1));
        assert_eq!(same_padding(8, 1, 1), (0, 0));
        assert_eq!(same_padding(4, 2, 2), (0, 0));
    }

    #[test]
    fn max_pool3d_same_takes_the_maximum_of_each_window() {
        let device = Device::flex();
        // One channel, T = H = W = 2, values 0..8; a 2×2×2 stride-2 pool keeps only the max.
        let x = Tensor::<1, Int>::arange(0..8, &device).float().reshape([1, 1, 2, 2, 2]);
        let y: Vec<f32> = max_pool3d_same(x.clone(), [2; 3], [2; 3]).into_data().try_to_vec().unwrap();
        assert_eq!(y, vec![7.0]);
        // 3×3×3 stride 1 pads one zero on each side, and pytorch-i3d pads max pools with zeros,
        // not −∞: on negative inputs every window's maximum is a padding zero.
        let y: Vec<f32> = max_pool3d_same(x.clone(), [3; 3], [1; 3]).into_data().try_to_vec().unwrap();
        assert_eq!(y, vec![7.0; 8]);
        let y: Vec<f32> = max_pool3d_same(x.neg().sub_scalar(1.0), [3; 3], [1; 3]).into_data().try_to_vec().unwrap();
        assert_eq!(y, vec![0.0; 8]);
    }
}
