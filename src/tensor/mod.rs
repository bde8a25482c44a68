//! The tensor: a shape, a dtype, a device, shared storage and (when it was computed by a recorded op)
//! the autograd node that made it. Tensors are contiguous and row-major; ops never broadcast silently.
mod create;
mod shape;

// The element types and storage are the backends' (they import nothing from here); a tensor holds them.
pub use crate::backend::{CpuStorage, DType, Storage};
pub use shape::Shape;

use crate::autograd::Node;
use crate::backend::Device;
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Unique identity of a tensor value (views made by `reshape` get their own id).
pub type TensorId = u64;

fn next_id() -> TensorId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: TensorId,
    shape: Shape,
    dtype: DType,
    device: Device,
    storage: Arc<RwLock<Storage>>,
    node: Option<Arc<Node>>,
    requires_grad: bool,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {} on {})", self.shape(), self.dtype(), self.device())
    }
}

impl Tensor {
    /// Wraps freshly computed storage as a constant (no autograd history).
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.numel() {
            bail!("storage holds {} elements but shape {shape} needs {}", storage.len(), shape.numel());
        }
        Ok(Tensor(Arc::new(Inner {
            id: next_id(),
            dtype: storage.dtype(),
            shape,
            device,
            storage: Arc::new(RwLock::new(storage)),
            node: None,
            requires_grad: false,
        })))
    }

    /// The result of an op: records `node` for backward when gradients are being tracked.
    pub(crate) fn with_node(self, node: Option<Node>) -> Tensor {
        match node {
            None => self,
            Some(node) => {
                let inner = Arc::try_unwrap(self.0).unwrap_or_else(|_| unreachable!("fresh op output is unshared"));
                Tensor(Arc::new(Inner { node: Some(Arc::new(node)), ..inner }))
            }
        }
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.0.shape.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }
    /// In-place access for optimisers and loaders. Ops never write into their inputs.
    pub fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }
    /// A leaf whose gradient `backward` reports (parameters).
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    /// Whether gradients flow through this tensor: a trainable leaf or the output of a recorded op.
    pub fn tracks_grad(&self) -> bool {
        self.0.requires_grad || self.0.node.is_some()
    }
    /// A leaf sharing this tensor's storage, marked as trainable (or not).
    pub fn set_requires_grad(&self, yes: bool) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape: self.0.shape.clone(),
            dtype: self.0.dtype,
            device: self.0.device.clone(),
            storage: self.0.storage.clone(),
            node: None,
            requires_grad: yes,
        }))
    }
    /// The same values without autograd history.
    pub fn detach(&self) -> Tensor {
        self.set_requires_grad(false)
    }
    /// Raw device pointer of a CUDA tensor (for kernels that take tables of pointers).
    pub fn storage_ptr(&self) -> Result<u64> {
        match &*self.storage() {
            Storage::Cuda(s) => Ok(s.ptr()),
            Storage::Cpu(_) => bail!("storage_ptr: tensor of shape {} is on the CPU", self.shape()),
        }
    }
    /// An independent copy of the values (new storage, no autograd history).
    pub fn deep_copy(&self) -> Result<Tensor> {
        let copy = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(s.clone()),
            Storage::Cuda(crate::backend::cuda::CudaStorage::F32(b)) => {
                let gpu = self.device().gpu().expect("CUDA tensor on a CUDA device");
                Storage::Cuda(crate::backend::cuda::CudaStorage::F32(gpu.copy(b)?))
            }
            Storage::Cuda(crate::backend::cuda::CudaStorage::BF16(b)) => {
                let gpu = self.device().gpu().expect("CUDA tensor on a CUDA device");
                Storage::Cuda(crate::backend::cuda::CudaStorage::BF16(gpu.copy(b)?))
            }
        };
        Tensor::from_storage(copy, self.shape().clone(), self.device().clone())
    }
    /// Replaces this tensor's values with `src`'s (same shape; converted to this dtype and device), in
    /// place, so every view of this storage sees them. For loading checkpoints and swapping in EMA weights.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if self.shape() != src.shape() {
            bail!("assign: values of shape {} into a tensor of shape {}", src.shape(), self.shape());
        }
        let copy = crate::autograd::no_grad(|| src.to_device(self.device())?.to_dtype(self.dtype())?.deep_copy())?;
        let values = std::mem::replace(&mut *copy.storage_mut(), Storage::Cpu(CpuStorage::F32(Vec::new())));
        *self.storage_mut() = values;
        Ok(())
    }
    /// Writes `src`'s values into this tensor's own storage (same shape, dtype and device), keeping its
    /// address: how the inputs of a captured CUDA graph are refreshed before a replay (`assign` swaps the
    /// storage instead, which a graph would not see).
    pub fn overwrite(&self, src: &Tensor) -> Result<()> {
        self.check_same(src, "overwrite")?;
        if self.same_storage(src) {
            return Ok(());
        }
        use crate::backend::cuda::CudaStorage as Gpu;
        let from = src.storage();
        let mut to = self.storage_mut();
        match (&mut *to, &*from) {
            (Storage::Cpu(CpuStorage::F32(a)), Storage::Cpu(CpuStorage::F32(b))) => a.copy_from_slice(b),
            (Storage::Cpu(CpuStorage::F64(a)), Storage::Cpu(CpuStorage::F64(b))) => a.copy_from_slice(b),
            (Storage::Cuda(Gpu::F32(a)), Storage::Cuda(Gpu::F32(b))) => a.copy_from(b)?,
            (Storage::Cuda(Gpu::BF16(a)), Storage::Cuda(Gpu::BF16(b))) => a.copy_from(b)?,
            _ => bail!("overwrite: {} storage into {} storage", src.dtype().name(), self.dtype().name()),
        }
        Ok(())
    }
    /// Whether two tensors share storage (a reshape or detach of one another).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// A view with another shape of the same number of elements; gradients flow back through it.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            bail!("reshape: cannot view {} ({} elements) as {shape}", self.shape(), self.numel());
        }
        let view = Tensor(Arc::new(Inner {
            id: next_id(),
            shape: shape.clone(),
            dtype: self.0.dtype,
            device: self.0.device.clone(),
            storage: self.0.storage.clone(),
            node: None,
            requires_grad: false,
        }));
        let from = self.shape().clone();
        Ok(view.with_node(Node::record("reshape", &[self], move |g| Ok(vec![Some(g.reshape(from.clone())?)]))))
    }

    /// Errors unless `other` has the same dtype and device (names the op and both shapes).
    pub fn check_same_kind(&self, other: &Tensor, op: &str) -> Result<()> {
        if self.dtype() != other.dtype() {
            bail!(
                "{op}: dtype mismatch, {} {} against {} {}",
                self.shape(),
                self.dtype(),
                other.shape(),
                other.dtype()
            );
        }
        if self.device() != other.device() {
            bail!(
                "{op}: device mismatch, {} on {} against {} on {}",
                self.shape(),
                self.device(),
                other.shape(),
                other.device()
            );
        }
        Ok(())
    }
    /// Errors unless `other` has exactly the same shape, dtype and device.
    pub fn check_same(&self, other: &Tensor, op: &str) -> Result<()> {
        if self.shape() != other.shape() {
            bail!("{op}: shape mismatch, {} against {} (gsure never broadcasts silently)", self.shape(), other.shape());
        }
        self.check_same_kind(other, op)
    }
}
