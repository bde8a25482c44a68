//! AdamW with one fused CUDA launch for every parameter (multi-tensor apply, kernels/optim.cu) and its CPU
//! twin; the update reads its clip scale and skip flag from a `StepGate` on the device.
use super::gate::StepGate;
use super::slots::{DeviceSlots, SlotRows};
use crate::autograd::Grads;
use crate::backend::cuda::ptx;
use crate::tensor::{CpuStorage, Storage};
use crate::{launch, DType, Device, ParamStore, Tensor};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Adam state: first and second moments (f32, or f64 for f64 CPU parameters) per parameter, in name order.
pub struct AdamW {
    pub config: AdamConfig,
    pub step: u64,
    /// (name, m, v), in the ParamStore's name order.
    pub moments: Vec<(String, Tensor, Tensor)>,
    /// The CUDA slot table (`AdamSlot<float>` rows: param, grad, m, v, shadow; n, first_chunk).
    slots: DeviceSlots,
}

/// Mirrors `AdamHyper` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamHyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    grad_scale: f32,
}
unsafe impl cudarc::driver::DeviceRepr for AdamHyper {}

impl AdamW {
    pub fn new(config: AdamConfig, params: &ParamStore) -> Result<Self> {
        let mut moments = Vec::new();
        for (name, p) in params.iter() {
            if p.dtype() == DType::BF16 {
                bail!("AdamW: parameter {name} is bf16; keep f32 master weights (bf16 is for activations)");
            }
            let m = Tensor::zeros(p.shape().clone(), p.dtype(), p.device())?;
            let v = Tensor::zeros(p.shape().clone(), p.dtype(), p.device())?;
            moments.push((name.clone(), m, v));
        }
        Ok(AdamW { config, step: 0, moments, slots: DeviceSlots::default() })
    }

    /// One update of every parameter that has a gradient, at learning rate `lr` (warm-up lives outside),
    /// with every gradient multiplied by `grad_scale`.
    pub fn step(&mut self, params: &ParamStore, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        self.update(params, grads, lr, grad_scale, None, None)
    }

    /// One update gated by `gate` (from `clip_gate`): gradients multiplied by its clip scale, and no weight
    /// touched when it says skip. The step count advances either way (a run stops on a skipped step). On
    /// CUDA the gate is read on the device: no host round trip.
    pub fn step_gated(&mut self, params: &ParamStore, grads: &Grads, lr: f64, gate: &StepGate) -> Result<()> {
        self.update(params, grads, lr, 1.0, Some(gate), None)
    }

    /// The learning rate and bias corrections of the next step at learning rate `lr`, as
    /// [`Self::step_scheduled`] reads them: [lr, 1 − β1^step, 1 − β2^step].
    pub fn schedule_values(&self, lr: f64) -> [f32; 3] {
        let (c, step) = (self.config, self.step as i32 + 1);
        [lr as f32, (1.0 - c.beta1.powi(step)) as f32, (1.0 - c.beta2.powi(step)) as f32]
    }

    /// [`Self::step_gated`] with the learning rate and bias corrections read from `schedule` ([3] f32 on the
    /// parameters' device, from [`Self::schedule_values`]) where the update runs: on CUDA nothing of the
    /// launch changes from step to step, so it can be captured into a graph and replayed.
    pub fn step_scheduled(
        &mut self,
        params: &ParamStore,
        grads: &Grads,
        schedule: &Tensor,
        gate: &StepGate,
    ) -> Result<()> {
        if schedule.dims() != [3] || schedule.dtype() != DType::F32 {
            bail!("AdamW: the schedule must be [3] f32 (lr, bias corrections), got {:?}", schedule);
        }
        self.update(params, grads, 0.0, 1.0, Some(gate), Some(schedule))
    }

    /// Counts a step that ran without this object: a replay of a captured [`Self::step_scheduled`].
    pub fn count_replayed_step(&mut self) {
        self.step += 1;
    }

    fn update(
        &mut self,
        params: &ParamStore,
        grads: &Grads,
        lr: f64,
        grad_scale: f64,
        gate: Option<&StepGate>,
        schedule: Option<&Tensor>,
    ) -> Result<()> {
        if params.len() != self.moments.len() {
            bail!("AdamW: built for {} parameters, stepped with {}", self.moments.len(), params.len());
        }
        self.step += 1;
        let c = self.config;
        let mut hyper = AdamHyper {
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            weight_decay: c.weight_decay as f32,
            bias_correction1: (1.0 - c.beta1.powi(self.step as i32)) as f32,
            bias_correction2: (1.0 - c.beta2.powi(self.step as i32)) as f32,
            grad_scale: grad_scale as f32,
        };
        if let Some(t) = schedule.filter(|t| t.device() == &Device::Cpu) {
            let v = t.to_vec_f32()?;
            (hyper.lr, hyper.bias_correction1, hyper.bias_correction2) = (v[0], v[1], v[2]);
        }
        // A CPU gate is host memory: read it here (the CUDA kernel reads its own on the device).
        if let Some(g) = gate.filter(|g| g.device() == &Device::Cpu) {
            let values = g.read()?;
            if values.skip {
                return Ok(());
            }
            hyper.grad_scale *= values.scale as f32;
        }
        let mut rows = SlotRows::default();
        let mut gpu = None;
        for ((name, p), (mname, m, v)) in params.iter().zip(&self.moments) {
            if name != mname {
                bail!("AdamW: parameter {name} does not match optimiser state {mname}");
            }
            let Some(g) = grads.get(p) else { continue };
            if p.shape() != g.shape() || p.device() != g.device() {
                bail!("AdamW: gradient {g:?} does not fit parameter {name} {p:?}");
            }
            if let Some(gate) = gate {
                if gate.device() != p.device() {
                    bail!("AdamW: the step gate is on {:?}, parameter {name} on {:?}", gate.device(), p.device());
                }
            }
            match p.device() {
                Device::Cpu => cpu_update(p, g, m, v, &hyper)?,
                Device::Cuda(gp) => {
                    gpu = Some(gp);
                    // The fused kernel reads f32 weights, gradients and moments (bf16 training keeps f32
                    // masters, whose gradients come back f32 through the cast's backward).
                    if p.dtype() != DType::F32 || g.dtype() != DType::F32 {
                        bail!(
                            "AdamW: parameter {name} is {} with a {} gradient; the CUDA update takes f32 master \
                             weights and f32 gradients",
                            p.dtype(),
                            g.dtype()
                        );
                    }
                    // A tensor with no elements has no chunk; left out so the grid never has 0 blocks.
                    if p.numel() > 0 {
                        rows.push(
                            &[p.storage_ptr()?, g.storage_ptr()?, m.storage_ptr()?, v.storage_ptr()?, 0],
                            p.numel(),
                        );
                    }
                }
            }
        }
        if let (Some(gpu), true) = (gpu, rows.rows > 0) {
            let table = self.slots.upload(gpu, &rows)?;
            let gate_ptr = StepGate::kernel_arg(gate)?;
            let schedule_ptr = match schedule {
                Some(t) if matches!(t.device(), Device::Cuda(_)) => t.storage_ptr()?,
                Some(t) => bail!("AdamW: the schedule is on {:?}, the parameters on CUDA", t.device()),
                None => 0,
            };
            launch!(
                gpu,
                gpu.func(ptx::OPTIM, "adamw_step_f32")?,
                (rows.chunks as u32, 256u32, 0),
                table,
                rows.rows as i32,
                hyper,
                gate_ptr,
                schedule_ptr
            )?;
        }
        Ok(())
    }
}

fn cpu_update(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, h: &AdamHyper) -> Result<()> {
    fn run<T: crate::backend::cpu::Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &AdamHyper) {
        let f = |x: f32| T::of(x as f64);
        let (b1, b2) = (f(h.beta1), f(h.beta2));
        for i in 0..p.len() {
            let gi = g[i] * f(h.grad_scale);
            m[i] = b1 * m[i] + (T::one() - b1) * gi;
            v[i] = b2 * v[i] + (T::one() - b2) * gi * gi;
            let (mhat, vhat) = (m[i] / f(h.bias_correction1), v[i] / f(h.bias_correction2));
            p[i] = p[i] * (T::one() - f(h.lr) * f(h.weight_decay)) - f(h.lr) * mhat / (vhat.sqrt() + f(h.eps));
        }
    }
    let gs = g.storage();
    let (mut ps, mut ms, mut vs) = (p.storage_mut(), m.storage_mut(), v.storage_mut());
    match (&mut *ps, &*gs, &mut *ms, &mut *vs) {
        (
            Storage::Cpu(CpuStorage::F32(p)),
            Storage::Cpu(CpuStorage::F32(g)),
            Storage::Cpu(CpuStorage::F32(m)),
            Storage::Cpu(CpuStorage::F32(v)),
        ) => run(p, g, m, v, h),
        (
            Storage::Cpu(CpuStorage::F64(p)),
            Storage::Cpu(CpuStorage::F64(g)),
            Storage::Cpu(CpuStorage::F64(m)),
            Storage::Cpu(CpuStorage::F64(v)),
        ) => run(p, g, m, v, h),
        _ => bail!("AdamW: parameter, gradient and moments must share one CPU dtype"),
    }
    Ok(())
}
