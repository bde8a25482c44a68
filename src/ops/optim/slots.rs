//! Multi-tensor slot tables: one row per parameter tensor (its device pointers, its length, its first
//! chunk), laid end to end in chunks of `CHUNK` elements. Block b of a multi-tensor kernel in
//! kernels/optim.cu handles chunk b and finds its row by binary search over the rows' first chunks.
use crate::backend::cuda::{Gpu, GpuBuf, PinnedBuf};
use anyhow::Result;

/// Elements per chunk, one chunk per block (kernels/optim.cu).
pub(super) const CHUNK: usize = 4096;

/// A table being built on the host, in the kernels' row layout: pointers, then n and first_chunk (i64).
#[derive(Default)]
pub(super) struct SlotRows {
    words: Vec<u64>,
    pub rows: usize,
    /// Chunks of every row so far: the grid size of the launch.
    pub chunks: usize,
}

impl SlotRows {
    /// Appends one tensor of `n > 0` elements.
    pub fn push(&mut self, pointers: &[u64], n: usize) {
        debug_assert!(n > 0, "an empty tensor has no chunk; leave it out");
        self.words.extend_from_slice(pointers);
        self.words.extend([n as u64, self.chunks as u64]);
        self.chunks += n.div_ceil(CHUNK);
        self.rows += 1;
    }
}

/// A slot table kept on the device and uploaded again only when a row changes: the parameters, moments and
/// averages never move, and the allocator hands gradients the same blocks step after step, so a
/// steady-state step uploads nothing. The upload a graph capture makes (its gradients are new blocks) comes
/// from page-locked memory with no event wait, so it is captured with the step and replays with it.
#[derive(Default)]
pub(super) struct DeviceSlots {
    uploaded: Vec<u64>,
    buf: Option<GpuBuf<u64>>,
    /// The host copy a captured upload reads at every replay.
    host: Option<PinnedBuf<u64>>,
    /// Earlier ones, kept while a graph may still replay them (one per capture).
    retired: Vec<PinnedBuf<u64>>,
}

impl DeviceSlots {
    /// The device address of `rows`. An upload (when needed) is ordered on the stream after every launch
    /// that read the previous contents.
    pub fn upload(&mut self, gpu: &Gpu, rows: &SlotRows) -> Result<u64> {
        if let (Some(buf), true) = (&self.buf, self.uploaded == rows.words) {
            return Ok(buf.ptr());
        }
        let buf = match &mut self.buf {
            Some(buf) if buf.len() == rows.words.len() => buf,
            _ => self.buf.insert(gpu.alloc(rows.words.len())?),
        };
        if gpu.capturing() {
            // A captured copy reads its source at every replay: page-locked memory that stays as it is.
            let mut host = PinnedBuf::new(gpu, rows.words.len(), true)?;
            host.as_mut_slice().copy_from_slice(&rows.words);
            buf.upload_pinned(&host)?;
            self.retired.extend(self.host.replace(host));
        } else {
            buf.upload(&rows.words)?;
        }
        self.uploaded.clone_from(&rows.words);
        Ok(buf.ptr())
    }
}
