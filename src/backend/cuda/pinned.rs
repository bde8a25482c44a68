//! Page-locked host memory the host reads and writes directly, and the raw copies between it and device
//! buffers. cudarc's pinned slices wait on an event of their own before every copy; inside a graph capture
//! that wait (on an event recorded outside the capture) would invalidate the capture, so the owner of a
//! [`PinnedBuf`] orders its use itself, with the stream and an event, as the step staging and the slot
//! tables do.
use super::{Gpu, GpuElem};
use anyhow::{anyhow, Result};
use cudarc::driver::CudaContext;
use std::sync::Arc;

/// `len` elements of `T` in page-locked host memory, zeroed when made.
pub struct PinnedBuf<T: GpuElem> {
    ptr: *mut T,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the buffer is plain host memory owned by this value; the raw pointer is never shared.
unsafe impl<T: GpuElem> Send for PinnedBuf<T> {}
unsafe impl<T: GpuElem> Sync for PinnedBuf<T> {}

impl<T: GpuElem> PinnedBuf<T> {
    /// Write-combined when `host_writes_only` (fast for the host to write and the device to read, slow for
    /// the host to read), plain page-locked memory otherwise.
    pub fn new(gpu: &Gpu, len: usize, host_writes_only: bool) -> Result<Self> {
        let ctx = gpu.context().clone();
        ctx.bind_to_thread().map_err(|e| anyhow!("binding the CUDA context: {e:?}"))?;
        let flags = if host_writes_only { cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED } else { 0 };
        let bytes = len.max(1) * std::mem::size_of::<T>();
        // SAFETY: a fresh allocation of `bytes` bytes, zeroed below before any read.
        let ptr = unsafe { cudarc::driver::result::malloc_host(bytes, flags) }
            .map_err(|e| anyhow!("allocating {bytes} bytes of page-locked host memory: {e:?}"))?
            as *mut T;
        // SAFETY: ptr holds `len` elements; T is plain data, valid as zero bits.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedBuf { ptr, len, ctx })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The contents. The caller knows no copy into the buffer is in flight.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: ptr holds len initialised elements for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The contents, to write. The caller knows no copy out of the buffer is in flight.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in as_slice, and &mut self is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    pub(super) fn host_ptr(&self) -> *const T {
        self.ptr
    }
}

impl<T: GpuElem> Drop for PinnedBuf<T> {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_host in new; the owner has let every copy of it land.
        let _ = unsafe { cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}
