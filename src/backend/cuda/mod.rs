//! The CUDA backend: one context and stream per process (`Gpu`), embedded PTX modules loaded on first use,
//! a caching allocator (`GpuBuf`), and the `launch!` helper. Kernels take raw device pointers: every
//! launch and every free goes through the one stream, so stream order is the only synchronisation needed.
mod alloc;
mod context;
mod graph;
pub mod kernel_choice;
mod pinned;

pub use alloc::{AllocStats, GpuBuf, StreamActivity};
pub use context::{typed_name, Gpu};
pub use graph::Graph;
pub use kernel_choice::{KernelFamily, KernelScope};
pub use pinned::PinnedBuf;

use crate::backend::DType;
use half::bf16;

/// PTX of every `kernels/*.cu`, one `&str` per file named after it (`ptx::ELEMENTWISE`, ...), and its fatbin
/// (`ptx::ELEMENTWISE_FATBIN`: SASS for the build's arch plus portable PTX, which `Gpu::func` loads instead),
/// embedded by build.rs; empty when the crate was built without nvcc (the fatbins also for a virtual arch).
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Device memory of a tensor.
pub enum CudaStorage {
    F32(GpuBuf<f32>),
    BF16(GpuBuf<bf16>),
}

impl CudaStorage {
    /// A fresh buffer of `n` elements in `dtype`, uninitialised.
    pub fn alloc(gpu: &Gpu, dtype: DType, n: usize) -> anyhow::Result<CudaStorage> {
        Ok(match dtype {
            DType::F32 => CudaStorage::F32(gpu.alloc(n)?),
            DType::BF16 => CudaStorage::BF16(gpu.alloc(n)?),
            DType::F64 => anyhow::bail!("the CUDA backend holds f32 and bf16, not f64"),
        })
    }

    /// A fresh buffer of `n` zeros in `dtype`.
    pub fn zeros(gpu: &Gpu, dtype: DType, n: usize) -> anyhow::Result<CudaStorage> {
        Ok(match dtype {
            DType::F32 => CudaStorage::F32(gpu.alloc_zeros(n)?),
            DType::BF16 => CudaStorage::BF16(gpu.alloc_zeros(n)?),
            DType::F64 => anyhow::bail!("the CUDA backend holds f32 and bf16, not f64"),
        })
    }

    pub fn dtype(&self) -> DType {
        match self {
            CudaStorage::F32(_) => DType::F32,
            CudaStorage::BF16(_) => DType::BF16,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CudaStorage::F32(b) => b.len(),
            CudaStorage::BF16(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Raw device pointer, for kernel arguments.
    pub fn ptr(&self) -> u64 {
        match self {
            CudaStorage::F32(b) => b.ptr(),
            CudaStorage::BF16(b) => b.ptr(),
        }
    }
}

/// Element types of device buffers; `SUFFIX` completes a kernel name (`<op>_<direction>_<suffix>`) for the
/// tensor dtypes, and u64/u32 buffers hold kernel side tables (pointers, offsets).
pub trait GpuElem: cudarc::driver::DeviceRepr + Copy + Default + Send + Sync + 'static {
    const SUFFIX: &'static str;
}
impl GpuElem for f32 {
    const SUFFIX: &'static str = "f32";
}
impl GpuElem for bf16 {
    const SUFFIX: &'static str = "bf16";
}
impl GpuElem for u64 {
    const SUFFIX: &'static str = "u64";
}
impl GpuElem for u32 {
    const SUFFIX: &'static str = "u32";
}

/// Grid size for `n` elements with `block` threads per block, each thread handling `per_thread`.
pub fn blocks_for(n: usize, block: u32, per_thread: usize) -> u32 {
    (n.div_ceil(block as usize * per_thread)).max(1) as u32
}

/// Launches `func` on the GPU's stream with the given arguments (each passed by value: pointers as `u64`,
/// sizes as `i32`, parameter structs as `#[repr(C)]` values).
///
/// `launch!(gpu, func, (grid, block, shared_bytes), arg0, arg1, ...)`
#[macro_export]
macro_rules! launch {
    ($gpu:expr, $func:expr, ($grid:expr, $block:expr, $smem:expr), $($arg:expr),* $(,)?) => {{
        use cudarc::driver::PushKernelArg as _;
        let func = $func;
        let gpu = &$gpu;
        gpu.count_launch();
        let mut builder = gpu.stream().launch_builder(&func);
        $( let arg = $arg; builder.arg(&arg); )*
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: $crate::backend::cuda::dim3($grid),
            block_dim: $crate::backend::cuda::dim3($block),
            shared_mem_bytes: $smem as u32,
        };
        // SAFETY: argument lists mirror the kernel signatures in kernels/*.cu; buffers outlive the launch
        // because they are only returned to the allocator, which reuses them in stream order.
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("launching {}: {e:?}", stringify!($func)))
    }};
}

/// Grid/block dimensions from a scalar or a tuple.
pub fn dim3(d: impl Into<Dim3>) -> (u32, u32, u32) {
    d.into().0
}
pub struct Dim3(pub (u32, u32, u32));
impl From<u32> for Dim3 {
    fn from(x: u32) -> Self {
        Dim3((x, 1, 1))
    }
}
impl From<(u32, u32)> for Dim3 {
    fn from((x, y): (u32, u32)) -> Self {
        Dim3((x, y, 1))
    }
}
impl From<(u32, u32, u32)> for Dim3 {
    fn from(d: (u32, u32, u32)) -> Self {
        Dim3(d)
    }
}
