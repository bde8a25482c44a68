//! The step gate: the global gradient norm, the clip scale that brings it down to `max_norm`, and whether
//! the step must be skipped (a non-finite loss or norm), computed where the gradients live. On CUDA the
//! gate is four floats on the device that AdamW and the EMA read there, so clipping costs two launches and
//! no host round trip; the host reads the gate once, when it wants the step's loss and norm.
use super::slots::{DeviceSlots, SlotRows};
use crate::autograd::Grads;
use crate::backend::cuda::{ptx, GpuBuf};
use crate::{launch, ops, DType, Device, ParamStore, Tensor};
use anyhow::{bail, Context, Result};

/// A step's gate: [loss, grad norm, clip scale, skip] on the gradients' device (f32 on CUDA, f64 on the
/// CPU). It shares storage with its workspace: the next `clip_gate` on the same workspace overwrites it.
#[derive(Clone)]
pub struct StepGate {
    values: Tensor,
}

impl GateValues {
    /// [loss, norm, scale, skip] as the kernel writes them (skip: 0 go, 1 this step is bad, 2 halted).
    pub(super) fn from_raw(v: [f64; 4]) -> GateValues {
        GateValues { loss: v[0], norm: v[1], scale: v[2], skip: v[3] != 0.0, halted: v[3] > 1.5 }
    }
}

/// The gate read back to the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateValues {
    /// The loss given to `clip_gate` (0 without one).
    pub loss: f64,
    /// The global L2 norm of every gradient, before clipping.
    pub norm: f64,
    /// The factor (≤ 1) every gradient is multiplied by; 0 when the step is skipped.
    pub scale: f64,
    /// The loss or the norm is not finite, or (a sticky gate) an earlier step's was: AdamW and the EMA
    /// leave every weight as it was.
    pub skip: bool,
    /// A sticky gate after a bad step: this step was skipped because an earlier one was, not for its own
    /// values.
    pub halted: bool,
}

impl StepGate {
    /// Reads the gate to the host (on CUDA, a synchronisation).
    pub fn read(&self) -> Result<GateValues> {
        let v = self.values.to_vec_f64().context("reading the step gate")?;
        Ok(GateValues::from_raw([v[0], v[1], v[2], v[3]]))
    }

    /// The four values on the device (the gate ring copies them to the host without waiting).
    pub(super) fn values(&self) -> &Tensor {
        &self.values
    }

    pub(super) fn device(&self) -> &Device {
        self.values.device()
    }

    /// The kernels' `gate` argument: the device address of the four floats, or null for no gate.
    pub(super) fn kernel_arg(gate: Option<&StepGate>) -> Result<u64> {
        gate.map_or(Ok(0), |g| g.values.storage_ptr())
    }
}

/// Device buffers a gate reuses from step to step (slot table, per-chunk partial sums, the gate), so a
/// steady-state step allocates and uploads nothing.
#[derive(Default)]
pub struct GateWorkspace {
    slots: DeviceSlots,
    partial: Option<GpuBuf<f32>>,
    gate: Option<Tensor>,
    /// The gate halts the run at the first bad step (see [`GateWorkspace::sticky`]).
    sticky: bool,
    /// The CPU twin's previous skip flag (the device keeps its own in `gate`).
    cpu_skip: f64,
}

impl GateWorkspace {
    /// A workspace whose gates halt the run at the first bad step: every later gate says skip (halted),
    /// until a new workspace is made. For a trainer that reads gates late (the gate ring).
    pub fn sticky() -> Self {
        GateWorkspace { sticky: true, ..GateWorkspace::default() }
    }
}

/// The gate of one step: the norm of every parameter's gradient (parameters without one are left out),
/// the clip scale for `max_norm` (≤ 0: no clipping), and the skip flag from `loss` (a scalar; `None`
/// checks only the norm).
pub fn clip_gate(
    params: &ParamStore,
    grads: &Grads,
    loss: Option<&Tensor>,
    max_norm: f64,
    ws: &mut GateWorkspace,
) -> Result<StepGate> {
    let present: Vec<(&String, Tensor)> =
        params.iter().filter_map(|(name, p)| grads.get(p).map(|g| (name, g.clone()))).collect();
    let device = match (present.first(), loss) {
        (Some((_, g)), _) => g.device().clone(),
        (None, Some(l)) => l.device().clone(),
        (None, None) => Device::Cpu,
    };
    for (name, g) in &present {
        if g.device() != &device {
            bail!("clip_gate: the gradient of {name} is on {:?}, the others on {device:?}", g.device());
        }
    }
    if let Some(l) = loss {
        if l.numel() != 1 || l.device() != &device {
            bail!("clip_gate: the loss must be one value on {device:?}, got {l:?}");
        }
    }
    match &device {
        Device::Cpu => {
            let gate = cpu_gate(&present, loss, max_norm, ws.sticky && ws.cpu_skip != 0.0)?;
            ws.cpu_skip = gate.values.to_vec_f64()?[3];
            Ok(gate)
        }
        Device::Cuda(gpu) => {
            let mut rows = SlotRows::default();
            for (name, g) in &present {
                if g.dtype() != DType::F32 {
                    bail!("clip_gate: the gradient of {name} is {}; the CUDA gate reads f32 gradients", g.dtype());
                }
                if g.numel() > 0 {
                    rows.push(&[g.storage_ptr()?], g.numel());
                }
            }
            let gate = match &ws.gate {
                Some(t) if t.device() == &device => t.clone(),
                _ => ws.gate.insert(Tensor::zeros([4], DType::F32, &device)?).clone(),
            };
            if ws.partial.as_ref().is_none_or(|p| p.len() < rows.chunks.max(1)) {
                ws.partial = Some(gpu.alloc::<f32>(rows.chunks.max(1))?);
            }
            let partial = ws.partial.as_ref().expect("allocated above").ptr();
            if rows.rows > 0 {
                let table = ws.slots.upload(gpu, &rows)?;
                launch!(
                    gpu,
                    gpu.func(ptx::OPTIM, "grad_sumsq_f32")?,
                    (rows.chunks as u32, 256u32, 0),
                    table,
                    rows.rows as i32,
                    partial
                )?;
            }
            let loss = match loss {
                Some(l) if l.dtype() == DType::F32 => Some(l.clone()),
                Some(l) => Some(l.to_dtype(DType::F32)?),
                None => None,
            };
            let loss_ptr = match &loss {
                Some(l) => l.storage_ptr()?,
                None => 0,
            };
            launch!(
                gpu,
                gpu.func(ptx::OPTIM, "grad_clip_gate_f32")?,
                (1u32, 256u32, 0),
                partial,
                rows.chunks as i32,
                loss_ptr,
                max_norm as f32,
                ws.sticky as i32,
                gate.storage_ptr()?
            )?;
            Ok(StepGate { values: gate })
        }
    }
}

/// The CPU twin of grad_sumsq_f32 + grad_clip_gate_f32 (in f64 throughout); `halted`: a sticky gate after a
/// bad step.
fn cpu_gate(present: &[(&String, Tensor)], loss: Option<&Tensor>, max_norm: f64, halted: bool) -> Result<StepGate> {
    let mut total = 0.0;
    for (_, g) in present {
        let g = if g.dtype() == DType::BF16 { g.to_dtype(DType::F32)? } else { g.clone() };
        total += ops::sum_all(&ops::square(&g)?)?.item()?;
    }
    let norm = total.sqrt();
    let loss = match loss {
        Some(l) => l.item()?,
        None => 0.0,
    };
    let finite = loss.is_finite() && norm.is_finite();
    let scale = if !finite || halted {
        0.0
    } else if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    let skip = if halted {
        2.0
    } else if finite {
        0.0
    } else {
        1.0
    };
    let values = [loss, norm, scale, skip];
    Ok(StepGate { values: Tensor::from_f64(&values, [4], DType::F64, &Device::Cpu)? })
}

/// The global L2 norm of all gradients, and the factor (≤ 1) that brings it down to `max_norm` (0 when the
/// norm is not finite). On CUDA this reads the gate back: a training step uses `clip_gate` instead.
pub fn clip_grad_norm(params: &ParamStore, grads: &Grads, max_norm: f64) -> Result<(f64, f64)> {
    let g = clip_gate(params, grads, None, max_norm, &mut GateWorkspace::default())?.read()?;
    Ok((g.norm, g.scale))
}
