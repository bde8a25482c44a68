//! Reproduction (iv) at CI scale (experiments/RESULTS.md has the Colin27 version): GSURE trained on
//! undersampled single-coil k-space only (R = 4, σ0 = 0.01) must end closer to the oracle's denoising error
//! than the naive baseline that treats the aliased zero-filled images as clean, and its prior must
//! reconstruct held-out images at R = 4 better than zero filling.
use gsure::corruption::make::make_dataset;
use gsure::corruption::{OpKind, OpSpec};
use gsure::data::dataset::{Array4, CleanDataset, CleanMeta};
use gsure::eval::reconstruct::{reconstruct, ReconstructOptions};
use gsure::train::TrainData;
use gsure::train::{LossKind, TrainOptions, Trainer};
use gsure::Device;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

const SIDE: usize = 32;

fn mri_spec() -> OpSpec {
    OpSpec { sigma0: 0.01, r: Some(4.0), ..OpSpec::new(OpKind::Mri) }
}

fn dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gsure-repro-mri-{}-{name}", std::process::id()))
}

/// Trains `loss` on k-space observations of 256 phantoms; returns the run directory and its held-out
/// denoising MSE per t.
fn train(loss: LossKind, steps: u64) -> (PathBuf, Vec<(usize, f64)>) {
    let clean = gsure::data::phantoms(256, SIDE, 1234);
    let data = make_dataset(&clean, &mri_spec(), 1, "phantoms").unwrap();
    let opts = TrainOptions {
        loss,
        steps,
        batch: 8,
        beta_start: 1e-4,
        sample_every: 0,
        ..TrainOptions::for_config("tiny-mri32")
    };
    let out = dir(&format!("{loss:?}"));
    let mut t = Trainer::new(opts, TrainData::Corrupted(data), &out, &Device::Cpu, false, true).unwrap();
    t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
    let heldout = gsure::data::phantoms(64, SIDE, 4321);
    (out, gsure::eval::denoise::heldout_report(&t, &heldout).unwrap().iter().map(|p| (p.t, p.mse)).collect())
}

#[test]
fn gsure_on_kspace_ends_closer_to_the_oracle_and_its_prior_beats_zero_filling() {
    let steps = 120;
    let start = std::time::Instant::now();
    let (oracle_run, oracle) = train(LossKind::Supervised, steps);
    let (gsure_run, gsure) = train(LossKind::Gsure, steps);
    let (_, naive) = train(LossKind::Naive, steps);
    let g = gsure::testing::curve_gaps(&oracle, &gsure, &naive, ["oracle", "gsure", "naive"]);
    let table = &g.table;
    println!("{table}");
    // Measured at 120 steps: GSURE's summed |log ratio| to the oracle is about half the naive model's (it is
    // under-trained at small t, as in reproduction (i)), and it is the closer one at every t.
    assert!(g.gap_a < 0.65 * g.gap_b, "GSURE is not clearly closer to the oracle than naive:\n{table}");
    for (t, closer) in &g.a_closer {
        assert!(closer, "t = {t}: naive is the closer one\n{table}");
    }

    // Posterior sampling at R = 4 on held-out phantoms with new masks, GSURE prior beside the oracle's.
    let test = gsure::data::phantoms(8, SIDE, 99);
    let test_file = dir("test.safetensors");
    CleanDataset::write(
        &test_file,
        Array4 { data: &test.images, dims: test.dims },
        None,
        &CleanMeta::new("phantoms", "test", 8),
    )
    .unwrap();
    let mut ro = ReconstructOptions::new(gsure_run, test_file, mri_spec());
    ro.count = 8;
    ro.sampler.steps = 20;
    ro.compare_run = Some(oracle_run);
    println!("trained and evaluated three runs in {:.0} s", start.elapsed().as_secs_f64());
    // Measured: zero-filled 14.83 dB, GSURE prior 15.93 dB, oracle prior 17.09 dB (s.e. ≈ 0.3 each).
    let report = reconstruct(&ro, &Device::Cpu, |l| println!("{l}")).unwrap();
    let r = &report.results[0];
    let o = r.oracle.expect("oracle scores");
    println!(
        "R=4 PSNR: zero-filled {:.2}, gsure prior {:.2}, oracle prior {:.2}",
        r.zero_filled.psnr.mean, r.reconstruction.psnr.mean, o.psnr.mean
    );
    assert!(
        r.reconstruction.psnr.mean > r.zero_filled.psnr.mean + 0.5,
        "the GSURE prior does not beat zero filling by 0.5 dB: {:.2} vs {:.2}",
        r.reconstruction.psnr.mean,
        r.zero_filled.psnr.mean
    );
}
