//! Op benchmarks (`gsure bench ops`). Each op family lists its cases in `bench/cases/<family>.rs`; a case
//! builds its inputs once and returns the forward closure. The runner times the forward under no-grad and
//! the backward by calling the recorded node's backward closure, so both directions are timed exactly as
//! training runs them. `--list-json` prints the cases for `benches/torch_ops.py`, which times the same ops
//! and shapes in PyTorch. `gsure bench train` (train.rs) times whole training steps of the real trainer;
//! `benches/torch_train.py` is its PyTorch twin.
pub mod cases;
pub mod predictions;
pub mod report;
pub mod runner;
pub mod timer;
pub mod train;

pub use report::{CaseResult, Ceilings, Direction, Report};
pub use runner::{run, Options};
pub use timer::{Stats, Timer};

use crate::{DType, Device, Tensor};
use anyhow::Result;

/// Builds inputs on `device` in `dtype` and returns the op's forward as a closure.
pub type BuildFn = Box<dyn Fn(&Device, DType) -> Result<Box<dyn Fn() -> Result<Tensor>>> + Send + Sync>;

pub struct BenchCase {
    /// Op name as `benches/torch_ops.py` knows it: conv2d, attention, group_norm, ...
    pub op: &'static str,
    /// Human-readable shape summary.
    pub label: String,
    /// Everything needed to build the same op elsewhere (shapes, stride, groups, ...).
    pub params: serde_json::Value,
    /// Useful floating-point operations of one forward / one backward (0 for memory-bound ops).
    pub flops_fwd: f64,
    pub flops_bwd: f64,
    /// Minimal bytes moved by one forward / backward at 4 bytes per element (scaled by dtype size).
    pub elems_fwd: f64,
    pub elems_bwd: f64,
    /// Why the case cannot run on a device in a dtype, if it cannot (a kernel for one architecture and
    /// dtype): such a case is left out of that run. None: it runs everywhere.
    pub skip: Option<fn(&crate::Device, crate::DType) -> Option<String>>,
    pub build: BuildFn,
}

impl BenchCase {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "op": self.op, "label": self.label, "params": self.params,
            "flops_fwd": self.flops_fwd, "flops_bwd": self.flops_bwd,
            "elems_fwd": self.elems_fwd, "elems_bwd": self.elems_bwd,
        })
    }
}

/// Every registered case.
pub fn all_cases() -> Vec<BenchCase> {
    cases::all()
}

/// The case list as `--list-json` prints it (what `benches/torch_ops.py` reads).
pub fn list_json(cases: &[BenchCase]) -> serde_json::Value {
    serde_json::Value::Array(cases.iter().map(BenchCase::to_json).collect())
}
