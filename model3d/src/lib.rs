//! SiD2 ("Simpler Diffusion", Hoogeboom et al. 2024) in burn: the logSNR diffusion process, the
//! Residual U-ViT for clips and images, and its samplers. Backend-generic: the device decides.
//!
//! Three parts that never mix: [`schedule`] and [`diffusion`] (process and loss), [`network`]
//! (a pure function of z, λ and the class), and [`sampler`]. The maths each module computes is
//! written out, with its sources, in `docs/method.md`.

pub mod activation;
pub mod attention;
pub mod avg_pool;
pub mod config_error;
pub mod conv3x3;
mod denormals;
mod cpu;
pub mod diffusion;
pub mod group_norm_silu;
pub mod network;
pub mod noise;
pub mod philox;
pub mod rms_norm;
pub mod rms_norm_film;
pub mod rotary;
pub mod sampler;
pub mod schedule;
#[cfg(test)]
mod testing;

pub use config_error::ConfigError;
pub use denormals::flush_denormals;
pub use diffusion::{Diffusion, DiffusionConfig, FrameTimes, LossTerms, LossWeighting, NoisedBatch, Prediction, TimeSampling};
pub use network::{AttentionImpl, BlockKind, ConvImpl, Cost, LinearImpl, Precision, Skips, UViT, UViTConfig};
pub use sampler::{Denoiser, GuidanceInterval, SampleRequest, SampleStats, SamplerConfig, SamplerKind};
pub use schedule::{Schedule, ScheduleConfig};
