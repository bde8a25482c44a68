//! A process-wide choice between the kernel families of one op (which bf16 GEMM, which attention
//! backward, which f32 convolution): what `select` set, else the family an environment variable names (read
//! once), else the default. `scoped` overrides it on the calling thread only, for a bench case or a test that
//! runs one family beside another: tests run on parallel threads, and one test's choice must not leak into
//! another's kernels.
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::marker::PhantomData;
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

/// One scoped choice on a thread's stack: the family (its slot's address), the choice, the scope's id.
struct Scoped {
    key: usize,
    code: u8,
    id: u64,
}

thread_local! {
    /// This thread's scoped choices, innermost last.
    static SCOPES: RefCell<Vec<Scoped>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn slot_key<F: KernelFamily>() -> usize {
    F::slot() as *const AtomicU8 as usize
}

fn decode<F: KernelFamily>(code: u8) -> Option<F> {
    (code as usize).checked_sub(1).and_then(|i| F::ALL.get(i)).copied()
}

/// The family this thread runs: its innermost `scoped` choice, else the process's (`select`ed, else as
/// `F::ENV` names it, else the default).
pub fn selected<F: KernelFamily>() -> Result<F> {
    let key = slot_key::<F>();
    let scoped = SCOPES.with(|s| s.borrow().iter().rev().find(|e| e.key == key).map(|e| e.code));
    if let Some(f) = scoped.and_then(decode::<F>) {
        return Ok(f);
    }
    if let Some(f) = decode::<F>(F::slot().load(Ordering::Relaxed)) {
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

/// Selects `f` on this thread until the returned scope is dropped (scopes nest; the innermost live one
/// holds, whatever order they are dropped in).
pub fn scoped<F: KernelFamily>(f: F) -> KernelScope {
    let id = NEXT_ID.with(|n| n.replace(n.get() + 1));
    SCOPES.with(|s| s.borrow_mut().push(Scoped { key: slot_key::<F>(), code: code(f), id }));
    KernelScope { id, _thread_bound: PhantomData }
}

/// A temporary choice on one thread (`scoped`); it cannot leave the thread that made it.
#[must_use = "the choice lasts as long as the scope"]
pub struct KernelScope {
    id: u64,
    _thread_bound: PhantomData<*const ()>,
}

impl Drop for KernelScope {
    fn drop(&mut self) {
        SCOPES.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(i) = s.iter().rposition(|e| e.id == self.id) {
                s.remove(i);
            }
        });
    }
}
