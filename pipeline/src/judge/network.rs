//! The judge's network: a small pre-activation ResNet (He et al. 2016, "Identity Mappings in
//! Deep Residual Networks") with GroupNorm in place of BatchNorm, so that its outputs never
//! depend on the batch they are scored in. A 3×3 stem, then per stage a 2×2 mean pool and a
//! 3×3 convolution to the stage's width (none at the first stage) and `blocks` residual blocks
//! `x + Conv3(SiLU(GN(Conv3(SiLU(GN(x))))))`; the penultimate features are the mean over pixels
//! of `SiLU(GN(h))`, and the logits a linear map of them.

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use model3d::avg_pool::avg_pool2x2;
use model3d::conv3x3::conv3x3;
use model3d::group_norm_silu::group_norm_silu;
use model3d::network::conv3x3_layer;
use serde::{Deserialize, Serialize};

/// What a judge was built for; stored in its weights file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeShape {
    /// Width of each stage; every stage after the first halves the image side.
    pub widths: Vec<usize>,
    /// Residual blocks per stage.
    pub blocks: usize,
    /// Classes it tells apart, by name (the prepared data set's class folders).
    pub classes: Vec<String>,
    /// The image side it was trained on.
    pub size: usize,
}

/// GroupNorm groups: 8 channels each, as in the ResBlocks of the diffusion network's smallest
/// presets.
const GROUP: usize = 8;

impl JudgeShape {
    /// The parameter count of the network this shape builds.
    pub fn params(&self) -> u64 {
        let (w, b) = (&self.widths, self.blocks as u64);
        let conv = |i: u64, o: u64| 9 * i * o + o;
        let norm = |c: u64| 2 * c;
        let mut total = conv(3, w[0] as u64);
        for (s, &c) in w.iter().enumerate() {
            let c = c as u64;
            if s > 0 {
                total += conv(w[s - 1] as u64, c);
            }
            total += b * (2 * norm(c) + 2 * conv(c, c));
        }
        let last = *w.last().expect("at least one stage") as u64;
        total + norm(last) + last * self.classes.len() as u64 + self.classes.len() as u64
    }

    /// FLOPs of one forward pass of one image (multiply-adds as two; norms left out).
    pub fn forward_flops(&self) -> f64 {
        let mut pixels = (self.size * self.size) as f64;
        let mut flops = 2.0 * 9.0 * 3.0 * self.widths[0] as f64 * pixels;
        for (s, &c) in self.widths.iter().enumerate() {
            if s > 0 {
                pixels /= 4.0;
                flops += 2.0 * 9.0 * (self.widths[s - 1] * c) as f64 * pixels;
            }
            flops += self.blocks as f64 * 2.0 * 2.0 * 9.0 * (c * c) as f64 * pixels;
        }
        flops
    }

    /// The image side must halve cleanly at every stage after the first.
    pub fn size_multiple(&self) -> usize {
        1 << (self.widths.len() - 1)
    }
}

#[derive(Module, Debug)]
pub struct Block {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
}

impl Block {
    fn new(c: usize, device: &Device) -> Self {
        Self {
            norm1: GroupNormConfig::new(c / GROUP, c).init(device),
            conv1: conv3x3_layer(c, c, true, device),
            norm2: GroupNormConfig::new(c / GROUP, c).init(device),
            conv2: conv3x3_layer(c, c, true, device),
        }
    }

    /// `[N, C, H, W]` to the same shape.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = conv(&self.conv1, group_norm_silu(&self.norm1, x.clone(), None));
        x + conv(&self.conv2, group_norm_silu(&self.norm2, h, None))
    }
}

#[derive(Module, Debug)]
pub struct Stage {
    /// The 3×3 convolution after the pool, from the previous stage's width (none at stage 0).
    pub widen: Option<Conv2d>,
    pub blocks: Vec<Block>,
}

#[derive(Module, Debug)]
pub struct Judge {
    pub stem: Conv2d,
    pub stages: Vec<Stage>,
    pub norm: GroupNorm,
    pub head: Linear,
}

fn conv(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv3x3(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

impl Judge {
    /// A fresh network of `shape` (burn's default initialisers).
    pub fn new(shape: &JudgeShape, device: &Device) -> Self {
        let w = &shape.widths;
        let last = *w.last().expect("at least one stage");
        Self {
            stem: conv3x3_layer(3, w[0], true, device),
            stages: w
                .iter()
                .enumerate()
                .map(|(s, &c)| Stage { widen: (s > 0).then(|| conv3x3_layer(w[s - 1], c, true, device)), blocks: (0..shape.blocks).map(|_| Block::new(c, device)).collect() })
                .collect(),
            norm: GroupNormConfig::new(last / GROUP, last).init(device),
            head: LinearConfig::new(last, shape.classes.len()).init(device),
        }
    }

    /// The penultimate features.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]`, values in [−1, 1]; returns `[N, widths.last]`
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = conv(&self.stem, x);
        for stage in &self.stages {
            if let Some(widen) = &stage.widen {
                h = conv(widen, avg_pool2x2(h));
            }
            for block in &stage.blocks {
                h = block.forward(h);
            }
        }
        let [n, c, _, _] = h.dims();
        group_norm_silu(&self.norm, h, None).reshape([n as i32, c as i32, -1]).mean_dim(2).reshape([n, c])
    }

    /// `[N, 3, H, W]` to `[N, classes]` logits, and the features they came from.
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let features = self.features(x);
        (self.head.forward(features.clone()), features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> JudgeShape {
        JudgeShape { widths: vec![8, 16], blocks: 1, classes: vec!["a".into(), "b".into(), "c".into()], size: 8 }
    }

    #[test]
    fn counted_parameters_are_the_built_ones() {
        let device = Device::flex();
        let judge = Judge::new(&shape(), &device);
        assert_eq!(judge.num_params() as u64, shape().params());
    }

    #[test]
    fn shapes_follow_the_stages() {
        let device = Device::flex();
        let judge = Judge::new(&shape(), &device);
        let (logits, features) = judge.forward(Tensor::random([2, 3, 8, 8], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device));
        assert_eq!((logits.dims(), features.dims()), ([2, 3], [2, 16]));
    }
}
