//! Reproductions (ii) Ambient and (iii) Ambient-Tweedie at CI scale (experiments/RESULTS.md has the
//! CPU-scale versions and what they showed). Each run is a few hundred steps of the `tiny` DDPM++ U-Net on
//! 16×16 phantoms, measured by the denoising MSE of its EMA weights on held-out clean phantoms.
use gsure::corruption::make::make_dataset;
use gsure::corruption::{OpKind, OpSpec};
use gsure::train::TrainData;
use gsure::train::{LossKind, TrainOptions, Trainer};
use gsure::Device;
use std::sync::atomic::AtomicBool;

/// Trains `config` with `loss` on 256 corrupted phantoms and returns (t, held-out MSE) pairs.
fn heldout_mse(config: &str, loss: LossKind, spec: &OpSpec, consistency: f64, steps: u64) -> Vec<(usize, f64)> {
    let clean = gsure::data::phantoms(256, 16, 1234);
    let data = make_dataset(&clean, spec, 1, "phantoms").unwrap();
    let opts = TrainOptions { loss, steps, consistency, sample_every: 0, ..TrainOptions::for_config(config) };
    let out =
        std::env::temp_dir().join(format!("gsure-repro-edm-{}-{config}-{loss:?}-{}", std::process::id(), spec.sigma0));
    let mut t = Trainer::new(opts, TrainData::Corrupted(data), &out, &Device::Cpu, false, true).unwrap();
    t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
    let heldout = gsure::data::phantoms(128, 16, 4321);
    let points: Vec<(usize, f64)> =
        gsure::eval::denoise::heldout_report(&t, &heldout).unwrap().iter().map(|p| (p.t, p.mse)).collect();
    let _ = std::fs::remove_dir_all(&out);
    assert!(points.iter().all(|p| p.1.is_finite()), "{config} {loss:?}: non-finite denoising MSE {points:?}");
    points
}

/// The held-out MSE averaged over the high-noise end t ∈ {600, …, 900}, where what a model learned about the
/// whole image (holes or no holes) dominates its error.
fn high_noise(points: &[(usize, f64)]) -> f64 {
    let hi: Vec<f64> = points.iter().filter(|p| p.0 >= 600).map(|p| p.1).collect();
    hi.iter().sum::<f64>() / hi.len() as f64
}

#[test]
fn ambient_pipeline_and_high_noise_ordering() {
    let steps = 90;
    let spec = OpSpec { p: Some(0.6), ..OpSpec::new(OpKind::Pixel) };
    let oracle = heldout_mse("tiny-edm", LossKind::Supervised, &spec, 0.0, steps);
    let ambient = heldout_mse("tiny-ambient", LossKind::Ambient, &spec, 0.0, steps);
    let naive = heldout_mse("tiny-edm", LossKind::Naive, &spec, 0.0, steps);
    let mut table = String::new();
    for ((o, a), n) in oracle.iter().zip(&ambient).zip(&naive) {
        table.push_str(&format!("t={:>3} oracle {:.5} ambient {:.5} naive {:.5}\n", o.0, o.1, a.1, n.1));
    }
    println!("{table}");
    let (o, a, n) = (high_noise(&oracle), high_noise(&ambient), high_noise(&naive));
    // The robust effect at CPU scale (RESULTS.md (ii)): at high noise the naive model, which learned the
    // holes as part of the images, is far from the oracle, and Ambient is closer to the oracle than naive.
    assert!(n > 1.2 * o, "naive is not clearly worse than the oracle at high noise:\n{table}");
    assert!((a / o).ln().abs() < (n / o).ln().abs(), "ambient is not closer to the oracle than naive:\n{table}");
}

#[test]
fn tweedie_pipeline_runs_with_and_without_consistency() {
    // At CI scale no Tweedie effect is asserted (RESULTS.md (iii)): the objective, both sampling modes and the
    // evaluation must run and give finite numbers.
    use gsure::train::{load_run, sample, Sampling};
    let spec = OpSpec { sigma0: 0.1, ..OpSpec::new(OpKind::Noise) };
    for (consistency, steps) in [(0.0, 60), (0.01, 20)] {
        let clean = gsure::data::phantoms(64, 16, 1234);
        let data = make_dataset(&clean, &spec, 1, "phantoms").unwrap();
        let opts = TrainOptions {
            loss: LossKind::Tweedie,
            steps,
            consistency,
            beta_start: 1e-4,
            sample_every: 0,
            ..TrainOptions::for_config("tiny-edm")
        };
        let out = std::env::temp_dir().join(format!("gsure-repro-edm-tw-{}-{consistency}", std::process::id()));
        let mut t = Trainer::new(opts, TrainData::Corrupted(data), &out, &Device::Cpu, false, true).unwrap();
        t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
        let points = gsure::eval::denoise::heldout_report(&t, &gsure::data::phantoms(32, 16, 4321)).unwrap();
        assert!(points.iter().all(|p| p.mse.is_finite() && p.mse > 0.0), "{points:?}");
        let (o, _, model, schedule, _) = load_run(&out, &Device::Cpu).unwrap();
        assert_eq!(o.sampling, Sampling::Tweedie { sigma_n: 0.1, full: consistency > 0.0 });
        for full in [false, true] {
            let x = sample(&model, &schedule, Sampling::Tweedie { sigma_n: 0.1, full }, 4, 7, &Device::Cpu).unwrap();
            assert_eq!(x.len(), 4 * 16 * 16);
            assert!(x.iter().all(|v| v.is_finite()), "consistency {consistency}, full {full}: non-finite samples");
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
