//! The blocks of the Residual U-ViT (method.md §3.2). Every residual branch ends in a
//! zero-initialised projection, so each block starts as the identity.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::DType;

use crate::activation::silu;
use crate::avg_pool::avg_pool2x2;
use crate::group_norm_silu::group_norm_silu;
use crate::rms_norm::rms_norm;
use crate::rms_norm_film::rms_norm_film;
use super::config::AttentionImpl;
use super::conv::{ConvImpl, conv3x3};
use super::linear::{LinearImpl, linear, linear_parts};
use super::rope::Rope;

/// The convolution form a module's `matmul_conv` flag stands for (modules keep a flag: a
/// `Module` field must be a module or a plain value).
pub(super) fn how(matmul: bool) -> ConvImpl {
    if matmul { ConvImpl::Matmul } else { ConvImpl::Burn }
}

fn linear_how(chunked: bool) -> LinearImpl {
    if chunked { LinearImpl::Chunked } else { LinearImpl::Burn }
}

pub fn conv3x3_layer(c_in: usize, c_out: usize, bias: bool, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).with_bias(bias).init(device)
}

fn zero_conv3x3(c: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c, c], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Zeros)
        .init(device)
}

fn zero_linear(c_in: usize, c_out: usize, device: &Device) -> Linear {
    LinearConfig::new(c_in, c_out).with_initializer(Initializer::Zeros).init(device)
}

/// Runs a normalisation in f32 whatever the activations' type and returns that type, as
/// mixed-precision autocast does: bf16 cannot hold the statistics of wide activations.
/// The norms' own parameters stay f32 under [`super::precision::compute_copy`].
fn in_f32<const D: usize>(x: Tensor<D>, norm: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    norm(x.cast(DType::F32)).cast(dtype)
}

/// Softmax attention with scale `1/√D` over `[B, heads, N, D]`.
fn attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, flash: bool) -> Tensor<4> {
    if flash { crate::attention::attention(q, k, v) } else { crate::attention::decomposed(q, k, v) }
}

/// ResBlock: `h = Conv3(SiLU(GN(x)))`, `h = GN(h)(1 + scale) + shift`, `x + ZeroConv3(SiLU(h))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub film: Linear,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub dropout: Dropout,
    /// 3×3 convolutions as matmuls (else burn's conv2d).
    pub matmul_conv: bool,
}

impl ResBlock {
    pub fn new(c: usize, emb: usize, groups: usize, dropout: f64, conv: ConvImpl, device: &Device) -> Self {
        Self {
            matmul_conv: conv == ConvImpl::Matmul,
            norm1: GroupNormConfig::new(groups, c).with_epsilon(1e-6).init(device),
            conv1: conv3x3_layer(c, c, true, device),
            film: LinearConfig::new(emb, 2 * c).init(device),
            norm2: GroupNormConfig::new(groups, c).with_epsilon(1e-6).with_affine(false).init(device),
            conv2: zero_conv3x3(c, device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// # Shapes
    /// - `x`: `[N, C, H, W]` with frames folded into `N = B·T`
    /// - `emb`: `[N, E]`
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        let [_, c, _, _] = x.dims();
        let h = conv3x3(&self.conv1, group_norm_silu(&self.norm1, x.clone(), None), how(self.matmul_conv));
        let film = self.film.forward(emb);
        let (scale, shift) = (film.clone().narrow(1, 0, c), film.narrow(1, c, c));
        let h = group_norm_silu(&self.norm2, h, Some((scale, shift)));
        x + conv3x3(&self.conv2, self.dropout.forward(h), how(self.matmul_conv))
    }
}

/// ViT-22B-style parallel Transformer block: one fused projection to q, k, v and the MLP hidden
/// layer, QK-RMSNorm, 3-D RoPE, joint attention over all tokens, zero-initialised outputs.
#[derive(Module, Debug)]
pub struct TransformerBlock {
    pub norm: RmsNorm,
    pub film: Linear,
    pub qkv_mlp: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    pub attn_out: Linear,
    pub mlp_out: Linear,
    pub dropout: Dropout,
    pub heads: usize,
    /// The project's attention operation (else burn's decomposed one).
    pub flash: bool,
    /// Token-major linears as chunked matmuls (`LinearImpl::Chunked`).
    pub chunked_linear: bool,
}

/// MLP hidden width as a multiple of the block width.
pub const MLP_RATIO: usize = 4;

impl TransformerBlock {
    pub fn new(c: usize, emb: usize, heads: usize, dropout: f64, attention: AttentionImpl, linear: LinearImpl, device: &Device) -> Self {
        let head_dim = c / heads;
        Self {
            flash: attention == AttentionImpl::Flash,
            chunked_linear: linear == LinearImpl::Chunked,
            norm: RmsNormConfig::new(c).with_epsilon(1e-6).init(device),
            film: LinearConfig::new(emb, 2 * c).init(device),
            qkv_mlp: LinearConfig::new(c, 3 * c + MLP_RATIO * c).init(device),
            q_norm: RmsNormConfig::new(head_dim).with_epsilon(1e-6).init(device),
            k_norm: RmsNormConfig::new(head_dim).with_epsilon(1e-6).init(device),
            attn_out: zero_linear(c, c, device),
            mlp_out: zero_linear(MLP_RATIO * c, c, device),
            dropout: DropoutConfig::new(dropout).init(),
            heads,
        }
    }

    /// # Shapes
    /// - `x`: `[B, T, S, C]` with `S = H·W` tokens per frame
    /// - `emb`: `[B, T, E]`, one conditioning vector per frame
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<3>, rope: &Rope) -> Tensor<4> {
        let [b, t, s, c] = x.dims();
        let (heads, head_dim, n) = (self.heads, c / self.heads, t * s);
        let film = self.film.forward(emb).reshape([b, t, 1, 2 * c]);
        let (scale, shift) = (film.clone().narrow(3, 0, c), film.narrow(3, c, c));
        let u = rms_norm_film(&self.norm, x.clone(), scale, shift).reshape([b, n, c]);
        let how = linear_how(self.chunked_linear);
        let [q, k, v, mlp]: [Tensor<3>; 4] = linear_parts(&self.qkv_mlp, u, &[c, c, c, MLP_RATIO * c], how).try_into().expect("four parts");
        // Heads as views of the token-major projections, [B, N, h, Dh] seen as [B, h, N, Dh]; the
        // QK norms act on each head's row before the view, so nothing is copied into head order.
        let split_heads = |part: Tensor<3>| part.reshape([b, n, heads, head_dim]);
        let q = rope.apply(in_f32(split_heads(q), |q| rms_norm(&self.q_norm, q)).swap_dims(1, 2));
        let k = rope.apply(in_f32(split_heads(k), |k| rms_norm(&self.k_norm, k)).swap_dims(1, 2));
        let attn = attend(q, k, split_heads(v).swap_dims(1, 2), self.flash); // [B, h, N, Dh]
        let attn = attn.swap_dims(1, 2).reshape([b, n, c]);
        let mlp = silu(mlp);
        let update = linear(&self.attn_out, attn, how) + linear(&self.mlp_out, self.dropout.forward(mlp), how);
        x + update.reshape([b, t, s, c])
    }
}

/// Attention across the frames at each spatial position (factorised space-time attention, Ho et
/// al. 2022 "Video Diffusion Models" §3) with a rotary time position: RMSNorm with FiLM from the
/// frame's conditioning, one q/k/v projection, QK-RMSNorm, and a zero-initialised output
/// projection, so the block starts as the identity. A target frame can copy detail from the
/// context frames at the ResBlock levels' full resolution, where joint attention is too costly.
#[derive(Module, Debug)]
pub struct TemporalBlock {
    pub norm: RmsNorm,
    pub film: Linear,
    pub qkv: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    pub out: Linear,
    pub heads: usize,
    /// The project's attention operation (else burn's decomposed one).
    pub flash: bool,
    /// Token-major linears as chunked matmuls (`LinearImpl::Chunked`).
    pub chunked_linear: bool,
}

impl TemporalBlock {
    pub fn new(c: usize, emb: usize, heads: usize, attention: AttentionImpl, linear: LinearImpl, device: &Device) -> Self {
        let head_dim = c / heads;
        Self {
            flash: attention == AttentionImpl::Flash,
            chunked_linear: linear == LinearImpl::Chunked,
            norm: RmsNormConfig::new(c).with_epsilon(1e-6).init(device),
            film: LinearConfig::new(emb, 2 * c).init(device),
            qkv: LinearConfig::new(c, 3 * c).init(device),
            q_norm: RmsNormConfig::new(head_dim).with_epsilon(1e-6).init(device),
            k_norm: RmsNormConfig::new(head_dim).with_epsilon(1e-6).init(device),
            out: zero_linear(c, c, device),
            heads,
        }
    }

    /// # Shapes
    /// - `x`: `[B·T, C, H, W]` with frames folded into the batch
    /// - `emb`: `[B, T, E]`; returns the shape of `x`
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<3>, rope: &Rope) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let [b, t, _] = emb.dims();
        let (heads, head_dim, s) = (self.heads, c / self.heads, h * w);
        // [B·T, C, H, W] -> [B, S, T, C]: one sequence of T frames per position.
        let tokens = x.clone().reshape([b, t, c, s]).permute([0, 3, 1, 2]);
        let film = self.film.forward(emb).reshape([b, 1, t, 2 * c]);
        let (scale, shift) = (film.clone().narrow(3, 0, c), film.narrow(3, c, c));
        let u = rms_norm_film(&self.norm, tokens, scale, shift).reshape([b * s, t, c]);
        let how = linear_how(self.chunked_linear);
        let [q, k, v]: [Tensor<3>; 3] = linear_parts(&self.qkv, u, &[c, c, c], how).try_into().expect("three parts"); // [B·S, T, C]
        // Heads as views of the projections, as in the TransformerBlock.
        let split_heads = |part: Tensor<3>| part.reshape([b * s, t, heads, head_dim]); // [B·S, T, h, Dh]
        let q = rope.apply(in_f32(split_heads(q), |q| rms_norm(&self.q_norm, q)).swap_dims(1, 2));
        let k = rope.apply(in_f32(split_heads(k), |k| rms_norm(&self.k_norm, k)).swap_dims(1, 2));
        let attn = attend(q, k, split_heads(v).swap_dims(1, 2), self.flash); // [B·S, h, T, Dh]
        let update = linear(&self.out, attn.swap_dims(1, 2).reshape([b * s, t, c]), how); // [B·S, T, C]
        // [B, S, T, C] -> [B·T, C, H, W]
        x + update.reshape([b, s, t, c]).permute([0, 2, 3, 1]).reshape([n, c, h, w])
    }
}

/// Average-pool 2×2, then a 3×3 conv to the next width.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub matmul_conv: bool,
}

impl Downsample {
    pub fn new(c_in: usize, c_out: usize, conv: ConvImpl, device: &Device) -> Self {
        Self { conv: conv3x3_layer(c_in, c_out, true, device), matmul_conv: conv == ConvImpl::Matmul }
    }

    /// `[N, C_in, H, W] -> [N, C_out, H/2, W/2]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pooled = avg_pool2x2(x);
        conv3x3(&self.conv, pooled, how(self.matmul_conv))
    }
}

/// A 3×3 conv to the previous width (no bias, so that zero maps to zero), then nearest ×2.
#[derive(Module, Debug)]
pub struct Upsample {
    pub conv: Conv2d,
    pub matmul_conv: bool,
}

impl Upsample {
    pub fn new(c_in: usize, c_out: usize, conv: ConvImpl, device: &Device) -> Self {
        Self { conv: conv3x3_layer(c_in, c_out, false, device), matmul_conv: conv == ConvImpl::Matmul }
    }

    /// `[N, C_in, H, W] -> [N, C_out, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = conv3x3(&self.conv, x, how(self.matmul_conv));
        let [n, c, hh, ww] = h.dims();
        h.reshape([n, c, hh, 1, ww, 1]).expand([n, c, hh, 2, ww, 2]).reshape([n, c, 2 * hh, 2 * ww])
    }
}
