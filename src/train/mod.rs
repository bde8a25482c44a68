//! Training machinery: the optimiser, EMA, gradient clipping, checkpoints and the trainer loop.
pub mod checkpoint;
pub mod loss_curve;
pub mod optim;
pub mod trainer;

pub use optim::{clip_gate, clip_grad_norm, AdamConfig, AdamW, Ema, GateValues, GateWorkspace, StepGate};
pub use trainer::{LossKind, TrainOptions, TrainSummary, Trainer};
