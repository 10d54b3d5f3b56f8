//! The Residual U-ViT (SiD2, method.md §3.2 and §6.2): one residual skip per level,
//! `h = up(h − after_down) + before_down`, no per-block skips; or, as the baseline SiD2 compares
//! against (`model.skips = "blocks"`), SiD's U-ViT with a concatenated skip per block.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::blocks::{Downsample, ResBlock, TemporalBlock, TransformerBlock, Upsample, how};
use super::config::{BlockKind, Skips, UViTConfig};
use super::conv::ConvImpl;
use super::embedding::ConditionEmbedding;
use super::patch;
use super::rope::Rope;

/// The blocks of one level: ResBlocks, each followed by a temporal block when the level has
/// temporal attention, or Transformer blocks (the other lists are empty).
#[derive(Module, Debug)]
pub struct LevelBlocks {
    pub res: Vec<ResBlock>,
    pub temporal: Vec<TemporalBlock>,
    pub transformer: Vec<TransformerBlock>,
}

impl LevelBlocks {
    fn new(config: &UViTConfig, level: usize, count: usize, device: &Device) -> Self {
        let (c, e, p) = (config.channels[level], config.emb_channels, config.dropout_at(level));
        match config.kinds[level] {
            BlockKind::Res => Self {
                res: (0..count).map(|_| ResBlock::new(c, e, config.norm_groups, p, config.conv, device)).collect(),
                temporal: match config.temporal_at(level) {
                    true => (0..count).map(|_| TemporalBlock::new(c, e, config.heads, config.attention, config.linear, device)).collect(),
                    false => Vec::new(),
                },
                transformer: Vec::new(),
            },
            BlockKind::Transformer => Self {
                res: Vec::new(),
                temporal: Vec::new(),
                transformer: (0..count).map(|_| TransformerBlock::new(c, e, config.heads, p, config.attention, config.linear, device)).collect(),
            },
        }
    }

    /// # Shapes
    /// - `h`: `[B·T, C, H, W]`, `emb`: `[B, T, E]`; returns the shape of `h`
    fn forward(&self, mut h: Tensor<4>, emb: &Tensor<3>, frames: usize) -> Tensor<4> {
        let [n, c, height, width] = h.dims();
        let b = n / frames;
        if !self.res.is_empty() {
            let [_, _, e] = emb.dims();
            let frame_emb = emb.clone().reshape([n, e]);
            let rope = self.temporal.first().map(|t| Rope::temporal(c / t.heads, frames, &h.device()));
            for (i, block) in self.res.iter().enumerate() {
                h = block.forward(h, frame_emb.clone());
                if let (Some(temporal), Some(rope)) = (self.temporal.get(i), &rope) {
                    h = temporal.forward(h, emb.clone(), rope);
                }
            }
        }
        if let Some(first) = self.transformer.first() {
            let rope = Rope::new(c / first.heads, [frames, height, width], &h.device());
            // [B·T, C, H, W] -> [B, T, H·W, C]: all tokens of the clip attend jointly.
            let mut tokens = h.reshape([b, frames, c, height * width]).swap_dims(2, 3);
            for block in &self.transformer {
                tokens = block.forward(tokens, emb.clone(), &rope);
            }
            h = tokens.swap_dims(2, 3).reshape([n, c, height, width]);
        }
        h
    }
}

impl LevelBlocks {
    fn len(&self) -> usize {
        self.res.len() + self.transformer.len()
    }

    /// Block `i` alone (with its temporal block), for per-block skips.
    ///
    /// # Shapes
    /// - `h`: `[B·T, C, H, W]`, `emb`: `[B, T, E]`; returns the shape of `h`
    fn forward_one(&self, i: usize, h: Tensor<4>, emb: &Tensor<3>, frames: usize) -> Tensor<4> {
        let [n, c, height, width] = h.dims();
        if let Some(block) = self.res.get(i) {
            let [_, _, e] = emb.dims();
            let h = block.forward(h, emb.clone().reshape([n, e]));
            return match self.temporal.get(i) {
                Some(temporal) => {
                    let rope = Rope::temporal(c / temporal.heads, frames, &h.device());
                    temporal.forward(h, emb.clone(), &rope)
                }
                None => h,
            };
        }
        let block = &self.transformer[i];
        let rope = Rope::new(c / block.heads, [frames, height, width], &h.device());
        let tokens = h.reshape([n / frames, frames, c, height * width]).swap_dims(2, 3);
        block.forward(tokens, emb.clone(), &rope).swap_dims(2, 3).reshape([n, c, height, width])
    }
}

/// The linear map `[h, skip] → C` over channels that merges a skip into a decoder block's
/// input, initialised as `[0 | I]` so that it passes the skip through: with zero-initialised
/// residual branches the network is then the identity from patch embedding to un-embedding, as
/// the Residual U-ViT is.
fn skip_merge(c: usize, device: &Device) -> Linear {
    let mut merge = LinearConfig::new(2 * c, c).with_initializer(Initializer::Zeros).init(device);
    // burn stores a linear's weight as [d_in, d_out]: rows c..2c read the skip.
    let weight = Tensor::cat(vec![Tensor::zeros([c, c], device), Tensor::eye(c, device)], 0);
    merge.weight = Param::from_tensor(weight);
    merge
}

/// `merge([h, skip])` over the channels of `[N, C, H, W]` tensors, as one 2-D matmul
/// `[N·H·W, 2C] · W [2C, C]` (a broadcast batched matmul takes burn-flex's slow path).
fn merge_skip(merge: &Linear, h: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
    let [n, c, height, width] = h.dims();
    let rows = Tensor::cat(vec![h, skip], 1).permute([0, 2, 3, 1]).reshape([n * height * width, 2 * c]);
    let mut out = rows.matmul(merge.weight.val()); // [N·H·W, C]
    if let Some(bias) = &merge.bias {
        out = out + bias.val().unsqueeze_dim::<2>(0);
    }
    out.reshape([n, height, width, c]).permute([0, 3, 1, 2])
}

#[derive(Module, Debug)]
pub struct EncoderLevel {
    pub blocks: LevelBlocks,
    pub down: Downsample,
}

#[derive(Module, Debug)]
pub struct DecoderLevel {
    pub up: Upsample,
    pub blocks: LevelBlocks,
    /// `model.skips = "blocks"`: one skip merge per block (else none).
    pub merges: Vec<Linear>,
}

/// Residual U-ViT. Parameter names follow the architecture: `encoder.1.blocks.res.2.conv1`.
#[derive(Module, Debug)]
pub struct UViT {
    pub patch: Conv2d,
    pub cond: ConditionEmbedding,
    pub encoder: Vec<EncoderLevel>,
    pub mid: LevelBlocks,
    /// `decoder[i]` mirrors `encoder[i]`; it runs from the deepest level up.
    pub decoder: Vec<DecoderLevel>,
    pub unpatch: ConvTranspose2d,
    pub num_classes: usize,
    /// `model.conv = "matmul"`: the patch (un-)embedding as matmuls too (patch.rs).
    pub matmul_conv: bool,
    /// `model.skips = "blocks"`: a concatenated skip per block instead of one per level.
    pub block_skips: bool,
}

impl UViT {
    /// Builds the network; `config` must have passed [`UViTConfig::validate`].
    pub fn new(config: &UViTConfig, device: &Device) -> Self {
        let (p, ch, last) = (config.patch_size, &config.channels, config.levels() - 1);
        Self {
            patch: Conv2dConfig::new([config.in_channels, ch[0]], [p, p]).with_stride([p, p]).init(device),
            cond: ConditionEmbedding::new(config.fourier_features, config.emb_channels, config.num_classes, device),
            encoder: (0..last)
                .map(|i| EncoderLevel {
                    blocks: LevelBlocks::new(config, i, config.blocks[i], device),
                    down: Downsample::new(ch[i], ch[i + 1], config.conv, device),
                })
                .collect(),
            mid: LevelBlocks::new(config, last, config.mid_blocks, device),
            decoder: (0..last)
                .map(|i| DecoderLevel {
                    up: Upsample::new(ch[i + 1], ch[i], config.conv, device),
                    blocks: LevelBlocks::new(config, i, config.blocks[i], device),
                    merges: match config.skips {
                        Skips::Levels => Vec::new(),
                        Skips::Blocks => (0..config.blocks[i]).map(|_| skip_merge(ch[i], device)).collect(),
                    },
                })
                .collect(),
            unpatch: ConvTranspose2dConfig::new([ch[0], config.in_channels], [p, p])
                .with_stride([p, p])
                .with_initializer(Initializer::Zeros)
                .init(device),
            num_classes: config.num_classes,
            matmul_conv: config.conv == ConvImpl::Matmul,
            block_skips: config.skips == Skips::Blocks,
        }
    }

    /// The class index that means "no class" (for guidance), if the model is class-conditional.
    pub fn null_label(&self) -> Option<i64> {
        (self.num_classes > 0).then_some(self.num_classes as i64)
    }

    /// The network computes in its weights' type (f32, or bf16 for mixed precision): `x` is cast
    /// to it on entry and the prediction comes back in it.
    ///
    /// # Shapes
    /// - `x`: `[B, T, C, H, W]` (an image is `T = 1`), `logsnr`: `[B, T]`, `labels`: `[B]`
    /// - returns `[B, T, C, H, W]`, the prediction (v by default)
    pub fn forward(&self, x: Tensor<5>, logsnr: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<5> {
        let [b, t, c, h, w] = x.dims();
        let x = x.cast(self.patch.weight.val().dtype());
        let emb = self.cond.forward(logsnr, labels); // [B, T, E]
        let hidden = patch::embed(&self.patch, x.reshape([b * t, c, h, w]), how(self.matmul_conv)); // [B·T, C0, H/p, W/p]
        let hidden = self.body(hidden, &emb, t);
        patch::unembed(&self.unpatch, hidden, how(self.matmul_conv)).reshape([b, t, c, h, w])
    }

    /// Everything between patch embedding and un-embedding (method.md §3.2 pseudo-code).
    ///
    /// # Shapes
    /// - `h`: `[B·T, C0, H/p, W/p]`, `emb`: `[B, T, E]`; returns the shape of `h`
    pub fn body(&self, h: Tensor<4>, emb: &Tensor<3>, frames: usize) -> Tensor<4> {
        if self.block_skips {
            return self.body_with_block_skips(h, emb, frames);
        }
        let mut h = h;
        let mut skips = Vec::with_capacity(self.encoder.len());
        for level in &self.encoder {
            h = level.blocks.forward(h, emb, frames);
            let before = h.clone();
            h = level.down.forward(h);
            skips.push((before, h.clone()));
        }
        h = self.mid.forward(h, emb, frames);
        for (level, (before, after)) in self.decoder.iter().zip(skips).rev() {
            h = level.up.forward(h - after) + before;
            h = level.blocks.forward(h, emb, frames);
        }
        h
    }

    /// The SiD U-ViT body: each encoder block's output is a skip, taken in reverse order by
    /// the mirror decoder blocks, `h = block(merge([h, skip]))`; the decoder level starts from
    /// `up(h)` alone.
    fn body_with_block_skips(&self, mut h: Tensor<4>, emb: &Tensor<3>, frames: usize) -> Tensor<4> {
        let mut skips = Vec::new();
        for level in &self.encoder {
            let mut outputs = Vec::with_capacity(level.blocks.len());
            for i in 0..level.blocks.len() {
                h = level.blocks.forward_one(i, h, emb, frames);
                outputs.push(h.clone());
            }
            h = level.down.forward(h);
            skips.push(outputs);
        }
        h = self.mid.forward(h, emb, frames);
        for (level, outputs) in self.decoder.iter().zip(skips).rev() {
            h = level.up.forward(h);
            for (i, skip) in outputs.into_iter().rev().enumerate() {
                h = level.blocks.forward_one(i, merge_skip(&level.merges[i], h, skip), emb, frames);
            }
        }
        h
    }
}
