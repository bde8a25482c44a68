//! The one rule for what a command writes: it never replaces a file it did not create in this run unless
//! the user passed `--force`, and never writes over one of its own inputs, even with `--force`. Checked
//! before any work starts, so a refusal costs nothing. Files are written to a temporary name in the same
//! folder and renamed, so a crash leaves the old file or the new one, never half of one.
use anyhow::{bail, Context, Result};
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
    for out in outputs {
        for stale in remove_stale_temps_of(out) {
            eprintln!("removed {}, left by an interrupted write", stale.display());
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

/// The temporary name `path` is written under before the rename: hidden, in the same folder (a rename
/// within one file system is atomic), and tagged with the process id so two writers never share one.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(path, |tmp| std::fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display())))
}

/// Runs `write` on the temporary name of `path`, then renames it into place. A failed write (a full
/// disk, a read-only folder) removes what it left, so the old file stays and no half file fills the disk.
pub(crate) fn write_via_temp(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let done = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Removes our temporary files in `dir` (`.NAME.tmpPID`) left by a process that no longer runs (killed
/// mid-write, or stopped by a full disk): they are never the only copy of anything, and one can hold the
/// disk full. Files of running processes and anything not ours are left alone. Returns what was removed.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    remove_stale(dir, |_| true)
}

/// [`remove_stale_temps`] for the temporary files of one output `path` only (its folder may hold others'
/// files, or another command's work in progress).
pub fn remove_stale_temps_of(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else { return Vec::new() };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    remove_stale(dir, |stem| stem == name)
}

fn remove_stale(dir: &Path, of: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((stem, pid)) = stale_temp_pid(&name) else { continue };
        if !of(stem) {
            continue;
        }
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// The file name and process id in a temporary name of ours (`.NAME.tmpPID`), if `name` is one.
fn stale_temp_pid(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once(".tmp")?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem, pid.parse().ok()?))
}
