//! How the process's allocator treats the tensors a CPU step frees.
//!
//! A CPU training step allocates and frees the same few hundred activation and gradient buffers every
//! step, most of them between 128 KiB and a few MiB. glibc's malloc serves blocks above its mmap threshold
//! with a fresh `mmap` and gives them back with `munmap` when freed, and it returns the free top of its
//! heap to the kernel once it exceeds the trim threshold; either way the next step faults the same pages
//! back in, zero-filled by the kernel. Measured on the tiny batch-16 step (2 cores, docs/cpu-speed-notes.md):
//! about 1,700 page faults and 3-8 ms of a 45-55 ms step went to that.

/// The largest block glibc will serve from its heap instead of a private mapping: its documented maximum
/// on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`). Larger tensors are rare on the CPU and keep their
/// own mapping.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Free memory at the top of the heap kept in the process before glibc returns it to the kernel.
pub const TRIM_THRESHOLD_BYTES: usize = 1 << 30;

/// Keeps freed tensor memory in the process for reuse (process-wide; call it once, early, from a binary).
/// Returns whether the allocator accepted the settings; on targets without glibc it does nothing and
/// returns false. A library user decides for their own process: the engine never calls it by itself.
///
/// Setting only the trim threshold would be worse than nothing: it switches off glibc's adaptive mmap
/// threshold, so every block above 128 KiB would be mapped and unmapped (measured 2.4× slower steps).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes two of the allocator's tuning parameters; it takes the arena lock
        // itself and may be called at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
