//! A run directory: where its checkpoint, log, loss curve and sample grids live, and the repair of its log
//! before a resumed run appends to it.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Paths inside a run directory.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("log.jsonl")
    }
    pub fn loss_plot(&self) -> PathBuf {
        self.0.join("loss.png")
    }
    pub fn samples(&self, step: u64) -> PathBuf {
        self.0.join(format!("samples_{step:07}.png"))
    }
}

/// Makes a run's log agree with its checkpoint before a (resumed) run appends to it: keeps the complete
/// records of steps 1..=`step` and drops the rest (a partial last line left by a kill, and the records of
/// steps after the checkpoint, which the resumed run replays). Rewritten through a temporary file and a
/// rename only when something is dropped.
pub fn repair_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = false;
    for line in text.split_inclusive('\n') {
        let record_step = line
            .strip_suffix('\n')
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["step"].as_u64());
        match record_step {
            Some(s) if s <= step => kept.push_str(line),
            _ => dropped = true,
        }
    }
    if dropped {
        crate::io::outputs::write_atomic(path, kept.as_bytes())
            .with_context(|| format!("repairing {} to the checkpoint's step {step}", path.display()))?;
    }
    Ok(())
}
