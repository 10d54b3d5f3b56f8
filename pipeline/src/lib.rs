//! The stages of the SiD2 pipeline behind the `sid2` command.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod demo;
pub mod eval;
pub mod fidelity;
pub mod frechet;
pub mod info;
pub mod loader;
pub mod metrics;
pub mod params;
pub mod quality;
pub mod sample;
pub mod train;
pub mod trainer;
