//! Video and image data for SiD2: FFmpeg decoding into small square RGB clips, the Kinetics-600
//! and image-folder datasets, checksummed shard files, and MP4/PNG output.

pub mod atomic;
pub mod clips;
pub mod datasets;
pub mod decode;
pub mod encode;
pub mod error;
pub mod prepare;
pub mod resize;
pub mod shard;

pub use error::{Error, Result};
