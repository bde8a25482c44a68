//! A process-wide choice between the kernel families of one op (which bf16 GEMM, which attention
//! backward): what `select` set, else the family an environment variable names (read once), else the
//! default. `scoped` holds a choice for a bench case or a test that times one family beside another.
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// An op's kernel families, an enum of up to 254 variants.
pub trait KernelFamily: Copy + PartialEq + 'static {
    /// Every family, the default first.
    const ALL: &'static [Self];
    /// The environment variable naming the family (`GSURE_BF16_GEMM=wgmma`).
    const ENV: &'static str;
    /// What the families choose between, for messages ("bf16 GEMM kernel").
    const WHAT: &'static str;
    /// The name `ENV` takes.
    fn name(self) -> &'static str;
    /// The process's choice: 0 until chosen, else 1 + the index in `ALL`.
    fn slot() -> &'static AtomicU8;
}

pub fn parse<F: KernelFamily>(s: &str) -> Result<F> {
    match F::ALL.iter().find(|f| f.name() == s) {
        Some(&f) => Ok(f),
        None => {
            let names: Vec<String> = F::ALL.iter().map(|f| format!("`{}`", f.name())).collect();
            bail!("unknown {} {s:?}: expected {}", F::WHAT, names.join(", "))
        }
    }
}

fn code<F: KernelFamily>(f: F) -> u8 {
    1 + F::ALL.iter().position(|&x| x == f).expect("a family is in its own ALL") as u8
}

/// The family this process runs: as `select`ed, else as `F::ENV` names it, else the default.
pub fn selected<F: KernelFamily>() -> Result<F> {
    if let Some(&f) = (F::slot().load(Ordering::Relaxed) as usize).checked_sub(1).and_then(|i| F::ALL.get(i)) {
        return Ok(f);
    }
    let f = match std::env::var(F::ENV) {
        Ok(v) => parse(&v).map_err(|e| anyhow::anyhow!("{}: {e}", F::ENV))?,
        Err(_) => F::ALL[0],
    };
    select(f);
    Ok(f)
}

pub fn select<F: KernelFamily>(f: F) {
    F::slot().store(code(f), Ordering::Relaxed);
}

/// Selects `f` until the returned scope is dropped, then restores the previous choice.
pub fn scoped<F: KernelFamily>(f: F) -> KernelScope {
    KernelScope { slot: F::slot(), previous: F::slot().swap(code(f), Ordering::Relaxed) }
}

/// A temporary choice (`scoped`); process-wide, so for one thread's benchmark or test.
#[must_use = "the choice lasts as long as the scope"]
pub struct KernelScope {
    slot: &'static AtomicU8,
    previous: u8,
}

impl Drop for KernelScope {
    fn drop(&mut self) {
        self.slot.store(self.previous, Ordering::Relaxed);
    }
}
