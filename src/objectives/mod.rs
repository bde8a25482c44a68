//! Training objectives for corrupted data (docs/METHODS.md §4): GSURE (observations in spectral coordinates,
//! DDIM U-Net), Ambient Diffusion (masked images, further corruption, EDM) and Ambient-Tweedie (noisy
//! images, double Tweedie plus consistency, EDM). Each turns a batch and a network into a loss; the
//! trainer owns the rest of the step (optimiser, EMA, logging).
pub mod ambient;
pub mod gsure;
pub mod tweedie;

pub use gsure::{check_config, gsure_step_loss, GsureMode, GsureObjective, Noised, ProbeKind};
