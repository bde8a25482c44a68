//! Training objectives for corrupted data (METHODS.md §4). Each turns a batch of observations (a
//! [`crate::corruption::SpectralBatch`]) and a network into a scalar loss; the trainer owns the rest of the
//! step (optimiser, EMA, logging).
pub mod gsure;

pub use gsure::{check_config, gsure_step_loss, GsureMode, GsureObjective, Noised, ProbeKind};
