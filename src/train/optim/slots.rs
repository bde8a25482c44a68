//! Multi-tensor slot tables: one row per parameter tensor (its device pointers, its length, its first
//! chunk), laid end to end in chunks of `CHUNK` elements. Block b of a multi-tensor kernel in
//! kernels/optim.cu handles chunk b and finds its row by binary search over the rows' first chunks.
use crate::backend::cuda::{Gpu, GpuBuf};
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
/// steady-state step uploads nothing.
#[derive(Default)]
pub(super) struct DeviceSlots {
    uploaded: Vec<u64>,
    buf: Option<GpuBuf<u64>>,
}

impl DeviceSlots {
    /// The device address of `rows`. An upload (when needed) is ordered on the stream after every launch
    /// that read the previous contents.
    pub fn upload(&mut self, gpu: &Gpu, rows: &SlotRows) -> Result<u64> {
        match &mut self.buf {
            Some(buf) if self.uploaded == rows.words => return Ok(buf.ptr()),
            Some(buf) if buf.len() == rows.words.len() => buf.upload(&rows.words)?,
            _ => self.buf = Some(gpu.upload(&rows.words)?),
        }
        self.uploaded.clone_from(&rows.words);
        Ok(self.buf.as_ref().expect("uploaded above").ptr())
    }
}
