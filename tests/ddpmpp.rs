//! EDM's DDPM++ U-Net and its preconditioning: reference parameter counts, gated convolutions, names,
//! shapes, the time embedding, a tiny model that fits 8 images, D(x; σ) -> x as σ -> 0, mask channels,
//! and CPU/CUDA parity of a whole network.
use gsure::diffusion::schedule::Edm;
use gsure::nn::TrainSeed;
use gsure::nn::{configs, DdpmppConfig, DdpmppUnet, EdmDenoiser, GateScope};
use gsure::ops::{self, embedding};
use gsure::testing::{mask, parity, randn, rng};
use gsure::{backward, DType, Device, ParamStore, Tensor};

fn build(config: &DdpmppConfig, seed: u64) -> (ParamStore, DdpmppUnet) {
    let mut ps = ParamStore::new();
    let net = DdpmppUnet::new(config, &mut ps, seed, &Device::Cpu, DType::F32).unwrap();
    (ps, net)
}

fn count(config: &DdpmppConfig) -> usize {
    build(config, 0).0.num_scalars()
}

/// Small enough for debug-mode tests on one core.
fn small() -> DdpmppConfig {
    DdpmppConfig { model_channels: 16, ..DdpmppConfig::tiny() }
}

/// Replaces every parameter with N(0, scale²) values, so the output layers (initialised at 1e-5 scale, as
/// in the reference) no longer hide what the network computes.
fn perturb(ps: &ParamStore, scale: f64, seed: u64) {
    let mut r = rng(seed);
    for (_, p) in ps.iter() {
        p.assign(&ops::scale(&randn(p.dims(), &mut r), scale).unwrap()).unwrap();
    }
}

fn f32_randn(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, &mut rng(seed)).to_dtype(DType::F32).unwrap()
}

#[test]
fn edm_ddpmpp_cifar10_has_the_reference_parameter_count() {
    // tests/ddpmpp_param_count.py replays the arithmetic of NVlabs/edm's SongUNet constructor:
    //   augment_dim 0: 55,732,739   augment_dim 9 (EDM's released CIFAR-10 models): 55,733,891.
    // The difference, 1,152 = 9 × 128, is `map_augment` (a bias-free Linear(9, 128) for augmentation
    // labels), which we do not build: we do not feed augmentation labels.
    assert_eq!(count(&DdpmppConfig::edm_ddpmpp_cifar10()), 55_732_739);
}

#[test]
fn ambient_celeba64_has_the_reference_parameter_count() {
    // tests/ddpmpp_param_count.py, with the Ambient Diffusion code's gate_weight on every convolution:
    //   reference (img_channels = 6 in and out, the last 3 outputs discarded): 118,087,814;
    //   ours (6 in, 3 out): 118,080,899. The difference, 6,915 = 2 × (3 · 128 · 9) + 3, is the weight,
    //   gate weight and bias of the 3 unused output channels of `dec.64x64_aux_conv`.
    assert_eq!(count(&DdpmppConfig::ambient_celeba64()), 118_080_899);
}

#[test]
fn gated_convolutions_double_the_convolution_weights() {
    let plain = DdpmppConfig { extra_in_channels: 1, ..small() };
    let (ps, _) = build(&plain, 0);
    let conv_weights = |pred: &dyn Fn(&str) -> bool| -> usize {
        ps.iter()
            .filter(|(n, p)| n.ends_with(".weight") && p.dims().len() == 4 && pred(n))
            .map(|(_, p)| p.numel())
            .sum()
    };
    let block3x3 = conv_weights(&|n| n.ends_with(".conv0.weight") || n.ends_with(".conv1.weight"));
    let all = conv_weights(&|_| true);
    assert!(block3x3 > 0 && all > block3x3);

    let gated = |scope| DdpmppConfig { gated: true, gate_scope: scope, ..plain.clone() };
    assert_eq!(count(&gated(GateScope::Block3x3)), ps.num_scalars() + block3x3);
    assert_eq!(count(&gated(GateScope::AllConvs)), ps.num_scalars() + all);
    // The gate follows the reference's naming and shapes.
    let (gps, _) = build(&gated(GateScope::AllConvs), 0);
    for name in
        ["enc.16x16_conv", "enc.16x16_block0.conv0", "enc.8x8_down.skip", "dec.8x8_in0.qkv", "dec.16x16_aux_conv"]
    {
        let w = gps.get(&format!("{name}.weight")).unwrap();
        let g = gps.get(&format!("{name}.gate_weight")).unwrap_or_else(|| panic!("no {name}.gate_weight"));
        assert_eq!(w.dims(), g.dims());
    }
    // Double-sigmoid changes the function, not the parameters.
    let double = DdpmppConfig { double_sigmoid: true, ..gated(GateScope::AllConvs) };
    assert_eq!(count(&double), ps.num_scalars() + all);
}

#[test]
fn parameter_names_follow_the_reference_state_dict() {
    let (ps, _) = build(&DdpmppConfig::tiny(), 0);
    for name in [
        "map_layer0.weight",
        "map_layer1.bias",
        "enc.16x16_conv.weight",
        "enc.16x16_block0.norm0.weight",
        "enc.16x16_block0.affine.weight",
        "enc.8x8_down.conv0.weight",
        "enc.8x8_down.skip.weight",
        "enc.8x8_block0.skip.weight",
        "enc.8x8_block0.qkv.weight",
        "enc.8x8_block0.norm2.bias",
        "enc.8x8_block0.proj.weight",
        "dec.8x8_in0.qkv.bias",
        "dec.8x8_in1.conv1.weight",
        "dec.8x8_block1.proj.weight",
        "dec.16x16_up.skip.weight",
        "dec.16x16_block1.conv1.bias",
        "dec.16x16_aux_norm.weight",
        "dec.16x16_aux_conv.weight",
    ] {
        assert!(ps.get(name).is_some(), "missing {name}; have {:?}", ps.iter().map(|(n, _)| n).collect::<Vec<_>>());
    }
    // Decoder blocks other than the last of a level have no attention; in1 has none; blocks that keep
    // their width have no skip projection.
    for absent in ["dec.8x8_block0.qkv.weight", "dec.8x8_in1.qkv.weight", "enc.16x16_block0.skip.weight"] {
        assert!(ps.get(absent).is_none(), "unexpected {absent}");
    }
    // The reference's initialisation: zero biases, unit group-norm scales, qkv weights [3C, C, 1, 1].
    assert!(ps.get("enc.8x8_block0.conv0.bias").unwrap().to_vec_f64().unwrap().iter().all(|&b| b == 0.0));
    assert_eq!(ps.get("enc.8x8_block0.qkv.weight").unwrap().dims(), &[192, 64, 1, 1]);
    let aux = ps.get("dec.16x16_aux_conv.weight").unwrap().to_vec_f64().unwrap();
    assert!(aux.iter().all(|w| w.abs() < 1e-5), "aux_conv is initialised at 1e-5 scale");
}

#[test]
fn configurations_by_name() {
    for name in configs::EDM_NAMES {
        configs::edm_by_name(name).unwrap().validate().unwrap();
    }
    let err = configs::edm_by_name("huge").unwrap_err().to_string();
    assert!(
        err.contains("tiny-edm") && err.contains("ambient-celeba64") && err.contains("edm-ddpmpp-cifar10"),
        "{err}"
    );
    let bad = DdpmppConfig { resolution: 18, channel_mult: vec![1, 2, 2], ..small() };
    assert!(bad.validate().unwrap_err().to_string().contains("halved"));
}

#[test]
fn the_embedding_is_edms_positional_embedding_with_swapped_halves() {
    // EDM: freqs = (1/10000)^(k / (half - 1)) (endpoint=True), [cos, sin], then SongUNet flips the halves.
    let t = [-1.7, 0.0, 0.3, 2.5];
    let dim = 16;
    let half = dim / 2;
    let got = embedding::sinusoidal_embedding(
        &Tensor::from_f64(&t, [4], DType::F64, &Device::Cpu).unwrap(),
        dim,
        embedding::EmbeddingKind::Ddim,
    )
    .unwrap()
    .to_vec_f64()
    .unwrap();
    for (i, &tv) in t.iter().enumerate() {
        let freqs: Vec<f64> = (0..half).map(|k| (1.0f64 / 10000.0).powf(k as f64 / (half - 1) as f64)).collect();
        let edm: Vec<f64> = freqs.iter().map(|f| (tv * f).cos()).chain(freqs.iter().map(|f| (tv * f).sin())).collect();
        let swapped: Vec<f64> = edm[half..].iter().chain(&edm[..half]).copied().collect();
        for k in 0..dim {
            assert!((got[i * dim + k] - swapped[k]).abs() < 1e-12, "t {tv} channel {k}");
        }
    }
}

#[test]
fn qkv_weights_keep_the_reference_interleaving() {
    // The reference reshapes the qkv output to [N·heads, C/heads, 3, T]: channel 3c + j is q (j = 0),
    // k (1) or v (2) of channel c (one head). With every k row zeroed the attention is uniform, so the q
    // rows cannot matter; zeroing the contiguous middle third instead (a [q; k; v] block layout) leaves
    // them mattering.
    let cfg = DdpmppConfig { attn_resolutions: vec![8, 16], ..small() };
    let mut ps = ParamStore::new();
    let net = DdpmppUnet::new(&cfg, &mut ps, 0, &Device::Cpu, DType::F64).unwrap();
    let x = randn(&[2, 1, 16, 16], &mut rng(20));
    let t = Tensor::from_f64(&[0.3, -1.0], [2], DType::F64, &Device::Cpu).unwrap();
    let run_with = |is_k: &dyn Fn(usize, usize) -> bool, is_q: &dyn Fn(usize, usize) -> bool, q_seed: u64| {
        perturb(&ps, 0.2, 21);
        let mut r = rng(q_seed);
        for (name, p) in ps.iter().filter(|(n, _)| n.contains(".qkv.")) {
            let rows = p.dims()[0];
            let cols = p.numel() / rows;
            let mut v = p.to_vec_f64().unwrap();
            let fresh = randn(&[v.len()], &mut r).to_vec_f64().unwrap();
            for row in 0..rows {
                for col in 0..cols {
                    let i = row * cols + col;
                    if is_k(row, rows) {
                        v[i] = 0.0;
                    } else if is_q(row, rows) {
                        v[i] = fresh[i];
                    }
                }
            }
            p.assign(&Tensor::from_f64(&v, p.shape().clone(), DType::F64, &Device::Cpu).unwrap()).unwrap();
            assert!(name.ends_with("weight") || name.ends_with("bias"));
        }
        net.forward(&x, &t, None).unwrap().to_vec_f64().unwrap()
    };
    let max_diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    let interleaved_k = |row: usize, _: usize| row % 3 == 1;
    let interleaved_q = |row: usize, _: usize| row.is_multiple_of(3);
    let a = run_with(&interleaved_k, &interleaved_q, 1);
    let b = run_with(&interleaved_k, &interleaved_q, 2);
    assert!(max_diff(&a, &b) < 1e-12, "q rows mattered with k rows zeroed: {}", max_diff(&a, &b));
    let block_k = |row: usize, rows: usize| (rows / 3..2 * rows / 3).contains(&row);
    let block_q = |row: usize, rows: usize| row < rows / 3;
    let a = run_with(&block_k, &block_q, 1);
    let b = run_with(&block_k, &block_q, 2);
    assert!(max_diff(&a, &b) > 1e-6, "the control should depend on its q rows");
}

#[test]
fn forward_shapes_and_bad_inputs() {
    let cfg = DdpmppConfig { extra_in_channels: 1, gated: true, ..small() };
    let (_, net) = build(&cfg, 0);
    let x = f32_randn(&[3, 2, 16, 16], 1);
    let t = Tensor::from_f32(&[-2.0, 0.0, 1.0], [3], &Device::Cpu).unwrap();
    assert_eq!(net.forward(&x, &t, None).unwrap().dims(), &[3, 1, 16, 16]);
    assert_eq!(net.forward(&x, &t, Some(TrainSeed::Host(7))).unwrap().dims(), &[3, 1, 16, 16]);
    let err = net.forward(&f32_randn(&[3, 1, 16, 16], 2), &t, None).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");

    let d = EdmDenoiser::new(net, Edm::default());
    let img = f32_randn(&[3, 1, 16, 16], 3);
    let m = mask(&[3, 1, 16, 16], 0.5, &mut rng(4)).to_dtype(DType::F32).unwrap();
    assert_eq!(d.denoise(&img, &[0.1, 1.0, 10.0], Some(&m), None).unwrap().dims(), &[3, 1, 16, 16]);
    let e = |r: anyhow::Result<Tensor>| r.unwrap_err().to_string();
    assert!(e(d.denoise(&img, &[0.1, 1.0, 10.0], None, None)).contains("no mask"));
    assert!(e(d.denoise(&img, &[0.1, 1.0], Some(&m), None)).contains("2 noise levels"));
    assert!(e(d.denoise(&img, &[0.1, 0.0, 1.0], Some(&m), None)).contains("positive"));
    let wrong = f32_randn(&[3, 2, 16, 16], 5);
    assert!(e(d.denoise(&img, &[0.1, 1.0, 10.0], Some(&wrong), None)).contains("mask of shape"));
}

#[test]
fn preconditioning_tends_to_the_identity_as_sigma_vanishes() {
    // c_skip -> 1 and c_out -> 0: D(x; σ) -> x for any network, here one with large random weights.
    let cfg = DdpmppConfig { gated: true, ..small() };
    let mut ps = ParamStore::new();
    let net = DdpmppUnet::new(&cfg, &mut ps, 0, &Device::Cpu, DType::F64).unwrap();
    perturb(&ps, 0.3, 9);
    let d = EdmDenoiser::new(net, Edm::default());
    let x = randn(&[2, 1, 16, 16], &mut rng(10));
    let xs = x.to_vec_f64().unwrap();
    let dist = |sigma: f64| {
        let y = d.denoise(&x, &[sigma, sigma], None, None).unwrap().to_vec_f64().unwrap();
        y.iter().zip(&xs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    };
    assert!(dist(1.0) > 0.05, "the perturbed network must do something at σ = 1: {}", dist(1.0));
    let mut last = f64::INFINITY;
    for sigma in [1e-2, 1e-4, 1e-6, 1e-8] {
        let e = dist(sigma);
        // |D - x| <= (1 - c_skip)|x| + c_out |F| = O(σ²) + O(σ) with |F| bounded.
        assert!(e < 50.0 * sigma && e < last, "σ = {sigma}: max |D - x| = {e}");
        last = e;
    }
    assert!(last < 1e-6);
}

#[test]
fn mask_channels_change_the_output() {
    let cfg = DdpmppConfig { extra_in_channels: 1, gated: true, double_sigmoid: true, ..small() };
    let mut ps = ParamStore::new();
    let net = DdpmppUnet::new(&cfg, &mut ps, 0, &Device::Cpu, DType::F64).unwrap();
    perturb(&ps, 0.2, 11);
    let mut d = EdmDenoiser::new(net, Edm::default());
    let x = randn(&[2, 1, 16, 16], &mut rng(12));
    let m1 = mask(&[2, 1, 16, 16], 0.5, &mut rng(13));
    let m2 = mask(&[2, 1, 16, 16], 0.5, &mut rng(14));
    let run = |d: &EdmDenoiser, m: &Tensor| d.denoise(&x, &[0.5, 2.0], Some(m), None).unwrap().to_vec_f64().unwrap();
    let max_diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    let (a, b) = (run(&d, &m1), run(&d, &m2));
    assert!(max_diff(&a, &b) > 1e-3, "mask had no effect: {}", max_diff(&a, &b));
    // The reference's variant (mask scaled by c_in) is a different function of the same mask.
    d.scale_mask = true;
    assert!(max_diff(&run(&d, &m1), &a) > 1e-3);
}

#[test]
fn a_tiny_edm_denoiser_fits_eight_images() {
    let (ps, net) = build(&small(), 0);
    let d = EdmDenoiser::new(net, Edm::default());
    let data = gsure::data::phantoms(8, 16, 3);
    let x = Tensor::from_f32(&data.images, [8, 1, 16, 16], &Device::Cpu).unwrap();
    let sigma = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5];
    let noise = f32_randn(&[8, 1, 16, 16], 2);
    let s = Tensor::from_f64(&sigma, [8], DType::F32, &Device::Cpu).unwrap();
    let noisy = ops::add(&x, &ops::mul_along(&noise, &s, 0).unwrap()).unwrap();
    let mut opt = gsure::train::AdamW::new(gsure::train::AdamConfig { lr: 2e-3, ..Default::default() }, &ps).unwrap();
    let mut losses = Vec::new();
    for _ in 0..40 {
        let err = ops::sub(&d.denoise(&noisy, &sigma, None, None).unwrap(), &x).unwrap();
        let loss = ops::mean_all(&ops::square(&err).unwrap()).unwrap();
        losses.push(loss.item().unwrap());
        let g = backward(&loss).unwrap();
        opt.step(&ps, &g, 2e-3, 1.0).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < first / 2.5, "loss fell only from {first} to {last}: {losses:?}");
}

#[test]
fn cuda_parity_of_a_whole_ddpmpp() {
    // Plain tiny-edm, and a gated (double sigmoid) variant with a mask channel through the preconditioning.
    let plain = DdpmppConfig::tiny();
    let gated =
        DdpmppConfig { extra_in_channels: 1, gated: true, double_sigmoid: true, dropout: 0.0, ..DdpmppConfig::tiny() };
    let x = randn(&[2, 1, 16, 16], &mut rng(3));
    let m = mask(&[2, 1, 16, 16], 0.5, &mut rng(4));
    let t = Tensor::from_f64(&[-1.5, 0.7], [2], DType::F64, &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let tol = if dtype == DType::BF16 { 6e-2 } else { 1e-3 };
        parity(
            "ddpm++ (tiny-edm)",
            |inp| {
                let mut store = ParamStore::new();
                let dev = inp[0].device().clone();
                // Parameters built on each device from the same seed, then made non-trivial the same way.
                let net = DdpmppUnet::new(&plain, &mut store, 0, &dev, DType::F32)?;
                perturb(&store, 0.1, 5);
                let tt = inp[1].to_dtype(if inp[0].dtype() == DType::F64 { DType::F64 } else { DType::F32 })?;
                net.forward(&inp[0], &tt, None)
            },
            &[x.clone(), t.clone()],
            &[0],
            dtype,
            Some(tol),
        )
        .unwrap();
        parity(
            "edm-preconditioned gated ddpm++ with a mask",
            |inp| {
                let mut store = ParamStore::new();
                let dev = inp[0].device().clone();
                let net = DdpmppUnet::new(&gated, &mut store, 0, &dev, DType::F32)?;
                perturb(&store, 0.1, 6);
                EdmDenoiser::new(net, Edm::default()).denoise(&inp[0], &[0.3, 4.0], Some(&inp[1]), None)
            },
            &[x.clone(), m.clone()],
            &[0],
            dtype,
            Some(tol),
        )
        .unwrap();
    }
}
