//! The `sid2` binary; the command itself lives in `pipeline::cli`.

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    work_in_rayons_pool();
    pipeline::cli::main()
}

/// This thread becomes one of the workers of rayon's global pool (where burn-flex and the
/// project's CPU kernels run), so that its parallel loops run here, in place, with the other
/// workers stealing halves, instead of being sent to the pool while this thread sleeps: as many
/// threads as cores (`RAYON_NUM_THREADS` or all of them), where before one more woke and slept
/// for every parallel operation (the scheduler took about 5 % of a training step, perf).
fn work_in_rayons_pool() {
    // Fails only when the pool exists already; nothing has used rayon yet.
    if let Err(e) = rayon::ThreadPoolBuilder::new().use_current_thread().build_global() {
        eprintln!("warning: rayon's pool was set up before sid2's main: {e}");
    }
}

/// glibc's malloc maps every block above a threshold (128 KiB, raised as such blocks are freed,
/// at most 32 MiB) straight from the kernel and unmaps it when freed, and returns the heap's free
/// top to the kernel. A training step allocates and frees the same activation buffers every step,
/// so each came back as fresh pages for the kernel to zero: page faults were 10 % of a
/// tiny_video step on the CPU (perf, BENCHMARKS.md). Serving blocks up to 32 MiB from the heap
/// and never trimming it keeps those pages: the peak is unchanged, and the process keeps it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets malloc's parameters; nothing else runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
