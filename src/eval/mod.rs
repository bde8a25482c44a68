//! Evaluation (docs/METHODS.md §7): what we can measure exactly and offline.
//! - [`denoise`]: denoising MSE against clean held-out images at fixed t (VP and EDM models on identical
//!   noisy inputs);
//! - [`swd`]: sliced Wasserstein distance of samples to held-out data in pixel space;
//! - [`classifier`] + [`frechet`]: a Fréchet distance in the features of a small classifier the engine
//!   trains on the clean labels (no Inception weights offline);
//! - [`memorisation`]: max cosine similarity of each sample to the training set;
//! - [`metrics`]: PSNR and SSIM for reconstructions (§6);
//! - [`reconstruct`]: `gsure reconstruct` — posterior sampling with a run's prior for inverse problems (§6);
//! - [`report`]: `gsure eval` — all of the above for a run, written as eval.json and PNG plots.
pub mod classifier;
pub mod denoise;
pub mod frechet;
pub mod memorisation;
pub mod metrics;
pub mod reconstruct;
pub mod report;
pub mod swd;

pub use classifier::{cross_entropy, Classifier, ClassifierOptions};
pub use denoise::{denoise_mse, model_denoiser, DenoiseOptions, DenoisePoint};
pub use frechet::{frechet_between, frechet_distance, sqrtm_psd, sym_eigen, Gaussian};
pub use memorisation::{memorisation, MemorisationOptions, MemorisationResult};
pub use metrics::{psnr, psnr_batch, ssim, ssim_batch};
pub use report::{evaluate, EvalOptions, EvalReport, Metric};
pub use swd::{sliced_wasserstein, SwdOptions, SwdResult};
