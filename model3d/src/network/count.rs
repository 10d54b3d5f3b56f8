//! Analytic parameter and FLOP counts of the Residual U-ViT, for `sid2 info` and MFU figures.
//! FLOPs count multiply-adds as two; norms, activations and element-wise ops are left out, as in
//! the usual transformer FLOP accounting (Kaplan et al. 2020, §2.1).

use super::blocks::MLP_RATIO;
use super::config::{BlockKind, Skips, UViTConfig};

/// What one forward pass of one clip costs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub params: u64,
    /// FLOPs of one forward pass for one clip of `frames × height × width`.
    pub forward_flops: f64,
    /// Of which attention score and mixing matmuls (`QKᵀ` and `AV`).
    pub attention_flops: f64,
}

impl Cost {
    /// Training FLOPs per clip: forward plus a backward of twice the forward.
    pub fn train_flops(&self) -> f64 {
        3.0 * self.forward_flops
    }
}

fn res_block(c: u64, e: u64, groups_affine: bool) -> u64 {
    let norm1 = if groups_affine { 2 * c } else { 0 };
    norm1 + (9 * c * c + c) + (e * 2 * c + 2 * c) + (9 * c * c + c)
}

fn transformer_block(c: u64, e: u64, heads: u64) -> u64 {
    let m = MLP_RATIO as u64;
    let head_dim = c / heads;
    c + (e * 2 * c + 2 * c) + (c * (3 + m) * c + (3 + m) * c) + 2 * head_dim + (c * c + c) + (m * c * c + c)
}

fn temporal_block(c: u64, e: u64, heads: u64) -> u64 {
    c + (e * 2 * c + 2 * c) + (3 * c * c + 3 * c) + 2 * (c / heads) + (c * c + c)
}

/// Counts for `config` on clips of `frames × height × width` pixels.
pub fn cost(config: &UViTConfig, [frames, height, width]: [usize; 3]) -> Cost {
    let ch: Vec<u64> = config.channels.iter().map(|&c| c as u64).collect();
    let (p, e, cin, t) = (config.patch_size as u64, config.emb_channels as u64, config.in_channels as u64, frames as u64);
    let (heads, f) = (config.heads as u64, config.fourier_features as u64);
    let last = ch.len() - 1;
    // Tokens per level: (H/p / 2^i)·(W/p / 2^i) per frame.
    let tokens = |level: usize| ((height as u64 / p) >> level) * ((width as u64 / p) >> level);

    let mut params = (cin * ch[0] * p * p + ch[0]) + (ch[0] * cin * p * p + cin);
    let mut macs = 2.0 * (t * tokens(0) * cin * p * p * ch[0]) as f64;
    let mut attention_macs = 0.0;

    params += f * e + e + e * e + e;
    macs += (t * (f * e + e * e)) as f64;
    if config.num_classes > 0 {
        params += (config.num_classes as u64 + 1) * e;
    }

    let mut level_blocks = |level: usize, count: usize, params: &mut u64, macs: &mut f64| {
        let (c, n) = (ch[level], t * tokens(level));
        for _ in 0..count {
            match config.kinds[level] {
                BlockKind::Res => {
                    *params += res_block(c, e, true);
                    *macs += (2 * 9 * c * c * n + t * e * 2 * c) as f64;
                    if config.temporal_at(level) {
                        *params += temporal_block(c, e, heads);
                        *macs += (4 * c * c * n + t * e * 2 * c) as f64;
                        // QKᵀ and AV over the T frames at each of the level's positions.
                        let attn = 2.0 * (t * t) as f64 * tokens(level) as f64 * c as f64;
                        *macs += attn;
                        attention_macs += attn;
                    }
                }
                BlockKind::Transformer => {
                    *params += transformer_block(c, e, heads);
                    let m = MLP_RATIO as u64;
                    *macs += ((3 + m) * c * c * n + c * c * n + m * c * c * n + t * e * 2 * c) as f64;
                    let attn = 2.0 * (n as f64) * (n as f64) * c as f64; // QKᵀ and AV
                    *macs += attn;
                    attention_macs += attn;
                }
            }
        }
    };
    for i in 0..last {
        // Encoder and decoder blocks, a down conv (with bias) and an up conv (without).
        level_blocks(i, 2 * config.blocks[i], &mut params, &mut macs);
        params += 9 * ch[i] * ch[i + 1] + ch[i + 1] + 9 * ch[i + 1] * ch[i];
        macs += (2 * 9 * ch[i] * ch[i + 1] * t * tokens(i + 1)) as f64;
        if config.skips == Skips::Blocks {
            // One [2C → C] skip merge per decoder block.
            let merges = config.blocks[i] as u64;
            params += merges * (2 * ch[i] * ch[i] + ch[i]);
            macs += (merges * 2 * ch[i] * ch[i] * t * tokens(i)) as f64;
        }
    }
    level_blocks(last, config.mid_blocks, &mut params, &mut macs);
    Cost { params, forward_flops: 2.0 * macs, attention_flops: 2.0 * attention_macs }
}
