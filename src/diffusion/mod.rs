//! Diffusion parameterisations (docs/METHODS.md §3) and samplers (§5).
pub mod samplers;
pub mod schedule;

pub use samplers::{ddim_sample, ddpm_sample, edm_heun_sample, DdimOptions, EdmOptions};
pub use schedule::{Edm, VpSchedule};
