//! Creating tensors, moving them between devices and dtypes, and reading them back.
use super::{CpuStorage, DType, Shape, Storage, Tensor};
use crate::autograd::Node;
use crate::backend::cuda::CudaStorage;
use crate::backend::Device;
use anyhow::{bail, Result};
use half::bf16;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

impl Tensor {
    /// A tensor holding `data` (given in f64 for convenience) as `dtype` on `device`.
    pub fn from_f64(data: &[f64], shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            bail!("from_f64: {} values for shape {shape} ({} elements)", data.len(), shape.numel());
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::from_f64(dtype, data)?),
            Device::Cuda(gpu) => Storage::Cuda(match dtype {
                DType::F32 => CudaStorage::F32(gpu.upload(&data.iter().map(|&x| x as f32).collect::<Vec<_>>())?),
                DType::BF16 => {
                    CudaStorage::BF16(gpu.upload(&data.iter().map(|&x| bf16::from_f64(x)).collect::<Vec<_>>())?)
                }
                DType::F64 => bail!("the CUDA backend holds f32 and bf16, not f64"),
            }),
        };
        Tensor::from_storage(storage, shape, device.clone())
    }

    /// An f32 tensor holding `data` on `device`.
    pub fn from_f32(data: &[f32], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            bail!("from_f32: {} values for shape {shape} ({} elements)", data.len(), shape.numel());
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::F32(data.to_vec())),
            Device::Cuda(gpu) => Storage::Cuda(CudaStorage::F32(gpu.upload(data)?)),
        };
        Tensor::from_storage(storage, shape, device.clone())
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::zeros(dtype, n)?),
            Device::Cuda(gpu) => Storage::Cuda(match dtype {
                DType::F32 => CudaStorage::F32(gpu.alloc_zeros(n)?),
                DType::BF16 => CudaStorage::BF16(gpu.alloc_zeros(n)?),
                DType::F64 => bail!("the CUDA backend holds f32 and bf16, not f64"),
            }),
        };
        Tensor::from_storage(storage, shape, device.clone())
    }

    /// Every element `value`. On CUDA a memset of its bit pattern, with no host buffer: so the backward
    /// pass's seed gradient can be captured into a graph.
    pub fn full(shape: impl Into<Shape>, value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        let storage = match (device, dtype) {
            (Device::Cuda(gpu), DType::F32) if n > 0 => {
                let mut b = gpu.alloc::<f32>(n)?;
                b.fill(value as f32)?;
                Storage::Cuda(CudaStorage::F32(b))
            }
            (Device::Cuda(gpu), DType::BF16) if n > 0 => {
                let mut b = gpu.alloc::<bf16>(n)?;
                b.fill(bf16::from_f64(value))?;
                Storage::Cuda(CudaStorage::BF16(b))
            }
            _ => return Tensor::from_f64(&vec![value; n], shape, dtype, device),
        };
        Tensor::from_storage(storage, shape, device.clone())
    }

    /// Standard normal entries drawn from `rng` (on the host, so CPU and CUDA get the same values).
    pub fn randn(shape: impl Into<Shape>, dtype: DType, device: &Device, rng: &mut impl Rng) -> Result<Tensor> {
        let shape = shape.into();
        let data: Vec<f64> = (0..shape.numel()).map(|_| StandardNormal.sample(rng)).collect();
        Tensor::from_f64(&data, shape, dtype, device)
    }

    /// Uniform entries in [lo, hi) drawn from `rng`.
    pub fn rand_uniform(
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: &Device,
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let data: Vec<f64> = (0..shape.numel()).map(|_| rng.random_range(lo..hi)).collect();
        Tensor::from_f64(&data, shape, dtype, device)
    }

    /// All elements as f64, copied to the host.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(match &*self.storage() {
            Storage::Cpu(s) => s.to_f64(),
            Storage::Cuda(CudaStorage::F32(b)) => b.download()?.into_iter().map(|x| x as f64).collect(),
            Storage::Cuda(CudaStorage::BF16(b)) => b.download()?.into_iter().map(|x| x.to_f64()).collect(),
        })
    }

    /// All elements as f32, copied to the host.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(match &*self.storage() {
            Storage::Cpu(s) => s.to_f32(),
            Storage::Cuda(CudaStorage::F32(b)) => b.download()?,
            Storage::Cuda(CudaStorage::BF16(b)) => b.download()?.into_iter().map(|x| x.to_f32()).collect(),
        })
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            bail!("item: tensor of shape {} has {} elements, not 1", self.shape(), self.numel());
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// This tensor on `device`. A CPU tensor goes to CUDA as f32 (bf16 stays bf16 via `to_dtype`); a bf16
    /// CUDA tensor comes to the CPU as f32. Gradients flow back across the move.
    ///
    /// Onto the device the tensor is already on, this is the tensor itself (a `clone`, sharing storage),
    /// so in-place updates (an optimiser step, `assign`) through either are seen by both. Follow it with
    /// [`Tensor::deep_copy`] when the values must be independent.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let out = match (device, &*self.storage()) {
            (Device::Cpu, Storage::Cuda(CudaStorage::F32(b))) => Storage::Cpu(CpuStorage::F32(b.download()?)),
            (Device::Cpu, Storage::Cuda(CudaStorage::BF16(b))) => {
                Storage::Cpu(CpuStorage::F32(b.download()?.into_iter().map(|x| x.to_f32()).collect()))
            }
            (Device::Cuda(gpu), Storage::Cpu(s)) => Storage::Cuda(CudaStorage::F32(gpu.upload(&s.to_f32())?)),
            (Device::Cuda(gpu), Storage::Cuda(CudaStorage::F32(b))) => {
                Storage::Cuda(CudaStorage::F32(gpu.upload(&b.download()?)?))
            }
            (Device::Cuda(gpu), Storage::Cuda(CudaStorage::BF16(b))) => {
                Storage::Cuda(CudaStorage::BF16(gpu.upload(&b.download()?)?))
            }
            (Device::Cpu, Storage::Cpu(_)) => unreachable!(),
        };
        let (from_dev, from_dtype) = (self.device().clone(), self.dtype());
        let t = Tensor::from_storage(out, self.shape().clone(), device.clone())?;
        Ok(t.with_node(Node::record("to_device", &[self], move |g| {
            Ok(vec![Some(g.to_device(&from_dev)?.to_dtype(from_dtype)?)])
        })))
    }

    /// This tensor converted to `dtype` on its device. Gradients flow back, converted to the source dtype.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(CpuStorage::from_f64(dtype, &s.to_f64())?),
            Storage::Cuda(s) => {
                let gpu = self.device().gpu().expect("CUDA storage lives on a CUDA device");
                Storage::Cuda(crate::ops::elementwise::cuda::cast(gpu, s, dtype)?)
            }
        };
        let from = self.dtype();
        let t = Tensor::from_storage(out, self.shape().clone(), self.device().clone())?;
        Ok(t.with_node(Node::record("to_dtype", &[self], move |g| Ok(vec![Some(g.to_dtype(from)?)]))))
    }
}
