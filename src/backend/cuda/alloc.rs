//! The caching device allocator. Freed blocks go back to a free list keyed by size class instead of to the
//! driver, so a training step that repeats the same shapes makes no cuMemAlloc in steady state. Size
//! classes keep 3 significant bits (at most 12.5 % slack). Reuse is safe without events because every
//! kernel and copy runs on the one stream: a block handed out again is only touched by later work.
use super::GpuElem;
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of the caching allocator.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct AllocStats {
    /// Bytes held by live buffers (size-class rounded).
    pub in_use_bytes: usize,
    /// High-water mark of `in_use_bytes`.
    pub peak_in_use_bytes: usize,
    /// Bytes kept in free lists for reuse.
    pub cached_bytes: usize,
    /// Calls into the driver's allocator (cuMemAlloc) since start.
    pub device_allocs: u64,
    /// Allocations served from the free lists.
    pub reuses: u64,
}

/// What the host asked of the stream, counted where it is asked (every launch, copy and wait of the
/// engine goes through `launch!`, `GpuBuf` and `Gpu::synchronize`): how a step's cost in round trips is
/// measured, on hardware and on the emulated device alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamActivity {
    pub launches: u64,
    pub host_to_device: u64,
    pub device_to_host: u64,
    pub device_to_device: u64,
    pub memsets: u64,
    /// Waits of the host for the stream (every device-to-host copy is one).
    pub synchronisations: u64,
    /// Calls into the driver's allocator (pool misses).
    pub device_allocations: u64,
}

impl std::ops::Sub for StreamActivity {
    type Output = StreamActivity;
    fn sub(self, o: StreamActivity) -> StreamActivity {
        StreamActivity {
            launches: self.launches - o.launches,
            host_to_device: self.host_to_device - o.host_to_device,
            device_to_host: self.device_to_host - o.device_to_host,
            device_to_device: self.device_to_device - o.device_to_device,
            memsets: self.memsets - o.memsets,
            synchronisations: self.synchronisations - o.synchronisations,
            device_allocations: self.device_allocations - o.device_allocations,
        }
    }
}

#[derive(Default)]
pub(crate) struct ActivityCounters {
    pub launches: AtomicU64,
    host_to_device: AtomicU64,
    device_to_host: AtomicU64,
    device_to_device: AtomicU64,
    memsets: AtomicU64,
    pub synchronisations: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct Pool {
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    state: Mutex<PoolState>,
    pub(crate) activity: ActivityCounters,
}

#[derive(Default)]
struct PoolState {
    free: BTreeMap<usize, Vec<CudaSlice<u8>>>,
    stats: AllocStats,
}

/// Rounds a byte count up to its size class: 512-byte granularity, then 3 significant bits.
fn size_class(bytes: usize) -> usize {
    let b = bytes.max(1).next_multiple_of(512);
    if b <= 4096 {
        return b;
    }
    let shift = usize::BITS - b.leading_zeros() - 3; // keep the top 3 bits
    let unit = 1usize << shift;
    b.next_multiple_of(unit)
}

impl Pool {
    pub(crate) fn new(stream: Arc<CudaStream>, ctx: Arc<CudaContext>) -> Self {
        Pool { stream, ctx, state: Mutex::new(PoolState::default()), activity: ActivityCounters::default() }
    }

    fn take(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        let class = size_class(bytes);
        {
            let mut st = self.state.lock().unwrap();
            if let Some(block) = st.free.get_mut(&class).and_then(|v| v.pop()) {
                st.stats.reuses += 1;
                st.stats.cached_bytes -= class;
                st.stats.in_use_bytes += class;
                st.stats.peak_in_use_bytes = st.stats.peak_in_use_bytes.max(st.stats.in_use_bytes);
                return Ok(block);
            }
        }
        // SAFETY: uninitialised device memory; every op writes its output before reading it.
        let block = match unsafe { self.stream.alloc::<u8>(class) } {
            Ok(b) => b,
            Err(_) => {
                // Give cached blocks back to the driver (their frees are queued on the stream, so wait for
                // them) and try once more before reporting.
                self.trim();
                bump(&self.activity.synchronisations);
                let _ = self.stream.synchronize();
                unsafe { self.stream.alloc::<u8>(class) }.map_err(|e| {
                    let (free, total) = self.ctx.mem_get_info().unwrap_or((0, 0));
                    let st = self.state.lock().unwrap();
                    anyhow!(
                        "out of GPU memory: asked for {:.1} MiB, the device has {:.1} MiB free of {:.1} MiB \
                         (gsure holds {:.1} MiB in live tensors); reduce the batch size or the model ({e:?})",
                        class as f64 / 1048576.0,
                        free as f64 / 1048576.0,
                        total as f64 / 1048576.0,
                        st.stats.in_use_bytes as f64 / 1048576.0
                    )
                })?
            }
        };
        let mut st = self.state.lock().unwrap();
        st.stats.device_allocs += 1;
        st.stats.in_use_bytes += class;
        st.stats.peak_in_use_bytes = st.stats.peak_in_use_bytes.max(st.stats.in_use_bytes);
        Ok(block)
    }

    fn give_back(&self, block: CudaSlice<u8>) {
        let class = block.len();
        let mut st = self.state.lock().unwrap();
        st.stats.in_use_bytes -= class;
        st.stats.cached_bytes += class;
        st.free.entry(class).or_default().push(block);
    }

    pub(crate) fn trim(&self) {
        let blocks: Vec<CudaSlice<u8>> = {
            let mut st = self.state.lock().unwrap();
            st.stats.cached_bytes = 0;
            std::mem::take(&mut st.free).into_values().flatten().collect()
        };
        drop(blocks); // frees in stream order
    }

    pub(crate) fn stats(&self) -> AllocStats {
        self.state.lock().unwrap().stats
    }

    pub(crate) fn activity(&self) -> StreamActivity {
        let a = &self.activity;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamActivity {
            launches: get(&a.launches),
            host_to_device: get(&a.host_to_device),
            device_to_host: get(&a.device_to_host),
            device_to_device: get(&a.device_to_device),
            memsets: get(&a.memsets),
            synchronisations: get(&a.synchronisations),
            device_allocations: self.stats().device_allocs,
        }
    }

    /// Restarts the high-water mark from the bytes in use now (to measure one phase's peak).
    pub(crate) fn reset_peak(&self) {
        let mut st = self.state.lock().unwrap();
        st.stats.peak_in_use_bytes = st.stats.in_use_bytes;
    }
}

/// `len` elements of `T` in a pooled device block. Dropping it returns the block to the pool.
pub struct GpuBuf<T: GpuElem> {
    block: Option<CudaSlice<u8>>,
    ptr: u64,
    len: usize,
    pool: Arc<Pool>,
    _elem: PhantomData<T>,
}

impl<T: GpuElem> GpuBuf<T> {
    pub(crate) fn new(pool: &Arc<Pool>, len: usize) -> Result<Self> {
        let block = pool.take(len * std::mem::size_of::<T>())?;
        let ptr = block.device_ptr(&pool.stream).0;
        Ok(GpuBuf { block: Some(block), ptr, len, pool: pool.clone(), _elem: PhantomData })
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
    /// Raw device pointer, passed to kernels by value.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    fn block_mut(&mut self) -> &mut CudaSlice<u8> {
        self.block.as_mut().expect("live buffer")
    }
    pub fn zero(&mut self) -> Result<()> {
        bump(&self.pool.activity.memsets);
        let stream = self.pool.stream.clone();
        let n = self.bytes();
        let mut view = self.block_mut().slice_mut(0..n);
        stream.memset_zeros(&mut view).map_err(|e| anyhow!("cuMemsetAsync: {e:?}"))
    }
    pub fn upload(&mut self, host: &[T]) -> Result<()> {
        if host.len() != self.len {
            bail!("upload of {} elements into a buffer of {}", host.len(), self.len);
        }
        bump(&self.pool.activity.host_to_device);
        let stream = self.pool.stream.clone();
        let len = self.len;
        // SAFETY: the block holds at least len * size_of::<T>() bytes.
        let mut view = unsafe { self.block_mut().transmute_mut::<T>(len) }.expect("block large enough");
        stream.memcpy_htod(host, &mut view).map_err(|e| anyhow!("host to device copy: {e:?}"))
    }
    pub fn download(&self) -> Result<Vec<T>> {
        bump(&self.pool.activity.device_to_host);
        bump(&self.pool.activity.synchronisations);
        let stream = &self.pool.stream;
        let mut host = vec![T::default(); self.len];
        // SAFETY: as in upload.
        let view = unsafe { self.block.as_ref().unwrap().transmute::<T>(self.len) }.expect("block large enough");
        stream.memcpy_dtoh(&view, &mut host).map_err(|e| anyhow!("device to host copy: {e:?}"))?;
        stream.synchronize().map_err(|e| anyhow!("device to host copy: {e:?}"))?;
        Ok(host)
    }
    /// Queues a copy of the buffer into pinned host memory and returns at once. The caller must know the
    /// copy has landed (an event recorded after it has passed) before reading `dst` or freeing it: this
    /// engine turns cudarc's own event tracking off (context.rs), so `dst` does not wait by itself.
    pub fn copy_to_pinned(&self, dst: &mut cudarc::driver::PinnedHostSlice<T>) -> Result<()> {
        if dst.len() != self.len {
            bail!("pinned copy of {} elements into a host buffer of {}", self.len, dst.len());
        }
        bump(&self.pool.activity.device_to_host);
        // SAFETY: as in upload.
        let view = unsafe { self.block.as_ref().unwrap().transmute::<T>(self.len) }.expect("block large enough");
        self.pool.stream.memcpy_dtoh(&view, dst).map_err(|e| anyhow!("device to pinned host copy: {e:?}"))
    }
    pub fn copy_from(&mut self, src: &GpuBuf<T>) -> Result<()> {
        bump(&self.pool.activity.device_to_device);
        if src.len != self.len {
            bail!("device copy of {} elements into a buffer of {}", src.len, self.len);
        }
        bump(&self.pool.activity.memsets);
        let stream = self.pool.stream.clone();
        let n = self.bytes();
        let from = src.block.as_ref().unwrap().slice(0..n);
        let mut to = self.block_mut().slice_mut(0..n);
        stream.memcpy_dtod(&from, &mut to).map_err(|e| anyhow!("device to device copy: {e:?}"))
    }
}

impl<T: GpuElem> Drop for GpuBuf<T> {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.pool.give_back(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;
    #[test]
    fn size_classes_round_up_with_bounded_slack() {
        for bytes in [1usize, 511, 512, 513, 4096, 4097, 5000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c as f64 <= (bytes.max(512) as f64) * 1.25 + 512.0, "{bytes} -> {c}");
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
