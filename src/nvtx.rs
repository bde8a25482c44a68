//! NVTX ranges, so that an Nsight Systems or Nsight Compute timeline of gsure reads by name: the
//! training step's phases, every op's forward and backward, sampling and evaluation.
//!
//! The ranges go through cudarc's dynamically loaded NVTX bindings (`libnvToolsExt.so`). When that
//! library is absent, or `GSURE_NVTX=0`, every call is one relaxed load and a branch: no allocation, no
//! FFI. Ranges nest per thread (push/pop), which is what `nsys` draws as a stack and what
//! `ncu --nvtx --nvtx-include "step/backward/"` filters on.
//!
//! Names: `step`, then its phases `data`, `objective`, `loss readback`, `backward`, `clip`,
//! `optimiser`, `ema`; inside them `<model> forward` and each op as `<op>` (its forward work) or
//! `<op> backward`; `sample` and `eval <metric>` outside training.
use std::marker::PhantomData;
use std::sync::OnceLock;

/// Whether ranges are emitted: the NVTX library loads and `GSURE_NVTX` is not `0`. Read once.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("GSURE_NVTX").map(|v| v != "0").unwrap_or(true)
            // SAFETY: only tries to dlopen the library; nothing is called through it.
            && unsafe { cudarc::nvtx::sys::is_culib_present() }
    })
}

/// An open range; closed when dropped, on the thread that opened it (hence not `Send`).
#[must_use = "a range closes when dropped: bind it with `let _range = ...`"]
pub struct Range {
    open: bool,
    _same_thread: PhantomData<*const ()>,
}

impl Drop for Range {
    fn drop(&mut self) {
        if self.open {
            cudarc::nvtx::result::range_pop();
        }
    }
}

/// Opens a range named `name`.
pub fn range(name: &str) -> Range {
    open(|| name.to_string())
}

/// Opens a range named `"{what} {suffix}"` (the name is built only when ranges are on).
pub fn range2(what: &str, suffix: &str) -> Range {
    open(|| format!("{what} {suffix}"))
}

fn open(name: impl FnOnce() -> String) -> Range {
    let open = enabled();
    if open {
        // A name with a NUL byte cannot cross into C; such a name is ours and a bug, but not worth a panic.
        let name = name().replace('\0', " ");
        cudarc::nvtx::result::range_push(name);
    }
    Range { open, _same_thread: PhantomData }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_open_and_close_whether_or_not_the_library_is_there() {
        let outer = super::range("outer");
        {
            let _inner = super::range2("conv2d", "backward");
        }
        drop(outer);
    }
}
