//! Timing of one piece of work, repeated: CUDA events on the GPU's stream with the L2 cache flushed before
//! every repeat (so each repeat reads its inputs from HBM, as in a training step where the previous layer's
//! outputs have long left the cache), `Instant` on the CPU.
use crate::backend::cuda::{Gpu, GpuBuf};
use crate::Device;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Bytes written between repeats to evict the L2 (50 MiB on the H100, 60 MiB on the H200): comfortably more.
const L2_FLUSH_BYTES: usize = 96 << 20;

/// Order statistics of repeated timings, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub median_ms: f64,
    pub min_ms: f64,
    pub p90_ms: f64,
    pub repeats: usize,
}

impl Stats {
    /// Summarises `samples_ms` (at least one).
    pub fn from_samples(samples_ms: &[f64]) -> Result<Stats> {
        if samples_ms.is_empty() {
            bail!("no timing samples");
        }
        let mut s = samples_ms.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        // Median of an even count: the mean of the two middle samples.
        let median_ms = if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) };
        // p90 by nearest rank: the smallest sample with at least 90 % of the samples at or below it.
        let p90_ms = s[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Ok(Stats { median_ms, min_ms: s[0], p90_ms, repeats: n })
    }
}

/// Times closures on one device. Holds the L2 flush buffer on CUDA so it is allocated once.
pub struct Timer {
    kind: Kind,
}

enum Kind {
    Cpu,
    Cuda { gpu: Arc<Gpu>, flush: GpuBuf<f32> },
}

impl Timer {
    pub fn new(device: &Device) -> Result<Timer> {
        Ok(Timer {
            kind: match device {
                Device::Cpu => Kind::Cpu,
                Device::Cuda(gpu) => Kind::Cuda { gpu: gpu.clone(), flush: gpu.alloc::<f32>(L2_FLUSH_BYTES / 4)? },
            },
        })
    }

    /// Runs `f` `warmup` times untimed, then `repeats` times timed; returns the per-repeat times in ms.
    /// On CUDA each repeat is bracketed by events on the one stream every op runs on, so the time is the
    /// GPU's (launch gaps included, as in training), and the L2 is flushed before the start event.
    pub fn time(&mut self, warmup: usize, repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        let repeats = repeats.max(1);
        match &mut self.kind {
            Kind::Cpu => {
                for _ in 0..warmup {
                    f()?;
                }
                let mut out = Vec::with_capacity(repeats);
                for _ in 0..repeats {
                    let t0 = Instant::now();
                    f()?;
                    out.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                Ok(out)
            }
            Kind::Cuda { gpu, flush } => {
                for _ in 0..warmup {
                    f()?;
                }
                gpu.synchronize()?;
                let stream = gpu.stream().clone();
                // CU_EVENT_DEFAULT: `new_event(None)` would create events with timing disabled.
                let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
                let start = gpu.context().new_event(flags).map_err(|e| anyhow!("creating a CUDA event: {e:?}"))?;
                let end = gpu.context().new_event(flags).map_err(|e| anyhow!("creating a CUDA event: {e:?}"))?;
                let mut out = Vec::with_capacity(repeats);
                for _ in 0..repeats {
                    // The memset runs before `start` in stream order, so it is not timed; while the GPU
                    // works on it the host enqueues the op's launches, hiding most launch latency.
                    flush.zero()?;
                    start.record(&stream).map_err(|e| anyhow!("recording a CUDA event: {e:?}"))?;
                    f()?;
                    end.record(&stream).map_err(|e| anyhow!("recording a CUDA event: {e:?}"))?;
                    // elapsed_ms synchronises on both events before reading them.
                    let ms = start.elapsed_ms(&end).map_err(|e| anyhow!("reading CUDA event times: {e:?}"))?;
                    out.push(ms as f64);
                }
                Ok(out)
            }
        }
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second), from the median
    /// of `repeats` copies of a 256 MiB buffer. None on the CPU.
    pub fn copy_bandwidth_gbps(&mut self, repeats: usize) -> Result<Option<f64>> {
        let gpu = match &self.kind {
            Kind::Cpu => return Ok(None),
            Kind::Cuda { gpu, .. } => gpu.clone(),
        };
        let bytes = 256usize << 20; // far beyond any L2
        let src = gpu.alloc_zeros::<f32>(bytes / 4)?;
        let mut dst = gpu.alloc::<f32>(bytes / 4)?;
        let samples = self.time(3, repeats, || dst.copy_from(&src))?;
        let stats = Stats::from_samples(&samples)?;
        Ok(Some(2.0 * bytes as f64 / (stats.median_ms * 1e-3) / 1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn order_statistics() {
        let s = Stats::from_samples(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median_ms, s.min_ms, s.p90_ms, s.repeats), (3.0, 1.0, 5.0, 5));
        let s = Stats::from_samples(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median_ms, 2.5);
        let s = Stats::from_samples(&(1..=20).map(f64::from).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.p90_ms, 18.0);
        assert!(Stats::from_samples(&[]).is_err());
    }
}
