//! The gradient-variance diagnostic of issue 15 (`gsure bench gsure-variance`): its four losses are the
//! ones it says, checked where two of them must coincide bit for bit.
use gsure::corruption::make::make_dataset;
use gsure::corruption::{OpKind, OpSpec};
use gsure::diffusion::schedule::VpSchedule;
use gsure::nn::{DdimUnet, DdimUnetConfig, Prediction};
use gsure::objectives::variance::{gradient_variance, VarianceOptions, LOSSES};
use gsure::{DType, Device, ParamStore};

fn small_net(params: &mut ParamStore, prediction: Prediction) -> DdimUnet {
    let c = DdimUnetConfig {
        resolution: 8,
        ch: 8,
        ch_mult: vec![1, 2],
        attn_resolutions: vec![],
        groups: 4,
        prediction,
        ..DdimUnetConfig::tiny()
    };
    DdimUnet::new(&c, params, 3, &Device::Cpu, DType::F32).unwrap()
}

fn opts() -> VarianceOptions {
    VarianceOptions { times: vec![20, 500], batches: 6, batch: 4, seed: 1, ..VarianceOptions::default() }
}

#[test]
fn with_every_pixel_observed_and_no_noise_the_masked_loss_is_the_oracle_and_gsure_its_data_term() {
    let mut params = ParamStore::new();
    let net = small_net(&mut params, Prediction::X0);
    let src = gsure::data::phantoms(16, 8, 2);
    let data = make_dataset(&src, &OpSpec { sigma0: 0.0, ..OpSpec::new(OpKind::Noise) }, 0, "phantoms").unwrap();
    let schedule = VpSchedule::linear(1e-4).unwrap();
    let points = gradient_variance(&net, &params, &data, &schedule, &opts(), |_| {}).unwrap();
    assert_eq!(points.len(), 2);
    for p in &points {
        let [oracle, masked, data_term, whole] = [0, 1, 2, 3].map(|i| &p.losses[i]);
        assert_eq!(p.losses.iter().map(|s| s.loss).collect::<Vec<_>>(), LOSSES);
        // W² = 1 and M = 1 everywhere: the same loss on the same draws.
        assert_eq!(masked.mean_norm, oracle.mean_norm, "t = {}", p.t);
        assert_eq!(masked.trace_cov, oracle.trace_cov);
        assert_eq!(masked.distance_to_oracle, 0.0);
        // ν = 0: the divergence coefficient is zero and GSURE is its data term.
        assert_eq!(whole.mean_norm, data_term.mean_norm);
        assert!(oracle.trace_cov > 0.0 && oracle.mean_norm > 0.0 && oracle.mean_loss > 0.0);
    }
}

#[test]
fn masking_the_loss_adds_variance_and_keeps_the_oracle_expectation_within_its_noise() {
    let mut params = ParamStore::new();
    let net = small_net(&mut params, Prediction::Eps);
    let src = gsure::data::phantoms(64, 8, 2);
    let spec = OpSpec { sigma0: 0.02, p: Some(0.4), ..OpSpec::new(OpKind::Pixel) };
    let data = make_dataset(&src, &spec, 0, "phantoms").unwrap();
    let schedule = VpSchedule::linear(4e-4).unwrap();
    let o = VarianceOptions { times: vec![50], batches: 24, batch: 8, seed: 2, ..VarianceOptions::default() };
    let p = &gradient_variance(&net, &params, &data, &schedule, &o, |_| {}).unwrap()[0];
    let [oracle, masked, _, whole] = [0, 1, 2, 3].map(|i| &p.losses[i]);
    assert!(masked.trace_cov > oracle.trace_cov, "{masked:?} against {oracle:?}");
    // Unbiased over the masks: the distance is Monte-Carlo noise, √(tr Cov / K) relative to ‖E g‖ at most a few.
    let floor = (masked.trace_cov / o.batches as f64).sqrt() / oracle.mean_norm;
    assert!(masked.distance_to_oracle < 3.0 * floor, "{} against a floor of {floor}", masked.distance_to_oracle);
    assert!(whole.trace_cov > 0.0 && whole.mean_loss.is_finite());
}
