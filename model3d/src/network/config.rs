//! The Residual U-ViT's shape, as written in a config file.

use serde::{Deserialize, Serialize};

/// What the blocks of one level are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// 2-D ResBlocks applied per frame (frames folded into the batch).
    Res,
    /// Transformer blocks with joint space-time attention over all tokens of the level.
    Transformer,
}

/// Residual U-ViT (SiD2, spec §3.2): `levels` resolutions, the last being the middle stack.
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
    /// GroupNorm groups in ResBlocks.
    #[serde(default = "groups")]
    pub norm_groups: usize,
    /// Classes for conditioning; 0 is unconditional. Index `num_classes` is the null class.
    #[serde(default)]
    pub num_classes: usize,
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

    /// Checks every combination the network relies on; errors name the key and the rule.
    pub fn validate(&self) -> Result<(), String> {
        let l = self.channels.len();
        if l == 0 {
            return Err("model.channels: needs at least one level".into());
        }
        if self.kinds.len() != l {
            return Err(format!("model.kinds: has {} entries, model.channels has {l}", self.kinds.len()));
        }
        if self.blocks.len() + 1 != l {
            return Err(format!("model.blocks: has {} entries, must be one fewer than model.channels ({l})", self.blocks.len()));
        }
        if !self.dropout.is_empty() && self.dropout.len() != l {
            return Err(format!("model.dropout: has {} entries, must be empty or match model.channels ({l})", self.dropout.len()));
        }
        if let Some(p) = self.dropout.iter().find(|p| !(0.0..1.0).contains(*p)) {
            return Err(format!("model.dropout: {p} is outside [0, 1)"));
        }
        for (key, v) in [("in_channels", self.in_channels), ("patch_size", self.patch_size), ("emb_channels", self.emb_channels), ("heads", self.heads), ("norm_groups", self.norm_groups)] {
            if v == 0 {
                return Err(format!("model.{key}: must be at least 1"));
            }
        }
        if self.fourier_features == 0 || self.fourier_features % 2 != 0 {
            return Err(format!("model.fourier_features = {}: must be a positive even number", self.fourier_features));
        }
        for (i, (&c, &k)) in self.channels.iter().zip(&self.kinds).enumerate() {
            match k {
                BlockKind::Res if c % self.norm_groups != 0 => {
                    return Err(format!("model.channels[{i}] = {c}: a ResBlock level needs a multiple of model.norm_groups ({})", self.norm_groups));
                }
                BlockKind::Transformer if c % self.heads != 0 || (c / self.heads) % 2 != 0 => {
                    return Err(format!("model.channels[{i}] = {c}: a Transformer level needs an even head width (channels / model.heads = {c}/{})", self.heads));
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

    pub fn check_input(&self, height: usize, width: usize) -> Result<(), String> {
        let m = self.size_multiple();
        if height % m != 0 || width % m != 0 {
            return Err(format!("input {height}x{width}: sides must be multiples of {m} (patch {} and {} downsamplings)", self.patch_size, self.levels() - 1));
        }
        Ok(())
    }
}
