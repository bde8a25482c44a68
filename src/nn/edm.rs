//! EDM's preconditioned denoiser around the DDPM++ network (docs/METHODS.md §3):
//! D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)), with per-example σ, and Ambient Diffusion's
//! mask channels (§4.3) appended to the network input.
use super::ddpmpp::DdpmppUnet;
use super::TrainSeed;
use crate::diffusion::schedule::Edm;
use crate::ops::{self, layout};
use crate::{DType, Tensor};
use anyhow::{bail, Result};

/// EDM's per-example coefficients of a batch, each [N]: c_in, c_skip and c_out in the image's dtype,
/// c_noise in f32 (f64 for f64 runs).
pub struct Preconditioning {
    pub c_in: Tensor,
    pub c_skip: Tensor,
    pub c_out: Tensor,
    pub c_noise: Tensor,
}

pub struct EdmDenoiser {
    pub net: DdpmppUnet,
    pub edm: Edm,
    /// Whether the mask channels are scaled by c_in like the image. The Ambient Diffusion code passes the
    /// whole concat(Ã ⊙ x_t, Ã) through EDMPrecond, so its mask reaches the network as c_in·Ã (true); by
    /// default (false) the mask enters as 0/1, concatenated after c_in scales the image.
    pub scale_mask: bool,
}

impl EdmDenoiser {
    pub fn new(net: DdpmppUnet, edm: Edm) -> Self {
        EdmDenoiser { net, edm, scale_mask: false }
    }

    /// D(x; σ): x [N, C, R, R] (for Ambient Diffusion the masked noisy image Ã ⊙ x_t), `sigma` one noise
    /// level per example, `mask` [N, extra_in_channels, R, R] exactly when the network has extra input
    /// channels. `train_seed` turns dropout on. Returns the x0 estimate [N, out_channels, R, R]; c_skip x
    /// needs out_channels = in_channels.
    pub fn denoise(
        &self,
        x: &Tensor,
        sigma: &[f64],
        mask: Option<&Tensor>,
        train_seed: Option<TrainSeed>,
    ) -> Result<Tensor> {
        let n = x.dims().first().copied().unwrap_or(0);
        if sigma.len() != n {
            bail!("EDM denoiser: {} noise levels for a batch of {n} (shape {})", sigma.len(), x.shape());
        }
        if let Some(bad) = sigma.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            bail!("EDM denoiser: noise level {bad} is not a positive finite number");
        }
        let [c_in, c_skip, c_out, c_noise] = self.edm.precond_columns(sigma);
        let per_example = |v: &[f64], dtype| Tensor::from_f64(v, [n], dtype, x.device());
        // c_noise stays f32 like DDIM's timesteps (bf16 would round ln σ / 4 coarsely); f64 for f64 runs.
        let t_dtype = if x.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        let p = Preconditioning {
            c_in: per_example(&c_in, x.dtype())?,
            c_skip: per_example(&c_skip, x.dtype())?,
            c_out: per_example(&c_out, x.dtype())?,
            c_noise: per_example(&c_noise, t_dtype)?,
        };
        self.denoise_preconditioned(x, &p, mask, train_seed)
    }

    /// [`Self::denoise`] with the per-example coefficients already on the device (drawn and uploaded with
    /// a staged step's batch): nothing here reads the host.
    pub fn denoise_preconditioned(
        &self,
        x: &Tensor,
        p: &Preconditioning,
        mask: Option<&Tensor>,
        train_seed: Option<TrainSeed>,
    ) -> Result<Tensor> {
        let cfg = &self.net.config;
        let (n, c, h, w) = x.shape().nchw("EDM denoiser input")?;
        if c != cfg.in_channels || cfg.out_channels != cfg.in_channels {
            bail!(
                "EDM denoiser: image of shape {} for a network with {} image input and {} output channels \
                 (c_skip x needs them equal)",
                x.shape(),
                cfg.in_channels,
                cfg.out_channels
            );
        }
        for (name, t) in [("c_in", &p.c_in), ("c_skip", &p.c_skip), ("c_out", &p.c_out), ("c_noise", &p.c_noise)] {
            if t.dims() != [n] {
                bail!("EDM denoiser: {name} of shape {} for a batch of {n} (shape {})", t.shape(), x.shape());
            }
        }
        match (mask, cfg.extra_in_channels) {
            (None, 0) => {}
            (Some(m), k) if k > 0 => {
                if m.dims() != [n, k, h, w] || m.dtype() != x.dtype() || m.device() != x.device() {
                    bail!(
                        "EDM denoiser: mask of shape {} ({}, {}) for image {} ({}, {}); expected [{n}, {k}, {h}, {w}]",
                        m.shape(),
                        m.dtype().name(),
                        m.device(),
                        x.shape(),
                        x.dtype().name(),
                        x.device()
                    );
                }
            }
            (None, k) => bail!("EDM denoiser: the network takes {k} mask channels but no mask was given"),
            (Some(m), _) => bail!("EDM denoiser: mask of shape {} for a network without mask channels", m.shape()),
        }

        let mut input = ops::mul_along(x, &p.c_in, 0)?;
        if let Some(m) = mask {
            let m = if self.scale_mask { ops::mul_along(m, &p.c_in, 0)? } else { m.clone() };
            input = layout::concat_channels(&[&input, &m])?;
        }
        let f = self.net.forward(&input, &p.c_noise, train_seed)?;
        ops::add(&ops::mul_along(x, &p.c_skip, 0)?, &ops::mul_along(&f, &p.c_out, 0)?)
    }
}
