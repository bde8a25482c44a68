//! EDM's DDPM++ U-Net (Karras et al. 2022, `SongUNet` in NVlabs/edm training/networks.py with
//! embedding_type='positional', encoder_type='standard', decoder_type='standard', channel_mult_noise=1,
//! resample_filter=[1,1]), with Ambient Diffusion's optional gated convolutions and extra (mask) input
//! channels. Parameter names are the reference's state-dict keys (`map_layer0.weight`,
//! `enc.32x32_block0.conv0.weight`, `dec.32x32_aux_conv.weight`, ...) and the initialisation is the
//! reference's (xavier-uniform weights, zero biases, 1e-5 gain on conv1/proj/aux_conv, sqrt(0.2) on qkv).
//!
//! What the reference fixes and we follow (some differ from a plain reading of the paper):
//! - every group norm has min(32, C/4) groups and eps 1e-6 (SongUNet passes eps=1e-6 to its blocks);
//! - attention uses `num_heads = 1` (SongUNet overrides the UNetBlock default C/64), scaled by 1/sqrt(C);
//! - down/up blocks always carry a 1×1 skip projection (resample_proj=True), applied after resampling;
//! - resampling with filter [1,1] is exactly 2×2 average pooling (down) and nearest 2× upsampling (up),
//!   applied before conv0 on the main path (after norm0 and SiLU);
//! - the decoder's lowest level has `in0` (with attention) and `in1`; other decoder levels attend only in
//!   their last block; the encoder attends in every block at an attention resolution;
//! - the qkv 1×1 convolution's output channels are interleaved as in the reference's
//!   `reshape(N·heads, C/heads, 3, T)`: channel h·3D + 3d + j holds q (j=0), k (1), v (2) of head h, dim d.
//!   We keep that weight layout (so reference weights mean the same thing here) and de-interleave the
//!   weight rows with a constant permutation matrix before the convolution.
//!
//! Not reproduced: class labels (`map_label`) and augmentation labels (`map_augment`, a bias-free
//! Linear(augment_dim, C) that EDM's released CIFAR-10 models carry with augment_dim 9).
use super::gated::{xavier_bound, Gate, GatedConv2d};
use super::layers::{GroupNorm, Linear};
use super::Init;
use super::TrainSeed;
use crate::ops::conv::Epilogue;
use crate::ops::{self, attention, dropout, embedding, layout, matmul};
use crate::{DType, Device, ParamStore, Tensor};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which convolutions are gated when `gated` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateScope {
    /// Every convolution with weights, as in the Ambient Diffusion code: the input conv, conv0, conv1, the
    /// 1×1 skips, qkv, proj and the output conv.
    AllConvs,
    /// Only the two 3×3 convolutions (conv0, conv1) of each UNetBlock.
    Block3x3,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdpmppConfig {
    /// Image channels of the input (the part that EDM's preconditioning scales and skips).
    pub in_channels: usize,
    /// Further input channels concatenated after the image (Ambient Diffusion's mask Ã); 0 for none.
    pub extra_in_channels: usize,
    pub out_channels: usize,
    pub resolution: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    /// The embedding has model_channels · channel_mult_emb channels (4 in the reference).
    pub channel_mult_emb: usize,
    pub num_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    /// Attention heads (SongUNet: 1).
    pub attn_heads: usize,
    pub dropout: f64,
    /// Gated convolutions (Ambient Diffusion).
    pub gated: bool,
    /// g = sigmoid∘sigmoid (the reference code) instead of sigmoid.
    pub double_sigmoid: bool,
    pub gate_scope: GateScope,
}

impl DdpmppConfig {
    /// EDM's unconditional CIFAR-10 DDPM++ (`--arch=ddpmpp`): 55,732,739 parameters (the released
    /// checkpoints add a 1,152-parameter augmentation-label layer that we leave out).
    pub fn edm_ddpmpp_cifar10() -> Self {
        DdpmppConfig {
            in_channels: 3,
            extra_in_channels: 0,
            out_channels: 3,
            resolution: 32,
            model_channels: 128,
            channel_mult: vec![2, 2, 2],
            channel_mult_emb: 4,
            num_blocks: 4,
            attn_resolutions: vec![16],
            attn_heads: 1,
            dropout: 0.13,
            gated: false,
            double_sigmoid: false,
            gate_scope: GateScope::AllConvs,
        }
    }
    /// Ambient Diffusion's CelebA 64×64 model: DDPM++ with every convolution gated by sigmoid∘sigmoid (as
    /// the reference code computes) and input concat(Ã ⊙ x_t, Ã). The reference gives the network 6 output
    /// channels and discards the last 3; we output the 3 that are used.
    pub fn ambient_celeba64() -> Self {
        DdpmppConfig {
            in_channels: 3,
            extra_in_channels: 3,
            out_channels: 3,
            resolution: 64,
            model_channels: 128,
            channel_mult: vec![1, 2, 2, 2],
            channel_mult_emb: 4,
            num_blocks: 4,
            attn_resolutions: vec![16],
            attn_heads: 1,
            dropout: 0.1,
            gated: true,
            double_sigmoid: true,
            gate_scope: GateScope::AllConvs,
        }
    }
    /// Small enough to train on a CPU: 1 channel at 16×16.
    pub fn tiny() -> Self {
        DdpmppConfig {
            in_channels: 1,
            extra_in_channels: 0,
            out_channels: 1,
            resolution: 16,
            model_channels: 32,
            channel_mult: vec![1, 2],
            channel_mult_emb: 4,
            num_blocks: 1,
            attn_resolutions: vec![8],
            attn_heads: 1,
            dropout: 0.0,
            gated: false,
            double_sigmoid: false,
            gate_scope: GateScope::AllConvs,
        }
    }

    /// Input channels of the network: image plus extra (mask) channels.
    pub fn net_in_channels(&self) -> usize {
        self.in_channels + self.extra_in_channels
    }

    /// The gate of a convolution: `block3x3` for conv0/conv1 of a UNetBlock, false for the others.
    pub fn gate_for(&self, block3x3: bool) -> Option<Gate> {
        if !self.gated || (self.gate_scope == GateScope::Block3x3 && !block3x3) {
            return None;
        }
        Some(if self.double_sigmoid { Gate::DoubleSigmoid } else { Gate::Sigmoid })
    }

    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.channel_mult.is_empty() || c.num_blocks == 0 || c.in_channels == 0 || c.out_channels == 0 {
            bail!("DDPM++ config: channel_mult, num_blocks, in_channels and out_channels must be non-empty/positive");
        }
        if c.model_channels < 4 || !c.model_channels.is_multiple_of(2) || c.channel_mult_emb == 0 {
            bail!(
                "DDPM++ config: model_channels must be even and >= 4 (it sizes the sinusoidal embedding), got {}",
                c.model_channels
            );
        }
        if c.channel_mult.contains(&0) {
            bail!("DDPM++ config: channel_mult {:?} has a zero", c.channel_mult);
        }
        let levels = c.channel_mult.len() as u32;
        if c.resolution == 0 || !c.resolution.is_multiple_of(1usize << (levels - 1)) {
            bail!(
                "DDPM++ config: resolution {} cannot be halved {} times (channel_mult has {levels} levels)",
                c.resolution,
                levels - 1
            );
        }
        if !(0.0..1.0).contains(&c.dropout) {
            bail!("DDPM++ config: dropout {} is not in [0, 1)", c.dropout);
        }
        if c.attn_heads == 0 {
            bail!("DDPM++ config: attn_heads must be positive");
        }
        for m in &c.channel_mult {
            if !(c.model_channels * m).is_multiple_of(c.attn_heads) {
                bail!(
                    "DDPM++ config: {} channels are not divisible into {} attention heads",
                    c.model_channels * m,
                    c.attn_heads
                );
            }
        }
        Ok(())
    }
}

/// EDM's GroupNorm: min(32, C/4) groups (eps 1e-6, which is what `layers::GroupNorm` uses).
fn group_norm(init: &mut Init, name: &str, c: usize) -> Result<GroupNorm> {
    let groups = (c / 4).min(32);
    if groups == 0 || !c.is_multiple_of(groups) {
        bail!(
            "DDPM++: {name} has {c} channels, which EDM's GroupNorm cannot split into min(32, C/4) = {groups} groups"
        );
    }
    GroupNorm::new(init, name, groups, c)
}

/// EDM's Linear with xavier-uniform weights and a zero bias.
fn linear(init: &mut Init, name: &str, d_in: usize, d_out: usize) -> Result<Linear> {
    Ok(Linear {
        weight: init.uniform(&format!("{name}.weight"), &[d_out, d_in], xavier_bound(d_in, d_out, 1.0))?,
        bias: init.constant(&format!("{name}.bias"), &[d_out], 0.0)?,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resample {
    None,
    Down,
    Up,
}

fn resample(x: &Tensor, r: Resample) -> Result<Tensor> {
    match r {
        Resample::None => Ok(x.clone()),
        Resample::Down => layout::avg_pool2x(x),
        Resample::Up => layout::upsample_nearest2x(x),
    }
}

/// Self-attention of a UNetBlock: norm2 -> qkv (1×1) -> attention -> proj (1×1), residual.
struct Attention {
    norm2: GroupNorm,
    qkv: GatedConv2d,
    proj: GatedConv2d,
    heads: usize,
    /// [3C, 3C] 0/1 matrix: row j·C + h·D + d picks the reference's qkv row h·3D + 3d + j.
    deinterleave: Tensor,
}

impl Attention {
    fn new(init: &mut Init, name: &str, c: usize, heads: usize, cfg: &DdpmppConfig) -> Result<Self> {
        let d = c / heads;
        let mut p = vec![0.0; 9 * c * c];
        for j in 0..3 {
            for h in 0..heads {
                for dd in 0..d {
                    let row = j * c + h * d + dd;
                    let src = h * 3 * d + 3 * dd + j;
                    p[row * 3 * c + src] = 1.0;
                }
            }
        }
        Ok(Attention {
            norm2: group_norm(init, &format!("{name}.norm2"), c)?,
            qkv: GatedConv2d::new(init, &format!("{name}.qkv"), c, 3 * c, 1, 0.2f64.sqrt(), cfg.gate_for(false))?,
            proj: GatedConv2d::new(init, &format!("{name}.proj"), c, c, 1, 1e-5, cfg.gate_for(false))?,
            heads,
            deinterleave: Tensor::from_f64(&p, [3 * c, 3 * c], init.dtype, &init.device)?,
        })
    }

    /// Rows of a [3C, ...] parameter reordered from the reference's interleaving to [q; k; v] blocks.
    fn rows(&self, p: &Tensor) -> Result<Tensor> {
        let rows = p.dims()[0];
        let cols = p.numel() / rows;
        let perm = if self.deinterleave.dtype() == p.dtype() {
            self.deinterleave.clone()
        } else {
            self.deinterleave.to_dtype(p.dtype())?
        };
        matmul::matmul(&perm, &p.reshape([rows, cols])?)?.reshape(p.shape().clone())
    }

    fn forward(&self, x: &Tensor, skip_scale: f64) -> Result<Tensor> {
        let (n, c, hh, ww) = x.shape().nchw("DDPM++ attention")?;
        let h = self.norm2.forward(x, false)?;
        let w = self.rows(&self.qkv.weight)?;
        let gw = match &self.qkv.gate_weight {
            Some(g) => Some(self.rows(g)?),
            None => None,
        };
        let b = self.rows(&self.qkv.bias)?;
        let qkv = self.qkv.forward_with(&h, &w, gw.as_ref(), &b)?;
        // 1×1 convolutions give channel-first [N, C, H·W] tokens: exactly the attention op's layout.
        let parts = layout::split_channels(&qkv, &[c, c, c])?;
        let t = |i: usize| parts[i].reshape([n, c, hh * ww]);
        let a = attention::attention(&t(0)?, &t(1)?, &t(2)?, self.heads)?.reshape([n, c, hh, ww])?;
        self.proj.forward_epilogue(&a, Epilogue::none().with_residual(x).scaled(skip_scale))
    }
}

/// EDM's UNetBlock with the DDPM++ settings (adaptive_scale=False, resample_proj=True, skip_scale √½).
pub struct UNetBlock {
    pub in_channels: usize,
    pub out_channels: usize,
    norm0: GroupNorm,
    conv0: GatedConv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: GatedConv2d,
    skip: Option<GatedConv2d>,
    attn: Option<Attention>,
    resample: Resample,
    dropout: f64,
    skip_scale: f64,
    index: u64,
}

impl UNetBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        init: &mut Init,
        name: &str,
        c_in: usize,
        c_out: usize,
        emb: usize,
        resample: Resample,
        attention: bool,
        cfg: &DdpmppConfig,
        index: u64,
    ) -> Result<Self> {
        let skip = if c_in != c_out || resample != Resample::None {
            Some(GatedConv2d::new(init, &format!("{name}.skip"), c_in, c_out, 1, 1.0, cfg.gate_for(false))?)
        } else {
            None
        };
        let norm0 = group_norm(init, &format!("{name}.norm0"), c_in)?;
        let conv0 = GatedConv2d::new(init, &format!("{name}.conv0"), c_in, c_out, 3, 1.0, cfg.gate_for(true))?;
        let affine = linear(init, &format!("{name}.affine"), emb, c_out)?;
        let norm1 = group_norm(init, &format!("{name}.norm1"), c_out)?;
        let conv1 = GatedConv2d::new(init, &format!("{name}.conv1"), c_out, c_out, 3, 1e-5, cfg.gate_for(true))?;
        let attn = if attention { Some(Attention::new(init, name, c_out, cfg.attn_heads, cfg)?) } else { None };
        Ok(UNetBlock {
            in_channels: c_in,
            out_channels: c_out,
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            attn,
            resample,
            dropout: cfg.dropout,
            skip_scale: 0.5f64.sqrt(),
            index,
        })
    }

    /// `emb` is the (already SiLU'd) embedding [N, emb]; `train_seed` turns dropout on.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, train_seed: Option<TrainSeed>) -> Result<Tensor> {
        let affine = self.affine.forward(emb)?;
        let epi = Epilogue::none().with_per_image(&affine);
        let h = match self.resample {
            // the norm runs inside the convolution (ungated) unless a resampling sits between them
            Resample::None => self.conv0.forward_normed(x, &self.norm0, true, None, epi)?,
            r => self.conv0.forward_epilogue(&resample(&self.norm0.forward(x, true)?, r)?, epi)?,
        };
        let drop = match train_seed {
            Some(seed) => dropout::mask(self.dropout, seed.for_layer(self.index), "DDPM++ UNetBlock")?,
            None => None,
        };
        let skip = match &self.skip {
            Some(conv) => conv.forward(&resample(x, self.resample)?)?,
            None => x.clone(),
        };
        // norm1 -> SiLU -> dropout -> conv1 (+ skip, · √½) as one op
        let epi = Epilogue::none().with_residual(&skip).scaled(self.skip_scale);
        let x = self.conv1.forward_normed(&h, &self.norm1, true, drop, epi)?;
        match &self.attn {
            Some(a) => a.forward(&x, self.skip_scale),
            None => Ok(x),
        }
    }
}

/// The DDPM++ network F(x; c_noise): x [N, in + extra, R, R] -> [N, out, R, R].
pub struct DdpmppUnet {
    pub config: DdpmppConfig,
    map_layer0: Linear,
    map_layer1: Linear,
    enc_conv: GatedConv2d,
    /// The encoder's UNetBlocks in order (`_down` and `_block{i}`); each output is a skip.
    enc: Vec<UNetBlock>,
    /// The decoder's UNetBlocks in order; a block whose input width differs from the running tensor takes
    /// concat(x, skip).
    dec: Vec<UNetBlock>,
    aux_norm: GroupNorm,
    aux_conv: GatedConv2d,
}

impl DdpmppUnet {
    /// Builds the network, registering its parameters in `store` (seeded initialisation).
    pub fn new(
        config: &DdpmppConfig,
        store: &mut ParamStore,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let mut init = Init::new(store, seed, device, dtype);
        let init = &mut init;
        let ch = c.model_channels;
        let emb = ch * c.channel_mult_emb;
        let map_layer0 = linear(init, "map_layer0", ch, emb)?;
        let map_layer1 = linear(init, "map_layer1", emb, emb)?;
        let mut index = 0u64;
        let mut next = || {
            index += 1;
            index
        };

        let top = c.resolution;
        let enc_conv = GatedConv2d::new(
            init,
            &format!("enc.{top}x{top}_conv"),
            c.net_in_channels(),
            ch,
            3,
            1.0,
            c.gate_for(false),
        )?;
        let mut enc = Vec::new();
        let mut skips = vec![ch];
        let mut cout = ch;
        for (level, &mult) in c.channel_mult.iter().enumerate() {
            let res = c.resolution >> level;
            if level > 0 {
                let name = format!("enc.{res}x{res}_down");
                enc.push(UNetBlock::new(init, &name, cout, cout, emb, Resample::Down, false, c, next())?);
                skips.push(cout);
            }
            for idx in 0..c.num_blocks {
                let cin = cout;
                cout = ch * mult;
                let attn = c.attn_resolutions.contains(&res);
                let name = format!("enc.{res}x{res}_block{idx}");
                enc.push(UNetBlock::new(init, &name, cin, cout, emb, Resample::None, attn, c, next())?);
                skips.push(cout);
            }
        }

        let mut dec = Vec::new();
        let levels = c.channel_mult.len();
        for (level, &mult) in c.channel_mult.iter().enumerate().rev() {
            let res = c.resolution >> level;
            let p = format!("dec.{res}x{res}");
            if level == levels - 1 {
                dec.push(UNetBlock::new(init, &format!("{p}_in0"), cout, cout, emb, Resample::None, true, c, next())?);
                dec.push(UNetBlock::new(init, &format!("{p}_in1"), cout, cout, emb, Resample::None, false, c, next())?);
            } else {
                dec.push(UNetBlock::new(init, &format!("{p}_up"), cout, cout, emb, Resample::Up, false, c, next())?);
            }
            for idx in 0..=c.num_blocks {
                let cin = cout + skips.pop().expect("one skip per decoder block");
                cout = ch * mult;
                let attn = idx == c.num_blocks && c.attn_resolutions.contains(&res);
                let name = format!("{p}_block{idx}");
                dec.push(UNetBlock::new(init, &name, cin, cout, emb, Resample::None, attn, c, next())?);
            }
        }
        debug_assert!(skips.is_empty());
        let aux_norm = group_norm(init, &format!("dec.{top}x{top}_aux_norm"), cout)?;
        let aux_conv = GatedConv2d::new(
            init,
            &format!("dec.{top}x{top}_aux_conv"),
            cout,
            c.out_channels,
            3,
            1e-5,
            c.gate_for(false),
        )?;
        Ok(DdpmppUnet { config: c.clone(), map_layer0, map_layer1, enc_conv, enc, dec, aux_norm, aux_conv })
    }

    /// F(x; c_noise): x [N, in + extra, R, R] in the compute dtype, `noise_labels` [N] (EDM's c_noise =
    /// ln(σ)/4; f32, or f64 for f64 CPU runs). `train_seed` turns dropout on.
    pub fn forward(&self, x: &Tensor, noise_labels: &Tensor, train_seed: Option<TrainSeed>) -> Result<Tensor> {
        let _range = crate::nvtx::range("ddpmpp forward");
        let c = &self.config;
        let (n, chans, h, w) = x.shape().nchw("DDPM++ input")?;
        if chans != c.net_in_channels() || h != w || h != c.resolution {
            bail!(
                "DDPM++: input of shape {} does not fit the configuration ({} + {} channels at {r}×{r})",
                x.shape(),
                c.in_channels,
                c.extra_in_channels,
                r = c.resolution
            );
        }
        if noise_labels.dims() != [n] {
            bail!("DDPM++: noise labels of shape {} for a batch of {n}", noise_labels.shape());
        }
        // EDM's PositionalEmbedding(endpoint=True) followed by SongUNet's sin/cos swap is
        // [sin(t f_k), cos(t f_k)] with f_k = 10000^(-k/(half-1)): exactly DDIM's embedding for an even width.
        let emb = embedding::sinusoidal_embedding(noise_labels, c.model_channels, embedding::EmbeddingKind::Ddim)?
            .to_dtype(x.dtype())?;
        let emb = ops::silu(&self.map_layer0.forward(&emb)?)?;
        let emb = ops::silu(&self.map_layer1.forward(&emb)?)?;

        let mut x = self.enc_conv.forward(x)?;
        let mut skips = vec![x.clone()];
        for block in &self.enc {
            x = block.forward(&x, &emb, train_seed)?;
            skips.push(x.clone());
        }
        for block in &self.dec {
            if x.dims()[1] != block.in_channels {
                let skip = skips.pop().expect("one skip per decoder block");
                x = layout::concat_channels(&[&x, &skip])?;
            }
            x = block.forward(&x, &emb, train_seed)?;
        }
        self.aux_conv.forward(&self.aux_norm.forward(&x, true)?)
    }
}
