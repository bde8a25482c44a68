//! AdamW with one fused CUDA launch for every parameter (multi-tensor apply, kernels/optim.cu), its CPU
//! twin, an exponential moving average of the weights, and global gradient-norm clipping.
use crate::autograd::Grads;
use crate::backend::cuda::{ptx, CudaStorage, Gpu};
use crate::tensor::{CpuStorage, Storage};
use crate::{launch, ops, DType, ParamStore, Tensor};
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
}

/// Mirrors `AdamSlot<G>` in kernels/optim.cu (five pointers, then two i64).
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamSlot {
    param: u64,
    grad: u64,
    m: u64,
    v: u64,
    shadow: u64,
    n: i64,
    first_chunk: i64,
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

const CHUNK: usize = 4096; // kernels/optim.cu

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
        Ok(AdamW { config, step: 0, moments })
    }

    /// One update of every parameter that has a gradient, at learning rate `lr` (warm-up lives outside),
    /// with every gradient multiplied by `grad_scale` (from clipping).
    pub fn step(&mut self, params: &ParamStore, grads: &Grads, lr: f64, grad_scale: f64) -> Result<()> {
        if params.len() != self.moments.len() {
            bail!("AdamW: built for {} parameters, stepped with {}", self.moments.len(), params.len());
        }
        self.step += 1;
        let c = self.config;
        let hyper = AdamHyper {
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            weight_decay: c.weight_decay as f32,
            bias_correction1: (1.0 - c.beta1.powi(self.step as i32)) as f32,
            bias_correction2: (1.0 - c.beta2.powi(self.step as i32)) as f32,
            grad_scale: grad_scale as f32,
        };
        let mut slots = Vec::new();
        let mut keep_alive = Vec::new();
        let mut gpu: Option<&std::sync::Arc<Gpu>> = None;
        for ((name, p), (mname, m, v)) in params.iter().zip(&self.moments) {
            if name != mname {
                bail!("AdamW: parameter {name} does not match optimiser state {mname}");
            }
            let Some(g) = grads.get(p) else { continue };
            if p.shape() != g.shape() || p.device() != g.device() {
                bail!("AdamW: gradient {g:?} does not fit parameter {name} {p:?}");
            }
            match p.device() {
                crate::Device::Cpu => cpu_update(p, g, m, v, &hyper)?,
                crate::Device::Cuda(gp) => {
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
                    if p.numel() == 0 {
                        // No chunk to update; left out so the grid never has 0 blocks.
                        continue;
                    }
                    let first_chunk =
                        slots.last().map_or(0, |s: &AdamSlot| s.first_chunk + (s.n as usize).div_ceil(CHUNK) as i64);
                    slots.push(AdamSlot {
                        param: p.storage_ptr()?,
                        grad: g.storage_ptr()?,
                        m: m.storage_ptr()?,
                        v: v.storage_ptr()?,
                        shadow: 0,
                        n: p.numel() as i64,
                        first_chunk,
                    });
                    keep_alive.push(g.clone());
                }
            }
        }
        if let (Some(gpu), false) = (gpu, slots.is_empty()) {
            let words: Vec<u64> = slots
                .iter()
                .flat_map(|s| [s.param, s.grad, s.m, s.v, s.shadow, s.n as u64, s.first_chunk as u64])
                .collect();
            let table = gpu.upload(&words)?;
            let last = slots.last().unwrap();
            let blocks = last.first_chunk as usize + (last.n as usize).div_ceil(CHUNK);
            launch!(
                gpu,
                gpu.func(ptx::OPTIM, "adamw_step_f32")?,
                (blocks as u32, 256u32, 0),
                table.ptr(),
                slots.len() as i32,
                hyper
            )?;
        }
        drop(keep_alive);
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

/// Exponential moving average of the parameters (the weights used for sampling).
pub struct Ema {
    pub decay: f64,
    /// (name, shadow), in the ParamStore's name order.
    pub shadow: Vec<(String, Tensor)>,
}

impl Ema {
    pub fn new(decay: f64, params: &ParamStore) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            bail!("EMA decay {decay} must be in [0, 1)");
        }
        let shadow = params.iter().map(|(n, p)| Ok((n.clone(), p.deep_copy()?))).collect::<Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    pub fn update(&mut self, params: &ParamStore) -> Result<()> {
        for ((name, p), (sname, e)) in params.iter().zip(&self.shadow) {
            if name != sname {
                bail!("EMA: parameter {name} does not match EMA entry {sname}");
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
                    let gpu = p.device().gpu().expect("CUDA tensor");
                    let n = pb.len();
                    if n == 0 {
                        continue; // a parameter with no elements: nothing to average
                    }
                    launch!(
                        gpu,
                        gpu.func(ptx::OPTIM, "ema_update_f32")?,
                        (crate::backend::cuda::blocks_for(n, 256, 4).min(132 * 8), 256u32, 0),
                        eb.ptr(),
                        pb.ptr(),
                        self.decay as f32,
                        n as i64
                    )?;
                }
                _ => bail!("EMA: parameter {name} must be f32 or f64 and on the same device as its average"),
            }
        }
        Ok(())
    }
}

/// The global L2 norm of all gradients, and the factor (≤ 1) that brings it down to `max_norm`.
pub fn clip_grad_norm(params: &ParamStore, grads: &Grads, max_norm: f64) -> Result<(f64, f64)> {
    let mut total = 0.0;
    for (_, p) in params.iter() {
        if let Some(g) = grads.get(p) {
            let g32 = if g.dtype() == DType::BF16 { g.to_dtype(DType::F32)? } else { g.clone() };
            total += ops::sum_all(&ops::square(&g32)?)?.item()?;
        }
    }
    let norm = total.sqrt();
    let scale = if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 };
    Ok((norm, scale))
}
