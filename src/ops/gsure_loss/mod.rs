//! The fused GSURE loss (docs/METHODS.md §4.2): from the network's two outputs on the clean and the perturbed
//! input, the per-example loss
//!
//! ```text
//! L_n = (1/m) Σ_i O_i W²_i [ c_fid,n (D_i − r_i)²  +  c_div,n ν_i b_i (D^ε_i − D_i) ]
//! ```
//!
//! with m the coordinates per example, c_div,n = α_n / ε_n (the mode's divergence scale over the example's
//! finite-difference step) and ν_i replaced by 1 when `nu` is None. One kernel reads every input once and
//! reduces per example; one backward kernel writes dL/dD and dL/dD^ε together. r, O, W², ν and the probe b
//! are data: they get no gradient.
pub mod cpu;
pub mod cuda;

use crate::autograd::Node;
use crate::ops::{compute, compute_many};
use crate::tensor::{CpuStorage, Tensor};
use anyhow::{bail, Result};

const OP: &str = "gsure_loss";

/// Per-example scalars of [`gsure_loss`]: c_fid,n (1 for GSURE; a per-example loss weight otherwise) and
/// c_div,n = α_n / ε_n. Host values: they are uploaded (f32) with each call.
#[derive(Clone, Debug, PartialEq)]
pub struct GsureCoefs {
    pub c_fid: Vec<f64>,
    pub c_div: Vec<f64>,
}

impl GsureCoefs {
    /// c_fid = 1 and c_div = α_n / ε_n.
    pub fn new(alpha: &[f64], eps: &[f64]) -> Result<Self> {
        if alpha.len() != eps.len() {
            bail!("{OP}: {} divergence scales for {} finite-difference steps", alpha.len(), eps.len());
        }
        if let Some(e) = eps.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
            bail!("{OP}: the finite-difference step must be positive and finite, got {e}");
        }
        Ok(GsureCoefs { c_fid: vec![1.0; alpha.len()], c_div: alpha.iter().zip(eps).map(|(a, e)| a / e).collect() })
    }
    /// Interleaved (c_fid, c_div) per row, the layout the kernels read (and [`Coefs::Table`] holds).
    pub fn interleaved(&self) -> Vec<f64> {
        self.c_fid.iter().zip(&self.c_div).flat_map(|(&f, &d)| [f, d]).collect()
    }
}

/// The coefficients as [`gsure_loss`] takes them: host values (uploaded with each call on CUDA), or the
/// interleaved [rows, 2] f32 table ([`GsureCoefs::interleaved`]) already where the loss runs, as a staged step
/// uploads it with its batch.
#[derive(Clone, Debug)]
pub enum Coefs {
    Host(GsureCoefs),
    Table(Tensor),
}

impl From<&GsureCoefs> for Coefs {
    fn from(c: &GsureCoefs) -> Coefs {
        Coefs::Host(c.clone())
    }
}

impl From<GsureCoefs> for Coefs {
    fn from(c: GsureCoefs) -> Coefs {
        Coefs::Host(c)
    }
}

impl From<&Coefs> for Coefs {
    fn from(c: &Coefs) -> Coefs {
        c.clone()
    }
}

/// The coefficients where a kernel reads them.
#[derive(Clone, Copy)]
pub enum CoefArg<'a> {
    Host(&'a [f64]),
    /// The device address of the f32 table.
    Device(u64),
}

/// (rows, m) after checking every tensor against d and the coefficients against the batch.
fn check(d: &Tensor, others: &[(&str, &Tensor)], nu: Option<&Tensor>, coef: &Coefs) -> Result<(usize, usize)> {
    for (name, t) in others.iter().chain(nu.map(|n| ("nu", n)).as_slice()) {
        if t.shape() != d.shape() {
            bail!(
                "{OP}: {name} has shape {} but D has shape {} (gsure never broadcasts silently)",
                t.shape(),
                d.shape()
            );
        }
        d.check_same_kind(t, &format!("{OP} (D against {name})"))?;
    }
    if d.shape().rank() == 0 || d.numel() == 0 {
        bail!("{OP}: expected non-empty tensors [N, ...], got shape {}", d.shape());
    }
    let rows = d.dims()[0];
    match coef {
        Coefs::Host(c) if c.c_fid.len() != rows || c.c_div.len() != rows => bail!(
            "{OP}: {} fidelity and {} divergence coefficients for a batch of {rows} (shape {})",
            c.c_fid.len(),
            c.c_div.len(),
            d.shape()
        ),
        Coefs::Table(t) if t.dims() != [rows, 2] || t.device() != d.device() => bail!(
            "{OP}: a coefficient table of shape {} on {:?} for a batch of {rows} on {:?} (expected [{rows}, 2])",
            t.shape(),
            t.device(),
            d.device()
        ),
        Coefs::Table(t) if t.device() != &crate::Device::Cpu && t.dtype() != crate::DType::F32 => {
            bail!("{OP}: the CUDA kernels read an f32 coefficient table, got {}", t.dtype())
        }
        _ => {}
    }
    Ok((rows, d.numel() / rows))
}

macro_rules! with_inputs {
    // Binds `$x` (cpu::Inputs), `$g` (the slice at index `$gi`, or d when no gradient is given) and `$wrap`
    // (the CpuStorage constructor of the dtype) in one arm per dtype.
    ($s:expr, $has_nu:expr, $gi:expr, |$x:ident, $g:ident, $wrap:ident| $body:expr) => {{
        let s = $s;
        match s[0] {
            CpuStorage::F32(_) => {
                fn f(st: &CpuStorage) -> &[f32] {
                    match st {
                        CpuStorage::F32(v) => v.as_slice(),
                        CpuStorage::F64(_) => unreachable!("dtypes checked"),
                    }
                }
                let $wrap = CpuStorage::F32;
                let $g = f(s[$gi]);
                let $x = cpu::Inputs {
                    d: f(s[0]),
                    de: f(s[1]),
                    r: f(s[2]),
                    obs: f(s[3]),
                    w2: f(s[4]),
                    b: f(s[5]),
                    nu: if $has_nu { Some(f(s[6])) } else { None },
                };
                $body
            }
            CpuStorage::F64(_) => {
                fn f(st: &CpuStorage) -> &[f64] {
                    match st {
                        CpuStorage::F64(v) => v.as_slice(),
                        CpuStorage::F32(_) => unreachable!("dtypes checked"),
                    }
                }
                let $wrap = CpuStorage::F64;
                let $g = f(s[$gi]);
                let $x = cpu::Inputs {
                    d: f(s[0]),
                    de: f(s[1]),
                    r: f(s[2]),
                    obs: f(s[3]),
                    w2: f(s[4]),
                    b: f(s[5]),
                    nu: if $has_nu { Some(f(s[6])) } else { None },
                };
                $body
            }
        }
    }};
}

/// Per-example GSURE losses [N] of [N, ...] tensors of one shape and dtype (see the module doc): `d` =
/// D(x̄_t), `d_eps` = D(x̄_t + ε b), `r` the target, `observed` the 0/1 set O, `w2` = W², `nu` = ν (None: a
/// factor 1, for the `xt` and `reference` modes), `probe` = b. Gradients flow to `d` and `d_eps` only.
#[allow(clippy::too_many_arguments)]
pub fn gsure_loss(
    d: &Tensor,
    d_eps: &Tensor,
    r: &Tensor,
    observed: &Tensor,
    w2: &Tensor,
    nu: Option<&Tensor>,
    probe: &Tensor,
    coef: impl Into<Coefs>,
) -> Result<Tensor> {
    let coef = coef.into();
    let others = [("D_eps", d_eps), ("target", r), ("observed", observed), ("w2", w2), ("probe", probe)];
    let (rows, m) = check(d, &others, nu, &coef)?;
    let mut inputs = vec![d, d_eps, r, observed, w2, probe];
    inputs.extend(nu);
    let has_nu = nu.is_some();
    // Host values for the CPU twin (and for CUDA uploads of host coefficients); a CUDA table stays put.
    let (cf, table) = match &coef {
        Coefs::Host(c) => (c.interleaved(), None),
        Coefs::Table(t) if t.device() == &crate::Device::Cpu => (t.to_vec_f64()?, None),
        Coefs::Table(t) => (Vec::new(), Some(t.clone())),
    };
    let table_ptr = table.as_ref().map(|t| t.storage_ptr()).transpose()?;
    let loss = compute(
        OP,
        &inputs,
        [rows],
        |s| Ok(with_inputs!(s, has_nu, 0, |x, _g, wrap| wrap(cpu::gsure_fwd(&x, &cf, m)))),
        |gpu, s| {
            let x = cuda::Args { d: s[0], de: s[1], r: s[2], obs: s[3], w2: s[4], b: s[5], nu: s.get(6).copied() };
            let c = table_ptr.map_or(CoefArg::Host(&cf), CoefArg::Device);
            cuda::gsure_fwd(gpu, &x, c, rows, m)
        },
    )?;
    let saved: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let want = (d.tracks_grad(), d_eps.tracks_grad());
    Ok(loss.with_node(Node::record(OP, &[d, d_eps], move |g| {
        // The table is held here for as long as the backward may read it.
        let c = table.as_ref().map_or(Ok(CoefArg::Host(&cf)), |t| t.storage_ptr().map(CoefArg::Device))?;
        let (dd, dde) = backward_raw(&saved, has_nu, c, g, rows, m, want)?;
        Ok(vec![dd, dde])
    })))
}

/// dL/dD and dL/dD^ε from one pass (either skipped when not wanted).
fn backward_raw(
    saved: &[Tensor],
    has_nu: bool,
    cf: CoefArg<'_>,
    g: &Tensor,
    rows: usize,
    m: usize,
    want: (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let wanted = want.0 as usize + want.1 as usize;
    if wanted == 0 {
        return Ok((None, None));
    }
    if g.dims() != [rows] || g.dtype() != saved[0].dtype() {
        bail!(
            "{OP}: backward got a gradient {} {} for a loss of shape [{rows}] {}",
            g.shape(),
            g.dtype(),
            saved[0].dtype()
        );
    }
    let mut inputs: Vec<&Tensor> = saved.iter().collect();
    inputs.push(g);
    let gi = inputs.len() - 1;
    let mut grads = compute_many(
        OP,
        &inputs,
        vec![saved[0].shape().clone(); wanted],
        |s| {
            let CoefArg::Host(cf) = cf else { bail!("{OP}: a device coefficient table on the CPU") };
            let (dd, dde) = with_inputs!(s, has_nu, gi, |x, g, wrap| {
                let (a, b) = cpu::gsure_bwd(&x, cf, g, m);
                (wrap(a), wrap(b))
            });
            Ok([(want.0, dd), (want.1, dde)].into_iter().filter(|(w, _)| *w).map(|(_, t)| t).collect())
        },
        |gpu, s| {
            let x = cuda::Args {
                d: s[0],
                de: s[1],
                r: s[2],
                obs: s[3],
                w2: s[4],
                b: s[5],
                nu: if has_nu { Some(s[6]) } else { None },
            };
            let (dd, dde) = cuda::gsure_bwd(gpu, &x, &cf, s[gi], rows, m, want)?;
            Ok(dd.into_iter().chain(dde).collect())
        },
    )?;
    let second = if wanted == 2 { grads.pop() } else { None };
    let first = grads.pop().expect("one gradient is wanted");
    Ok(if want.0 { (Some(first), second) } else { (None, Some(first)) })
}
