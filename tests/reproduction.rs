//! Reproduction (i) at CI scale (experiments/RESULTS.md has the 600-step version): GSURE, trained on
//! observations only (4×4 patches dropped with p = 0.4, σ0 = 0.02), must end closer to the oracle's
//! denoising error than the naive baseline that treats the zero-filled observations as clean images.
use gsure::corruption::make::make_dataset;
use gsure::corruption::{OpKind, OpSpec};
use gsure::train::TrainData;
use gsure::train::{LossKind, TrainOptions, Trainer};
use gsure::Device;
use std::sync::atomic::AtomicBool;

fn heldout_mse(loss: LossKind, steps: u64) -> Vec<(usize, f64)> {
    let clean = gsure::data::phantoms(256, 16, 1234);
    let spec = OpSpec { sigma0: 0.02, p: Some(0.4), patch: Some(4), ..OpSpec::new(OpKind::Patch) };
    let data = make_dataset(&clean, &spec, 1, "phantoms").unwrap();
    let opts = TrainOptions { loss, steps, beta_start: 4e-4, sample_every: 0, ..TrainOptions::for_config("tiny") };
    let out = std::env::temp_dir().join(format!("gsure-repro-{}-{loss:?}", std::process::id()));
    let mut t = Trainer::new(opts, TrainData::Corrupted(data), &out, &Device::Cpu, false, true).unwrap();
    t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
    let heldout = gsure::data::phantoms(128, 16, 4321);
    gsure::eval::denoise::heldout_report(&t, &heldout).unwrap().iter().map(|p| (p.t, p.mse)).collect()
}

#[test]
fn gsure_ends_closer_to_the_oracle_than_the_naive_baseline() {
    let steps = 200;
    let oracle = heldout_mse(LossKind::Supervised, steps);
    let gsure = heldout_mse(LossKind::Gsure, steps);
    let naive = heldout_mse(LossKind::Naive, steps);
    let g = gsure::testing::curve_gaps(&oracle, &gsure, &naive, ["oracle", "gsure", "naive"]);
    let table = &g.table;
    println!("{table}");
    assert!(g.gap_a < 0.5 * g.gap_b, "GSURE is not clearly closer to the oracle than naive:\n{table}");
    // At high noise the observations' holes dominate the naive model's error; GSURE must be near the oracle.
    let last = oracle.len() - 1;
    assert!((gsure[last].1 / oracle[last].1 - 1.0).abs() < 0.1, "{table}");
}
