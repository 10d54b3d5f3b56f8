//! Video and image data for SiD2: FFmpeg decoding into small square RGB clips, the Kinetics-600
//! and image-folder datasets, checksummed shard files, host clip arrays, and MP4/PNG output.

pub mod atomic;
pub mod clips;
pub mod datasets;
pub mod decode;
pub mod encode;
pub mod error;
pub mod prepare;
pub mod resize;
pub mod rotation;
pub mod sampling;
pub mod shard;

pub use error::{Error, Result};

/// Whether this build links FFmpeg (the `ffmpeg` feature, on by default). Without it, shards,
/// PNGs and everything after `prepare` work, and video decoding and MP4 writing fail with
/// [`NO_FFMPEG`].
pub const FFMPEG: bool = cfg!(feature = "ffmpeg");

/// The error of video decoding or encoding in a build without FFmpeg.
pub const NO_FFMPEG: &str = "this sid2 was built without FFmpeg (`--no-default-features`, as the GPU build is): \
decode and encode videos with a build that has it, and bring prepared shards here";
