//! The one rule for what a command writes: it never replaces a file it did not create in this run unless
//! the user passed `--force`, and never writes over one of its own inputs, even with `--force`. Checked
//! before any work starts, so a refusal costs nothing.
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Refuses `outputs` that exist (without `force`) or that are one of `inputs` (always). `flag` names the
/// option the outputs come from (`--out`), for the message.
pub fn check_new(outputs: &[PathBuf], inputs: &[&Path], force: bool, flag: &str) -> Result<()> {
    for out in outputs {
        if !out.exists() {
            continue;
        }
        if let Some(input) = inputs.iter().find(|i| same_file(out, i)) {
            bail!(
                "{flag}: {} is an input of this command ({}) and would be overwritten; choose another {flag}",
                out.display(),
                input.display()
            );
        }
        if !force {
            bail!(
                "{flag}: {} exists and would be replaced; choose another {flag}, or pass --force to replace it",
                out.display()
            );
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
