//! Training machinery: the optimiser, EMA and gradient clipping (the trainer loop builds on these).
pub mod optim;

pub use optim::{clip_grad_norm, AdamConfig, AdamW, Ema};
