//! Training machinery: the run's options and data, the optimiser, EMA, gradient clipping, checkpoints, the
//! run directory, sampling and the trainer loop.
pub mod checkpoint;
pub mod data;
pub mod loss_curve;
pub mod options;
pub mod run_dir;
pub mod sampling;
pub mod staged_step;
mod staging;
pub mod trainer;

pub use crate::ops::optim::{clip_gate, clip_grad_norm, AdamConfig, AdamW, Ema, GateValues, GateWorkspace, StepGate};
pub use data::{load_train_data, TrainData};
pub use options::{LossKind, Sampling, TrainOptions};
pub use run_dir::RunDir;
pub use sampling::{load_run, load_run_with_params, sample, sample_run};
pub use trainer::{stored_options, Arrived, TrainSummary, Trainer};
