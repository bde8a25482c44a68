use super::alloc::{AllocStats, GpuBuf, Pool, StreamActivity};
use super::GpuElem;
use crate::backend::DType;
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One CUDA device: its context, the stream every op runs on, loaded kernel modules and the allocator.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    functions: Mutex<HashMap<(usize, String), CudaFunction>>,
    modules: Mutex<HashMap<usize, Arc<CudaModule>>>,
    pub(super) pool: Arc<Pool>,
    name: String,
    compute_capability: (i32, i32),
    /// Streaming multiprocessors, read once from the device: launchers size grid-stride grids by it.
    sm_count: u32,
}

static SHARED: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();

impl Gpu {
    /// Whether this build carries compiled kernels (nvcc was found by build.rs).
    pub fn built_with_kernels() -> bool {
        cfg!(has_kernels)
    }

    /// What `func` loads, for `gsure info`: the fatbins (SASS for the build's arch, no JIT) or the PTX.
    pub fn kernel_images() -> String {
        let modules = super::ptx::MODULES;
        let with_sass = modules.iter().filter(|(_, f)| !f.is_empty()).count();
        let arch = super::ptx::CUDA_ARCH;
        if with_sass == modules.len() {
            format!("fatbin ({arch} SASS + PTX) for all {} modules", modules.len())
        } else {
            format!(
                "PTX for {arch}, compiled by the driver on first use ({with_sass} of {} modules have SASS)",
                modules.len()
            )
        }
    }

    /// Whether a CUDA device can be used: kernels compiled in, a driver library present, a device seen.
    /// Probes first: cudarc panics instead of erroring when no driver library exists.
    pub fn available() -> bool {
        Self::shared().is_ok()
    }

    /// The process-wide device 0, created on first use.
    pub fn shared() -> Result<Arc<Gpu>> {
        SHARED.get_or_init(|| Gpu::open(0).map(Arc::new).map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        if !Self::built_with_kernels() {
            bail!(
                "CUDA device unavailable: gsure was built without nvcc, so its kernels are stubs. Install the \
                 pinned compiler with `scripts/install-nvcc`, then rebuild with NVCC set to the path it prints"
            );
        }
        // SAFETY: only checks whether libcuda can be dlopened; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            bail!("CUDA device unavailable: no NVIDIA driver library (libcuda.so) on this machine; use --device cpu");
        }
        let count = CudaContext::device_count().map_err(|e| anyhow!("CUDA device unavailable: {e:?}"))?;
        if count as usize <= ordinal {
            bail!("CUDA device unavailable: the driver reports {count} device(s); use --device cpu");
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("creating the CUDA context: {e:?}"))?;
        // One stream and raw-pointer kernel arguments: cudarc's per-buffer event tracking is not needed.
        // A created stream, not the legacy default one, which cannot be captured into a CUDA graph.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| anyhow!("creating the CUDA stream: {e:?}"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute_capability = ctx.compute_capability().map_err(|e| anyhow!("{e:?}"))?;
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| anyhow!("reading the device's multiprocessor count: {e:?}"))?
            .max(1) as u32;
        let pool = Arc::new(Pool::new(stream.clone(), ctx.clone()));
        Ok(Gpu {
            ctx,
            stream,
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            pool,
            name,
            compute_capability,
            sm_count,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    /// Streaming multiprocessors (132 on an H100 or H200).
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn synchronize(&self) -> Result<()> {
        self.pool.activity.synchronisations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.stream.synchronize().map_err(|e| anyhow!("CUDA stream synchronize: {e:?}"))
    }

    /// The entry point of a kernel compiled once per tensor dtype, `<stem>_<dtype>` ([`typed_name`]), from
    /// an embedded module; refuses a dtype the CUDA backend does not hold, naming the kernel.
    pub fn typed_func(&self, module_ptx: &'static str, stem: &str, dtype: DType) -> Result<CudaFunction> {
        self.func(module_ptx, &typed_name(stem, dtype)?)
    }

    /// The kernel `name` from an embedded module (`ptx::ELEMENTWISE`, ...), loaded once and cached. The
    /// module's fatbin (`ptx::ELEMENTWISE_FATBIN`: SASS for the build's arch plus portable PTX) is loaded when
    /// the build made one, so the driver runs no JIT; else the PTX, which the driver compiles on first use.
    pub fn func(&self, module_ptx: &'static str, name: &str) -> Result<CudaFunction> {
        let key = (module_ptx.as_ptr() as usize, name.to_string());
        if let Some(f) = self.functions.lock().unwrap().get(&key) {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap();
            match modules.get(&key.0) {
                Some(m) => m.clone(),
                None => {
                    let fatbin = fatbin_of(module_ptx);
                    let (image, kind) = if fatbin.is_empty() {
                        (cudarc::nvrtc::Ptx::from_src(module_ptx), "PTX")
                    } else {
                        (cudarc::nvrtc::Ptx::from_binary(fatbin.to_vec()), "fatbin")
                    };
                    let m = self
                        .ctx
                        .load_module(image)
                        .map_err(|e| anyhow!("loading the {kind} module of kernel {name}: {e:?}"))?;
                    modules.insert(key.0, m.clone());
                    m
                }
            }
        };
        let f = module.load_function(name).map_err(|e| anyhow!("kernel {name} not found in its module: {e:?}"))?;
        self.functions.lock().unwrap().insert(key, f.clone());
        Ok(f)
    }

    /// Uninitialised device memory for `n` elements, from the caching allocator.
    pub fn alloc<T: GpuElem>(&self, n: usize) -> Result<GpuBuf<T>> {
        GpuBuf::new(&self.pool, n)
    }
    pub fn alloc_zeros<T: GpuElem>(&self, n: usize) -> Result<GpuBuf<T>> {
        let mut b = self.alloc::<T>(n)?;
        b.zero()?;
        Ok(b)
    }
    pub fn upload<T: GpuElem>(&self, host: &[T]) -> Result<GpuBuf<T>> {
        let mut b = self.alloc::<T>(host.len())?;
        b.upload(host).context("copying host data to the GPU")?;
        Ok(b)
    }
    pub fn download<T: GpuElem>(&self, buf: &GpuBuf<T>) -> Result<Vec<T>> {
        buf.download()
    }
    /// A device-to-device copy of `buf`.
    pub fn copy<T: GpuElem>(&self, buf: &GpuBuf<T>) -> Result<GpuBuf<T>> {
        let mut out = self.alloc::<T>(buf.len())?;
        out.copy_from(buf)?;
        Ok(out)
    }
    /// Launches, copies, waits and driver allocations since start (subtract two readings for a phase).
    pub fn activity(&self) -> StreamActivity {
        self.pool.activity()
    }
    /// Counts a host wait made outside `synchronize` (an event the host blocks on).
    /// Waits while another thread captures a graph (see `Pool::note_stream_use`): for event queries and
    /// waits, which do not go through the allocator.
    /// Whether a graph capture is in progress on the device.
    pub fn capturing(&self) -> bool {
        self.pool.is_capturing()
    }
    pub(crate) fn wait_for_other_captures(&self) {
        self.pool.note_stream_use();
    }
    pub(crate) fn count_host_wait(&self) {
        self.pool.activity.synchronisations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    /// Counted by `launch!` before every kernel launch.
    #[doc(hidden)]
    pub fn count_launch(&self) {
        self.pool.note_stream_use();
        self.pool.activity.launches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn alloc_stats(&self) -> AllocStats {
        self.pool.stats()
    }
    /// Restarts `alloc_stats().peak_in_use_bytes` from the bytes in use now, so the next reading is the
    /// peak of what ran in between (`gsure bench train` measures its timed steps this way).
    pub fn reset_peak_alloc_stats(&self) {
        self.pool.reset_peak();
    }
    /// Returns cached, unused blocks to the driver.
    pub fn empty_cache(&self) {
        self.pool.trim();
    }
    /// (free, total) device memory in bytes as the driver reports it.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(|e| anyhow!("{e:?}"))
    }
}

/// The fatbin built beside an embedded PTX module (`ptx::MODULES`), empty when there is none (a build without
/// SASS, or a PTX text that is not one of the embedded modules). The modules are statics, so a match is by
/// address; by content only for a copy of one.
fn fatbin_of(module_ptx: &str) -> &'static [u8] {
    let modules = super::ptx::MODULES;
    modules
        .iter()
        .find(|(p, _)| p.as_ptr() == module_ptx.as_ptr() && p.len() == module_ptx.len())
        .or_else(|| modules.iter().find(|(p, _)| !p.is_empty() && *p == module_ptx))
        .map_or(&[], |(_, f)| *f)
}

/// The name of the `dtype` entry point of a kernel compiled once per tensor dtype: `<stem>_<dtype>`, the
/// convention of every `kernels/*.cu` (`dropout_fwd_f32`, `dropout_fwd_bf16`); the CUDA backend holds f32 and
/// bf16, so f64 is refused here, naming the kernel.
pub fn typed_name(stem: &str, dtype: DType) -> Result<String> {
    match dtype {
        DType::F32 | DType::BF16 => Ok(format!("{stem}_{}", dtype.name())),
        DType::F64 => bail!("CUDA kernel {stem}: the CUDA backend holds f32 and bf16, not f64 (use f32)"),
    }
}
