//! What every stage takes from the command line besides its own flags: where the network runs
//! and whether to draw progress bars.

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

/// Where the network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug)]
pub struct Globals {
    pub backend: Backend,
    pub progress: bool,
}

impl Globals {
    /// The device of `--device`.
    pub fn device(&self) -> Result<Device> {
        match self.backend {
            Backend::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Backend::Cuda => {
                // burn-cuda loads the driver lazily and panics on another thread without one: ask first.
                // SAFETY: loading the NVIDIA driver library runs only its initialisers.
                if let Err(e) = unsafe { libloading::Library::new("libcuda.so.1") } {
                    bail!("--device cuda: no NVIDIA driver on this machine ({e})");
                }
                Ok(Device::cuda(0))
            }
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => bail!("--device cuda: this sid2 was built without CUDA (rebuild with `--features cuda`)"),
        }
    }

    /// A progress bar of `len` steps with `template` (indicatif syntax), hidden with `--quiet`.
    pub fn bar(&self, len: u64, template: &str) -> ProgressBar {
        let bar = if self.progress { ProgressBar::new(len) } else { ProgressBar::hidden() };
        bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
        bar
    }
}

/// Command-line parser for counts that must be at least 1 (`--batch`, `--count`, ...).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Command-line parser for sizes from 1 to 65536 (a matrix side, a token count): past that a
/// benchmark's tensors no longer fit in memory.
pub fn size_up_to_65536(s: &str) -> Result<usize, String> {
    match at_least_one(s)? {
        n if n > 1 << 16 => Err("must be at most 65536".into()),
        n => Ok(n),
    }
}
