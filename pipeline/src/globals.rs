//! What every stage takes from the command line besides its own flags: where the network runs
//! and whether to draw progress bars.

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

/// Where the network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// burn-flex with the project's own CPU kernels.
    Cpu,
    /// burn-cuda (NVIDIA; `--features cuda`).
    Cuda,
    /// burn-wgpu: a Vulkan, Metal or DX12 GPU, else a software Vulkan driver (`--features wgpu`).
    Wgpu,
}

/// How hard burn-cubecl's autotuner (CUDA, wgpu) searches: on each new shape it times every
/// candidate kernel of an op at this level. cubecl's own default is `balanced`; sid2's is
/// `minimal`, because autotuning `k600_64` at `balanced` took 8+ minutes of an H200 before the
/// first step (BENCHMARKS.md) and warm-up counts against every lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Autotune {
    #[default]
    Minimal,
    Balanced,
    Extensive,
    Full,
}

#[derive(Clone, Copy, Debug)]
pub struct Globals {
    pub backend: Backend,
    pub progress: bool,
    /// `--autotune`; `None` is `CUBECL_AUTOTUNE_LEVEL` if set, else [`Autotune::Minimal`].
    pub autotune: Option<Autotune>,
}

impl Globals {
    /// The device of `--device`.
    pub fn device(&self) -> Result<Device> {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        if self.backend != Backend::Cpu {
            configure_cubecl(self.autotune);
        }
        match self.backend {
            Backend::Cpu => {
                model3d::flush_denormals();
                Ok(Device::flex())
            }
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
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => wgpu::device().map(|(device, _)| device),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => bail!("--device wgpu: this sid2 was built without wgpu (rebuild with `--features wgpu`)"),
        }
    }

    /// [`Self::device`] for a network computing in `precision`: bf16 is refused where the backend
    /// has none (WGSL, so wgpu, has no bf16 type; lavapipe fails deep in a device thread without
    /// this check).
    pub fn device_for(&self, precision: model3d::Precision) -> Result<Device> {
        if self.backend == Backend::Wgpu && precision == model3d::Precision::Bf16 {
            bail!("train.precision = \"bf16\": --device wgpu compiles kernels to WGSL, which has no bf16; use --set 'train.precision=\"f32\"'");
        }
        self.device()
    }

    /// What `--device` runs on, for logs and the run report: the backend, and for wgpu its adapter.
    pub fn device_name(&self) -> Result<String> {
        Ok(match self.backend {
            Backend::Cpu => "CPU (burn-flex)".into(),
            Backend::Cuda => "GPU (burn-cuda)".into(),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => wgpu::device()?.1,
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => bail!("--device wgpu: this sid2 was built without wgpu (rebuild with `--features wgpu`)"),
        })
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

/// cubecl's settings for this process, before its first kernel: `cubecl.toml` (searched from the
/// working directory up) and the `CUBECL_*` variables as cubecl reads them, except the autotune
/// level, which is `--autotune`, else `CUBECL_AUTOTUNE_LEVEL`, else minimal. Later calls keep the
/// first settings (cubecl takes them once).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn configure_cubecl(level: Option<Autotune>) {
    use burn::cubecl::config::autotune::AutotuneLevel;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::from_current_dir();
    config.autotune.level = AutotuneLevel::Minimal;
    let mut config = config.override_from_env();
    if let Some(level) = level {
        config.autotune.level = match level {
            Autotune::Minimal => AutotuneLevel::Minimal,
            Autotune::Balanced => AutotuneLevel::Balanced,
            Autotune::Extensive => AutotuneLevel::Extensive,
            Autotune::Full => AutotuneLevel::Full,
        };
    }
    let level = format!("{:?}", config.autotune.level).to_lowercase();
    if CubeClRuntimeConfig::try_set(config) {
        tracing::info!(level, "cubecl autotune level");
    }
}

/// The wgpu device, opened once per process (wgpu's runtime takes its options only once).
#[cfg(feature = "wgpu")]
mod wgpu {
    use std::sync::OnceLock;

    use anyhow::{Result, anyhow};
    use burn::prelude::*;
    use burn::tensor::DeviceKind;

    static DEVICE: OnceLock<Result<(Device, String), String>> = OnceLock::new();

    /// The adapter wgpu prefers (a high-power GPU; `CUBECL_WGPU_DEFAULT_DEVICE` overrides it), else
    /// a software one (Mesa's lavapipe), which cubecl never picks by itself; with its description.
    pub fn device() -> Result<(Device, String)> {
        DEVICE.get_or_init(open).clone().map_err(|e| anyhow!("--device wgpu: {e}"))
    }

    fn open() -> Result<(Device, String), String> {
        let (device, setup) = match Device::wgpu_options().init_with_setup() {
            Ok(opened) => opened,
            Err(gpu) => Device::wgpu_options()
                .device_kind(DeviceKind::Cpu)
                .init_with_setup()
                .map_err(|cpu| format!("no wgpu adapter (a GPU: {gpu}; a software one: {cpu}); on Debian, `apt install mesa-vulkan-drivers libvulkan1` gives a software one"))?,
        };
        let info = setup.adapter.get_info();
        let name = format!("wgpu ({:?}): {}, {:?} adapter, driver {} {}", info.backend, info.name, info.device_type, info.driver, info.driver_info);
        tracing::info!(adapter = %name, "wgpu device");
        Ok((device, name))
    }
}
