//! One training step of every named configuration on the CUDA device against the same step on the CPU:
//! same seed, same batch, the objective of the configuration's paper. Without a GPU this runs on the
//! emulated device in CI (`emu/run`, see emu/README.md); on a GPU machine it runs on hardware.
//!
//! The paper-scale models (78 to 118 M parameters) take minutes on the emulated device, so they are
//! `#[ignore]`d here and run by `.ci/run` (`emu/run cargo test --release --test paper_models -- --ignored`).
//! `gsure-mri320@64` is the fastMRI architecture (widths, levels, one 512-channel attention head at the
//! same level) at 64×64 instead of 320×320, `ambient-celeba64@32` Ambient Diffusion's CelebA network at
//! 32×32. `.ci/run` runs the f32 steps; the bf16 step of gsure-celeba32 is there to run by name.
//!
//! What agrees: the loss of the step (both runs draw the same noise, probes and dropout masks), and the
//! parameter update it makes (AdamW's first step moves a parameter by about lr · sign(gradient), so this
//! compares the gradients' signs weighted by size: ‖Δθ_cuda − Δθ_cpu‖ / ‖Δθ_cpu‖).
use gsure::nn::ModelConfig;
use gsure::train::{load_train_data, TrainData};
use gsure::train::{LossKind, TrainOptions, Trainer};
use gsure::Device;

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gsure-paper-models-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// (loss, parameters after one step) of `config` trained with `loss` on `device`.
fn one_step(
    config: &str,
    loss: LossKind,
    bf16: bool,
    consistency: f64,
    device: &Device,
) -> (f64, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut opts = TrainOptions {
        steps: 1,
        batch: 1,
        warmup: 1,
        checkpoint_every: 1000,
        sample_every: 0,
        phantoms: 2,
        loss,
        bf16,
        consistency,
        ..TrainOptions::for_config(config)
    };
    let model = ModelConfig::by_name(config).unwrap();
    let data = if model.image_channels() == 3 {
        // The built-in phantoms are grey; the EDM papers' networks see RGB: the same phantom in 3 channels,
        // corrupted by the paper's operator (Ambient: pixels dropped with p = 0.6; Tweedie: noise 0.1).
        use gsure::corruption::{make::make_dataset, OpKind, OpSpec};
        let grey = gsure::data::phantoms(2, model.resolution(), 1234);
        let [n, _, h, w] = grey.dims;
        let images = grey.images.chunks(h * w).flat_map(|im| im.iter().chain(im).chain(im).copied()).collect();
        let rgb = gsure::data::ImageSet { images, dims: [n, 3, h, w] };
        let spec = match loss {
            LossKind::Ambient => OpSpec { p: Some(0.6), ..OpSpec::new(OpKind::Pixel) },
            _ => OpSpec { sigma0: 0.1, ..OpSpec::new(OpKind::Noise) },
        };
        TrainData::Corrupted(make_dataset(&rgb, &spec, opts.seed, "rgb phantoms").unwrap())
    } else {
        load_train_data(None, &opts, &model).unwrap()
    };
    if let (LossKind::Gsure, TrainData::Corrupted(d)) = (loss, &data) {
        opts.beta_start = d.spec.sigma0 * d.spec.sigma0; // the paper's β_start = σ0²
    }
    let name = format!("{config}-{loss:?}-{bf16}-{}", if device.is_cuda() { "cuda" } else { "cpu" });
    let mut t = Trainer::new(opts, data, &dir(&name), device, false, false).unwrap();
    let before: Vec<Vec<f32>> = t.params.iter().map(|(_, p)| p.to_vec_f32().unwrap()).collect();
    let (loss, _) = t.train_step().unwrap();
    let after: Vec<Vec<f32>> = t.params.iter().map(|(_, p)| p.to_vec_f32().unwrap()).collect();
    (loss, before, after)
}

/// Runs the step on both devices and checks they agree: the loss within `tol.0`, the update within `tol.1`
/// (both relative).
fn agrees(config: &str, loss: LossKind, bf16: bool, consistency: f64, tol: (f64, f64)) {
    let Some(gpu) = gsure::testing::gpu_or_skip(&format!("{config} training step")) else { return };
    let (l_cpu, init_cpu, after_cpu) = one_step(config, loss, false, consistency, &Device::Cpu);
    let (l_gpu, init_gpu, after_gpu) = one_step(config, loss, bf16, consistency, &gpu);
    assert_eq!(init_cpu, init_gpu, "{config}: the initial parameters differ between devices");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for ((a, b), i) in after_cpu.iter().zip(&after_gpu).zip(&init_cpu) {
        for ((&a, &b), &i) in a.iter().zip(b).zip(i) {
            let (da, db) = (a as f64 - i as f64, b as f64 - i as f64);
            diff += (da - db) * (da - db);
            norm += da * da;
        }
    }
    let update_err = (diff / norm.max(1e-300)).sqrt();
    let loss_err = (l_gpu - l_cpu).abs() / l_cpu.abs().max(1e-12);
    println!("{config} {loss:?} bf16={bf16}: loss cpu {l_cpu:.6e} cuda {l_gpu:.6e} (rel {loss_err:.2e}), update rel {update_err:.2e}");
    assert!(l_cpu.is_finite() && norm > 0.0, "{config}: the CPU step did nothing");
    assert!(loss_err <= tol.0, "{config} {loss:?} bf16={bf16}: loss differs by {loss_err:.2e} > {:.0e}", tol.0);
    assert!(
        update_err <= tol.1,
        "{config} {loss:?} bf16={bf16}: parameter update differs by {update_err:.2e} > {:.0e}",
        tol.1
    );
}

// f32 steps agree to reordering (measured on the emulated device, tiny: loss exact, update 2.9e-4). With bf16
// activations the loss agrees to bf16 rounding (tiny: 5.7e-4), but AdamW's first step is about
// lr · sign(gradient), so every parameter whose gradient is below the bf16 noise may move the other way:
// tiny's update differs by 0.14 in norm (a cosine of 0.99) — the bound is for that, not a loose check.
const F32: (f64, f64) = (1e-4, 1e-3);
const BF16: (f64, f64) = (1e-2, 0.25);

#[test]
fn tiny_gsure_f32() {
    agrees("tiny", LossKind::Gsure, false, 0.0, F32);
}

#[test]
fn tiny_gsure_bf16() {
    agrees("tiny", LossKind::Gsure, true, 0.0, BF16);
}

#[test]
fn tiny_edm_tweedie_and_tiny_ambient() {
    agrees("tiny-edm", LossKind::Tweedie, false, 0.01, F32);
    agrees("tiny-ambient", LossKind::Ambient, false, 0.0, F32);
}

#[test]
#[ignore = "paper scale: minutes on the emulated device; run by .ci/run with --ignored"]
fn gsure_celeba32_gsure() {
    agrees("gsure-celeba32", LossKind::Gsure, false, 0.0, F32);
}

#[test]
#[ignore = "paper scale: minutes on the emulated device; run by .ci/run with --ignored"]
fn gsure_celeba32_gsure_bf16() {
    agrees("gsure-celeba32", LossKind::Gsure, true, 0.0, BF16);
}

#[test]
#[ignore = "paper scale: minutes on the emulated device; run by .ci/run with --ignored"]
fn gsure_mri320_gsure_on_kspace() {
    agrees("gsure-mri320@64", LossKind::Gsure, false, 0.0, F32);
}

#[test]
#[ignore = "paper scale: minutes on the emulated device; run by .ci/run with --ignored"]
fn edm_ddpmpp_cifar10_tweedie() {
    agrees("edm-ddpmpp-cifar10", LossKind::Tweedie, false, 0.01, F32);
}

#[test]
#[ignore = "paper scale: minutes on the emulated device; run by .ci/run with --ignored"]
fn ambient_celeba64_ambient() {
    agrees("ambient-celeba64@32", LossKind::Ambient, false, 0.0, F32);
}
