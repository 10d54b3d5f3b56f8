//! The `sid2` binary; the command itself lives in `pipeline::cli`.

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    pipeline::cli::main()
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
