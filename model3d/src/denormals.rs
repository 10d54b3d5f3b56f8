//! Subnormal floats flushed to zero on the CPU threads that train and sample.
//!
//! A product whose magnitude falls below f32's smallest normal, 1.2·10⁻³⁸, is subnormal, and x86
//! cores compute each such operand or result in a microcode assist costing about a hundred cycles.
//! Gradients that pass through several nearly-zero weights land there: SiD's per-block skip merges
//! start as `[0 | I]`, and in some of the first 30 steps of `model.skips = "blocks"` measured, the
//! gemm kernels ran 10x slower for the same FLOPs (EXPERIMENTS.md, E4). Flushing (FTZ: results to zero;
//! DAZ: subnormal inputs read as zero) changes values only below 1.2·10⁻³⁸, as TensorFlow's and
//! XLA's CPU thread pools do by default.

/// Flush subnormals to zero on the calling thread and on every thread of rayon's global pool
/// (where burn-flex and the project's kernels run). Threads keep the setting for their life.
pub fn flush_denormals() {
    flush_this_thread();
    rayon::broadcast(|_| flush_this_thread());
}

/// MXCSR bit 15 (FTZ) and bit 6 (DAZ): the SSE/AVX unit's control word (Intel SDM vol. 1, §10.2.3).
#[cfg(target_arch = "x86_64")]
fn flush_this_thread() {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit control word at the address given, a live local; ldmxcsr
    // loads it back with two mode bits set, which changes rounding of subnormals only.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
}

/// FPCR bit 24 (FZ): flush-to-zero for single and double precision (Arm ARM, FPCR).
#[cfg(target_arch = "aarch64")]
fn flush_this_thread() {
    // SAFETY: reads and writes the floating-point control register of this thread only.
    unsafe {
        let mut fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
        fpcr |= 1 << 24;
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn flush_this_thread() {}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use std::hint::black_box;

    /// 10⁻²⁰ · 10⁻²⁰ = 10⁻⁴⁰, subnormal in f32.
    fn tiny_product() -> f32 {
        black_box(1e-20f32) * black_box(1e-20f32)
    }

    #[test]
    fn subnormal_products_become_zero_here_and_in_the_pool() {
        // A fresh thread, so that no other test's threads change.
        std::thread::spawn(|| {
            assert!(tiny_product() > 0.0, "subnormals are kept before flushing");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            pool.install(|| {
                super::flush_denormals();
                assert_eq!(tiny_product(), 0.0);
                assert!(rayon::broadcast(|_| tiny_product()).iter().all(|&p| p == 0.0), "every pool thread flushes");
                assert_eq!(black_box(1e-19f32) * black_box(1e-18f32), 1e-19f32 * 1e-18f32, "normal results are untouched");
            });
        })
        .join()
        .unwrap();
    }
}
