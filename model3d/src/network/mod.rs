//! The SiD2 Residual U-ViT for clips `[batch, frames, channels, height, width]`.

mod blocks;
mod config;
pub mod conv;
mod count;
mod embedding;
pub mod linear;
pub mod patch;
pub mod precision;
mod rope;
mod uvit;

pub use config::{AttentionImpl, BlockKind, Skips, UViTConfig};
pub use blocks::conv3x3_layer;
pub use conv::ConvImpl;
pub use linear::LinearImpl;
pub use count::{Cost, cost};
pub use precision::{Precision, compute_copy};
pub use uvit::UViT;
