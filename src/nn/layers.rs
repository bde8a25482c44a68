//! The building blocks of the U-Nets: convolution, linear, group norm, the residual block with a time
//! embedding, and the self-attention block.
use super::Init;
use super::TrainSeed;
use crate::ops::conv::{self, Epilogue};
use crate::ops::dropout::{self, Mask};
use crate::ops::{self, attention, matmul, norm};
use crate::Tensor;
use anyhow::Result;

/// The parameter in the activations' dtype: f32 master weights feed a bf16 forward through a cast whose
/// backward brings the gradient back to f32.
pub fn cast_like(p: &Tensor, x: &Tensor) -> Result<Tensor> {
    if p.dtype() == x.dtype() {
        Ok(p.clone())
    } else {
        p.to_dtype(x.dtype())
    }
}

pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// A k×k convolution with "same" padding (k/2) at stride 1, or halving the size at stride 2.
    pub fn new(init: &mut Init, name: &str, c_in: usize, c_out: usize, k: usize, stride: usize) -> Result<Self> {
        let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
        Ok(Conv2d {
            weight: init.uniform(&format!("{name}.weight"), &[c_out, c_in, k, k], bound)?,
            bias: init.uniform(&format!("{name}.bias"), &[c_out], bound)?,
            stride,
            padding: k / 2,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Epilogue::none())
    }
    /// The convolution with `extra`'s additions and scale in its epilogue (its bias is this layer's).
    pub fn forward_with(&self, x: &Tensor, extra: Epilogue<&Tensor>) -> Result<Tensor> {
        let bias = cast_like(&self.bias, x)?;
        let epi = Epilogue { bias: Some(&bias), ..extra };
        conv::conv2d_with(x, &cast_like(&self.weight, x)?, self.stride, self.padding, epi)
    }
    /// `norm` (then SiLU if `silu`, then the dropout mask `drop` if any) and this convolution as one op
    /// (`conv::norm_conv2d`: on CUDA the convolution normalises its input as it reads it), with `extra` in
    /// the epilogue.
    pub fn forward_normed(
        &self,
        x: &Tensor,
        norm: &GroupNorm,
        silu: bool,
        drop: Option<Mask>,
        extra: Epilogue<&Tensor>,
    ) -> Result<Tensor> {
        norm.conv(x, silu, drop, (&self.weight, &self.bias), (self.stride, self.padding), extra)
    }
}

pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(init: &mut Init, name: &str, d_in: usize, d_out: usize) -> Result<Self> {
        let bound = 1.0 / (d_in as f64).sqrt();
        Ok(Linear {
            weight: init.uniform(&format!("{name}.weight"), &[d_out, d_in], bound)?,
            bias: init.uniform(&format!("{name}.bias"), &[d_out], bound)?,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        matmul::linear(x, &cast_like(&self.weight, x)?, Some(&cast_like(&self.bias, x)?))
    }
}

pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
}

impl GroupNorm {
    /// The reference models' eps (DDIM's and EDM's SongUNet both pass 1e-6).
    pub const EPS: f64 = 1e-6;

    pub fn new(init: &mut Init, name: &str, groups: usize, channels: usize) -> Result<Self> {
        Ok(GroupNorm {
            weight: init.constant(&format!("{name}.weight"), &[channels], 1.0)?,
            bias: init.constant(&format!("{name}.bias"), &[channels], 0.0)?,
            groups,
        })
    }
    /// Normalises, then applies SiLU in the same kernel when `silu`.
    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        norm::group_norm(x, &cast_like(&self.weight, x)?, &cast_like(&self.bias, x)?, self.groups, Self::EPS, silu)
    }
    /// This norm (then SiLU if `silu`, then the mask `drop`) in front of the convolution with `(weight,
    /// bias)` at `(stride, padding)`, as one op (`conv::norm_conv2d`), with `extra` in its epilogue; the
    /// parameters are cast to x's dtype.
    pub fn conv(
        &self,
        x: &Tensor,
        silu: bool,
        drop: Option<Mask>,
        (weight, bias): (&Tensor, &Tensor),
        (stride, padding): (usize, usize),
        extra: Epilogue<&Tensor>,
    ) -> Result<Tensor> {
        let (gamma, beta, bias) = (cast_like(&self.weight, x)?, cast_like(&self.bias, x)?, cast_like(bias, x)?);
        let input =
            conv::InputNorm { gamma: &gamma, beta: &beta, groups: self.groups, eps: Self::EPS, silu, dropout: drop };
        let epi = Epilogue { bias: Some(&bias), ..extra };
        conv::norm_conv2d(x, input, &cast_like(weight, x)?, stride, padding, epi)
    }
}

/// Adds a per-(example, channel) vector [N, C] to every pixel of an [N, C, H, W] map.
pub fn add_per_channel(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.shape().nchw("add_per_channel")?;
    let flat = ops::add_along(&x.reshape([n * c, h * w])?, &v.reshape([n * c])?, 0)?;
    flat.reshape([n, c, h, w])
}

/// DDIM's ResnetBlock: GN-SiLU-conv, + projected time embedding, GN-SiLU-dropout-conv, + (1×1) skip.
pub struct ResnetBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub temb_proj: Linear,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub nin_shortcut: Option<Conv2d>,
    pub dropout: f64,
    pub index: u64,
}

impl ResnetBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        init: &mut Init,
        name: &str,
        c_in: usize,
        c_out: usize,
        temb: usize,
        groups: usize,
        dropout: f64,
        index: u64,
    ) -> Result<Self> {
        Ok(ResnetBlock {
            norm1: GroupNorm::new(init, &format!("{name}.norm1"), groups, c_in)?,
            conv1: Conv2d::new(init, &format!("{name}.conv1"), c_in, c_out, 3, 1)?,
            temb_proj: Linear::new(init, &format!("{name}.temb_proj"), temb, c_out)?,
            norm2: GroupNorm::new(init, &format!("{name}.norm2"), groups, c_out)?,
            conv2: Conv2d::new(init, &format!("{name}.conv2"), c_out, c_out, 3, 1)?,
            nin_shortcut: if c_in != c_out {
                Some(Conv2d::new(init, &format!("{name}.nin_shortcut"), c_in, c_out, 1, 1)?)
            } else {
                None
            },
            dropout,
            index,
        })
    }

    /// `temb_act` is SiLU(time embedding), shared by every block. `train_seed` enables dropout. The time
    /// embedding and the skip connection are added in the epilogues of conv1 and conv2, and the group norms
    /// (and conv2's dropout, in training) run inside the convolutions (`Conv2d::forward_normed`).
    pub fn forward(&self, x: &Tensor, temb_act: &Tensor, train_seed: Option<TrainSeed>) -> Result<Tensor> {
        let temb = self.temb_proj.forward(temb_act)?;
        let h = self.conv1.forward_normed(x, &self.norm1, true, None, Epilogue::none().with_per_image(&temb))?;
        let skip = match &self.nin_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let drop = match train_seed {
            Some(seed) => dropout::mask(self.dropout, seed.for_layer(self.index), "ResnetBlock")?,
            None => None,
        };
        self.conv2.forward_normed(&h, &self.norm2, true, drop, Epilogue::none().with_residual(&skip))
    }
}

/// Self-attention over the H·W tokens of a feature map, with a residual connection.
pub struct AttnBlock {
    pub norm: GroupNorm,
    pub q: Conv2d,
    pub k: Conv2d,
    pub v: Conv2d,
    pub proj_out: Conv2d,
    pub heads: usize,
}

impl AttnBlock {
    pub fn new(init: &mut Init, name: &str, c: usize, groups: usize, heads: usize) -> Result<Self> {
        Ok(AttnBlock {
            norm: GroupNorm::new(init, &format!("{name}.norm"), groups, c)?,
            q: Conv2d::new(init, &format!("{name}.q"), c, c, 1, 1)?,
            k: Conv2d::new(init, &format!("{name}.k"), c, c, 1, 1)?,
            v: Conv2d::new(init, &format!("{name}.v"), c, c, 1, 1)?,
            proj_out: Conv2d::new(init, &format!("{name}.proj_out"), c, c, 1, 1)?,
            heads,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, hh, ww) = x.shape().nchw("attention block")?;
        let h = self.norm.forward(x, false)?;
        // 1×1 convolutions give channel-first [N, C, H·W] tokens: exactly the attention op's layout.
        let tokens = |conv: &Conv2d| conv.forward(&h)?.reshape([n, c, hh * ww]);
        let a = attention::attention(&tokens(&self.q)?, &tokens(&self.k)?, &tokens(&self.v)?, self.heads)?;
        self.proj_out.forward_with(&a.reshape([n, c, hh, ww])?, Epilogue::none().with_residual(x))
    }
}
