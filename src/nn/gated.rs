//! The convolution of EDM's networks (xavier-uniform weights scaled by `init_weight`, zero biases), with
//! Ambient Diffusion's optional gate: out = conv_W(x) ⊙ g(conv_G(x)) + b, where g is the sigmoid or, as
//! in the reference code (which applies `torch.sigmoid` to an already sigmoided gate), sigmoid∘sigmoid.
//! The gate has no bias of its own; the bias is added after the product.
use super::layers::{add_per_channel, cast_like, GroupNorm};
use super::Init;
use crate::ops::dropout::{self, Mask};
use crate::ops::{self, conv};
use crate::Tensor;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The gate nonlinearity of a gated convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// g = sigmoid (the gated convolution as described in the paper).
    Sigmoid,
    /// g = sigmoid∘sigmoid (what the Ambient Diffusion code computes; g lies in (0.5, 0.73)).
    DoubleSigmoid,
}

/// EDM's `weight_init(mode='xavier_uniform')`: uniform in ±sqrt(6 / (fan_in + fan_out)), times `gain`.
pub fn xavier_bound(fan_in: usize, fan_out: usize, gain: f64) -> f64 {
    (6.0 / (fan_in + fan_out) as f64).sqrt() * gain
}

pub struct GatedConv2d {
    pub weight: Tensor,
    /// The gate's weights (`gate_weight` in the reference state dict), when gated.
    pub gate_weight: Option<Tensor>,
    pub bias: Tensor,
    pub gate: Option<Gate>,
    pub kernel: usize,
}

impl GatedConv2d {
    /// A k×k convolution with "same" padding at stride 1. `gain` scales the xavier bound (EDM's
    /// `init_weight`: 1, sqrt(0.2) for qkv, 1e-5 for the "zero" layers); the gate weights use the same
    /// init, as in the reference.
    pub fn new(
        init: &mut Init,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        gain: f64,
        gate: Option<Gate>,
    ) -> Result<Self> {
        let bound = xavier_bound(c_in * kernel * kernel, c_out * kernel * kernel, gain);
        let shape = [c_out, c_in, kernel, kernel];
        let weight = init.uniform(&format!("{name}.weight"), &shape, bound)?;
        let bias = init.constant(&format!("{name}.bias"), &[c_out], 0.0)?;
        let gate_weight = match gate {
            Some(_) => Some(init.uniform(&format!("{name}.gate_weight"), &shape, bound)?),
            None => None,
        };
        Ok(GatedConv2d { weight, gate_weight, bias, gate, kernel })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &self.weight, self.gate_weight.as_ref(), &self.bias)
    }

    /// The same layer with substituted (e.g. row-permuted) parameters of the same shapes.
    pub fn forward_with(&self, x: &Tensor, w: &Tensor, gw: Option<&Tensor>, b: &Tensor) -> Result<Tensor> {
        self.forward_full(x, w, gw, b, conv::Epilogue::none())
    }

    /// The layer followed by `extra`'s additions and scale (its bias is the layer's): in the convolution's
    /// epilogue when ungated; after the gate's product, as separate ops, when gated.
    pub fn forward_epilogue(&self, x: &Tensor, extra: conv::Epilogue<&Tensor>) -> Result<Tensor> {
        self.forward_full(x, &self.weight, self.gate_weight.as_ref(), &self.bias, extra)
    }

    /// `norm` (then SiLU if `silu`, then the dropout mask `drop` if any) and this layer: as one op
    /// (`conv::norm_conv2d`) when ungated, else the norm and mask apart, followed by
    /// [`GatedConv2d::forward_epilogue`].
    pub fn forward_normed(
        &self,
        x: &Tensor,
        norm: &GroupNorm,
        silu: bool,
        drop: Option<Mask>,
        extra: conv::Epilogue<&Tensor>,
    ) -> Result<Tensor> {
        if self.gate.is_some() {
            let a = norm.forward(x, silu)?;
            let a = match drop {
                Some(m) => dropout::apply_mask(&a, m)?,
                None => a,
            };
            return self.forward_epilogue(&a, extra);
        }
        norm.conv(x, silu, drop, (&self.weight, &self.bias), (1, self.kernel / 2), extra)
    }

    fn forward_full(
        &self,
        x: &Tensor,
        w: &Tensor,
        gw: Option<&Tensor>,
        b: &Tensor,
        extra: conv::Epilogue<&Tensor>,
    ) -> Result<Tensor> {
        let pad = self.kernel / 2;
        let b = cast_like(b, x)?;
        match (self.gate, gw) {
            (Some(gate), Some(gw)) => {
                let y = conv::conv2d(x, &cast_like(w, x)?, None, 1, pad)?;
                let mut g = ops::sigmoid(&conv::conv2d(x, &cast_like(gw, x)?, None, 1, pad)?)?;
                if gate == Gate::DoubleSigmoid {
                    g = ops::sigmoid(&g)?;
                }
                let mut y = ops::add_along(&ops::mul(&y, &g)?, &b, 1)?;
                if let Some(v) = extra.per_image {
                    y = add_per_channel(&y, v)?;
                }
                if let Some(r) = extra.residual {
                    y = ops::add(&y, r)?;
                }
                if extra.scale != 1.0 {
                    y = ops::scale(&y, extra.scale)?;
                }
                Ok(y)
            }
            _ => conv::conv2d_with(x, &cast_like(w, x)?, 1, pad, conv::Epilogue { bias: Some(&b), ..extra }),
        }
    }
}
