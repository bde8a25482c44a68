//! An exponential moving average of the parameters (the weights used for sampling): on CUDA one launch
//! for every tensor (kernels/optim.cu `ema_update_multi_f32`), gated like AdamW.
use super::gate::StepGate;
use super::slots::{DeviceSlots, SlotRows};
use crate::backend::cuda::{ptx, CudaStorage};
use crate::tensor::{CpuStorage, Storage};
use crate::{launch, Device, ParamStore, Tensor};
use anyhow::{bail, Result};

pub struct Ema {
    pub decay: f64,
    /// (name, shadow), in the ParamStore's name order.
    pub shadow: Vec<(String, Tensor)>,
    /// The CUDA slot table (`EmaSlot` rows: ema, param; n, first_chunk). Neither pointer moves between
    /// steps, so it is uploaded once.
    slots: DeviceSlots,
}

impl Ema {
    pub fn new(decay: f64, params: &ParamStore) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            bail!("EMA decay {decay} must be in [0, 1)");
        }
        let shadow = params.iter().map(|(n, p)| Ok((n.clone(), p.deep_copy()?))).collect::<Result<_>>()?;
        Ok(Ema { decay, shadow, slots: DeviceSlots::default() })
    }

    /// ema = decay · ema + (1 − decay) · param, for every parameter.
    pub fn update(&mut self, params: &ParamStore) -> Result<()> {
        self.update_gated(params, None)
    }

    /// As `update`, leaving every average as it was when `gate` says the step is skipped (on CUDA the gate
    /// is read on the device).
    pub fn update_gated(&mut self, params: &ParamStore, gate: Option<&StepGate>) -> Result<()> {
        if params.len() != self.shadow.len() {
            bail!("EMA: built for {} parameters, updated with {}", self.shadow.len(), params.len());
        }
        if let Some(g) = gate.filter(|g| g.device() == &Device::Cpu) {
            if g.read()?.skip {
                return Ok(());
            }
        }
        let mut rows = SlotRows::default();
        let mut gpu = None;
        for ((name, p), (sname, e)) in params.iter().zip(&self.shadow) {
            if name != sname {
                bail!("EMA: parameter {name} does not match EMA entry {sname}");
            }
            if let Some(gate) = gate {
                if gate.device() != p.device() {
                    bail!("EMA: the step gate is on {:?}, parameter {name} on {:?}", gate.device(), p.device());
                }
            }
            let ps = p.storage();
            let mut es = e.storage_mut();
            match (&mut *es, &*ps) {
                (Storage::Cpu(CpuStorage::F32(e)), Storage::Cpu(CpuStorage::F32(p))) => {
                    let d = self.decay as f32;
                    e.iter_mut().zip(p).for_each(|(e, p)| *e = d * *e + (1.0 - d) * p);
                }
                (Storage::Cpu(CpuStorage::F64(e)), Storage::Cpu(CpuStorage::F64(p))) => {
                    e.iter_mut().zip(p).for_each(|(e, p)| *e = self.decay * *e + (1.0 - self.decay) * p);
                }
                (Storage::Cuda(CudaStorage::F32(eb)), Storage::Cuda(CudaStorage::F32(pb))) => {
                    gpu = p.device().gpu();
                    // A parameter with no elements has nothing to average (and no chunk).
                    if pb.len() > 0 {
                        rows.push(&[eb.ptr(), pb.ptr()], pb.len());
                    }
                }
                _ => bail!("EMA: parameter {name} must be f32 or f64 and on the same device as its average"),
            }
        }
        if let (Some(gpu), true) = (gpu, rows.rows > 0) {
            let table = self.slots.upload(gpu, &rows)?;
            let gate_ptr = StepGate::kernel_arg(gate)?;
            launch!(
                gpu,
                gpu.func(ptx::OPTIM, "ema_update_multi_f32")?,
                (rows.chunks as u32, 256u32, 0),
                table,
                rows.rows as i32,
                self.decay as f32,
                gate_ptr
            )?;
        }
        Ok(())
    }
}
