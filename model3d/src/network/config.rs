//! The Residual U-ViT's shape, as written in a config file.

use serde::{Deserialize, Serialize};

use super::conv::ConvImpl;
use super::linear::LinearImpl;
use crate::config_error::ConfigError;

/// What the blocks of one level are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// 2-D ResBlocks applied per frame (frames folded into the batch).
    Res,
    /// Transformer blocks with joint space-time attention over all tokens of the level.
    Transformer,
}

/// How the decoder receives the encoder's activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skips {
    /// SiD2's Residual U-ViT: one residual skip per level, `h = up(h − after_down) + before_down`
    /// (method.md §3.2).
    #[default]
    Levels,
    /// The SiD U-ViT baseline (Hoogeboom et al. 2023, a U-Net's skips): every encoder block's
    /// output is concatenated to the input of its mirror decoder block and projected back to the
    /// level's width by a linear map, which starts as passing the skip through.
    Blocks,
}

/// How attention is computed (the result is the same up to rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionImpl {
    /// The project's blockwise operation with its own backward pass (crate::attention).
    #[default]
    Flash,
    /// burn's decomposed attention, every score materialised (for comparisons).
    Decomposed,
}

/// Residual U-ViT (SiD2, method.md §3.2): `levels` resolutions, the last being the middle stack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UViTConfig {
    /// Input/output channels (3 for RGB).
    #[serde(default = "rgb")]
    pub in_channels: usize,
    /// Patch size p of "UViT/p".
    pub patch_size: usize,
    /// Width per level; the last entry is the middle stack's width.
    pub channels: Vec<usize>,
    /// Block kind per level, same length as `channels`.
    pub kinds: Vec<BlockKind>,
    /// Blocks per encoder level (the decoder mirrors them); one fewer than `channels`.
    pub blocks: Vec<usize>,
    /// Transformer (or ResBlock) count at the middle level.
    pub mid_blocks: usize,
    /// Width of the conditioning vector.
    pub emb_channels: usize,
    /// Fourier features of 0.125·λ fed to the conditioning MLP.
    #[serde(default = "fourier")]
    pub fourier_features: usize,
    /// Attention heads at every Transformer level.
    pub heads: usize,
    /// Dropout per level (SiD: none at the highest resolution); empty means none.
    #[serde(default)]
    pub dropout: Vec<f64>,
    /// Per level: follow every ResBlock with attention across the frames at each position
    /// (factorised space-time attention, Ho et al. 2022 "Video Diffusion Models" §3), so target
    /// frames can draw on the context frames at full resolution; empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temporal: Vec<bool>,
    /// How attention is computed.
    #[serde(default, skip_serializing_if = "is_flash")]
    pub attention: AttentionImpl,
    /// How 3×3 convolutions and the patch (un-)embedding are computed.
    #[serde(default, skip_serializing_if = "is_burn_conv")]
    pub conv: ConvImpl,
    /// How the Transformer and temporal blocks' token-major linear layers are computed.
    #[serde(default, skip_serializing_if = "is_burn_linear")]
    pub linear: LinearImpl,
    /// One residual skip per level (SiD2) or a concatenated skip per block (SiD's U-ViT).
    #[serde(default, skip_serializing_if = "is_levels")]
    pub skips: Skips,
    /// GroupNorm groups in ResBlocks.
    #[serde(default = "groups")]
    pub norm_groups: usize,
    /// Classes for conditioning; 0 is unconditional. Index `num_classes` is the null class.
    #[serde(default)]
    pub num_classes: usize,
}

fn is_levels(s: &Skips) -> bool {
    *s == Skips::Levels
}
fn is_burn_conv(c: &ConvImpl) -> bool {
    *c == ConvImpl::Burn
}
fn is_burn_linear(l: &LinearImpl) -> bool {
    *l == LinearImpl::Burn
}
fn is_flash(a: &AttentionImpl) -> bool {
    *a == AttentionImpl::Flash
}
fn rgb() -> usize {
    3
}
fn fourier() -> usize {
    256
}
fn groups() -> usize {
    32
}

impl UViTConfig {
    pub fn levels(&self) -> usize {
        self.channels.len()
    }

    pub fn dropout_at(&self, level: usize) -> f64 {
        self.dropout.get(level).copied().unwrap_or(0.0)
    }

    /// Whether the ResBlocks of `level` are each followed by attention across frames.
    pub fn temporal_at(&self, level: usize) -> bool {
        self.temporal.get(level).copied().unwrap_or(false)
    }

    /// Checks every combination the network relies on; errors name keys relative to the
    /// `[model]` section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = self.channels.len();
        if l == 0 {
            return Err(ConfigError::key("channels", "needs at least one level"));
        }
        if self.kinds.len() != l {
            return Err(ConfigError::key("kinds", format!("has {} entries, model.channels has {l}", self.kinds.len())));
        }
        if self.blocks.len() + 1 != l {
            return Err(ConfigError::key("blocks", format!("has {} entries, must be one fewer than model.channels ({l})", self.blocks.len())));
        }
        for (key, len) in [("dropout", self.dropout.len()), ("temporal", self.temporal.len())] {
            if len != 0 && len != l {
                return Err(ConfigError::key(key, format!("has {len} entries, must be empty or match model.channels ({l})")));
            }
        }
        if let Some(p) = self.dropout.iter().find(|p| !(0.0..1.0).contains(*p)) {
            return Err(ConfigError::value("dropout", p, "each entry must be in [0, 1)"));
        }
        for (key, v) in [("in_channels", self.in_channels), ("patch_size", self.patch_size), ("emb_channels", self.emb_channels), ("heads", self.heads), ("norm_groups", self.norm_groups)] {
            if v == 0 {
                return Err(ConfigError::value(key, 0, "must be at least 1"));
            }
        }
        // Far past any network that fits in memory: larger values are typos, and would overflow
        // the parameter and FLOP counts.
        let widths = self.channels.iter().enumerate().map(|(i, &c)| (format!("channels[{i}]"), c, 1 << 16));
        let counts = self.blocks.iter().enumerate().map(|(i, &b)| (format!("blocks[{i}]"), b, 1024));
        let others = [("emb_channels", self.emb_channels, 1 << 16), ("fourier_features", self.fourier_features, 1 << 16), ("heads", self.heads, 1024), ("norm_groups", self.norm_groups, 1 << 16), ("mid_blocks", self.mid_blocks, 1024), ("num_classes", self.num_classes, 1 << 20)];
        for (key, v, max) in widths.chain(counts).chain(others.into_iter().map(|(k, v, m)| (k.to_owned(), v, m))) {
            if v > max {
                return Err(ConfigError::value(key, v, format!("must be at most {max}")));
            }
        }
        if self.fourier_features == 0 || !self.fourier_features.is_multiple_of(2) {
            return Err(ConfigError::value("fourier_features", self.fourier_features, "must be a positive even number"));
        }
        if self.patch_size > 64 || l > 16 {
            return Err(ConfigError::key("patch_size", format!("patch {} with {l} levels: at most 64 and 16 levels", self.patch_size)));
        }
        for (i, (&c, &k)) in self.channels.iter().zip(&self.kinds).enumerate() {
            let bad = |rule: String| Err(ConfigError::value(format!("channels[{i}]"), c, rule));
            if c == 0 {
                return bad("must be at least 1".into());
            }
            let even_heads = c % self.heads == 0 && (c / self.heads).is_multiple_of(2);
            match k {
                BlockKind::Res if c % self.norm_groups != 0 => return bad(format!("a ResBlock level needs a multiple of model.norm_groups ({})", self.norm_groups)),
                BlockKind::Transformer if !even_heads => return bad(format!("a Transformer level needs an even head width (channels / model.heads = {c}/{})", self.heads)),
                BlockKind::Res if self.temporal_at(i) && !even_heads => return bad(format!("temporal attention needs an even head width (channels / model.heads = {c}/{})", self.heads)),
                BlockKind::Transformer if self.temporal_at(i) => {
                    return Err(ConfigError::key(format!("temporal[{i}]"), "a Transformer level already attends jointly over space and time; temporal attention is for ResBlock levels"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The smallest image side this network accepts: patching then one halving per level.
    pub fn size_multiple(&self) -> usize {
        self.patch_size << (self.levels() - 1)
    }

    /// Whether a `side × side` input fits; the error names `data.size`.
    pub fn check_input(&self, side: usize) -> Result<(), ConfigError> {
        let m = self.size_multiple();
        if !side.is_multiple_of(m) {
            return Err(ConfigError::value("data.size", side, format!("must be a multiple of {m} (patch {} and {} downsamplings)", self.patch_size, self.levels() - 1)));
        }
        Ok(())
    }
}
