//! The DDIM U-Net: the reference parameter counts, shapes, a tiny model that overfits 8 images, and
//! CPU/CUDA parity of a whole forward and backward.
use gsure::nn::{configs, DdimUnet, DdimUnetConfig};
use gsure::testing::{parity, randn, rng};
use gsure::{backward, ops, DType, Device, ParamStore, Tensor};

fn count(config: &DdimUnetConfig) -> usize {
    // Built on the CPU in f32: the counts do not depend on the device.
    let mut ps = ParamStore::new();
    DdimUnet::new(config, &mut ps, 0, &Device::Cpu, DType::F32).unwrap();
    ps.num_scalars()
}

#[test]
fn gsure_celeba32_has_the_reference_parameter_count() {
    assert_eq!(count(&DdimUnetConfig::gsure_celeba32()), 78_696_193);
}

#[test]
fn gsure_mri320_has_the_reference_parameter_count() {
    // docs/METHODS.md §8 quotes 113.7M; the exact count of the reference architecture is 113,670,914.
    assert_eq!(count(&DdimUnetConfig::gsure_mri320()), 113_670_914);
}

#[test]
fn parameter_names_follow_the_reference_state_dict() {
    let mut ps = ParamStore::new();
    DdimUnet::new(&DdimUnetConfig::tiny(), &mut ps, 0, &Device::Cpu, DType::F32).unwrap();
    for name in [
        "temb.dense.0.weight",
        "conv_in.weight",
        "down.0.block.0.norm1.weight",
        "down.0.downsample.conv.weight",
        "down.1.attn.0.q.weight",
        "mid.block_1.temb_proj.bias",
        "mid.attn_1.proj_out.weight",
        "up.0.block.1.nin_shortcut.weight",
        "up.1.upsample.conv.weight",
        "norm_out.bias",
        "conv_out.weight",
    ] {
        assert!(ps.get(name).is_some(), "missing {name}; have {:?}", ps.iter().map(|(n, _)| n).collect::<Vec<_>>());
    }
}

#[test]
fn unknown_configurations_list_the_known_ones() {
    let err = configs::by_name("huge").unwrap_err().to_string();
    assert!(err.contains("tiny") && err.contains("gsure-celeba32"), "{err}");
}

#[test]
fn forward_keeps_the_image_shape_and_refuses_wrong_inputs() {
    let mut ps = ParamStore::new();
    let net = DdimUnet::new(&DdimUnetConfig::tiny(), &mut ps, 0, &Device::Cpu, DType::F32).unwrap();
    let mut r = rng(1);
    let x = randn(&[3, 1, 16, 16], &mut r).to_dtype(DType::F32).unwrap();
    let t = Tensor::from_f32(&[0.0, 500.0, 999.0], [3], &Device::Cpu).unwrap();
    let y = net.forward(&x, &t, None).unwrap();
    assert_eq!(y.dims(), &[3, 1, 16, 16]);
    let bad = randn(&[3, 1, 8, 8], &mut r).to_dtype(DType::F32).unwrap();
    assert!(net.forward(&bad, &t, None).unwrap_err().to_string().contains("does not fit"));
}

#[test]
fn a_tiny_unet_overfits_eight_images() {
    let mut ps = ParamStore::new();
    let cfg = DdimUnetConfig { dropout: 0.0, ..DdimUnetConfig::tiny() };
    let net = DdimUnet::new(&cfg, &mut ps, 0, &Device::Cpu, DType::F32).unwrap();
    let data = gsure::data::phantoms(8, 16, 3);
    let x = Tensor::from_f32(&data.images, [8, 1, 16, 16], &Device::Cpu).unwrap();
    let t = Tensor::from_f32(&[100.0; 8], [8], &Device::Cpu).unwrap();
    let mut r = rng(2);
    let noisy =
        ops::add(&x, &ops::scale(&randn(&[8, 1, 16, 16], &mut r).to_dtype(DType::F32).unwrap(), 0.3).unwrap()).unwrap();
    let mut opt = gsure::train::AdamW::new(gsure::train::AdamConfig { lr: 2e-3, ..Default::default() }, &ps).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let loss =
            ops::mean_all(&ops::square(&ops::sub(&net.forward(&noisy, &t, None).unwrap(), &x).unwrap()).unwrap())
                .unwrap();
        losses.push(loss.item().unwrap());
        let g = backward(&loss).unwrap();
        opt.step(&ps, &g, 2e-3, 1.0).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < first / 10.0, "loss fell only from {first} to {last}: {losses:?}");
}

#[test]
fn cuda_parity_of_a_whole_unet() {
    let cfg = DdimUnetConfig { dropout: 0.0, ..DdimUnetConfig::tiny() };
    // Parity builds the model on each device from the same seed inside the closure, so parameters agree.
    let mut r = rng(3);
    let x = randn(&[2, 1, 16, 16], &mut r);
    let t = Tensor::from_f64(&[3.0, 700.0], [2], DType::F64, &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let tol = if dtype == DType::BF16 { 6e-2 } else { 1e-3 };
        parity(
            "ddim unet",
            |inp| {
                let mut store = ParamStore::new();
                let dev = inp[0].device().clone();
                let net = DdimUnet::new(&cfg, &mut store, 0, &dev, DType::F32)?;
                let tt = inp[1].to_dtype(DType::F32)?;
                net.forward(&inp[0], &tt, None)
            },
            &[x.clone(), t.clone()],
            &[0],
            dtype,
            Some(tol),
        )
        .unwrap();
    }
}

#[test]
fn every_named_configuration_validates_and_the_small_ones_run() {
    for name in configs::NAMES {
        configs::by_name(name).unwrap().validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    // tiny_at adds levels above 16×16 so that attention stays at 16×16.
    let mri64 = configs::by_name("tiny-mri64").unwrap();
    assert_eq!(
        (mri64.ch_mult.clone(), mri64.attn_resolutions.clone(), mri64.in_channels),
        (vec![1, 2, 2], vec![16], 2)
    );
    let t32 = configs::by_name("tiny32").unwrap();
    assert_eq!((t32.ch_mult.clone(), t32.in_channels, t32.resolution), (vec![1, 2], 1, 32));
    for name in ["tiny32", "tiny-mri32"] {
        let c = configs::by_name(name).unwrap();
        let mut ps = ParamStore::new();
        let net = DdimUnet::new(&c, &mut ps, 0, &Device::Cpu, DType::F32).unwrap();
        let x = randn(&[2, c.in_channels, c.resolution, c.resolution], &mut rng(1));
        let t = Tensor::from_f64(&[3.0, 700.0], [2], DType::F32, &Device::Cpu).unwrap();
        let y = net.forward(&x, &t, None).unwrap();
        assert_eq!(y.dims(), x.dims(), "{name}");
    }
}
