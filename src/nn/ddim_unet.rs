//! The DDIM-style U-Net of the GSURE paper (the ermongroup/DDIM `Model`), with parameter names that follow
//! its state dict. One deliberate difference: DDIM's downsampling pads (0, 1, 0, 1) before a stride-2
//! convolution; ours pads 1 on every side. Both halve the size and have the same parameters; the sampling
//! grid is shifted by one pixel, which matters only for loading the reference's weights (we do not).
use super::layers::{AttnBlock, Conv2d, GroupNorm, Linear, ResnetBlock};
use super::Init;
use super::TrainSeed;
use crate::ops::conv::Epilogue;
use crate::ops::{self, embedding, layout};
use crate::{DType, Device, ParamStore, Tensor};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// What the network's output means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The clean image x0.
    X0,
    /// The noise ε.
    Eps,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdimUnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub resolution: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    pub heads: usize,
    pub dropout: f64,
    pub groups: usize,
    pub prediction: Prediction,
}

impl DdimUnetConfig {
    /// The GSURE paper's CelebA model: 1 channel at 32×32, 78,696,193 parameters.
    pub fn gsure_celeba32() -> Self {
        DdimUnetConfig {
            in_channels: 1,
            out_channels: 1,
            resolution: 32,
            ch: 128,
            ch_mult: vec![1, 2, 2, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            heads: 1,
            dropout: 0.1,
            groups: 32,
            prediction: Prediction::X0,
        }
    }
    /// The GSURE paper's fastMRI model: 2 channels (real, imaginary) at 320×320, ε prediction.
    pub fn gsure_mri320() -> Self {
        DdimUnetConfig {
            in_channels: 2,
            out_channels: 2,
            resolution: 320,
            ch_mult: vec![1, 1, 2, 2, 4, 4],
            attn_resolutions: vec![20],
            prediction: Prediction::Eps,
            ..Self::gsure_celeba32()
        }
    }
    /// Small enough to train on a CPU in minutes.
    pub fn tiny() -> Self {
        DdimUnetConfig {
            in_channels: 1,
            out_channels: 1,
            resolution: 16,
            ch: 32,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![8],
            heads: 1,
            dropout: 0.0,
            groups: 8,
            prediction: Prediction::X0,
        }
    }
    /// `tiny`'s blocks at a larger side (32 or more, a power of two) for `channels`-channel images, with
    /// levels added above 16×16 so that attention still runs at 16×16: `tiny32` (1 channel, 32×32, e.g.
    /// Fashion-MNIST) and `tiny-mri32`/`tiny-mri64` (2 channels: complex MRI images). x0 prediction, as
    /// `tiny` (the paper's full-scale MRI model, `gsure-mri320`, predicts ε).
    pub fn tiny_at(resolution: usize, channels: usize) -> Self {
        let extra_levels = (resolution / 16).max(1).ilog2() as usize;
        let mut ch_mult = vec![1];
        ch_mult.extend(std::iter::repeat_n(2, extra_levels));
        DdimUnetConfig {
            in_channels: channels,
            out_channels: channels,
            resolution,
            ch_mult,
            attn_resolutions: vec![16],
            ..Self::tiny()
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.ch_mult.is_empty() || self.ch == 0 || self.num_res_blocks == 0 {
            bail!("U-Net config: ch, ch_mult and num_res_blocks must be non-empty and positive");
        }
        let levels = self.ch_mult.len() as u32;
        if !self.resolution.is_multiple_of(1usize << (levels - 1)) {
            bail!(
                "U-Net config: resolution {} cannot be halved {} times (ch_mult has {} levels)",
                self.resolution,
                levels - 1,
                levels
            );
        }
        for m in std::iter::once(1).chain(self.ch_mult.iter().copied()) {
            if !(self.ch * m).is_multiple_of(self.groups) {
                bail!("U-Net config: {} channels are not divisible into {} groups", self.ch * m, self.groups);
            }
            if !(self.ch * m).is_multiple_of(self.heads) {
                bail!("U-Net config: {} channels are not divisible into {} attention heads", self.ch * m, self.heads);
            }
        }
        Ok(())
    }
}

struct Level {
    blocks: Vec<ResnetBlock>,
    attns: Vec<AttnBlock>,
    resample: Option<Conv2d>,
}

pub struct DdimUnet {
    pub config: DdimUnetConfig,
    temb_dense: [Linear; 2],
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl DdimUnet {
    /// Builds the network, registering its parameters in `store` (seeded initialisation).
    pub fn new(
        config: &DdimUnetConfig,
        store: &mut ParamStore,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let mut init = Init::new(store, seed, device, dtype);
        let init = &mut init;
        let temb = 4 * c.ch;
        let temb_dense =
            [Linear::new(init, "temb.dense.0", c.ch, temb)?, Linear::new(init, "temb.dense.1", temb, temb)?];
        let conv_in = Conv2d::new(init, "conv_in", c.in_channels, c.ch, 3, 1)?;
        let in_mult: Vec<usize> = std::iter::once(1).chain(c.ch_mult.iter().copied()).collect();
        let levels = c.ch_mult.len();
        let mut block_index = 0u64;
        let mut next = || {
            block_index += 1;
            block_index
        };

        let mut res = c.resolution;
        let mut block_in = c.ch;
        let mut down = Vec::new();
        for l in 0..levels {
            let block_out = c.ch * c.ch_mult[l];
            let mut level = Level { blocks: vec![], attns: vec![], resample: None };
            block_in = c.ch * in_mult[l];
            for b in 0..c.num_res_blocks {
                let name = format!("down.{l}.block.{b}");
                level.blocks.push(ResnetBlock::new(
                    init,
                    &name,
                    block_in,
                    block_out,
                    temb,
                    c.groups,
                    c.dropout,
                    next(),
                )?);
                block_in = block_out;
                if c.attn_resolutions.contains(&res) {
                    level.attns.push(AttnBlock::new(init, &format!("down.{l}.attn.{b}"), block_in, c.groups, c.heads)?);
                }
            }
            if l + 1 != levels {
                level.resample =
                    Some(Conv2d::new(init, &format!("down.{l}.downsample.conv"), block_in, block_in, 3, 2)?);
                res /= 2;
            }
            down.push(level);
        }

        let mid = (
            ResnetBlock::new(init, "mid.block_1", block_in, block_in, temb, c.groups, c.dropout, next())?,
            AttnBlock::new(init, "mid.attn_1", block_in, c.groups, c.heads)?,
            ResnetBlock::new(init, "mid.block_2", block_in, block_in, temb, c.groups, c.dropout, next())?,
        );

        // Built from the lowest resolution up; stored by level index like the reference (`up.{level}`).
        let mut up: Vec<Option<Level>> = (0..levels).map(|_| None).collect();
        for l in (0..levels).rev() {
            let block_out = c.ch * c.ch_mult[l];
            let mut skip_in = c.ch * c.ch_mult[l];
            let mut level = Level { blocks: vec![], attns: vec![], resample: None };
            for b in 0..=c.num_res_blocks {
                if b == c.num_res_blocks {
                    skip_in = c.ch * in_mult[l];
                }
                let name = format!("up.{l}.block.{b}");
                level.blocks.push(ResnetBlock::new(
                    init,
                    &name,
                    block_in + skip_in,
                    block_out,
                    temb,
                    c.groups,
                    c.dropout,
                    next(),
                )?);
                block_in = block_out;
                if c.attn_resolutions.contains(&res) {
                    level.attns.push(AttnBlock::new(init, &format!("up.{l}.attn.{b}"), block_in, c.groups, c.heads)?);
                }
            }
            if l != 0 {
                level.resample = Some(Conv2d::new(init, &format!("up.{l}.upsample.conv"), block_in, block_in, 3, 1)?);
                res *= 2;
            }
            up[l] = Some(level);
        }
        let up = up.into_iter().map(|l| l.expect("every level built")).collect();
        let norm_out = GroupNorm::new(init, "norm_out", c.groups, block_in)?;
        let conv_out = Conv2d::new(init, "conv_out", block_in, c.out_channels, 3, 1)?;
        Ok(DdimUnet { config: c.clone(), temb_dense, conv_in, down, mid, up, norm_out, conv_out })
    }

    /// D(x_t, t): x [N, in_channels, R, R], t [N] integer timesteps (as floats). `train_seed` turns dropout on.
    pub fn forward(&self, x: &Tensor, t: &Tensor, train_seed: Option<TrainSeed>) -> Result<Tensor> {
        let _range = crate::nvtx::range("ddim-unet forward");
        let c = &self.config;
        let (n, ch, h, w) = x.shape().nchw("U-Net input")?;
        if ch != c.in_channels || h != w || h != c.resolution {
            bail!(
                "U-Net: input of shape {} does not fit the configuration ({} channels at {r}×{r})",
                x.shape(),
                c.in_channels,
                r = c.resolution
            );
        }
        if t.dims() != [n] {
            bail!("U-Net: timesteps of shape {} for a batch of {n}", t.shape());
        }
        // Timesteps stay f32 (bf16 cannot hold 999); the embedding is cast to the activations' dtype.
        let temb = embedding::sinusoidal_embedding(t, c.ch, embedding::EmbeddingKind::Ddim)?.to_dtype(x.dtype())?;
        let temb = self.temb_dense[1].forward(&ops::silu(&self.temb_dense[0].forward(&temb)?)?)?;
        let temb = ops::silu(&temb)?; // every block's temb_proj sees SiLU(temb)

        let mut hs = vec![self.conv_in.forward(x)?];
        for level in &self.down {
            for (b, block) in level.blocks.iter().enumerate() {
                let mut h = block.forward(hs.last().unwrap(), &temb, train_seed)?;
                if let Some(attn) = level.attns.get(b) {
                    h = attn.forward(&h)?;
                }
                hs.push(h);
            }
            if let Some(down) = &level.resample {
                let h = down.forward(hs.last().unwrap())?;
                hs.push(h);
            }
        }
        let mut h = hs.last().unwrap().clone();
        h = self.mid.0.forward(&h, &temb, train_seed)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, &temb, train_seed)?;
        for level in self.up.iter().rev() {
            for (b, block) in level.blocks.iter().enumerate() {
                let skip = hs.pop().expect("one skip per up block");
                h = block.forward(&layout::concat_channels(&[&h, &skip])?, &temb, train_seed)?;
                if let Some(attn) = level.attns.get(b) {
                    h = attn.forward(&h)?;
                }
            }
            if let Some(upconv) = &level.resample {
                h = upconv.forward(&layout::upsample_nearest2x(&h)?)?;
            }
        }
        self.conv_out.forward_normed(&h, &self.norm_out, true, None, Epilogue::none())
    }
}
