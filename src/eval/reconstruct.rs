//! `gsure reconstruct` (docs/METHODS.md §6): posterior sampling with a trained prior for inverse problems beyond
//! the training corruption (inpainting at other p, single-coil MRI at R ∈ {4, …, 12}), scored by PSNR/SSIM
//! against the clean images beside the zero-filled / pseudo-inverse baseline H† y and, optionally, beside
//! the same sampler with another run's prior (the supervised oracle).
//!
//! Method: DDIM over respaced timesteps with data consistency at every step, in the operator's spectral
//! basis (DDRM-like for σ0 ≈ 0, as in DDNM). At step t, from the denoiser's estimate x̂0:
//! - x̄ = Vᵀ x̂0; on the observed set O its coefficients are replaced by the observations,
//!   x̄ ← x̄ + w_t P (ȳ − x̄), and x̂0 ← V x̄ ("data consistency");
//! - w_t = e_t² / (e_t² + ν) with e_t² = (1 − ᾱ_t)/ᾱ_t (the noise level of x_t in x0 units, an upper bound
//!   of the denoiser's error) and ν = σ0²: an inverse-variance blend of the estimate and the observation on
//!   O. With σ0 = 0, w_t = 1 and the observed coefficients are replaced exactly (so the returned image
//!   satisfies P Vᵀ x = ȳ exactly); with noise, early steps trust ȳ and late steps the (already
//!   observation-informed) estimate;
//! - then the DDIM update x_{t'} = √ᾱ_{t'} x̂0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z with ε̂ the network's noise
//!   prediction (from the unconstrained x̂0) and σ = η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}); η = 0.85
//!   by default (DDRM's choice), 0 for a deterministic sampler. The last step returns the consistent x̂0.
//!
//! The diffusion state lives in the model's image space: V is orthonormal, so white noise and the DDIM
//! update are the same in either basis, and only the data-consistency step needs Vᵀ and V. For MRI
//! (V = centred unitary DFT) a 2-channel (complex) model keeps the complex image; a 1-channel (real) model
//! is promoted to a complex image with zero imaginary part before Vᵀ and the real part is kept after V
//! (so the sampled k-space lines are then matched only up to that projection). The zero-filled baseline
//! for a real model is likewise the real part of H† y. Real clean images scored against a complex model's
//! output are compared with its real part (PSNR/SSIM in the data's space, the same for every method).
//!
//! The library API is built around a denoiser closure `denoise(x_t, t) -> x̂0` ([`posterior_sample`]), so
//! tests can plug in an exact Gaussian denoiser; [`reconstruct`] runs the whole evaluation for a run.
use crate::corruption::{Basis, OpKind, OpSpec, OperatorBatch};
use crate::data::ImageSet;
use crate::diffusion::samplers::lincomb;
use crate::diffusion::schedule::VpSchedule;
use crate::eval::metrics::{mean_and_se, psnr_batch, ssim_batch};
use crate::io::plot::Chart;
use crate::nn::Model;
use crate::ops;
use crate::{Device, Tensor};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The sampler's settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PosteriorOptions {
    /// Respaced DDIM steps (the model still sees the original integer t).
    pub steps: usize,
    /// DDIM η: 0 deterministic, 0.85 DDRM's default, 1 DDPM-like.
    pub eta: f64,
}

impl Default for PosteriorOptions {
    fn default() -> Self {
        PosteriorOptions { steps: 50, eta: 0.85 }
    }
}

/// Checks that a model with `model_channels` image channels can run on images of `batch`'s operator.
pub fn check_model_channels(batch: &OperatorBatch, model_channels: usize) -> Result<()> {
    let c = batch.image_chw[0];
    let ok = match batch.basis {
        Basis::Pixel => model_channels == c,
        Basis::Fourier => model_channels == 1 || model_channels == 2,
    };
    if !ok {
        bail!(
            "reconstruct: a model of {model_channels} image channels cannot run on the {} operator's images of \
             {c} channels{}. Fix: use a run trained on {} images",
            batch.name,
            if batch.basis == Basis::Fourier { " (MRI takes real 1-channel or complex 2-channel models)" } else { "" },
            if batch.basis == Basis::Fourier { "1- or 2-channel".to_string() } else { format!("{c}-channel") }
        );
    }
    Ok(())
}

/// Images of the operator's domain [N, C_op, H, W] in the model's space [N, C_m, H, W]: the real part
/// (channel 0) when a real model meets complex MRI images.
fn to_model_space(img: &Tensor, model_channels: usize) -> Result<Tensor> {
    if img.dims()[1] == model_channels {
        Ok(img.clone())
    } else {
        ops::layout::narrow_channels(img, 0, model_channels)
    }
}

/// The weight of ȳ on O at timestep t: e_t² / (e_t² + ν), e_t² = (1 − ᾱ_t)/ᾱ_t, ν = σ0² (1 when σ0 = 0).
pub fn consistency_weight(schedule: &VpSchedule, t: usize, sigma0: f64) -> f64 {
    let nu = sigma0 * sigma0;
    if nu == 0.0 {
        return 1.0;
    }
    let ab = schedule.alpha_bar(t);
    let e2 = (1.0 - ab) / ab;
    e2 / (e2 + nu)
}

/// Data consistency: x̂0 ← V(x̄ + w P (ȳ − x̄)) with x̄ = Vᵀ x̂0, in the model's space [N, C_m, H, W].
/// `ybar` [N, C_s, H, W] must be zero off O (as [`OperatorBatch::project`] makes it). With w = 1 the
/// observed coefficients become exactly ȳ.
pub fn data_consistency(batch: &OperatorBatch, x0: &Tensor, ybar: &Tensor, weight: f64) -> Result<Tensor> {
    let model_channels = x0.dims().get(1).copied().unwrap_or(0);
    check_model_channels(batch, model_channels)?;
    let xbar = batch.to_spectral(x0)?;
    let pxbar = batch.project(&xbar)?;
    let new = lincomb(&[(1.0, &xbar), (-weight, &pxbar), (weight, ybar)])?;
    to_model_space(&batch.from_spectral(&new)?, model_channels)
}

/// The zero-filled / pseudo-inverse baseline H† y in the model's space.
pub fn zero_filled(batch: &OperatorBatch, y: &Tensor, model_channels: usize) -> Result<Tensor> {
    check_model_channels(batch, model_channels)?;
    to_model_space(&batch.pinv(y)?, model_channels)
}

/// Posterior sampling (see the module docs): returns x [N, C_m, H, W] given observations y [N, C_s, H, W]
/// of `batch`, a model of `model_channels` image channels and its denoiser `denoise(x_t, t) -> x̂0`.
/// Seeded by `rng`; runs without recording autograd.
pub fn posterior_sample(
    schedule: &VpSchedule,
    opts: PosteriorOptions,
    batch: &OperatorBatch,
    y: &Tensor,
    model_channels: usize,
    rng: &mut impl Rng,
    mut denoise: impl FnMut(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    check_model_channels(batch, model_channels)?;
    if y.dims() != batch.spectral_dims() {
        bail!(
            "reconstruct: observations have shape {}, expected {:?} for the {} operator",
            y.shape(),
            batch.spectral_dims(),
            batch.name
        );
    }
    let t_max = schedule.steps();
    if opts.steps == 0 || opts.steps > t_max {
        bail!("reconstruct: {} steps requested; choose between 1 and T = {t_max}", opts.steps);
    }
    if !(opts.eta >= 0.0 && opts.eta.is_finite()) {
        bail!("reconstruct: eta = {}; it must be a finite number >= 0 (0.85 is DDRM's default)", opts.eta);
    }
    let skip = t_max / opts.steps;
    let seq: Vec<usize> = (0..opts.steps).map(|i| i * skip).collect();
    let [n, _, h, w] = batch.image_dims();
    let shape = [n, model_channels, h, w];
    crate::no_grad(|| {
        let ybar = batch.project(y)?;
        let mut x = Tensor::randn(shape, y.dtype(), y.device(), rng)?;
        for i in (0..seq.len()).rev() {
            let t = seq[i];
            let ab = schedule.alpha_bar(t);
            let ab_prev = if i == 0 { 1.0 } else { schedule.alpha_bar(seq[i - 1]) };
            let x0 = denoise(&x, t)?;
            if x0.dims() != shape {
                bail!("reconstruct: the denoiser returned shape {} for input {}", x0.shape(), x.shape());
            }
            let x0c = data_consistency(batch, &x0, &ybar, consistency_weight(schedule, t, batch.sigma0))?;
            if i == 0 {
                return Ok(x0c);
            }
            let eps = lincomb(&[(1.0 / (1.0 - ab).sqrt(), &x), (-ab.sqrt() / (1.0 - ab).sqrt(), &x0)])?;
            let sigma = opts.eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
            let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
            x = if sigma > 0.0 {
                let z = Tensor::randn(shape, y.dtype(), y.device(), rng)?;
                lincomb(&[(ab_prev.sqrt(), &x0c), (dir, &eps), (sigma, &z)])?
            } else {
                lincomb(&[(ab_prev.sqrt(), &x0c), (dir, &eps)])?
            };
        }
        unreachable!("the loop returns at i = 0")
    })
}

// ------------------------------------------------------------------------------------------ run level

/// Everything `gsure reconstruct` needs.
#[derive(Clone, Debug)]
pub struct ReconstructOptions {
    /// The run whose EMA weights are the prior.
    pub run: PathBuf,
    /// Clean images: a clean dataset, or a corrupted one with its `clean` tensor.
    pub data: PathBuf,
    /// The operator of the inverse problem (its `r` is overridden by each entry of `r_list`).
    pub op: OpSpec,
    /// MRI accelerations to sweep (empty: just `op`).
    pub r_list: Vec<f64>,
    /// Number of images reconstructed (the first `count` of `data`).
    pub count: usize,
    pub sampler: PosteriorOptions,
    /// Seed of the masks, the observation noise and the sampler.
    pub seed: u64,
    /// Another run (the supervised oracle) whose prior runs the same sampler on the same observations.
    pub compare_run: Option<PathBuf>,
    /// Output folder (default RUN/reconstruct).
    pub out: Option<PathBuf>,
    /// Replace an earlier reconstruction in the output folder.
    pub force: bool,
    /// Images per batch of network passes.
    pub batch: usize,
}

impl ReconstructOptions {
    pub fn new(run: PathBuf, data: PathBuf, op: OpSpec) -> Self {
        ReconstructOptions {
            run,
            data,
            op,
            r_list: Vec::new(),
            count: 16,
            sampler: PosteriorOptions::default(),
            seed: 0,
            compare_run: None,
            out: None,
            force: false,
            batch: 16,
        }
    }
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| self.run.join("reconstruct"))
    }
}

/// Mean ± standard error over images.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std_error: f64,
}

impl Stat {
    fn of(v: &[f64]) -> Stat {
        let (mean, std_error) = mean_and_se(v);
        Stat { mean, std_error }
    }
}

/// PSNR (dB, data range 2 for [-1, 1] images) and SSIM of one method.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Scores {
    pub psnr: Stat,
    pub ssim: Stat,
}

/// The results of one operator setting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SettingResult {
    /// e.g. "mri_R4", "pixel_p0.5".
    pub label: String,
    /// The operator's parameters, defaults resolved.
    pub operator: serde_json::Value,
    pub zero_filled: Scores,
    pub reconstruction: Scores,
    /// The same sampler with the --compare-run prior.
    pub oracle: Option<Scores>,
    /// The PNG grid (clean | zero-filled | reconstruction [| oracle], one example per row).
    pub grid: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReconstructReport {
    pub run: PathBuf,
    pub compare_run: Option<PathBuf>,
    pub data: PathBuf,
    pub count: usize,
    pub seed: u64,
    pub sampler: PosteriorOptions,
    pub method: String,
    pub results: Vec<SettingResult>,
    /// PSNR vs R (when several accelerations were swept; ssim_vs_R.png beside it).
    pub plot: Option<PathBuf>,
    /// The plot's series, in drawing order.
    pub plot_series: Vec<String>,
}

struct Prior {
    model: Model,
    schedule: VpSchedule,
    channels: usize,
}

fn load_prior(run: &Path, device: &Device, h: usize, w: usize) -> Result<Prior> {
    let (_, config, model, schedule, _) = crate::train::load_run(run, device)?;
    let r = config.resolution();
    if r != h || r != w {
        bail!(
            "reconstruct: the run {} models {r}x{r} images but the data are {h}x{w}. Fix: give data at the \
             model's resolution",
            run.display()
        );
    }
    Ok(Prior { model, schedule, channels: config.image_channels() })
}

/// The image [C, H, W] an operator acts on given images of `c` channels (MRI: complex).
fn op_chw(kind: OpKind, [c, h, w]: [usize; 3]) -> [usize; 3] {
    if kind == OpKind::Mri {
        [2, h, w]
    } else {
        [c, h, w]
    }
}

/// Runs the reconstruction evaluation and writes reconstruct.json, one PNG grid per setting and, for an
/// R sweep, psnr_vs_R.png into [`ReconstructOptions::out_dir`].
pub fn reconstruct(opts: &ReconstructOptions, device: &Device, mut log: impl FnMut(&str)) -> Result<ReconstructReport> {
    if opts.count == 0 || opts.batch == 0 {
        bail!("reconstruct: --n and the batch size must be >= 1");
    }
    if !opts.r_list.is_empty() && opts.op.kind != OpKind::Mri {
        bail!(
            "reconstruct: --R (accelerations) applies to the mri operator, not {}. Fix: pass --op mri or drop --R",
            opts.op.kind.name()
        );
    }
    let clean_set = crate::data::load_clean(&opts.data)?;
    let [total, c_data, h, w] = clean_set.dims;
    let count = opts.count.min(total);
    if count == 0 {
        bail!("reconstruct: {} holds no images", opts.data.display());
    }
    let prior = load_prior(&opts.run, device, h, w)?;
    let oracle = match &opts.compare_run {
        Some(r) => Some(load_prior(r, device, h, w).with_context(|| format!("--compare-run {}", r.display()))?),
        None => None,
    };
    let cm = prior.channels;
    if let Some(o) = &oracle {
        if o.channels != cm {
            bail!("reconstruct: the run models {cm}-channel images but --compare-run models {}", o.channels);
        }
    }
    // The clean target in the model's space: a complex model on real MRI data gets a zero imaginary part.
    let promote = opts.op.kind == OpKind::Mri && cm == 2 && c_data == 1;
    if !(c_data == cm || promote) {
        bail!(
            "reconstruct: the run {} models {cm}-channel images but {} holds {c_data}-channel images. Fix: use a \
             run trained on {c_data}-channel data{}",
            opts.run.display(),
            opts.data.display(),
            if opts.op.kind == OpKind::Mri { " (or a complex 2-channel MRI model)" } else { "" }
        );
    }
    let settings: Vec<OpSpec> = if opts.r_list.is_empty() {
        vec![opts.op.clone()]
    } else {
        opts.r_list.iter().map(|&r| OpSpec { r: Some(r), ..opts.op.clone() }).collect()
    };
    let out = opts.out_dir();
    crate::io::outputs::check_new(&[out.join("reconstruct.json")], &[], opts.force, "--out")
        .context("an earlier reconstruction is in the output folder")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut results = Vec::new();
    for spec in &settings {
        let op = spec.build(op_chw(spec.kind, [c_data, h, w]))?;
        check_model_channels(&op.batch(0, &[0]), cm)?;
        let resolved = op.spec();
        let label = match resolved.kind {
            OpKind::Mri => format!("mri_R{}", resolved.r.unwrap_or(0.0)),
            OpKind::Pixel | OpKind::Patch => format!("{}_p{}", resolved.kind.name(), resolved.p.unwrap_or(0.0)),
            k => k.name().to_string(),
        };
        log(&format!("reconstruct {label}: {count} images, {} steps, eta {}", opts.sampler.steps, opts.sampler.eta));
        let m = cm * h * w;
        let (mut clean_all, mut zf_all, mut rec_all, mut orc_all) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for start in (0..count).step_by(opts.batch) {
            let idx: Vec<usize> = (start..(start + opts.batch).min(count)).collect();
            let nb = idx.len();
            let batch = op.batch(opts.seed, &idx);
            let x = Tensor::from_f32(&clean_set.gather(&idx), [nb, c_data, h, w], device)?;
            let mut obs_rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_0b5e_0000_0000 ^ start as u64);
            let y = crate::no_grad(|| batch.observe(&x, &mut obs_rng))?;
            let target = ImageSet { images: clean_set.gather(&idx), dims: [nb, c_data, h, w] };
            clean_all.extend(target.for_model_channels(cm)?.images);
            zf_all.extend(crate::no_grad(|| zero_filled(&batch, &y, cm))?.to_vec_f32()?);
            let sampler_seed = opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (start as u64 + 1);
            let run_prior = |p: &Prior| -> Result<Vec<f32>> {
                let mut rng = StdRng::seed_from_u64(sampler_seed);
                let den = crate::eval::denoise::model_denoiser(&p.model, &p.schedule, device);
                posterior_sample(&p.schedule, opts.sampler, &batch, &y, cm, &mut rng, den)?.to_vec_f32()
            };
            rec_all.extend(run_prior(&prior)?);
            if let Some(o) = &oracle {
                orc_all.extend(run_prior(o)?);
            }
        }
        // Scored in the data's space: a complex model of real images is judged on its real part (its
        // imaginary part is an artefact the clean image does not have, and is not what is displayed).
        let in_data_space = |v: &[f32]| -> Vec<f32> {
            if promote {
                v.chunks(m).flat_map(|img| img[..h * w].iter().copied()).collect()
            } else {
                v.to_vec()
            }
        };
        let dims = [count, c_data, h, w];
        let clean_scored = in_data_space(&clean_all);
        let score = |est: &[f32]| -> Result<Scores> {
            let est = in_data_space(est);
            Ok(Scores {
                psnr: Stat::of(&psnr_batch(&est, &clean_scored, dims, 2.0)?),
                ssim: Stat::of(&ssim_batch(&est, &clean_scored, dims, 2.0)?),
            })
        };
        let zero = score(&zf_all)?;
        let rec = score(&rec_all)?;
        let orc = if oracle.is_some() { Some(score(&orc_all)?) } else { None };
        let fmt = |s: &Scores| {
            format!(
                "PSNR {:.2} ± {:.2} dB, SSIM {:.3} ± {:.3}",
                s.psnr.mean, s.psnr.std_error, s.ssim.mean, s.ssim.std_error
            )
        };
        log(&format!("  zero-filled:    {}", fmt(&zero)));
        log(&format!("  reconstruction: {}", fmt(&rec)));
        if let Some(o) = &orc {
            log(&format!("  oracle prior:   {}", fmt(o)));
        }
        // Grid: one example per row, columns clean | zero-filled | reconstruction [| oracle].
        let mut cols: Vec<&[f32]> = vec![clean_all.as_slice(), zf_all.as_slice(), rec_all.as_slice()];
        if oracle.is_some() {
            cols.push(orc_all.as_slice());
        }
        // Tiles are enlarged by pixel repetition to at least 64 pixels a side (grid_png only zooms by the
        // size of the whole mosaic).
        let rows = count.min(4);
        let z = (64 / h.max(w)).max(1);
        let (th, tw) = (h * z, w * z);
        let (gh, gw) = (rows * th, cols.len() * tw);
        let mut mosaic = vec![0f32; gh * gw];
        for r in 0..rows {
            for (k, col) in cols.iter().enumerate() {
                // Channel 0 only: the real part of complex images (grid_png draws 1 or 3 channels).
                let img = &col[r * m..r * m + h * w];
                for yy in 0..th {
                    for xx in 0..tw {
                        mosaic[(r * th + yy) * gw + k * tw + xx] = img[(yy / z) * w + xx / z];
                    }
                }
            }
        }
        let grid = out.join(format!("reconstruct_{label}.png"));
        crate::io::image::grid_png(&grid, &mosaic, [1, 1, gh, gw], -1.0, 1.0)?;
        results.push(SettingResult {
            label,
            operator: resolved.to_json(),
            zero_filled: zero,
            reconstruction: rec,
            oracle: orc,
            grid,
        });
    }
    let mut plot_series = Vec::new();
    let plot = if results.len() >= 2 && opts.op.kind == OpKind::Mri {
        let pts = |f: &dyn Fn(&SettingResult) -> Option<f64>| -> Vec<(f64, f64)> {
            results.iter().zip(&opts.r_list).filter_map(|(s, &r)| f(s).map(|v| (r, v))).collect()
        };
        let mut psnr = Chart::new("Reconstruction quality against acceleration", "acceleration R", "PSNR (dB)")
            .with_series("posterior sampling", pts(&|s| Some(s.reconstruction.psnr.mean)))
            .with_series("zero-filled", pts(&|s| Some(s.zero_filled.psnr.mean)));
        let mut ssim = Chart::new("Reconstruction quality against acceleration", "acceleration R", "SSIM")
            .with_series("posterior sampling", pts(&|s| Some(s.reconstruction.ssim.mean)))
            .with_series("zero-filled", pts(&|s| Some(s.zero_filled.ssim.mean)));
        if results.iter().any(|s| s.oracle.is_some()) {
            psnr = psnr.with_series("oracle prior", pts(&|s| s.oracle.map(|o| o.psnr.mean)));
            ssim = ssim.with_series("oracle prior", pts(&|s| s.oracle.map(|o| o.ssim.mean)));
        }
        plot_series = psnr.series.iter().map(|s| s.name.clone()).collect();
        let path = out.join("psnr_vs_R.png");
        psnr.write_png(&path)?;
        ssim.write_png(&out.join("ssim_vs_R.png"))?;
        Some(path)
    } else {
        None
    };
    let report = ReconstructReport {
        run: opts.run.clone(),
        compare_run: opts.compare_run.clone(),
        data: opts.data.clone(),
        count,
        seed: opts.seed,
        sampler: opts.sampler,
        method: "DDIM with spectral data consistency at every step (DDRM-like): on O, x̄ ← x̄ + w_t (ȳ − x̄), \
                 w_t = e_t²/(e_t² + σ0²), e_t² = (1 − ᾱ_t)/ᾱ_t"
            .into(),
        results,
        plot,
        plot_series,
    };
    let path = out.join("reconstruct.json");
    crate::io::outputs::write_atomic(&path, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    log(&format!("wrote {}", path.display()));
    Ok(report)
}
