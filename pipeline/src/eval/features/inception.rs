//! Inception-v3 as the 2015-12-05 TensorFlow graph behind FID (Szegedy et al. 2016; Heusel et
//! al. 2017), laid out as pytorch-fid's `fid_inception_v3`: torchvision's Inception3 with the
//! blocks patched to match TensorFlow.
//!
//! The TensorFlow quirks kept: the 3×3 average pools in the A, C and first E blocks leave the
//! padding out of the mean (`count_include_pad=False`), the last E block max-pools instead, and
//! batch norm has ε = 10⁻³. Field names are the pytorch-fid keys with the top-level names
//! lower-cased (`Mixed_7c.branch3x3_2a.conv.weight` → `mixed_7c.branch3x3_2a.conv.weight`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};

use super::HE;
use super::resize::{SampleGrid, resize_bilinear};

/// Width of the pool features: the FID feature dimension.
pub const FEATURES: usize = 2048;
/// The spatial size Inception sees (images are resized to it).
pub const INPUT_SIZE: usize = 299;

/// `BasicConv2d`: convolution without bias, batch norm, ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl BasicConv2d {
    /// `kernel` and `padding` as (height, width).
    fn new(c_in: usize, c_out: usize, kernel: [usize; 2], stride: usize, padding: [usize; 2], device: &Device) -> Self {
        let [ph, pw] = padding;
        Self {
            conv: Conv2dConfig::new([c_in, c_out], kernel)
                .with_stride([stride; 2])
                .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                .with_bias(false)
                .with_initializer(HE)
                .init(device),
            bn: BatchNormConfig::new(c_out).with_epsilon(1e-3).init(device),
        }
    }

    fn square(c_in: usize, c_out: usize, k: usize, device: &Device) -> Self {
        Self::new(c_in, c_out, [k, k], 1, [k / 2, k / 2], device)
    }

    /// A 1×k (`wide`) or k×1 convolution, zero-padded to keep the size.
    fn line(c_in: usize, c_out: usize, k: usize, wide: bool, device: &Device) -> Self {
        match wide {
            true => Self::new(c_in, c_out, [1, k], 1, [0, k / 2], device),
            false => Self::new(c_in, c_out, [k, 1], 1, [k / 2, 0], device),
        }
    }

    fn reduce(c_in: usize, c_out: usize, device: &Device) -> Self {
        Self::new(c_in, c_out, [3, 3], 2, [0, 0], device)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// 3×3 stride-1 average pool whose mean leaves the zero padding out, as TensorFlow's.
fn avg_pool_3x3_tf(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(x, AvgPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1]).with_count_include_pad(false))
}

/// 3×3 stride-2 max pool without padding (the grid reductions).
fn max_pool_3x3_s2(x: Tensor<4>) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]))
}

/// `FIDInceptionA` (Mixed_5b–5d): 1×1; 1×1 → 5×5; 1×1 → 3×3 → 3×3; TF avg pool → 1×1.
#[derive(Module, Debug)]
pub struct InceptionA {
    pub branch1x1: BasicConv2d,
    pub branch5x5_1: BasicConv2d,
    pub branch5x5_2: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    pub branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(c_in: usize, pool_features: usize, device: &Device) -> Self {
        Self {
            branch1x1: BasicConv2d::square(c_in, 64, 1, device),
            branch5x5_1: BasicConv2d::square(c_in, 48, 1, device),
            branch5x5_2: BasicConv2d::square(48, 64, 5, device),
            branch3x3dbl_1: BasicConv2d::square(c_in, 64, 1, device),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, device),
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, device),
            branch_pool: BasicConv2d::square(c_in, pool_features, 1, device),
        }
    }

    /// `[B, C, H, W]` → `[B, 224 + pool_features, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self.branch5x5_2.forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone())));
        let bp = self.branch_pool.forward(avg_pool_3x3_tf(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// `InceptionB` (Mixed_6a), a grid reduction: 3×3/2; 1×1 → 3×3 → 3×3/2; max pool 3×3/2.
#[derive(Module, Debug)]
pub struct InceptionB {
    pub branch3x3: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn new(c_in: usize, device: &Device) -> Self {
        Self {
            branch3x3: BasicConv2d::reduce(c_in, 384, device),
            branch3x3dbl_1: BasicConv2d::square(c_in, 64, 1, device),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, device),
            branch3x3dbl_3: BasicConv2d::reduce(96, 96, device),
        }
    }

    /// `[B, C, H, W]` → `[B, 480 + C, (H − 1)/2, (W − 1)/2]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone())));
        Tensor::cat(vec![b3, bd, max_pool_3x3_s2(x)], 1)
    }
}

/// `FIDInceptionC` (Mixed_6b–6e), factorised 7×7: 1×1; 1×1 → 1×7 → 7×1;
/// 1×1 → 7×1 → 1×7 → 7×1 → 1×7; TF avg pool → 1×1.
#[derive(Module, Debug)]
pub struct InceptionC {
    pub branch1x1: BasicConv2d,
    pub branch7x7_1: BasicConv2d,
    pub branch7x7_2: BasicConv2d,
    pub branch7x7_3: BasicConv2d,
    pub branch7x7dbl_1: BasicConv2d,
    pub branch7x7dbl_2: BasicConv2d,
    pub branch7x7dbl_3: BasicConv2d,
    pub branch7x7dbl_4: BasicConv2d,
    pub branch7x7dbl_5: BasicConv2d,
    pub branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(c_in: usize, c7: usize, device: &Device) -> Self {
        Self {
            branch1x1: BasicConv2d::square(c_in, 192, 1, device),
            branch7x7_1: BasicConv2d::square(c_in, c7, 1, device),
            branch7x7_2: BasicConv2d::line(c7, c7, 7, true, device),
            branch7x7_3: BasicConv2d::line(c7, 192, 7, false, device),
            branch7x7dbl_1: BasicConv2d::square(c_in, c7, 1, device),
            branch7x7dbl_2: BasicConv2d::line(c7, c7, 7, false, device),
            branch7x7dbl_3: BasicConv2d::line(c7, c7, 7, true, device),
            branch7x7dbl_4: BasicConv2d::line(c7, c7, 7, false, device),
            branch7x7dbl_5: BasicConv2d::line(c7, 192, 7, true, device),
            branch_pool: BasicConv2d::square(c_in, 192, 1, device),
        }
    }

    /// `[B, C, H, W]` → `[B, 768, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = [&self.branch7x7_1, &self.branch7x7_2, &self.branch7x7_3].iter().fold(x.clone(), |h, c| c.forward(h));
        let bd = [&self.branch7x7dbl_1, &self.branch7x7dbl_2, &self.branch7x7dbl_3, &self.branch7x7dbl_4, &self.branch7x7dbl_5]
            .iter()
            .fold(x.clone(), |h, c| c.forward(h));
        let bp = self.branch_pool.forward(avg_pool_3x3_tf(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// `InceptionD` (Mixed_7a), a grid reduction: 1×1 → 3×3/2; 1×1 → 1×7 → 7×1 → 3×3/2; max pool.
#[derive(Module, Debug)]
pub struct InceptionD {
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2: BasicConv2d,
    pub branch7x7x3_1: BasicConv2d,
    pub branch7x7x3_2: BasicConv2d,
    pub branch7x7x3_3: BasicConv2d,
    pub branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    fn new(c_in: usize, device: &Device) -> Self {
        Self {
            branch3x3_1: BasicConv2d::square(c_in, 192, 1, device),
            branch3x3_2: BasicConv2d::reduce(192, 320, device),
            branch7x7x3_1: BasicConv2d::square(c_in, 192, 1, device),
            branch7x7x3_2: BasicConv2d::line(192, 192, 7, true, device),
            branch7x7x3_3: BasicConv2d::line(192, 192, 7, false, device),
            branch7x7x3_4: BasicConv2d::reduce(192, 192, device),
        }
    }

    /// `[B, C, H, W]` → `[B, 512 + C, (H − 1)/2, (W − 1)/2]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3_2.forward(self.branch3x3_1.forward(x.clone()));
        let b7 = [&self.branch7x7x3_1, &self.branch7x7x3_2, &self.branch7x7x3_3, &self.branch7x7x3_4]
            .iter()
            .fold(x.clone(), |h, c| c.forward(h));
        Tensor::cat(vec![b3, b7, max_pool_3x3_s2(x)], 1)
    }
}

/// `FIDInceptionE_1/2` (Mixed_7b, 7c), expanded filter banks: 1×1; 1×1 → (1×3 ‖ 3×1);
/// 1×1 → 3×3 → (1×3 ‖ 3×1); pool → 1×1.
#[derive(Module, Debug)]
pub struct InceptionE {
    pub branch1x1: BasicConv2d,
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2a: BasicConv2d,
    pub branch3x3_2b: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3a: BasicConv2d,
    pub branch3x3dbl_3b: BasicConv2d,
    pub branch_pool: BasicConv2d,
    /// The pool in front of the pool branch: TF average in `FIDInceptionE_1` (Mixed_7b),
    /// 3×3 stride-1 max in `FIDInceptionE_2` (Mixed_7c), as the TF graph has it.
    pub max_pool: bool,
}

impl InceptionE {
    fn new(c_in: usize, max_pool: bool, device: &Device) -> Self {
        Self {
            branch1x1: BasicConv2d::square(c_in, 320, 1, device),
            branch3x3_1: BasicConv2d::square(c_in, 384, 1, device),
            branch3x3_2a: BasicConv2d::line(384, 384, 3, true, device),
            branch3x3_2b: BasicConv2d::line(384, 384, 3, false, device),
            branch3x3dbl_1: BasicConv2d::square(c_in, 448, 1, device),
            branch3x3dbl_2: BasicConv2d::square(448, 384, 3, device),
            branch3x3dbl_3a: BasicConv2d::line(384, 384, 3, true, device),
            branch3x3dbl_3b: BasicConv2d::line(384, 384, 3, false, device),
            branch_pool: BasicConv2d::square(c_in, 192, 1, device),
            max_pool,
        }
    }

    /// `[B, C, H, W]` → `[B, 2048, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let h = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(vec![self.branch3x3_2a.forward(h.clone()), self.branch3x3_2b.forward(h)], 1);
        let h = self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(vec![self.branch3x3dbl_3a.forward(h.clone()), self.branch3x3dbl_3b.forward(h)], 1);
        let pooled = match self.max_pool {
            true => max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1])),
            false => avg_pool_3x3_tf(x),
        };
        Tensor::cat(vec![b1, b3, bd, self.branch_pool.forward(pooled)], 1)
    }
}

/// The FID Inception-v3 up to its 2048-d average-pooled features (pytorch-fid's
/// `InceptionV3([3])`). The 1008-way classifier `fc` of the weights file is not part of it.
#[derive(Module, Debug)]
pub struct FidInception {
    pub conv2d_1a_3x3: BasicConv2d,
    pub conv2d_2a_3x3: BasicConv2d,
    pub conv2d_2b_3x3: BasicConv2d,
    pub conv2d_3b_1x1: BasicConv2d,
    pub conv2d_4a_3x3: BasicConv2d,
    pub mixed_5b: InceptionA,
    pub mixed_5c: InceptionA,
    pub mixed_5d: InceptionA,
    pub mixed_6a: InceptionB,
    pub mixed_6b: InceptionC,
    pub mixed_6c: InceptionC,
    pub mixed_6d: InceptionC,
    pub mixed_6e: InceptionC,
    pub mixed_7a: InceptionD,
    pub mixed_7b: InceptionE,
    pub mixed_7c: InceptionE,
}

impl FidInception {
    /// The architecture with freshly initialised weights; load real ones with
    /// [`Pretrained::INCEPTION`](super::Pretrained::INCEPTION).
    pub fn new(device: &Device) -> Self {
        Self {
            conv2d_1a_3x3: BasicConv2d::new(3, 32, [3, 3], 2, [0, 0], device),
            conv2d_2a_3x3: BasicConv2d::new(32, 32, [3, 3], 1, [0, 0], device),
            conv2d_2b_3x3: BasicConv2d::square(32, 64, 3, device),
            conv2d_3b_1x1: BasicConv2d::square(64, 80, 1, device),
            conv2d_4a_3x3: BasicConv2d::new(80, 192, [3, 3], 1, [0, 0], device),
            mixed_5b: InceptionA::new(192, 32, device),
            mixed_5c: InceptionA::new(256, 64, device),
            mixed_5d: InceptionA::new(288, 64, device),
            mixed_6a: InceptionB::new(288, device),
            mixed_6b: InceptionC::new(768, 128, device),
            mixed_6c: InceptionC::new(768, 160, device),
            mixed_6d: InceptionC::new(768, 160, device),
            mixed_6e: InceptionC::new(768, 192, device),
            mixed_7a: InceptionD::new(768, device),
            mixed_7b: InceptionE::new(1280, false, device),
            mixed_7c: InceptionE::new(2048, true, device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, 3, 299, 299]`, RGB in [−1, 1]
    /// - returns `[B, 2048]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.conv2d_1a_3x3.forward(x); // [B, 32, 149, 149]
        let x = self.conv2d_2b_3x3.forward(self.conv2d_2a_3x3.forward(x)); // [B, 64, 147, 147]
        let x = max_pool_3x3_s2(x); // [B, 64, 73, 73]
        let x = self.conv2d_4a_3x3.forward(self.conv2d_3b_1x1.forward(x)); // [B, 192, 71, 71]
        let x = max_pool_3x3_s2(x); // [B, 192, 35, 35]
        let x = self.mixed_5d.forward(self.mixed_5c.forward(self.mixed_5b.forward(x))); // [B, 288, 35, 35]
        let x = self.mixed_6a.forward(x); // [B, 768, 17, 17]
        let x = [&self.mixed_6b, &self.mixed_6c, &self.mixed_6d, &self.mixed_6e].iter().fold(x, |x, m| m.forward(x));
        let x = self.mixed_7c.forward(self.mixed_7b.forward(self.mixed_7a.forward(x))); // [B, 2048, 8, 8]
        let [b, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([b, c])
    }

    /// FID features of images as pytorch-fid computes them: bilinear resize to 299×299
    /// (PyTorch's `align_corners=False`, no antialiasing), then `2x − 1`.
    ///
    /// # Shapes
    /// - `images`: `[B, 3, H, W]`, RGB in [0, 1]
    /// - returns `[B, 2048]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let x = resize_bilinear(images, INPUT_SIZE, SampleGrid::HalfPixel);
        self.forward(x.mul_scalar(2.0).sub_scalar(1.0))
    }
}
