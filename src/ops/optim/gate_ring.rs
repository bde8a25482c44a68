//! Step gates on their way to the host without stopping the device. Each CUDA step's gate (loss, norm,
//! clip scale, skip) is copied into pinned host memory behind the step's own work on the one stream, with
//! an event recorded after the copy; the trainer takes a gate once its event has passed, so in the steady
//! state no step waits for the device and the device never drains between steps. What a late read could
//! let through, the sticky gate stops (`GateWorkspace::sticky`): after a bad step every later gate says
//! halted, and AdamW and the EMA keep the weights of the step before the bad one.
use super::gate::{GateValues, StepGate};
use crate::backend::cuda::{CudaStorage, Gpu};
use crate::tensor::Storage;
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaEvent, PinnedHostSlice};
use std::collections::VecDeque;

/// One gate's host copy and the event after it.
struct Slot {
    host: PinnedHostSlice<f32>,
    copied: CudaEvent,
}

/// The gates of the steps in flight, oldest first, and the slots they free once read.
#[derive(Default)]
pub struct GateRing {
    pending: VecDeque<(u64, Slot)>,
    free: Vec<Slot>,
}

impl GateRing {
    /// Queues the copy of step `step`'s gate (a CUDA gate) to the host; waits for nothing.
    pub fn push(&mut self, gpu: &Gpu, step: u64, gate: &StepGate) -> Result<()> {
        let mut slot = match self.free.pop() {
            Some(s) => s,
            None => {
                // Flags 0: plain page-locked memory. cudarc's default is write-combined, which the host
                // reads slowly, and reading is all the host does with these.
                let host = unsafe { gpu.context().alloc_pinned_with_flags::<f32>(4, 0) }
                    .map_err(|e| anyhow!("allocating pinned host memory for the step gate: {e:?}"))?;
                let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
                let copied = gpu.context().new_event(flags).map_err(|e| anyhow!("creating a CUDA event: {e:?}"))?;
                Slot { host, copied }
            }
        };
        match &*gate.values().storage() {
            Storage::Cuda(CudaStorage::F32(buf)) => buf.copy_to_pinned(&mut slot.host)?,
            _ => bail!("gate ring: the step gate must be four f32 values on the GPU"),
        }
        slot.copied.record(gpu.stream()).map_err(|e| anyhow!("recording a CUDA event: {e:?}"))?;
        self.pending.push_back((step, slot));
        Ok(())
    }

    /// The gates whose copies have landed, oldest first, in step order; waits for none of them.
    pub fn ready(&mut self, gpu: &Gpu) -> Result<Vec<(u64, GateValues)>> {
        gpu.wait_for_other_captures();
        let mut out = Vec::new();
        while let Some((_, slot)) = self.pending.front() {
            if !slot.copied.try_is_complete().map_err(|e| anyhow!("querying the step gate's copy: {e:?}"))? {
                break;
            }
            out.push(self.take_front()?);
        }
        Ok(out)
    }

    /// Every gate in flight, waiting for the device once (for a checkpoint, or the end of a run).
    pub fn drain(&mut self, gpu: &Gpu) -> Result<Vec<(u64, GateValues)>> {
        gpu.wait_for_other_captures();
        if let Some((_, last)) = self.pending.back() {
            gpu.count_host_wait();
            last.copied.synchronize().map_err(|e| anyhow!("waiting for the step gate's copy: {e:?}"))?;
        }
        let mut out = Vec::with_capacity(self.pending.len());
        while !self.pending.is_empty() {
            out.push(self.take_front()?);
        }
        Ok(out)
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn take_front(&mut self) -> Result<(u64, GateValues)> {
        // The slot's event has passed (ready) or been waited for (drain): the copy has landed.
        let (step, slot) = self.pending.pop_front().expect("a pending gate");
        let v = slot.host.as_slice().map_err(|e| anyhow!("reading the step gate: {e:?}"))?;
        let values = GateValues::from_raw([v[0] as f64, v[1] as f64, v[2] as f64, v[3] as f64]);
        self.free.push(slot);
        Ok((step, values))
    }
}

impl Drop for GateRing {
    /// A copy still in flight writes into its slot's pinned memory: wait for the last one before the slots
    /// are freed (a run stopped by an error drops its ring with copies queued).
    fn drop(&mut self) {
        if let Some((_, last)) = self.pending.back() {
            let _ = last.copied.synchronize();
        }
    }
}
