//! [`OpSpec`]: an operator family and its parameters as the user gives them (CLI flags, dataset metadata),
//! validated against an image size by [`OpSpec::build`]. Every refusal names the field (and its flag) and
//! the fix.
use super::{BoxInpainting, GaussianDenoising, MriSingleCoil, Operator, PatchInpainting, PixelInpainting};
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The operator families of docs/METHODS.md §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OpKind {
    /// Pixel inpainting: each pixel dropped with probability p (shared across channels).
    Pixel,
    /// Patch inpainting: a grid of k×k patches, each dropped with probability p.
    Patch,
    /// Box inpainting: one square hole at a uniformly random position.
    Box,
    /// Gaussian denoising: everything observed, noise σ0.
    Noise,
    /// Single-coil MRI: k-space column mask (centre lines plus random or equispaced outer lines).
    Mri,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Pixel => "pixel",
            OpKind::Patch => "patch",
            OpKind::Box => "box",
            OpKind::Noise => "noise",
            OpKind::Mri => "mri",
        }
    }
    /// The basis the operator is diagonal in: k-space for MRI, pixels for the rest.
    pub fn basis(self) -> super::Basis {
        match self {
            OpKind::Mri => super::Basis::Fourier,
            _ => super::Basis::Pixel,
        }
    }
    pub fn parse(s: &str) -> Result<OpKind> {
        Ok(match s {
            "pixel" => OpKind::Pixel,
            "patch" => OpKind::Patch,
            "box" => OpKind::Box,
            "noise" => OpKind::Noise,
            "mri" => OpKind::Mri,
            _ => bail!("operator \"{s}\" is unknown. Fix: use one of pixel, patch, box, noise, mri"),
        })
    }
}

/// An operator family with its parameters; unset optional parameters take their defaults in `build`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSpec {
    pub kind: OpKind,
    /// Noise level σ0 (default 0).
    pub sigma0: f64,
    /// Drop probability, in [0, 1): required for pixel and patch.
    pub p: Option<f64>,
    /// Patch side k (default 4).
    pub patch: Option<usize>,
    /// Box side (default half the smaller image side).
    pub box_size: Option<usize>,
    /// MRI acceleration R >= 1 (default 4).
    pub r: Option<f64>,
    /// MRI number of always-sampled centre lines (default round(0.08 W)).
    pub acs: Option<usize>,
    /// MRI outer lines equispaced (random cyclic offset) instead of uniformly random.
    pub equispaced: bool,
}

impl OpSpec {
    pub fn new(kind: OpKind) -> OpSpec {
        OpSpec { kind, sigma0: 0.0, p: None, patch: None, box_size: None, r: None, acs: None, equispaced: false }
    }

    /// The operator at image size [C, H, W], after validating every parameter against it.
    pub fn build(&self, chw: [usize; 3]) -> Result<Box<dyn Operator>> {
        let [c, h, w] = chw;
        let op = self.kind.name();
        if c == 0 || h == 0 || w == 0 {
            bail!("{op} operator: image size [C, H, W] = {chw:?} is empty. Fix: give non-empty images");
        }
        if !self.sigma0.is_finite() || self.sigma0 < 0.0 {
            bail!(
                "{op} operator: field \"sigma0\" (--sigma0) is {}; it must be a finite noise level >= 0. Fix: pass \
                 e.g. --sigma0 0.1, or 0 for noise-free observations",
                self.sigma0
            );
        }
        let sigma0 = self.sigma0;
        let p = || -> Result<f64> {
            match self.p {
                None => bail!(
                    "{op} operator: field \"p\" (--p) is missing; it is the probability that a {} is dropped. \
                     Fix: pass e.g. --p 0.5",
                    if self.kind == OpKind::Patch { "patch" } else { "pixel" }
                ),
                Some(p) if !(0.0..1.0).contains(&p) => bail!(
                    "{op} operator: field \"p\" (--p) is {p}; it must be a drop probability in [0, 1) (at p = 1 \
                     nothing is ever observed). Fix: pass a value such as --p 0.5"
                ),
                Some(p) => Ok(p),
            }
        };
        Ok(match self.kind {
            OpKind::Pixel => Box::new(PixelInpainting { p: p()?, sigma0, chw }),
            OpKind::Patch => {
                let k = self.patch.unwrap_or(4);
                if k == 0 {
                    bail!("{op} operator: field \"patch\" (--patch) is 0; the patch side must be >= 1. Fix: pass e.g. --patch 4");
                }
                Box::new(PatchInpainting { p: p()?, k, sigma0, chw })
            }
            OpKind::Box => {
                let s = self.box_size.unwrap_or(h.min(w) / 2);
                if s > h.min(w) {
                    bail!(
                        "{op} operator: field \"box\" (--box) is {s} but the images are {h}x{w}; the hole must fit \
                         in the image. Fix: pass --box {} or less",
                        h.min(w)
                    );
                }
                Box::new(BoxInpainting { size: s, sigma0, chw })
            }
            OpKind::Noise => Box::new(GaussianDenoising { sigma0, chw }),
            OpKind::Mri => {
                if c > 2 {
                    bail!(
                        "{op} operator: images have {c} channels; MRI takes complex images [N, 2, H, W] or real \
                         [N, 1, H, W]. Fix: give single-channel or (real, imaginary) images"
                    );
                }
                for (axis, size) in [("H", h), ("W", w)] {
                    if crate::ops::fft::cpu::radices(size).is_none() {
                        bail!(
                            "{op} operator: image size {h}x{w}: {axis} = {size} has a prime factor other than 2, 3 \
                             and 5, which the FFT does not support. Fix: resize or crop to e.g. 320 = 2^6*5"
                        );
                    }
                }
                let r = self.r.unwrap_or(4.0);
                if !r.is_finite() || r < 1.0 {
                    bail!(
                        "{op} operator: field \"R\" (--R) is {r}; an acceleration must be >= 1 (R = 1 samples \
                         every line). Fix: pass e.g. --R 4"
                    );
                }
                let acs = self.acs.unwrap_or(((0.08 * w as f64).round() as usize).clamp(1, w));
                if acs > w {
                    bail!(
                        "{op} operator: field \"acs\" (--acs) is {acs} but the k-space has only {w} lines (image \
                         width); the centre lines must fit. Fix: pass --acs {} or less",
                        w
                    );
                }
                Box::new(MriSingleCoil::new(r, acs, self.equispaced, sigma0, [h, w]))
            }
        })
    }

    /// The parameters as dataset metadata fields (the ones that do not apply are null).
    pub fn to_json(&self) -> Value {
        json!({
            "operator": self.kind.name(),
            "sigma0": self.sigma0,
            "p": self.p,
            "patch": self.patch,
            "box": self.box_size,
            "R": self.r,
            "acs": self.acs,
            "equispaced": self.equispaced,
        })
    }

    /// Reads the fields written by [`OpSpec::to_json`] (`what` names the file in errors).
    pub fn from_json(what: &str, m: &Value) -> Result<OpSpec> {
        let field = |name: &str| m.get(name).filter(|v| !v.is_null());
        let kind = match field("operator").and_then(|v| v.as_str()) {
            Some(s) => OpKind::parse(s).map_err(|e| anyhow::anyhow!("{what}: metadata field \"operator\": {e}"))?,
            None => bail!("{what}: metadata field \"operator\" (a string) is missing. Fix: re-create the file with `gsure data make`"),
        };
        let num = |name: &str| -> Result<Option<f64>> {
            match field(name) {
                None => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) => Ok(Some(x)),
                    None => bail!("{what}: metadata field \"{name}\" is {v}; it must be a number or null. Fix: re-create the file with `gsure data make`"),
                },
            }
        };
        let int = |name: &str| -> Result<Option<usize>> {
            match field(name) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(x) => Ok(Some(x as usize)),
                    None => bail!("{what}: metadata field \"{name}\" is {v}; it must be a non-negative integer or null. Fix: re-create the file with `gsure data make`"),
                },
            }
        };
        Ok(OpSpec {
            kind,
            sigma0: num("sigma0")?.unwrap_or(0.0),
            p: num("p")?,
            patch: int("patch")?,
            box_size: int("box")?,
            r: num("R")?,
            acs: int("acs")?,
            equispaced: field("equispaced").and_then(|v| v.as_bool()).unwrap_or(false),
        })
    }
}
