//! `gsure eval`: loads a run's EMA weights, computes the requested metrics against clean held-out data,
//! and writes eval.json with PNG plots (denoising MSE vs t, a sample grid, the most memorised samples
//! beside their nearest training images) into the output folder (default RUN/eval).
use super::classifier::{self, ClassifierOptions};
use super::denoise::{denoise_mse, model_denoiser_masked, DenoiseOptions, DenoisePoint, MaskedView};
use super::frechet::{frechet_between, Gaussian};
use super::memorisation::{memorisation, MemorisationOptions};
use super::swd::{sliced_wasserstein, SwdOptions, SwdResult};
use crate::data::dataset::{kind_of, CleanDataset};
use crate::io::plot::Chart;
use crate::nn::Model;
use crate::Device;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Denoising MSE against clean held-out images at t ∈ {10, 50, 100, …, 900}.
    Denoise,
    /// Sliced Wasserstein distance of samples to held-out images (pixel space).
    Swd,
    /// Fréchet distance in the features of a classifier trained on the clean training labels.
    Fid,
    /// Max cosine similarity of each sample to the training set.
    Memorisation,
}

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub run: PathBuf,
    /// Clean held-out images (a clean dataset, or a corrupted one with its evaluation-only `clean`).
    pub data: PathBuf,
    /// Clean training set: memorisation's reference, and the labelled set the classifier learns (fid).
    pub train: Option<PathBuf>,
    pub what: Vec<Metric>,
    /// Number of generated samples (swd, fid, memorisation).
    pub samples: usize,
    /// Samples read from this file (a `samples` tensor [N, C, H, W], as `gsure sample` writes) instead of
    /// being generated.
    pub samples_from: Option<PathBuf>,
    /// Held-out images used (the first N of --data).
    pub heldout: usize,
    pub batch: usize,
    pub seed: u64,
    pub projections: usize,
    pub classifier: ClassifierOptions,
    pub out: Option<PathBuf>,
    /// Replace an earlier evaluation in the output folder (its eval.json and plots).
    pub force: bool,
    /// Fraction of pixels a mask-channel (Ambient) model sees in the denoising evaluation (1: all of them;
    /// the fraction its training masks kept asks it the question it was trained on). See
    /// [`MaskedView`].
    pub mask_keep: f64,
    /// eval.json files of other runs whose denoising curves are drawn beside this run's
    /// (denoise_compare.png: the paper's figure, e.g. a corrupted-data model against the oracle).
    pub compare_with: Vec<PathBuf>,
}

impl EvalOptions {
    pub fn new(run: PathBuf, data: PathBuf) -> Self {
        EvalOptions {
            run,
            data,
            train: None,
            what: vec![Metric::Denoise, Metric::Swd, Metric::Fid, Metric::Memorisation],
            samples: 1000,
            samples_from: None,
            heldout: 1000,
            batch: 128,
            seed: 0,
            projections: 512,
            classifier: ClassifierOptions::default(),
            out: None,
            force: false,
            mask_keep: 1.0,
            compare_with: Vec::new(),
        }
    }
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| self.run.join("eval"))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DenoiseReport {
    pub points: Vec<DenoisePoint>,
    pub heldout: usize,
    pub seed: u64,
    /// Fraction of pixels a mask-channel model was shown (1 for every other model).
    #[serde(default = "one")]
    pub mask_keep: f64,
    pub plot: PathBuf,
    /// Series of denoise_compare.png in legend order (empty without --compare-with).
    #[serde(default)]
    pub compare_legend: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FidReport {
    /// Squared Fréchet distance (the FID convention) between the Gaussian fits of the 128-d features.
    pub fd: f64,
    pub samples: usize,
    pub reference: usize,
    /// Accuracy of the classifier on the held-out images (when they have labels).
    pub classifier_test_accuracy: Option<f64>,
    pub classifier_cache: PathBuf,
    pub classifier_trained_now: bool,
    /// How many samples the classifier assigns to each class.
    pub sample_class_counts: Vec<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemorisationReport {
    pub share_above: f64,
    pub threshold: f64,
    pub mean_max_cosine: f64,
    pub centred: bool,
    pub train_count: usize,
    pub max_cosine: Vec<f64>,
    pub nearest: Vec<usize>,
    pub plot: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub run: PathBuf,
    pub config: String,
    pub family: String,
    pub step: Option<u64>,
    pub data: PathBuf,
    pub train: Option<PathBuf>,
    pub dims: [usize; 4],
    pub denoise: Option<DenoiseReport>,
    pub swd: Option<SwdResult>,
    pub fid: Option<FidReport>,
    pub memorisation: Option<MemorisationReport>,
    pub samples_png: Option<PathBuf>,
    pub seconds: f64,
}

pub use crate::train::load_run;

fn one() -> f64 {
    1.0
}

/// The denoising evaluation's [`MaskedView`], checked: `mask_keep` in (0, 1], and below 1 only for a model
/// with mask channels.
fn masked_view(opts: &EvalOptions, model: &Model) -> Result<MaskedView> {
    let keep = opts.mask_keep;
    if !(keep > 0.0 && keep <= 1.0) {
        bail!("eval: --mask-keep {keep} is outside (0, 1]; it is the fraction of pixels the model sees");
    }
    let has_mask_channels = matches!(model, Model::Edm(d) if d.net.config.extra_in_channels > 0);
    if keep < 1.0 && !has_mask_channels {
        bail!(
            "eval: --mask-keep {keep} needs a model with mask channels (an Ambient run); this run's model sees \
             whole images. Fix: drop --mask-keep"
        );
    }
    Ok(MaskedView { keep, seed: opts.seed })
}

fn read_samples(path: &Path, dims: [usize; 4], n: usize) -> Result<Vec<f32>> {
    let file = crate::io::safetensors::File::open(path)?;
    // A `samples` tensor (`gsure sample`), or else the clean images of a dataset file: the latter gives the
    // metrics' floor, clean images against clean held-out images.
    let (shape, values) = match file.f32("samples") {
        Ok(found) => found,
        Err(_) => {
            let set = crate::data::load_clean(path).with_context(|| {
                format!("{}: expected a tensor named \"samples\" or a dataset file with clean images", path.display())
            })?;
            (set.dims.to_vec(), set.images)
        }
    };
    if shape.len() != 4 || shape[1..] != dims[1..] {
        bail!("{}: samples of shape {shape:?} for a model of images {:?}", path.display(), &dims[1..]);
    }
    let k = n.min(shape[0]);
    let values = &values[..k * dims[1] * dims[2] * dims[3]];
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: sample {} holds {}; non-finite samples are not scored. Fix: draw the samples again from a run whose loss stayed finite",
            path.display(),
            i / (dims[1] * dims[2] * dims[3]),
            values[i]
        );
    }
    Ok(values.to_vec())
}

/// Sample/nearest-training-image pairs, the most similar first.
fn memorisation_png(
    path: &Path,
    samples: &[f32],
    train: &CleanDataset,
    result: &MemorisationReport,
    dims: [usize; 4],
) -> Result<()> {
    let m = dims[1] * dims[2] * dims[3];
    let mut order: Vec<usize> = (0..result.max_cosine.len()).collect();
    order.sort_by(|&a, &b| result.max_cosine[b].total_cmp(&result.max_cosine[a]));
    let k = order.len().min(16);
    let mut px = Vec::with_capacity(2 * k * m);
    for &i in &order[..k] {
        px.extend_from_slice(&samples[i * m..(i + 1) * m]);
        px.extend(train.gather(&[result.nearest[i]]));
    }
    crate::io::image::grid_png(path, &px, [2 * k, dims[1], dims[2], dims[3]], -1.0, 1.0)
}

/// (label, points) of the denoising curve stored in an eval.json (label: its run's configuration and folder).
pub fn read_denoise_curve(path: &Path) -> Result<(String, Vec<DenoisePoint>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: EvalReport =
        serde_json::from_str(&text).with_context(|| format!("{}: not an eval.json of gsure eval", path.display()))?;
    let den = report
        .denoise
        .with_context(|| format!("{}: holds no denoising curve (run gsure eval --what denoise)", path.display()))?;
    let name = report.run.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((format!("{} ({name})", report.config), den.points))
}

/// Every denoising curve in a JSON file: an eval.json of `gsure eval` (one curve), or a summary object of
/// name → points or name → {"denoise": points, …} (the reproductions' `experiments/results/*.json`), its
/// curves named by their keys (in sorted key order).
pub fn read_denoise_curves(path: &Path) -> Result<Vec<(String, Vec<DenoisePoint>)>> {
    if let Ok(one) = read_denoise_curve(path) {
        return Ok(vec![one]);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let mut curves = Vec::new();
    if let Some(map) = value.as_object() {
        for (name, v) in map {
            let points = v.get("denoise").unwrap_or(v);
            if let Ok(p) = serde_json::from_value::<Vec<DenoisePoint>>(points.clone()) {
                curves.push((name.clone(), p));
            }
        }
    }
    if curves.is_empty() {
        bail!(
            "{}: holds no denoising curve (expected an eval.json of gsure eval --what denoise, or an object of \
             name → denoising points)",
            path.display()
        );
    }
    Ok(curves)
}

/// Several denoising curves on one chart, log-scaled in t and in MSE (both span decades). Returns the
/// series names in legend order, for eval.json and the log.
pub fn plot_denoise_comparison(path: &Path, curves: &[(String, Vec<DenoisePoint>)]) -> Result<Vec<String>> {
    let mut chart = denoise_chart();
    for (name, points) in curves {
        chart = chart.with_series(name.clone(), points.iter().map(|q| (q.t as f64, q.mse)).collect());
    }
    chart.write_png(path)?;
    Ok(curves.iter().map(|(n, _)| n.clone()).collect())
}

fn denoise_chart() -> Chart {
    Chart::new("Denoising error of the trained network", "t (diffusion step)", "MSE of x̂₀ against x₀").log_x().log_y()
}

/// What can be checked from the options and files alone, checked before any network runs: a metric that
/// needs --train has it (with labels for fid), and every --compare-with curve reads.
fn check_inputs(opts: &EvalOptions) -> Result<()> {
    let needs_train = |m: Metric| opts.what.contains(&m);
    if let (None, Some(name)) = (
        &opts.train,
        [(Metric::Fid, "fid"), (Metric::Memorisation, "memorisation")].into_iter().find(|(m, _)| needs_train(*m)),
    ) {
        bail!(
            "eval: --what {} needs --train FILE, the clean training set{}. Fix: pass --train, or drop {} from --what",
            name.1,
            if name.0 == Metric::Fid { " whose labels the classifier learns" } else { "" },
            name.1
        );
    }
    if let (Some(train), true) = (&opts.train, needs_train(Metric::Fid)) {
        let ds = CleanDataset::open(train).with_context(|| format!("--train {}", train.display()))?;
        if !ds.has_labels() {
            bail!(
                "--train {}: the file has no \"labels\" tensor, and --what fid trains its classifier on the clean \
                 labels. Fix: import the training set with --labels (gsure data import), or drop fid from --what",
                train.display()
            );
        }
    }
    if !opts.compare_with.is_empty() && !opts.what.contains(&Metric::Denoise) {
        bail!("eval: --compare-with adds curves to the denoising plot; add denoise to --what, or drop --compare-with");
    }
    for p in &opts.compare_with {
        read_denoise_curve(p).with_context(|| format!("--compare-with {}", p.display()))?;
    }
    Ok(())
}

/// A metric that is not finite is an error, never a score (NaN samples would otherwise score a perfect 0).
fn finite(name: &str, v: f64) -> Result<f64> {
    if !v.is_finite() {
        bail!(
            "eval: {name} came out {v}; the samples or the network's outputs are not finite, so no score is reported"
        );
    }
    Ok(v)
}

/// Runs the evaluation and writes eval.json and the plots; `log` receives progress lines.
pub fn evaluate(opts: &EvalOptions, device: &Device, mut log: impl FnMut(&str)) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    if opts.what.is_empty() {
        bail!("eval: nothing to compute; pass --what with some of denoise, swd, fid, memorisation");
    }
    check_inputs(opts)?;
    let (train_opts, config, model, schedule, step) = load_run(&opts.run, device)?;
    let view = masked_view(opts, &model)?;
    let out = opts.out_dir();
    crate::io::outputs::check_new(&[out.join("eval.json")], &[], opts.force, "--out")
        .context("an earlier evaluation is in the output folder")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let r = config.resolution();
    let c = config.image_channels();
    let family = match model {
        Model::Ddim(_) => "vp",
        Model::Edm(_) => "edm",
    };
    // Held-out clean images.
    let loaded = crate::data::load_clean(&opts.data)?;
    // Real held-out images of a complex (MRI) model are compared as complex images with imaginary part 0.
    let heldout = loaded.for_model_channels(c).unwrap_or(loaded);
    let [_, hc, hh, hw] = heldout.dims;
    if (hc, hh, hw) != (c, r, r) {
        bail!(
            "{}: images of {hc}×{hh}×{hw}, but the run's model ({}) makes {c}×{r}×{r}",
            opts.data.display(),
            train_opts.config
        );
    }
    let n_held = opts.heldout.min(heldout.len()).max(1).min(heldout.len());
    if n_held == 0 {
        bail!("{}: no images", opts.data.display());
    }
    let m = c * r * r;
    let held = &heldout.images[..n_held * m];
    let held_dims = [n_held, c, r, r];
    let mut report = EvalReport {
        run: opts.run.clone(),
        config: train_opts.config.clone(),
        family: family.into(),
        step,
        data: opts.data.clone(),
        train: opts.train.clone(),
        dims: [0, c, r, r],
        denoise: None,
        swd: None,
        fid: None,
        memorisation: None,
        samples_png: None,
        seconds: 0.0,
    };

    if opts.what.contains(&Metric::Denoise) {
        let _range = crate::nvtx::range("eval denoise");
        log(&format!("denoising MSE on {n_held} held-out images at {} times", super::denoise::default_times().len()));
        let dopts = DenoiseOptions { batch: opts.batch, seed: opts.seed, ..DenoiseOptions::default() };
        let points = denoise_mse(
            held,
            held_dims,
            &schedule,
            &dopts,
            device,
            model_denoiser_masked(&model, &schedule, device, view),
        )?;
        for p in &points {
            log(&format!("  t = {:3}  σ = {:8.4}  MSE = {:.6} ± {:.6}", p.t, p.sigma, p.mse, p.std_error));
            finite(&format!("the denoising MSE at t = {}", p.t), p.mse)?;
        }
        let plot = out.join("denoise_mse.png");
        let pts: Vec<(f64, f64)> = points.iter().map(|p| (p.t as f64, p.mse)).collect();
        denoise_chart().with_series(train_opts.config.clone(), pts).write_png(&plot)?;
        let mut compare_legend = Vec::new();
        if !opts.compare_with.is_empty() {
            let mut curves = vec![(train_opts.config.clone(), points.clone())];
            for p in &opts.compare_with {
                curves.push(read_denoise_curve(p)?);
            }
            let path = out.join("denoise_compare.png");
            compare_legend = plot_denoise_comparison(&path, &curves)?;
            log(&format!("wrote {} ({})", path.display(), compare_legend.join(", ")));
        }
        report.denoise = Some(DenoiseReport {
            points,
            heldout: n_held,
            seed: opts.seed,
            mask_keep: view.keep,
            plot,
            compare_legend,
        });
    }

    let needs_samples = opts.what.iter().any(|w| *w != Metric::Denoise);
    if needs_samples {
        let dims = [opts.samples, c, r, r];
        let samples = match &opts.samples_from {
            Some(p) => {
                log(&format!("reading samples from {}", p.display()));
                read_samples(p, dims, opts.samples)?
            }
            None => {
                log(&format!("sampling {} images", opts.samples));
                let mut v = Vec::with_capacity(opts.samples * m);
                let chunk = opts.batch.max(1);
                for (k, s) in (0..opts.samples).step_by(chunk).enumerate() {
                    let b = chunk.min(opts.samples - s);
                    let seed = crate::nn::layer_seed(opts.seed ^ 0x5a3b_1e55, k as u64);
                    v.extend(crate::train::sample(&model, &schedule, train_opts.sampling, b, seed, device)?);
                }
                crate::train::sampling::check_finite_samples(&v, opts.samples)?;
                v
            }
        };
        let n = samples.len() / m;
        if n == 0 {
            bail!("eval: no samples (--samples {})", opts.samples);
        }
        report.dims = [n, c, r, r];
        let png = out.join("samples.png");
        let k = n.min(64);
        crate::io::image::grid_png(&png, &samples[..k * m], [k, c, r, r], -1.0, 1.0)?;
        report.samples_png = Some(png);

        if opts.what.contains(&Metric::Swd) {
            let _range = crate::nvtx::range("eval swd");
            let so = SwdOptions { projections: opts.projections, seed: opts.seed };
            let s = sliced_wasserstein(&samples, n, held, n_held, m, so)?;
            log(&format!("sliced Wasserstein: {:.5} ± {:.5} ({} directions)", s.swd, s.std_error, s.projections));
            finite("the sliced Wasserstein distance", s.swd)?;
            report.swd = Some(s);
        }
        if opts.what.contains(&Metric::Fid) {
            let _range = crate::nvtx::range("eval fid");
            let train = opts
                .train
                .as_ref()
                .context("--what fid needs --train FILE: the labelled clean training set the classifier learns")?;
            log(&format!("classifier: {} (trained once, cached)", classifier::cache_path(train).display()));
            let (net, trained_now) = classifier::load_or_train(train, &opts.classifier, device, |s, l| {
                if s % 100 == 0 {
                    log(&format!("  classifier step {s}: loss {l:.4}"));
                }
            })?;
            if net.input != [c, r, r] {
                bail!("the classifier of {} sees {:?} images; the run makes {c}×{r}×{r}", train.display(), net.input);
            }
            let (f_held, p_held) = net.features(held, n_held, 256, device)?;
            let accuracy = match kind_of(&opts.data)?.as_deref() {
                Some("corrupted") => None,
                _ => CleanDataset::open(&opts.data)?.labels().map(|l| {
                    let hits = l[..n_held].iter().zip(&p_held).filter(|(a, b)| **a as usize == **b).count();
                    hits as f64 / n_held as f64
                }),
            };
            let (f_s, p_s) = net.features(&samples, n, 256, device)?;
            let d = classifier::FEATURES;
            let fd = frechet_between(&Gaussian::fit(&f_s, n, d)?, &Gaussian::fit(&f_held, n_held, d)?)?;
            finite("the Fréchet distance", fd)?;
            let mut counts = vec![0; net.classes];
            p_s.iter().for_each(|&p| counts[p] += 1);
            log(&format!(
                "Fréchet distance (classifier features): {fd:.4}; classifier test accuracy {}",
                accuracy.map_or("n/a".into(), |a| format!("{:.2}%", 100.0 * a))
            ));
            report.fid = Some(FidReport {
                fd,
                samples: n,
                reference: n_held,
                classifier_test_accuracy: accuracy,
                classifier_cache: classifier::cache_path(train),
                classifier_trained_now: trained_now,
                sample_class_counts: counts,
            });
        }
        if opts.what.contains(&Metric::Memorisation) {
            let _range = crate::nvtx::range("eval memorisation");
            let train =
                opts.train.as_ref().context("--what memorisation needs --train FILE: the clean training set")?;
            let ds = CleanDataset::open(train)?;
            if ds.dims()[1..] != [c, r, r] {
                bail!("{}: images of {:?}; the run makes {c}×{r}×{r}", train.display(), &ds.dims()[1..]);
            }
            let images = ds.images();
            let mo = MemorisationOptions::default();
            let res = memorisation(&samples, n, &images.images, images.len(), m, mo)?;
            log(&format!(
                "memorisation: {:.2}% of samples above cosine {} (mean max cosine {:.4}, centred)",
                100.0 * res.share_above,
                res.threshold,
                res.mean_max_cosine
            ));
            let plot = out.join("memorisation.png");
            let rep = MemorisationReport {
                share_above: res.share_above,
                threshold: res.threshold,
                mean_max_cosine: res.mean_max_cosine,
                centred: res.centred,
                train_count: res.train_count,
                max_cosine: res.max_cosine,
                nearest: res.nearest,
                plot: plot.clone(),
            };
            memorisation_png(&plot, &samples, &ds, &rep, [n, c, r, r])?;
            report.memorisation = Some(rep);
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    let path = out.join("eval.json");
    crate::io::outputs::write_atomic(&path, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    log(&format!("wrote {}", path.display()));
    Ok(report)
}
