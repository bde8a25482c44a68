//! The optimiser step: the gradient-norm gate (clip scale and skip flag), AdamW, and the weights' moving
//! average — on CUDA each one multi-tensor launch over every parameter, with no host round trip between
//! them (kernels/optim.cu).
mod adamw;
mod ema;
mod gate;
mod gate_ring;
mod slots;

pub use adamw::{AdamConfig, AdamW};
pub use ema::Ema;
pub use gate::{clip_gate, clip_grad_norm, GateValues, GateWorkspace, StepGate};
pub use gate_ring::GateRing;
