//! Project-local stand-in for `cubecl-llvm` 0.11.3.
//!
//! `cubecl-cuda` 0.11.3 always compiles both of its backends: CUDA C++ through NVRTC, and
//! pliron/LLVM to PTX. The second one needs the real `cubecl-llvm`, which downloads a prebuilt
//! LLVM at build time and so cannot build offline. This crate declares only the names
//! `cubecl-cuda` refers to, so that it type-checks; none of them does LLVM work.
//!
//! The workspace enables `cubecl-cuda`'s `cpp` feature, which makes the C++ backend the one
//! `CudaBackend::default()` picks. With it, the only item here that runs is
//! [`PtxVersion::for_driver`], whose answer is only read on the LLVM path. Without it, device
//! initialisation stops in [`restrict_features`] with a message saying what to enable.

/// The message for every entry point that would need LLVM.
const NO_LLVM: &str = "cubecl-llvm stand-in: the LLVM path is not built; kernels compile \
                       through NVRTC (enable cubecl-cuda's `cpp` feature)";

pub mod nvptx {
    //! The NVPTX-specific names `cubecl-cuda` uses.

    pub mod ptx_version {
        //! The PTX version the LLVM backend would emit for a driver.

        use core::fmt;

        /// The PTX ISA version the LLVM backend would target for the installed driver.
        ///
        /// The stand-in emits no PTX, so it does not map drivers to ISA versions: it keeps the
        /// driver version it was asked about. `cubecl-cuda` only reads it to key the LLVM
        /// backend's kernel cache and to hand it to [`crate::PlironOptions`], so two drivers
        /// still give two different values.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct PtxVersion {
            driver: i32,
        }

        impl PtxVersion {
            /// The version for a driver of CUDA `driver`, as `cuDriverGetVersion` reports it
            /// (12.8 is `12080`); `None` below CUDA 10.0.
            pub fn for_driver(driver: i32) -> Option<Self> {
                (driver >= 10_000).then_some(Self { driver })
            }
        }

        impl fmt::Display for PtxVersion {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "ptx-for-cuda{}", self.driver)
            }
        }
    }
}

pub mod shared {
    //! Names shared between the GPU targets.

    pub mod lowered_features {
        //! Narrowing a device's advertised features to what the LLVM backend lowers.

        use cubecl_ir::DeviceProperties;

        /// The GPU target a device's features would be narrowed for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum GpuTarget {
            Nvptx,
        }

        /// `cubecl-cuda` calls this only when the LLVM backend is the one selected, which with
        /// its `cpp` feature never happens. Reaching it means that feature is off, and every
        /// kernel would then fail to compile, so it stops here, at device initialisation.
        pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {
            unimplemented!("{}", crate::NO_LLVM)
        }
    }
}

pub use compiler::{NvptxModule, PlironArtifact, PlironCompiler, PlironOptions};
pub use target::LlvmTarget;

mod target {
    /// The target a [`crate::PlironCompiler`] compiles for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum LlvmTarget {
        Nvptx,
    }
}

mod compiler {
    use crate::{LlvmTarget, nvptx::ptx_version::PtxVersion};
    use cubecl_environment::backtrace::BackTrace;
    use cubecl_ir::{amd::GfxArch, attributes::BufferIOAttr, nvidia::SmArch};
    use cubecl_runtime::{
        compiler::{CompilationError, Compiler},
        kernel::KernelDefinition,
    };

    /// The LLVM backend's compiler. Here every compilation fails with an error.
    #[derive(Clone, Debug)]
    pub struct PlironCompiler {
        pub target: LlvmTarget,
    }

    /// What `cubecl-cuda` passes to [`PlironCompiler`].
    #[derive(Clone, Debug, Default)]
    pub struct PlironOptions {
        /// AMDGPU architecture; `None` for NVPTX.
        pub arch: Option<GfxArch>,
        /// The NVIDIA device's compute capability.
        pub sm_arch: Option<SmArch>,
        /// The PTX version to emit.
        pub ptx_version: Option<PtxVersion>,
        /// Whether scalars and metadata travel in the kernel parameter block.
        pub grid_constants: bool,
    }

    /// A kernel compiled to PTX. Never built by the stand-in.
    #[derive(Clone, Debug)]
    pub struct NvptxModule {
        /// NUL-terminated PTX.
        pub ptx: Vec<core::ffi::c_char>,
        /// IR, for logging.
        pub ir: String,
        /// Dynamic shared memory the launch reserves, in bytes.
        pub shared_memory_size: usize,
        /// Buffer access modes, in binding order.
        pub io: Vec<BufferIOAttr>,
    }

    /// What [`PlironCompiler`] produces.
    #[derive(Clone, Debug)]
    #[non_exhaustive]
    pub enum PlironArtifact {
        NvptxCode(NvptxModule),
    }

    impl core::fmt::Display for PlironArtifact {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                PlironArtifact::NvptxCode(module) => f.write_str(&module.ir),
            }
        }
    }

    impl Compiler for PlironCompiler {
        type Representation = PlironArtifact;
        type CompilationOptions = PlironOptions;

        fn compile(
            &mut self,
            _kernel: KernelDefinition,
            _options: &Self::CompilationOptions,
        ) -> Result<Self::Representation, CompilationError> {
            Err(CompilationError::Generic {
                reason: crate::NO_LLVM.to_string(),
                backtrace: BackTrace::capture(),
            })
        }

        fn buffer_io(repr: &Self::Representation) -> Option<Vec<BufferIOAttr>> {
            match repr {
                PlironArtifact::NvptxCode(module) => Some(module.io.clone()),
            }
        }

        fn extension(&self) -> &'static str {
            "ll"
        }

        fn lang_tag(&self) -> &'static str {
            "llvm"
        }
    }
}
