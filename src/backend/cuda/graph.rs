//! CUDA graphs: device work captured once from the engine's stream and replayed with one launch.
//!
//! A replay runs the captured kernels with the arguments they were captured with and copies from the host
//! memory they were captured with; nothing of the host code that issued them runs again. So what a replay
//! may differ in must live in device memory (or in page-locked host memory a captured copy reads), written
//! before the launch, and everything the capture allocated keeps its address: the allocator hands those
//! blocks to the graph's arena (alloc.rs) until the graph and the buffers taken during the capture are gone.
use super::alloc::Arena;
use super::Gpu;
use anyhow::{anyhow, bail, Result};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A captured, instantiated graph, replayed by [`Graph::launch`].
pub struct Graph {
    exec: cudarc::driver::CudaGraph,
    // Declared after `exec`, so dropped after it: the blocks return to the pool once nothing can replay.
    _arena: Arc<Arena>,
    gpu: Arc<Gpu>,
}

impl Graph {
    /// Replays the graph on the engine's stream (returns at once; the work is ordered after everything
    /// issued before it, like any launch).
    pub fn launch(&self) -> Result<()> {
        self.gpu.pool.note_stream_use();
        self.gpu.pool.activity.graph_launches.fetch_add(1, Ordering::Relaxed);
        self.exec.launch().map_err(|e| anyhow!("launching a CUDA graph: {e:?}"))
    }
}

/// Ends a capture that `Gpu::capture`'s body left by unwinding: the stream stops capturing (its graph is
/// dropped) and the allocator leaves capture mode.
struct CaptureGuard<'a> {
    gpu: &'a Arc<Gpu>,
    ended: bool,
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.gpu.stream.end_capture(CUgraphInstantiate_flags(0));
            let _ = self.gpu.pool.end_capture();
        }
    }
}

impl Gpu {
    /// Captures the device work `body` issues into a graph, without running it (on a GPU as on the
    /// emulated device). `body` must only issue work: a host wait (a download, `synchronize`) fails the
    /// capture. Another thread using the device meanwhile waits until the capture has ended (its work would
    /// otherwise be recorded into the graph instead of running). Buffers the work reads that were made before
    /// the capture are the graph's inputs: they must outlive it (one dropped inside `body` is kept for it). The
    /// buffers `body` allocates keep their addresses for as long as the graph lives; the ones it returns
    /// (in `R`) hold what a replay writes there. Warm the allocator up first (run the same work once
    /// eagerly), so that the capture draws its blocks from the pool and not from the driver.
    pub fn capture<R>(self: &Arc<Self>, body: impl FnOnce() -> Result<R>) -> Result<(Graph, R)> {
        self.pool.begin_capture()?;
        // Relaxed: the allocator may call cuMemAlloc on a pool miss, which global mode forbids; a host
        // wait on the capturing stream is refused in every mode.
        if let Err(e) = self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) {
            let _ = self.pool.end_capture();
            bail!("starting a CUDA graph capture: {e:?}");
        }
        // Ends the capture however `body` leaves (a panic included), so the device is never left capturing.
        let mut guard = CaptureGuard { gpu: self, ended: false };
        let out = body();
        let graph = self.stream.end_capture(CUgraphInstantiate_flags(0));
        guard.ended = true;
        let arena = self.pool.end_capture();
        let out = out.map_err(|e| e.context("in the work captured into a CUDA graph"))?;
        let exec = graph
            .map_err(|e| anyhow!("ending a CUDA graph capture: {e:?} (did the captured work wait for the device?)"))?
            .ok_or_else(|| anyhow!("the CUDA graph capture recorded no work"))?;
        Ok((Graph { exec, _arena: arena, gpu: self.clone() }, out))
    }
}
