//! The stages of the SiD2 pipeline behind the `sid2` command. Each stage is one module with its
//! command-line `Args` and a `run`: [`prepare`] → [`train`] → [`sample`] → [`encode`] →
//! [`eval`], plus [`report`], [`export`], [`info`], [`bench`] and [`demo`]. [`cli`] only parses
//! and dispatches.

pub mod bench;
pub mod class_grid;
pub mod cli;
pub mod config;
pub mod demo;
pub mod demo_images;
pub mod ema;
pub mod encode;
pub mod eval;
pub mod export;
pub mod globals;
pub mod info;
pub mod judge;
pub mod paths;
pub mod plot;
pub mod prepare;
pub mod report;
pub mod run;
pub mod sample;
pub mod sweep;
pub mod tensor;
pub mod train;
