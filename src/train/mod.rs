//! Training machinery: the optimiser, EMA, gradient clipping, checkpoints and the trainer loop.
pub mod checkpoint;
pub mod optim;

pub use optim::{clip_grad_norm, AdamConfig, AdamW, Ema};
