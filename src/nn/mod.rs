//! Layers and models built from the ops, with parameters registered in a [`ParamStore`] under stable
//! dotted names that mirror the reference implementations' state-dict keys.
pub mod configs;
pub mod ddim_unet;
pub mod ddpmpp;
pub mod edm;
pub mod gated;
pub mod layers;
pub mod model;

pub use ddim_unet::{DdimUnet, DdimUnetConfig, Prediction};
pub use ddpmpp::{DdpmppConfig, DdpmppUnet, GateScope};
pub use edm::{EdmDenoiser, Preconditioning};
pub use gated::{Gate, GatedConv2d};
pub use layers::{AttnBlock, Conv2d, GroupNorm, Linear, ResnetBlock};
pub use model::{Model, ModelConfig};

use crate::{DType, Device, ParamStore, Tensor};
use anyhow::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Creates parameters: PyTorch's default initialisation (uniform in ±1/sqrt(fan_in), which is what
/// kaiming_uniform(a = sqrt(5)) gives for weights and what torch uses for biases), on one device and dtype.
pub struct Init<'a> {
    pub store: &'a mut ParamStore,
    pub rng: StdRng,
    pub device: Device,
    pub dtype: DType,
}

impl<'a> Init<'a> {
    pub fn new(store: &'a mut ParamStore, seed: u64, device: &Device, dtype: DType) -> Self {
        Init { store, rng: StdRng::seed_from_u64(seed), device: device.clone(), dtype }
    }
    /// A parameter uniform in ±bound.
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f64) -> Result<Tensor> {
        let t = Tensor::rand_uniform(shape.to_vec(), -bound, bound, self.dtype, &self.device, &mut self.rng)?;
        self.store.insert(name, &t)
    }
    pub fn constant(&mut self, name: &str, shape: &[usize], value: f64) -> Result<Tensor> {
        let t = Tensor::full(shape.to_vec(), value, self.dtype, &self.device)?;
        self.store.insert(name, &t)
    }
}

/// The seed of a training forward's dropout masks: the step's seed on the host, or the device address of
/// it (a u64 the dropout kernels read), so that a step replayed from a CUDA graph draws new masks from the
/// seed written before each replay. Both give the same masks for the same seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainSeed {
    Host(u64),
    Device(u64),
}

impl TrainSeed {
    /// The seed of layer `layer`'s mask.
    pub fn for_layer(self, layer: u64) -> crate::ops::dropout::Seed {
        match self {
            TrainSeed::Host(seed) => crate::ops::dropout::Seed::Host(layer_seed(seed, layer)),
            TrainSeed::Device(step_seed) => crate::ops::dropout::Seed::Device { step_seed, layer },
        }
    }
}

/// Derives a per-layer dropout seed from a per-step seed, so every layer drops different elements.
pub fn layer_seed(step_seed: u64, layer: u64) -> u64 {
    let mut z = step_seed ^ layer.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
