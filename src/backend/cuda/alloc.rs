//! The caching device allocator. Freed blocks go back to a free list keyed by size class instead of to the
//! driver, so a training step that repeats the same shapes makes no cuMemAlloc in steady state. Size
//! classes keep 3 significant bits (at most 12.5 % slack). Reuse is safe without events because every
//! kernel and copy runs on the one stream: a block handed out again is only touched by later work.
//!
//! While a CUDA graph is captured (`Gpu::capture`) the blocks the capture takes belong to its [`Arena`]:
//! the graph's kernels keep their addresses, so those blocks stay out of everyone else's reach until the
//! graph and every buffer holding one of them are gone. Blocks freed during the capture are reused by the
//! same capture (a replay runs its nodes in capture order, so that reuse is as safe as in eager mode).
use super::pinned::PinnedBuf;
use super::GpuElem;
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

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
    /// Replays of captured CUDA graphs (each runs many kernels and copies, not counted above).
    pub graph_launches: u64,
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
            graph_launches: self.graph_launches - o.graph_launches,
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
    pub graph_launches: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct Pool {
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    state: Mutex<PoolState>,
    pub(crate) activity: ActivityCounters,
    /// Whether a capture is in progress (checked on every launch and copy before taking any lock).
    capturing: AtomicBool,
    /// Signalled when a capture ends, for the threads waiting to use the stream.
    capture_ended: std::sync::Condvar,
}

type FreeLists = BTreeMap<usize, Vec<CudaSlice<u8>>>;

#[derive(Default)]
struct PoolState {
    free: FreeLists,
    stats: AllocStats,
    capture: Option<Capture>,
}

impl PoolState {
    /// A cached block of `class` bytes, counted as reused and in use.
    fn reuse(&mut self, class: usize) -> Option<CudaSlice<u8>> {
        let block = self.free.get_mut(&class).and_then(|v| v.pop())?;
        self.stats.reuses += 1;
        self.stats.cached_bytes -= class;
        self.count_in_use(class);
        Some(block)
    }
    /// Counts a block of `class` bytes fresh from the driver.
    fn count_new(&mut self, class: usize) {
        self.stats.device_allocs += 1;
        self.count_in_use(class);
    }
    fn count_in_use(&mut self, class: usize) {
        self.stats.in_use_bytes += class;
        self.stats.peak_in_use_bytes = self.stats.peak_in_use_bytes.max(self.stats.in_use_bytes);
    }
}

/// The capture in progress: the thread issuing it, and the arena of its blocks.
struct Capture {
    thread: ThreadId,
    arena: Arc<Arena>,
}

/// The device blocks of one captured graph (see the module doc). Dropped when the graph and the last buffer
/// taken during its capture are: its blocks then go back to the pool's free lists.
pub(crate) struct Arena {
    pool: Arc<Pool>,
    free: Mutex<FreeLists>,
}

impl Arena {
    fn hold(&self, block: CudaSlice<u8>) {
        self.free.lock().unwrap().entry(block.len()).or_default().push(block);
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut *self.free.lock().unwrap());
        for block in blocks.into_values().flatten() {
            self.pool.give_back(block);
        }
    }
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
        Pool {
            stream,
            ctx,
            state: Mutex::new(PoolState::default()),
            activity: ActivityCounters::default(),
            capturing: AtomicBool::new(false),
            capture_ended: std::sync::Condvar::new(),
        }
    }

    /// Notes a use of the stream. During a capture another thread's work would be recorded into the graph
    /// instead of running, so that thread waits here until the capture has ended. (A use that passed this
    /// check an instant before the capture began is not held back: a program that trains on one device
    /// from two threads should capture before it starts the second.)
    pub(crate) fn note_stream_use(&self) {
        if self.capturing.load(Ordering::Relaxed) {
            let me = std::thread::current().id();
            let mut st = self.state.lock().unwrap();
            while st.capture.as_ref().is_some_and(|c| c.thread != me) {
                st = self.capture_ended.wait(st).unwrap();
            }
        }
    }

    pub(crate) fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
    }

    /// Starts routing this thread's allocations into a new arena (`Gpu::capture`).
    pub(crate) fn begin_capture(self: &Arc<Self>) -> Result<()> {
        let me = std::thread::current().id();
        let mut st = self.state.lock().unwrap();
        // Another thread's capture: wait for it (one capture at a time per stream); this thread's: nesting.
        while st.capture.as_ref().is_some_and(|c| c.thread != me) {
            st = self.capture_ended.wait(st).unwrap();
        }
        if st.capture.is_some() {
            bail!("a CUDA graph capture is already in progress on this thread (captures do not nest)");
        }
        let arena = Arc::new(Arena { pool: self.clone(), free: Mutex::new(FreeLists::new()) });
        st.capture = Some(Capture { thread: std::thread::current().id(), arena });
        self.capturing.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the capture and returns its arena; threads waiting to use the stream go on.
    pub(crate) fn end_capture(&self) -> Arc<Arena> {
        let mut st = self.state.lock().unwrap();
        self.capturing.store(false, Ordering::Relaxed);
        let c = st.capture.take().expect("end_capture after begin_capture");
        self.capture_ended.notify_all();
        c.arena
    }

    /// A block of `bytes` and the arena it belongs to (during a capture).
    fn take(&self, bytes: usize) -> Result<(CudaSlice<u8>, Option<Arc<Arena>>)> {
        let class = size_class(bytes);
        let arena = match self.capturing.load(Ordering::Relaxed) {
            true => {
                self.note_stream_use();
                self.state.lock().unwrap().capture.as_ref().map(|c| c.arena.clone())
            }
            false => None,
        };
        if let Some(arena) = arena {
            return Ok((self.take_for_capture(class, &arena)?, Some(arena)));
        }
        Ok((self.take_class(class)?, None))
    }

    /// During a capture: a block the capture freed, else one from the free lists, else a synchronous driver
    /// allocation (the stream-ordered one would become a graph memory node; capture runs in relaxed mode,
    /// which permits cuMemAlloc).
    fn take_for_capture(&self, class: usize, arena: &Arena) -> Result<CudaSlice<u8>> {
        if let Some(block) = arena.free.lock().unwrap().get_mut(&class).and_then(|v| v.pop()) {
            return Ok(block);
        }
        let mut st = self.state.lock().unwrap();
        if let Some(block) = st.reuse(class) {
            return Ok(block);
        }
        // SAFETY: a fresh allocation of `class` bytes, owned by the returned slice (freed on its stream).
        let block = unsafe {
            let ptr = cudarc::driver::result::malloc_sync(class)
                .map_err(|e| anyhow!("allocating {class} bytes of GPU memory during a graph capture: {e:?}"))?;
            self.stream.upgrade_device_ptr::<u8>(ptr, class)
        };
        st.count_new(class);
        Ok(block)
    }

    fn take_class(&self, class: usize) -> Result<CudaSlice<u8>> {
        if let Some(block) = self.state.lock().unwrap().reuse(class) {
            return Ok(block);
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
        self.state.lock().unwrap().count_new(class);
        Ok(block)
    }

    /// A block freed by a buffer taken outside any capture. If a capture is in progress, its graph may have
    /// recorded kernels that use the block (a buffer the captured work consumed and dropped), so the capture's
    /// arena keeps it for as long as the graph can replay; otherwise it goes back to the free lists.
    fn give_back_outside(&self, block: CudaSlice<u8>) {
        if self.capturing.load(Ordering::Relaxed) {
            let st = self.state.lock().unwrap();
            if let Some(c) = &st.capture {
                c.arena.hold(block);
                return;
            }
        }
        self.give_back(block);
    }

    fn give_back(&self, block: CudaSlice<u8>) {
        let class = block.len();
        let mut st = self.state.lock().unwrap();
        st.stats.in_use_bytes -= class;
        st.stats.cached_bytes += class;
        st.free.entry(class).or_default().push(block);
    }

    /// Returns the free lists to the driver; does nothing during a capture (its frees would be recorded).
    pub(crate) fn trim(&self) {
        if self.capturing.load(Ordering::Relaxed) {
            return;
        }
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
            graph_launches: get(&a.graph_launches),
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
    /// The graph arena the block belongs to, if it was taken during a capture.
    arena: Option<Arc<Arena>>,
    _elem: PhantomData<T>,
}

impl<T: GpuElem> GpuBuf<T> {
    pub(crate) fn new(pool: &Arc<Pool>, len: usize) -> Result<Self> {
        let (block, arena) = pool.take(len * std::mem::size_of::<T>())?;
        let ptr = block.device_ptr(&pool.stream).0;
        Ok(GpuBuf { block: Some(block), ptr, len, pool: pool.clone(), arena, _elem: PhantomData })
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
    /// Readies a raw driver call on the engine's stream (one cudarc does not wrap, or one that must not
    /// wait on an event): waits out another thread's capture, binds the context, counts the call under
    /// `counter`, and returns the stream.
    fn raw_stream_call(&self, counter: &AtomicU64) -> Result<cudarc::driver::sys::CUstream> {
        self.pool.note_stream_use();
        self.pool.ctx.bind_to_thread().map_err(|e| anyhow!("binding the CUDA context: {e:?}"))?;
        bump(counter);
        Ok(self.pool.stream.cu_stream())
    }
    fn block_mut(&mut self) -> &mut CudaSlice<u8> {
        self.block.as_mut().expect("live buffer")
    }
    pub fn zero(&mut self) -> Result<()> {
        self.pool.note_stream_use();
        bump(&self.pool.activity.memsets);
        let stream = self.pool.stream.clone();
        let n = self.bytes();
        let mut view = self.block_mut().slice_mut(0..n);
        stream.memset_zeros(&mut view).map_err(|e| anyhow!("cuMemsetAsync: {e:?}"))
    }
    /// Sets every element to `value` on the stream, by a memset of its bit pattern (no host buffer, so it
    /// may be captured into a graph). Elements of 2 or 4 bytes.
    pub fn fill(&mut self, value: T) -> Result<()> {
        let stream = self.raw_stream_call(&self.pool.activity.memsets)?;
        // SAFETY: the ranges lie inside the block (len elements of T); T is plain data of the matched size.
        let r = unsafe {
            match std::mem::size_of::<T>() {
                4 => cudarc::driver::sys::cuMemsetD32Async(
                    self.ptr,
                    std::mem::transmute_copy::<T, u32>(&value),
                    self.len,
                    stream,
                ),
                2 => cudarc::driver::sys::cuMemsetD16Async(
                    self.ptr,
                    std::mem::transmute_copy::<T, u16>(&value),
                    self.len,
                    stream,
                ),
                n => bail!("fill: elements of {n} bytes (only 2 and 4)"),
            }
        };
        r.result().map_err(|e| anyhow!("cuMemsetAsync (fill): {e:?}"))
    }
    pub fn upload(&mut self, host: &[T]) -> Result<()> {
        if host.len() != self.len {
            bail!("upload of {} elements into a buffer of {}", host.len(), self.len);
        }
        self.pool.note_stream_use();
        bump(&self.pool.activity.host_to_device);
        let stream = self.pool.stream.clone();
        let len = self.len;
        // SAFETY: the block holds at least len * size_of::<T>() bytes.
        let mut view = unsafe { self.block_mut().transmute_mut::<T>(len) }.expect("block large enough");
        stream.memcpy_htod(host, &mut view).map_err(|e| anyhow!("host to device copy: {e:?}"))
    }
    pub fn download(&self) -> Result<Vec<T>> {
        self.pool.note_stream_use();
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
        self.pool.note_stream_use();
        bump(&self.pool.activity.device_to_host);
        // SAFETY: as in upload.
        let view = unsafe { self.block.as_ref().unwrap().transmute::<T>(self.len) }.expect("block large enough");
        self.pool.stream.memcpy_dtoh(&view, dst).map_err(|e| anyhow!("device to pinned host copy: {e:?}"))
    }
    /// Queues a copy of the first `self.len()` elements of `src` into this buffer and returns at once (a
    /// raw driver call, so that nothing waits on an event: it may be captured, and then reads `src` when the
    /// graph replays). The caller keeps `src` unchanged until the copy has landed.
    pub fn upload_pinned(&mut self, src: &PinnedBuf<T>) -> Result<()> {
        if src.len() < self.len {
            bail!("page-locked upload of {} elements into a buffer of {}", src.len(), self.len);
        }
        let stream = self.raw_stream_call(&self.pool.activity.host_to_device)?;
        // SAFETY: both ranges hold self.bytes() bytes; the caller keeps src alive and unchanged until it lands.
        let r = unsafe {
            cudarc::driver::sys::cuMemcpyHtoDAsync_v2(self.ptr, src.host_ptr() as *const _, self.bytes(), stream)
        };
        r.result().map_err(|e| anyhow!("host to device copy (page-locked): {e:?}"))
    }

    /// Queues a device copy of `self.len()` elements of 4 bytes from `src`, starting at its word `offset`
    /// (a staged step's inputs, unpacked from the one buffer they were uploaded in).
    pub fn copy_words_from(&mut self, src: &GpuBuf<u32>, offset: usize) -> Result<()> {
        if std::mem::size_of::<T>() != 4 {
            bail!("copy_words_from: elements of {} bytes (only 4)", std::mem::size_of::<T>());
        }
        if offset + self.len > src.len {
            bail!("device copy of words {offset}..{} from a buffer of {}", offset + self.len, src.len);
        }
        let stream = self.raw_stream_call(&self.pool.activity.device_to_device)?;
        // SAFETY: the source range lies inside src (checked above); the destination holds self.bytes().
        let r = unsafe {
            cudarc::driver::sys::cuMemcpyDtoDAsync_v2(self.ptr, src.ptr + 4 * offset as u64, self.bytes(), stream)
        };
        r.result().map_err(|e| anyhow!("device to device copy (unpacking a staged batch): {e:?}"))
    }

    pub fn copy_from(&mut self, src: &GpuBuf<T>) -> Result<()> {
        self.pool.note_stream_use();
        bump(&self.pool.activity.device_to_device);
        if src.len != self.len {
            bail!("device copy of {} elements into a buffer of {}", src.len, self.len);
        }
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
            match &self.arena {
                Some(arena) => arena.hold(block),
                None => self.pool.give_back_outside(block),
            }
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
