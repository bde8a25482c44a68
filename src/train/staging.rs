//! The CUDA side of a staged step (objectives/batch.rs): each step's words go up in one copy from
//! page-locked memory into one device buffer, which keeps its address for the whole run, so a step
//! captured into a graph reads the new words at every replay. The host fills a ring of page-locked
//! buffers; it waits for the device only when it has got a whole ring ahead of it.
use crate::backend::cuda::{Gpu, GpuBuf, PinnedBuf};
use anyhow::{anyhow, Result};
use cudarc::driver::CudaEvent;

/// Page-locked buffers in the ring: the host may fill this many steps ahead of the device.
const RING: usize = 3;

struct Slot {
    host: PinnedBuf<u32>,
    /// Recorded after the copy out of `host`; None before its first copy.
    sent: Option<CudaEvent>,
}

/// The staging buffers of one trainer.
#[derive(Default)]
pub struct Staging {
    device: Option<GpuBuf<u32>>,
    ring: Vec<Slot>,
    next: usize,
}

impl Staging {
    /// Queues the copy of `words` into the device buffer (ordered after every launch already issued, so
    /// after the previous step read it) and returns the buffer. The buffer is made again only when the
    /// number of words changes (a layout change, which also ends a captured step).
    pub fn send(&mut self, gpu: &Gpu, words: &[u32]) -> Result<&GpuBuf<u32>> {
        gpu.wait_for_other_captures();
        if self.device.as_ref().map(|d| d.len()) != Some(words.len()) {
            self.ring.clear();
            self.device = Some(gpu.alloc(words.len())?);
        }
        if self.ring.len() < RING {
            self.ring.push(Slot { host: PinnedBuf::new(gpu, words.len(), true)?, sent: None });
            self.next = self.ring.len() - 1;
        }
        let slot = &mut self.ring[self.next];
        if let Some(sent) = &slot.sent {
            // The copy out of this buffer, RING steps ago, must have left before the buffer is refilled.
            if !sent.try_is_complete().map_err(|e| anyhow!("querying a staged copy: {e:?}"))? {
                gpu.count_host_wait();
                sent.synchronize().map_err(|e| anyhow!("waiting for a staged copy: {e:?}"))?;
            }
        }
        slot.host.as_mut_slice().copy_from_slice(words);
        let device = self.device.as_mut().expect("made above");
        device.upload_pinned(&slot.host)?;
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
        let sent = match slot.sent.take() {
            Some(e) => e,
            None => gpu.context().new_event(flags).map_err(|e| anyhow!("creating a CUDA event: {e:?}"))?,
        };
        sent.record(gpu.stream()).map_err(|e| anyhow!("recording a CUDA event: {e:?}"))?;
        slot.sent = Some(sent);
        self.next = (self.next + 1) % RING;
        Ok(self.device.as_ref().expect("made above"))
    }
}

impl Drop for Staging {
    /// A copy in flight reads its page-locked buffer: let the last one land before the buffers are freed.
    fn drop(&mut self) {
        for slot in &self.ring {
            if let Some(sent) = &slot.sent {
                let _ = sent.synchronize();
            }
        }
    }
}
