//! The gsure command line: thin; all work is done by the library.
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gsure::bench;
use gsure::Device;

#[derive(Parser)]
#[command(name = "gsure", version, about = "Train diffusion models from corrupted data (GSURE, Ambient, Tweedie)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Says which devices this build can use.
    Info,
    /// Trains a diffusion model (default: the `tiny` U-Net with GSURE on corrupted built-in phantoms).
    Train(TrainArgs),
    /// Draws samples from a trained run: a PNG grid and a safetensors file.
    Sample(SampleArgs),
    /// Evaluates a trained run: denoising MSE vs t, sliced Wasserstein, classifier Fréchet distance,
    /// memorisation; writes eval.json and PNG plots.
    Eval(EvalArgs),
    /// Posterior sampling with a run's prior for an inverse problem (inpainting, MRI at R): PSNR/SSIM against
    /// the clean images beside the zero-filled baseline (and another run's prior); writes reconstruct.json
    /// and PNG grids.
    Reconstruct(ReconstructArgs),
    /// Datasets: import real data as clean dataset files; corrupt clean data with a random operator.
    Data {
        #[command(subcommand)]
        what: DataCommand,
    },
    /// Charts from finished work: several runs' losses, or denoising curves of several evaluations, on one chart.
    Plot {
        #[command(subcommand)]
        what: PlotCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Converts IDX (MNIST), NIfTI-1 volumes (sliced) or a folder of PNGs to a clean dataset file.
    Import(ImportArgs),
    /// Corrupts clean images with a seeded random operator (docs/METHODS.md §2) into a corrupted dataset file.
    Make(MakeArgs),
}

/// An operator's parameters besides its kind and R (`data make` takes one R, `reconstruct` a list).
#[derive(Args)]
struct OperatorArgs {
    /// pixel, patch: probability that a pixel / patch is dropped, in [0, 1).
    #[arg(long)]
    p: Option<f64>,
    /// patch: patch side k (default 4).
    #[arg(long)]
    patch: Option<usize>,
    /// box: side of the square hole (default half the image side).
    #[arg(long = "box")]
    box_size: Option<usize>,
    /// mri: number of centre lines always sampled (default round(0.08 W)).
    #[arg(long)]
    acs: Option<usize>,
    /// mri: equispaced outer lines (random offset) instead of uniformly random ones.
    #[arg(long)]
    equispaced: bool,
    /// Observation noise σ0 (y = H x + σ0 z).
    #[arg(long, default_value_t = 0.0)]
    sigma0: f64,
}

impl OperatorArgs {
    fn spec(&self, kind: gsure::corruption::OpKind, r: Option<f64>) -> gsure::corruption::OpSpec {
        gsure::corruption::OpSpec {
            kind,
            sigma0: self.sigma0,
            p: self.p,
            patch: self.patch,
            box_size: self.box_size,
            r,
            acs: self.acs,
            equispaced: self.equispaced,
        }
    }
}

#[derive(Args)]
struct MakeArgs {
    /// Clean images: `phantoms` (built in; see --n, --size) or a dataset file (clean, or corrupted with clean).
    #[arg(long, default_value = "phantoms")]
    source: String,
    /// Corruption operator.
    #[arg(long, value_enum)]
    op: gsure::corruption::OpKind,
    #[command(flatten)]
    operator: OperatorArgs,
    /// mri: acceleration R >= 1; round(W/R) k-space lines are sampled (default 4).
    #[arg(long = "R")]
    r: Option<f64>,
    /// Number of images (phantoms: how many to draw, default 256; a file: keep the first N).
    #[arg(long)]
    n: Option<usize>,
    /// phantoms: image side in pixels.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// phantoms: seed of the phantoms themselves (1234 is what `gsure train` uses; another gives a
    /// held-out set).
    #[arg(long, default_value_t = 1234)]
    phantom_seed: u64,
    /// Seed of the masks and the noise (example i's depend on (seed, i) only).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output dataset file (.safetensors).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Also write a PNG of the first 8 examples: clean image, zero-filled reconstruction H† y.
    #[arg(long)]
    preview: Option<std::path::PathBuf>,
}

fn data_make(a: MakeArgs) -> Result<()> {
    use gsure::corruption::make::make_dataset;
    let source_file = (a.source != "phantoms").then(|| std::path::PathBuf::from(&a.source));
    let inputs: Vec<&std::path::Path> = source_file.iter().map(|p| p.as_path()).collect();
    gsure::io::outputs::check_new(std::slice::from_ref(&a.out), &inputs, a.force, "--out")?;
    if let Some(p) = &a.preview {
        gsure::io::outputs::check_new(std::slice::from_ref(p), &inputs, a.force, "--preview")?;
    }
    let (source, name) = if a.source == "phantoms" {
        let n = a.n.unwrap_or(256);
        let seed = a.phantom_seed;
        if n == 0 || a.size == 0 {
            anyhow::bail!("--n {n} --size {}: phantoms need at least one image of at least 1×1 pixels", a.size);
        }
        gsure::corruption::make::check_make_fits(n, [1, a.size, a.size], a.op)?;
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} phantoms  eta {eta}")
                .expect("valid template"),
        );
        let set = gsure::data::phantoms::phantoms_with_progress(n, a.size, seed, |i| bar.set_position(i as u64 + 1));
        bar.finish_and_clear();
        (set, format!("phantoms(n={n}, size={}, seed={seed})", a.size))
    } else {
        let path = std::path::Path::new(&a.source);
        let mut set = gsure::data::load_clean(path).with_context(|| format!("--source {}", a.source))?;
        if let Some(n) = a.n.filter(|&n| n < set.len()) {
            set.images.truncate(n * set.image_numel());
            set.dims[0] = n;
        }
        (set, a.source.clone())
    };
    let spec = a.operator.spec(a.op, a.r);
    let t = std::time::Instant::now();
    let data = make_dataset(&source, &spec, a.seed, &name)?;
    data.check_every_coordinate_observed().map_err(|e| {
        anyhow::anyhow!(
            "gsure data make ({name}): {e:#} Fix: more images (a larger --n, or a larger --source), or an \
             operator that observes more"
        )
    })?;
    data.write(&a.out)?;
    let observed = data.mask.iter().filter(|&&m| m != 0.0).count() as f64 / data.mask.len() as f64;
    let [n, c, h, w] = data.dims;
    eprintln!(
        "wrote {} ({} operator, {n} observations {c}×{h}×{w} in {} coordinates, {:.1}% observed, σ0 = {}) in {:.1} s",
        a.out.display(),
        a.op.name(),
        data.operator()?.basis().name(),
        100.0 * observed,
        a.operator.sigma0,
        t.elapsed().as_secs_f64()
    );
    eprintln!("metadata: {}", data.meta()?.to_json());
    if let Some(p) = &a.preview {
        let (images, dims) = data.preview(8)?;
        gsure::io::image::grid_png(p, &images, dims, -1.0, 1.0)?;
        eprintln!("wrote {} (pairs: clean, zero-filled H† y)", p.display());
    }
    Ok(())
}

#[derive(Args)]
struct ImportArgs {
    /// Input format.
    #[arg(long, value_enum)]
    format: gsure::data::import::Format,
    /// IDX images file, NIfTI file or folder of them, or a folder of PNGs (or of class sub-folders).
    #[arg(long)]
    input: std::path::PathBuf,
    /// IDX labels file (class ids stored as `labels`).
    #[arg(long)]
    labels: Option<std::path::PathBuf>,
    /// Output side S: images become S×S (see --resize); default: keep the input size.
    #[arg(long)]
    size: Option<usize>,
    /// How --size is reached.
    #[arg(long, value_enum, default_value = "auto")]
    resize: gsure::data::transforms::Resize,
    /// Convert RGB to greyscale.
    #[arg(long)]
    grey: bool,
    /// A split name for the whole set (train, test, all), or test=F: a seeded split into --out (train) and
    /// --out with "-test" before the extension.
    #[arg(long, default_value = "all")]
    split: gsure::data::import::Split,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// NIfTI: volume axis (0, 1, 2 = x, y, z) across which slices are cut.
    #[arg(long, default_value_t = 2)]
    axis: usize,
    /// NIfTI: slice range a..b (b excluded); default: the central --central fraction.
    #[arg(long)]
    slices: Option<gsure::data::import::SliceRange>,
    /// NIfTI: central fraction of slices kept when no --slices range is given.
    #[arg(long, default_value_t = 0.8)]
    central: f64,
    /// NIfTI: skip slices with less than this fraction of foreground pixels.
    #[arg(long, default_value_t = 0.1)]
    min_foreground: f64,
    /// NIfTI: intensity percentiles clipped to -1 and 1, as LOW,HIGH.
    #[arg(long, default_value = "0.5,99.5")]
    clip: String,
    /// Output dataset file (.safetensors).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Replace --out (and its -test sibling) if they exist; never the input.
    #[arg(long)]
    force: bool,
    /// Also write a PNG grid of the first 64 images of each written file here (FILE-<split>.png).
    #[arg(long)]
    preview: Option<std::path::PathBuf>,
}

fn data_import(a: ImportArgs) -> Result<()> {
    use gsure::data::import;
    let clip = a
        .clip
        .split_once(',')
        .and_then(|(l, h)| Some((l.trim().parse().ok()?, h.trim().parse().ok()?)))
        .with_context(|| format!("--clip {}: expected LOW,HIGH percentiles such as 0.5,99.5", a.clip))?;
    let mut o = import::ImportOptions::new(a.format, a.input);
    o.labels = a.labels;
    o.size = a.size;
    o.resize = a.resize;
    o.grey = a.grey;
    o.split = a.split;
    o.seed = a.seed;
    o.limit = a.limit;
    o.axis = a.axis;
    o.slices = a.slices;
    o.central_fraction = a.central;
    o.min_foreground = a.min_foreground;
    o.clip_percentiles = clip;
    o.force = a.force;
    if let Some(p) = &a.preview {
        let splits: Vec<String> = match &o.split {
            import::Split::Named(name) => vec![name.clone()],
            import::Split::Test(_) => vec!["train".into(), "test".into()],
        };
        let pngs: Vec<std::path::PathBuf> =
            splits.iter().map(|s| gsure::data::dataset::sibling_path(&p.with_extension("png"), s)).collect();
        gsure::io::outputs::check_new(&pngs, &[o.input.as_path()], a.force, "--preview")?;
    }
    let t = std::time::Instant::now();
    for w in import::import(&o, &a.out)? {
        let [n, c, h, wd] = w.dims;
        let labels = if w.labels { " with labels" } else { "" };
        eprintln!("wrote {} ({}: {n} images {c}×{h}×{wd}{labels})", w.path.display(), w.split);
        if let Some(p) = &a.preview {
            let ds = gsure::data::dataset::CleanDataset::open(&w.path)?;
            let k = n.min(64);
            let idx: Vec<usize> = (0..k).collect();
            let png = gsure::data::dataset::sibling_path(&p.with_extension("png"), &w.split);
            gsure::io::image::grid_png(&png, &ds.gather(&idx), [k, c, h, wd], -1.0, 1.0)?;
            eprintln!("wrote {}", png.display());
        }
    }
    eprintln!("import took {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

#[derive(Subcommand)]
enum PlotCommand {
    /// Training loss against step of one or more run folders.
    Loss(PlotArgs),
    /// Denoising MSE against t from eval.json files of `gsure eval --what denoise` (or summary JSON files
    /// of name → curve, as in experiments/results/).
    Denoise(PlotArgs),
}

#[derive(Args)]
struct PlotArgs {
    /// Run folders (loss) or JSON files (denoise).
    #[arg(required = true)]
    inputs: Vec<std::path::PathBuf>,
    /// The PNG to write.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Times every op's forward and backward at U-Net shapes against the device's ceilings.
    Ops(OpsArgs),
    /// Times whole training steps (data, noising, forward, loss, backward, clip, AdamW, EMA) per model.
    Train(BenchTrainArgs),
    /// GSURE's gradient noise against the oracle's at a run's EMA weights, per t (CPU): oracle, masked
    /// loss, GSURE's data term, whole GSURE (see gsure::objectives::variance).
    GsureVariance(VarianceArgs),
}

#[derive(Args)]
struct VarianceArgs {
    /// A GSURE (or oracle) run on a pixel-basis corrupted dataset; its data file is read from the run.
    #[arg(long)]
    run: std::path::PathBuf,
    /// Timesteps, comma-separated (default 10,50,100,300,600,900).
    #[arg(long, value_delimiter = ',')]
    times: Vec<usize>,
    /// Batches per timestep.
    #[arg(long, default_value_t = 64)]
    batches: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

fn bench_gsure_variance(a: VarianceArgs) -> Result<()> {
    use gsure::objectives::variance::{gradient_variance, VarianceOptions};
    if let Some(out) = &a.out {
        gsure::io::outputs::check_new(std::slice::from_ref(out), &[], a.force, "--out")?;
    }
    let (options, config, model, params, schedule, step) =
        gsure::train::load_run_with_params(&a.run, &gsure::Device::Cpu)?;
    let gsure::nn::Model::Ddim(net) = &model else {
        anyhow::bail!("--run {}: the gradient variance is measured for DDIM U-Net runs (GSURE's)", a.run.display());
    };
    let data = gsure::train::load_train_data(options.data.as_deref(), &options, &config)?;
    let gsure::train::TrainData::Corrupted(data) = data else {
        anyhow::bail!(
            "--run {}: the run trained on clean images; GSURE's gradient needs its corrupted data",
            a.run.display()
        );
    };
    let mut o = VarianceOptions {
        batches: a.batches,
        batch: a.batch,
        seed: a.seed,
        mode: options.gsure_mode,
        probe: options.gsure_probe,
        div_every: options.gsure_div_every,
        ..VarianceOptions::default()
    };
    if !a.times.is_empty() {
        o.times = a.times;
    }
    let points = gradient_variance(net, &params, &data, &schedule, &o, |line| eprintln!("{line}"))?;
    println!("{:>4} {:>11} {:>11} {:>11} {:>9} {:>9}", "t", "loss", "‖E g‖", "tr Cov", "rel.var", "dist");
    for p in &points {
        for s in &p.losses {
            println!(
                "{:>4} {:>11} {:>11.4e} {:>11.4e} {:>9.3} {:>9.3}",
                p.t, s.loss, s.mean_norm, s.trace_cov, s.relative_variance, s.distance_to_oracle
            );
        }
    }
    if let Some(out) = &a.out {
        let json = serde_json::json!({
            "run": a.run, "step": step, "config": options.config, "loss": format!("{:?}", options.loss),
            "data": options.data, "batches": o.batches, "batch": o.batch, "seed": o.seed,
            "gsure_mode": format!("{:?}", o.mode).to_lowercase(),
            "gsure_probe": format!("{:?}", o.probe).to_lowercase(),
            "gsure_div_every": o.div_every,
            "commit": std::env::var("GSURE_COMMIT").ok(), "points": points,
        });
        write_json(out, &json)?;
    }
    Ok(())
}

#[derive(Args)]
struct BenchTrainArgs {
    /// Model configurations, comma-separated (default: tiny on cpu; tiny,gsure-celeba32 on cuda).
    #[arg(long, value_delimiter = ',')]
    config: Vec<String>,
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// bf16 activations with f32 master weights (CUDA), as `gsure train --bf16`.
    #[arg(long)]
    bf16: bool,
    /// Batch size for every configuration (default: each configuration's training batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed steps per configuration (default: 20 on cuda, 3 on cpu).
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps first (default: 3 on cuda, 1 on cpu).
    #[arg(long)]
    warmup: Option<usize>,
    /// Stops a configuration's timed steps after this many seconds, one at least (default: 60 on cuda).
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Time the CUDA step issued launch by launch instead of replayed from a captured graph.
    #[arg(long)]
    no_cuda_graph: bool,
    /// Writes the results as JSON to this file (what benches/torch_train.py --gsure-json reads).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Prints the configurations' settings as JSON (for benches/torch_train.py) and exits.
    #[arg(long)]
    list_json: bool,
}

#[derive(Args)]
struct OpsArgs {
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// f32 or bf16 (default: bf16 on cuda, f32 on cpu).
    #[arg(long)]
    dtype: Option<String>,
    /// Runs only cases whose "<op> <label>" contains this (comma-separated alternatives).
    #[arg(long)]
    filter: Option<String>,
    /// Timed repeats per case and direction.
    #[arg(long)]
    repeats: Option<usize>,
    /// Untimed runs before the timed ones.
    #[arg(long)]
    warmup: Option<usize>,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Prints the case list as JSON (for benches/torch_ops.py) and exits.
    #[arg(long)]
    list_json: bool,
    /// Prints each case's predicted fraction of the H200's ceilings in bf16 and its floor, as markdown
    /// (docs/kernel-predictions.md), and exits.
    #[arg(long)]
    predictions: bool,
    /// Fewer repeats (for a quick look or a time-limited GPU run).
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Model configuration: tiny, tiny32, tiny-mri32, tiny-mri64, gsure-celeba32, gsure-mri320 (DDIM U-Net, VP) or tiny-edm,
    /// edm-ddpmpp-cifar10, ambient-celeba64 (DDPM++ U-Net, EDM).
    #[arg(long, default_value = "tiny")]
    config: String,
    /// Total optimisation steps (default: the configuration's).
    #[arg(long)]
    steps: Option<u64>,
    /// Run directory: checkpoint, log, sample grids, loss curve.
    #[arg(long, default_value = "runs/tiny")]
    out: std::path::PathBuf,
    /// A safetensors dataset with a `clean` tensor [N, C, H, W] in [-1, 1] (default: built-in phantoms).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Training objective: supervised (the oracle, on clean images), gsure (on corrupted observations:
    /// --data FILE from `gsure data make`, or the built-in phantoms with 4×4 patches dropped at p = 0.4, or
    /// for the complex tiny-mri/gsure-mri320 configurations k-space lines kept at R = 4, σ0 = 0.01) or
    /// naive (the baseline that treats the zero-filled observations as clean images), ambient (masked
    /// images; --config tiny-ambient or ambient-celeba64) or tweedie (noisy images; --config tiny-edm, ...).
    /// Default: gsure.
    #[arg(long, value_enum)]
    loss: Option<gsure::train::LossKind>,
    /// GSURE loss mode: ybar (default, unbiased, lowest variance), xt (the paper's equation), reference
    /// (the official code's, biased; for comparison).
    #[arg(long, value_enum)]
    gsure_mode: Option<gsure::objectives::gsure::GsureMode>,
    /// GSURE's Hutchinson probe on the observed set: rademacher (default, ±1: the lower-variance choice) or
    /// gaussian.
    #[arg(long, value_enum)]
    gsure_probe: Option<gsure::objectives::gsure::ProbeKind>,
    /// GSURE estimates the divergence for 1 example in K (default 1: every example); its perturbed pass then
    /// costs ⌈B/K⌉ images instead of B. Unbiased (the estimated ones weigh K times more).
    #[arg(long, value_name = "K")]
    gsure_div_every: Option<usize>,
    /// Smallest timestep GSURE trains (default 0).
    #[arg(long)]
    t_min: Option<usize>,
    /// Weight of the Ambient-Tweedie consistency loss below σ_n (default 0: off; the paper uses about 0.01).
    #[arg(long)]
    consistency: Option<f64>,
    /// Dropout rate of every residual block (default: the configuration's: 0.1 or 0.13 for the papers' models, 0
    /// for the tiny ones; 0 turns it off).
    #[arg(long, value_name = "P")]
    dropout: Option<f64>,
    /// β_start of the linear VP schedule (default 1e-4, or σ0² of a corrupted dataset when larger).
    #[arg(long)]
    beta_start: Option<f64>,
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// Batch size (default: the configuration's).
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate (default: the configuration's).
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of every random choice in the run.
    #[arg(long)]
    seed: Option<u64>,
    /// bf16 activations with f32 master weights (CUDA).
    #[arg(long)]
    bf16: bool,
    /// Issue every CUDA step's launches from the host instead of replaying the step from a captured CUDA
    /// graph (same weights; for profiling the launches one by one).
    #[arg(long)]
    no_cuda_graph: bool,
    /// Continue the run in --out from its checkpoint, with its stored settings and data (flags that disagree
    /// with them are refused; --steps may raise the total).
    #[arg(long)]
    resume: bool,
    /// Start over in an --out that holds a previous run.
    #[arg(long)]
    force: bool,
    /// Steps between checkpoints (default: the configuration's, 200 for tiny ones); a resume may change it.
    #[arg(long)]
    checkpoint_every: Option<u64>,
}

#[derive(Args)]
struct SampleArgs {
    /// Run directory (holds checkpoint.safetensors).
    #[arg(long, default_value = "runs/tiny")]
    run: std::path::PathBuf,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file stem: writes STEM.png and STEM.safetensors (default: RUN/samples).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Replace STEM.png and STEM.safetensors if they exist (never the run's checkpoint).
    #[arg(long)]
    force: bool,
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// Run directory (holds checkpoint.safetensors; the EMA weights are evaluated).
    #[arg(long)]
    run: std::path::PathBuf,
    /// Clean held-out images (a clean dataset file, or a corrupted one with its `clean` tensor).
    #[arg(long)]
    data: std::path::PathBuf,
    /// Clean training set: reference of memorisation; its labels train the classifier of `fid`.
    #[arg(long)]
    train: Option<std::path::PathBuf>,
    /// Generated samples for swd, fid and memorisation (default: 1000 on cuda, 200 on cpu).
    #[arg(long)]
    samples: Option<usize>,
    /// Read the samples from this file (a `samples` tensor, as `gsure sample` writes, or the clean images of
    /// a dataset file: the metrics' floor) instead of sampling.
    #[arg(long)]
    samples_from: Option<std::path::PathBuf>,
    /// denoise, for a model with mask channels (Ambient): the fraction of pixels it is shown (a random mask
    /// per image; 1 = all-ones mask). Its training masks' fraction asks it the question it learned.
    #[arg(long, default_value_t = 1.0)]
    mask_keep: f64,
    /// Metrics, comma-separated (default: all; fid and memorisation need --train).
    #[arg(long, value_enum, value_delimiter = ',')]
    what: Vec<gsure::eval::Metric>,
    /// Number of held-out images used (the first N of --data).
    #[arg(long, default_value_t = 1000)]
    heldout: usize,
    /// Batch size of the network passes.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Seed of the noise, the samples and the projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random directions of the sliced Wasserstein distance.
    #[arg(long, default_value_t = 512)]
    projections: usize,
    /// Training steps of the feature classifier (when it is not cached yet).
    #[arg(long, default_value_t = 600)]
    classifier_steps: usize,
    /// Output folder (default: RUN/eval).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// eval.json files of other runs to draw beside this run's denoising curve (denoise_compare.png).
    #[arg(long, value_delimiter = ',')]
    compare_with: Vec<std::path::PathBuf>,
    /// Replace an earlier evaluation in the output folder.
    #[arg(long)]
    force: bool,
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct ReconstructArgs {
    /// Run directory whose EMA weights are the prior.
    #[arg(long)]
    run: std::path::PathBuf,
    /// Clean images (a clean dataset file, or a corrupted one with its `clean` tensor).
    #[arg(long)]
    data: std::path::PathBuf,
    /// Operator of the inverse problem: pixel, patch, box, noise or mri.
    #[arg(long)]
    op: String,
    #[command(flatten)]
    operator: OperatorArgs,
    /// MRI acceleration, or a comma-separated list to sweep (e.g. 4,6,8,10,12; writes psnr_vs_R.png).
    #[arg(long = "R", value_delimiter = ',')]
    r: Vec<f64>,
    /// Number of images reconstructed (the first N of --data).
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Respaced DDIM steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM η (0.85: DDRM's default; 0: deterministic).
    #[arg(long, default_value_t = 0.85)]
    eta: f64,
    /// Seed of the masks, the observation noise and the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Another run (e.g. the supervised oracle) sampled with the same sampler on the same observations.
    #[arg(long)]
    compare_run: Option<std::path::PathBuf>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Output folder (default: RUN/reconstruct).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Replace an earlier reconstruction in the output folder.
    #[arg(long)]
    force: bool,
    /// cpu or cuda (default: cuda when usable, else cpu).
    #[arg(long)]
    device: Option<String>,
}

fn reconstruct(a: ReconstructArgs) -> Result<()> {
    use gsure::corruption::OpKind;
    use gsure::eval::reconstruct::ReconstructOptions;
    let device = pick_device(a.device.as_deref())?;
    let spec = a.operator.spec(OpKind::parse(&a.op)?, None);
    let mut o = ReconstructOptions::new(a.run, a.data, spec);
    match a.r.len() {
        0 => {}
        1 if o.op.kind == OpKind::Mri => o.op.r = Some(a.r[0]),
        _ => o.r_list = a.r,
    }
    o.count = a.n;
    o.sampler.steps = a.steps;
    o.sampler.eta = a.eta;
    o.seed = a.seed;
    o.compare_run = a.compare_run;
    o.batch = a.batch;
    o.out = a.out;
    o.force = a.force;
    gsure::eval::reconstruct::reconstruct(&o, &device, |line| eprintln!("{line}"))?;
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    use gsure::eval::{EvalOptions, Metric};
    let device = pick_device(a.device.as_deref())?;
    let mut o = EvalOptions::new(a.run, a.data);
    o.train = a.train;
    o.samples = a.samples.unwrap_or(if device.is_cuda() { 1000 } else { 200 });
    o.samples_from = a.samples_from;
    o.mask_keep = a.mask_keep;
    if !a.what.is_empty() {
        o.what = a.what;
    } else if o.train.is_none() {
        o.what = vec![Metric::Denoise, Metric::Swd];
        eprintln!("no --train: computing denoise and swd only (fid and memorisation need the training set)");
    }
    o.heldout = a.heldout;
    o.batch = a.batch;
    o.seed = a.seed;
    o.projections = a.projections;
    o.classifier.steps = a.classifier_steps;
    o.out = a.out;
    o.compare_with = a.compare_with;
    o.force = a.force;
    gsure::eval::evaluate(&o, &device, |line| eprintln!("{line}"))?;
    Ok(())
}

fn pick_device(name: Option<&str>) -> Result<Device> {
    match name {
        Some(d) => Device::parse(d),
        None => {
            let d = Device::best();
            eprintln!("device: {d} (pass --device to choose)");
            Ok(d)
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let device = pick_device(a.device.as_deref())?;
    let model = gsure::nn::ModelConfig::by_name(&a.config)?;
    let mut opts = gsure::train::TrainOptions::for_config(&a.config);
    if let Some(s) = a.steps {
        opts.steps = s;
    }
    if let Some(b) = a.batch {
        opts.batch = b;
    }
    if let Some(lr) = a.lr {
        opts.lr = lr;
    }
    if let Some(s) = a.seed {
        opts.seed = s;
    }
    opts.bf16 = a.bf16;
    opts.loss = a.loss.unwrap_or(gsure::train::LossKind::Gsure);
    opts.gsure_mode = a.gsure_mode.unwrap_or_default();
    opts.gsure_probe = a.gsure_probe.unwrap_or_default();
    if let Some(k) = a.gsure_div_every {
        if k == 0 {
            anyhow::bail!("--gsure-div-every 0: K is how many examples share one divergence estimate; give 1 or more");
        }
        opts.gsure_div_every = k;
    }
    opts.t_min = a.t_min.unwrap_or(0);
    opts.consistency = a.consistency.unwrap_or(0.0);
    opts.dropout = a.dropout;
    opts.data = a.data.as_ref().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    if let Some(b) = a.beta_start {
        opts.beta_start = b;
    }
    // (without a checkpoint, Trainer::new says why there is nothing to resume)
    let mut opts = if a.resume && gsure::train::RunDir(a.out.clone()).checkpoint().exists() {
        // the stored run decides the data, seed and objective; a flag that disagrees is an error
        let given: Vec<&str> = [
            ("data", a.data.is_some()),
            ("seed", a.seed.is_some()),
            ("batch", a.batch.is_some()),
            ("lr", a.lr.is_some()),
            ("loss", a.loss.is_some()),
            ("gsure-mode", a.gsure_mode.is_some()),
            ("gsure-probe", a.gsure_probe.is_some()),
            ("gsure-div-every", a.gsure_div_every.is_some()),
            ("t-min", a.t_min.is_some()),
            ("consistency", a.consistency.is_some()),
            ("dropout", a.dropout.is_some()),
            ("beta-start", a.beta_start.is_some()),
            ("bf16", a.bf16),
        ]
        .into_iter()
        .filter_map(|(flag, on)| on.then_some(flag))
        .collect();
        let stored = gsure::train::stored_options(&a.out)
            .with_context(|| format!("--resume: reading the run in {}", a.out.display()))?;
        let mut asked = opts;
        asked.steps = a.steps.unwrap_or(0);
        stored.resumed(&asked, &given, &a.out)?
    } else {
        opts
    };
    if let Some(every) = a.checkpoint_every {
        if every == 0 {
            anyhow::bail!("--checkpoint-every 0: give the steps between checkpoints, 1 or more");
        }
        opts.checkpoint_every = every;
    }
    let data = gsure::train::load_train_data(opts.data.as_deref(), &opts, &model)?;
    if a.beta_start.is_none() && !a.resume {
        opts.beta_start = opts.default_beta_start(&data);
    }
    let mut trainer = gsure::train::Trainer::new(opts, data, &a.out, &device, a.resume, a.force)?;
    trainer.use_cuda_graphs(!a.no_cuda_graph);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            eprintln!("\nstopping: saving a checkpoint (a second Ctrl-C or SIGTERM aborts)");
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    let total = trainer.options.steps;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_position(trainer.step);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}  {msg}")
            .expect("valid template"),
    );
    let log_every = trainer.options.log_every.max(1);
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if !on_terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let summary = trainer.run(&stop, |step, total, loss| {
        bar.set_position(step);
        bar.set_message(format!("loss {loss:.4}"));
        if !on_terminal && (step % log_every == 0 || step == total) {
            eprintln!("step {step}/{total} loss {loss:.5}");
        }
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{} {} steps ({:.1} images/s), last loss {:.5}; checkpoint, log.jsonl, loss.png and samples in {}",
        if summary.stopped_early { "stopped after" } else { "trained" },
        summary.steps_done,
        summary.images_per_second,
        summary.final_loss,
        a.out.display()
    );
    if summary.stopped_early {
        // an interrupted run is not a finished one: schedulers and scripts read the exit status
        eprintln!("interrupted: continue with `gsure train --out {} --resume`", a.out.display());
        std::process::exit(130);
    }
    if trainer.options.data.is_none() {
        // Trained on built-in phantoms: measure denoising on phantoms it never saw, against the clean truth.
        let heldout = gsure::data::phantoms(256, model.resolution(), 4321);
        let points = gsure::eval::denoise::heldout_report(&trainer, &heldout)?;
        eprintln!("denoising MSE on 256 held-out clean phantoms (EMA weights), by timestep t:");
        for p in &points {
            eprintln!("  t = {:>3}: {:.5} ± {:.5}", p.t, p.mse, p.std_error);
        }
    }
    Ok(())
}

fn sample(a: SampleArgs) -> Result<()> {
    let device = pick_device(a.device.as_deref())?;
    let stem = a.out.clone().unwrap_or_else(|| a.run.join("samples"));
    let (png, st) = (stem.with_extension("png"), stem.with_extension("safetensors"));
    let checkpoint = a.run.join("checkpoint.safetensors");
    gsure::io::outputs::check_new(&[png.clone(), st.clone()], &[&checkpoint], a.force, "--out")?;
    let (dims, values) = gsure::train::sample_run(&a.run, a.n, a.seed, &device)?;
    gsure::io::image::grid_png(&png, &values, dims, -1.0, 1.0)?;
    let entry = gsure::io::safetensors::Entry { name: "samples".into(), shape: dims.to_vec(), data: &values };
    gsure::io::safetensors::write(&st, &[entry], &serde_json::json!({"run": a.run, "seed": a.seed}))?;
    eprintln!("wrote {} and {}", png.display(), st.display());
    Ok(())
}

fn bench_ops(a: OpsArgs) -> Result<()> {
    if a.list_json {
        let cases: Vec<_> =
            bench::all_cases().into_iter().filter(|c| bench::runner::matches(c, a.filter.as_deref())).collect();
        println!("{}", serde_json::to_string_pretty(&bench::list_json(&cases))?);
        return Ok(());
    }
    if a.predictions {
        print!("{}", bench::predictions::table(&bench::all_cases()));
        return Ok(());
    }
    let device = pick_device(a.device.as_deref())?;
    let dtype = match a.dtype.as_deref() {
        Some(d) => bench::runner::parse_dtype(d)?,
        None if device.is_cuda() => gsure::DType::BF16,
        None => gsure::DType::F32,
    };
    let mut opts = bench::Options::defaults(&device, a.quick);
    opts.filter = a.filter;
    if let Some(r) = a.repeats {
        opts.repeats = r.max(1);
    }
    if let Some(w) = a.warmup {
        opts.warmup = w;
    }
    // After each case the results so far go to --out (marked partial), so a run stopped by a time limit
    // still leaves what it measured; the complete report replaces them at the end.
    let mut done = Vec::new();
    let out = a.out.clone();
    let report = bench::run(bench::all_cases(), &device, dtype, &opts, |i, n, r| {
        if let Some(path) = &out {
            done.push(serde_json::to_value(r).unwrap_or_default());
            let partial = serde_json::json!({
                "partial": true, "gsure_version": env!("CARGO_PKG_VERSION"), "dtype": dtype.name(),
                "device": bench::report::DeviceInfo::of(&device), "cases": done,
            });
            if let Err(e) = gsure::io::outputs::write_atomic(path, partial.to_string().as_bytes()) {
                eprintln!("could not write partial results to {}: {e}", path.display());
            }
        }
        let ms =
            |d: &Option<bench::Direction>| d.as_ref().map_or("-".into(), |d| format!("{:.4} ms", d.stats.median_ms));
        match &r.error {
            Some(e) => eprintln!("[{i}/{n}] {} {}: FAILED ({e})", r.op, r.label),
            None => eprintln!(
                "[{i}/{n}] {} {}: fwd {} bwd {} ({:.1} s)",
                r.op,
                r.label,
                ms(&r.forward),
                ms(&r.backward),
                r.seconds
            ),
        }
    })?;
    print!("{}", report.table());
    if let Some(path) = a.out {
        write_json(&path, &report.to_json())?;
    }
    Ok(())
}

/// Writes a report as pretty JSON and says so.
fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    gsure::io::outputs::write_atomic(path, (text + "\n").as_bytes())
        .with_context(|| format!("writing the results to {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn bench_train(a: BenchTrainArgs) -> Result<()> {
    let device = if a.list_json { Device::Cpu } else { pick_device(a.device.as_deref())? };
    let mut opts = bench::train::TrainBenchOptions::defaults(&device);
    if a.list_json && a.config.is_empty() {
        opts.configs = vec!["tiny".into(), "gsure-celeba32".into()];
    }
    if !a.config.is_empty() {
        opts.configs = a.config;
    }
    opts.bf16 = a.bf16;
    opts.batch = a.batch;
    opts.steps = a.steps.unwrap_or(opts.steps);
    opts.warmup = a.warmup.unwrap_or(opts.warmup);
    opts.max_seconds = a.max_seconds.or(opts.max_seconds);
    opts.cuda_graph = !a.no_cuda_graph;
    if a.list_json {
        let settings = bench::train::settings(&opts.configs, opts.batch)?;
        println!("{}", serde_json::to_string_pretty(&bench::train::list_json(&settings))?);
        return Ok(());
    }
    let report = bench::train::run(&opts, &device, |i, n, r| match &r.error {
        Some(e) => eprintln!("[{i}/{n}] {}: FAILED ({e})", r.config),
        None => eprintln!(
            "[{i}/{n}] {} batch {}: median {:.3} ms over {} steps ({:.1} s)",
            r.config,
            r.setting.batch,
            r.step.as_ref().map_or(f64::NAN, |s| s.median_ms),
            r.step_ms.len(),
            r.seconds
        ),
    })?;
    print!("{}", report.table());
    if let Some(path) = a.out {
        write_json(&path, &report.to_json())?;
    }
    if let Some(r) = report.results.iter().find(|r| r.error.is_some()) {
        anyhow::bail!("bench train: {} failed", r.config);
    }
    Ok(())
}

fn main() -> Result<()> {
    gsure::backend::cpu::alloc::keep_freed_memory();
    let cli = Cli::parse();
    // The command runs on a worker of the CPU backend's thread pool, so the thread that issues the parallel
    // loops works on them too instead of blocking while they run.
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("gsure-cpu-{i}"))
        .build()
        .context("starting the CPU thread pool")?;
    pool.install(|| run(cli))
}

/// A plot's --out follows the output rule: never one of its inputs, replaced only with --force.
fn check_plot_out(a: &PlotArgs) -> Result<()> {
    let inputs: Vec<&std::path::Path> = a.inputs.iter().map(|p| p.as_path()).collect();
    gsure::io::outputs::check_new(std::slice::from_ref(&a.out), &inputs, a.force, "--out")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => {
            println!("gsure {}", env!("CARGO_PKG_VERSION"));
            println!("kernels compiled: {}", gsure::backend::cuda::Gpu::built_with_kernels());
            println!("kernel images: {}", gsure::backend::cuda::Gpu::kernel_images());
            match gsure::backend::cuda::Gpu::shared() {
                Ok(g) => println!("cuda: {} (sm_{}{})", g.name(), g.compute_capability().0, g.compute_capability().1),
                Err(e) => println!("cuda: unavailable ({e:#})"),
            }
            println!(
                "nvtx ranges: {}",
                if gsure::nvtx::enabled() {
                    "on (libnvToolsExt loaded)"
                } else {
                    "off (no libnvToolsExt, or GSURE_NVTX=0)"
                }
            );
        }
        Command::Train(a) => train(a)?,
        Command::Sample(a) => sample(a)?,
        Command::Eval(a) => eval(a)?,
        Command::Reconstruct(a) => reconstruct(a)?,
        Command::Data { what: DataCommand::Import(a) } => data_import(a)?,
        Command::Data { what: DataCommand::Make(a) } => data_make(a)?,
        Command::Plot { what: PlotCommand::Loss(a) } => {
            check_plot_out(&a)?;
            gsure::train::loss_curve::compare(&a.inputs, &a.out)?;
            println!("wrote {}", a.out.display());
        }
        Command::Plot { what: PlotCommand::Denoise(a) } => {
            check_plot_out(&a)?;
            let mut curves = Vec::new();
            for p in &a.inputs {
                curves.extend(gsure::eval::report::read_denoise_curves(p)?);
            }
            let names = gsure::eval::report::plot_denoise_comparison(&a.out, &curves)?;
            println!("wrote {} ({})", a.out.display(), names.join(", "));
        }
        Command::Bench { what: BenchCommand::Ops(a) } => bench_ops(a)?,
        Command::Bench { what: BenchCommand::Train(a) } => bench_train(a)?,
        Command::Bench { what: BenchCommand::GsureVariance(a) } => bench_gsure_variance(a)?,
    }
    Ok(())
}
