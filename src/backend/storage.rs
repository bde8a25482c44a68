use crate::backend::cuda::CudaStorage;
use crate::backend::DType;

/// Host memory of a tensor: the reference backend computes in f32, or in f64 for gradient checks.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// The element types a [`CpuStorage`] holds, for ops whose CPU side is generic over them and pulls typed
/// slices out of several storages at once ([`typed_slices`]).
pub trait CpuElement: Sized {
    /// The values of `s`, if it holds this type.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

impl CpuElement for f32 {
    fn slice(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            CpuStorage::F64(_) => None,
        }
    }
    fn wrap(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl CpuElement for f64 {
    fn slice(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            CpuStorage::F32(_) => None,
        }
    }
    fn wrap(v: Vec<f64>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

/// The values of every storage in `s` as `T`, or an error naming `op` if one holds another type.
pub fn typed_slices<'a, T: CpuElement>(op: &str, s: &[&'a CpuStorage]) -> anyhow::Result<Vec<&'a [T]>> {
    s.iter()
        .map(|x| T::slice(x).ok_or_else(|| anyhow::anyhow!("{op}: inputs of different dtypes ({})", x.dtype())))
        .collect()
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn zeros(dtype: DType, n: usize) -> anyhow::Result<Self> {
        match dtype {
            DType::F32 => Ok(CpuStorage::F32(vec![0.0; n])),
            DType::F64 => Ok(CpuStorage::F64(vec![0.0; n])),
            DType::BF16 => anyhow::bail!("the CPU backend holds f32 and f64, not bf16; use f32 on the CPU"),
        }
    }
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
        }
    }
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            CpuStorage::F32(v) => v.clone(),
            CpuStorage::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    pub fn from_f64(dtype: DType, v: &[f64]) -> anyhow::Result<Self> {
        match dtype {
            DType::F32 => Ok(CpuStorage::F32(v.iter().map(|&x| x as f32).collect())),
            DType::F64 => Ok(CpuStorage::F64(v.to_vec())),
            DType::BF16 => anyhow::bail!("the CPU backend holds f32 and f64, not bf16; use f32 on the CPU"),
        }
    }
}

/// Where a tensor's elements live.
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
