//! dropout: the counter-based mask (pinned hash, same on CPU and CUDA bit for bit), its statistics
//! (kept fraction and mean within binomial bounds), gradients, and bad input.
use gsure::ops::dropout::{dropout, Mask};
use gsure::testing::{gpu_or_skip, gradcheck, parity, randn, rng};
use gsure::{DType, Device, Tensor};

fn ones(n: usize, dtype: DType, device: &Device) -> Tensor {
    Tensor::full([n], 1.0, dtype, device).unwrap()
}

#[test]
fn hash_is_splitmix64() {
    // The first splitmix64 output for state 0 (the published test value).
    assert_eq!(Mask::new(0.5, 0).key, 0xE220_A839_7B1D_CDAF);
    let m = Mask::new(0.25, 7);
    assert_eq!(m.threshold, 1 << 22);
    assert_eq!(m.scale, 1.0 / 0.75);
}

#[test]
fn p_zero_is_identity_and_bad_p_is_refused() {
    let mut r = rng(1);
    let x = randn(&[3, 4], &mut r);
    let y = dropout(&x, 0.0, 5).unwrap();
    assert_eq!(y.id(), x.id(), "p = 0 must return the input itself");
    for p in [-0.1, 1.0, 1.5, f64::NAN] {
        let err = dropout(&x, p, 5).unwrap_err().to_string();
        assert!(err.contains("dropout") && err.contains("[0, 1)") && err.contains("[3, 4]"), "{err}");
    }
}

#[test]
fn gradients() {
    let mut r = rng(2);
    for shape in [&[1usize][..], &[7], &[3, 5, 7], &[2, 3, 9, 11]] {
        for p in [0.1, 0.5] {
            gradcheck(|t| dropout(&t[0], p, 42), &[randn(shape, &mut r)], &[0])
                .unwrap_or_else(|e| panic!("{shape:?} p={p}: {e:#}"));
        }
    }
}

#[test]
fn mask_follows_the_rule_and_the_seed() {
    let n = 10_000;
    let x = ones(n, DType::F32, &Device::Cpu);
    let y = dropout(&x, 0.3, 11).unwrap().to_vec_f64().unwrap();
    let m = Mask::new(0.3, 11);
    for (i, v) in y.iter().enumerate() {
        let want = if m.keeps(i as u64) { (1.0 / 0.7f64) as f32 as f64 } else { 0.0 };
        assert_eq!(*v, want, "element {i}");
    }
    assert_eq!(y, dropout(&x, 0.3, 11).unwrap().to_vec_f64().unwrap(), "same seed, same mask");
    let other = dropout(&x, 0.3, 12).unwrap().to_vec_f64().unwrap();
    let differ = y.iter().zip(&other).filter(|(a, b)| (**a == 0.0) != (**b == 0.0)).count();
    // Independent masks differ at a fraction 2 p (1 - p) = 0.42 of the elements.
    assert!(differ > n / 3, "seeds 11 and 12 give nearly the same mask ({differ} of {n} differ)");
}

#[test]
fn kept_fraction_and_mean_are_within_binomial_bounds() {
    let n = 400_003;
    let x = ones(n, DType::F64, &Device::Cpu);
    for (p, seed) in [(0.1, 1u64), (0.5, 2), (0.9, 3), (0.37, u64::MAX)] {
        let y = dropout(&x, p, seed).unwrap().to_vec_f64().unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!((kept - n as f64 * (1.0 - p)).abs() < 5.0 * sd, "p={p}: kept {kept} of {n}");
        // Each output is 1/(1-p) with probability 1-p, else 0: mean 1, variance p/(1-p).
        let mean = y.iter().sum::<f64>() / n as f64;
        let se = (p / (1.0 - p) / n as f64).sqrt();
        assert!((mean - 1.0).abs() < 5.0 * se, "p={p}: mean {mean}");
    }
}

#[test]
fn cuda_mask_is_bit_identical_to_cpu() {
    let Some(gpu) = gpu_or_skip("dropout mask parity") else { return };
    let n = (1 << 20) + 3;
    for p in [0.1, 0.5, 0.77] {
        let cpu = dropout(&ones(n, DType::F32, &Device::Cpu), p, 99).unwrap().to_vec_f32().unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let dev = dropout(&ones(n, dtype, &gpu), p, 99).unwrap().to_vec_f32().unwrap();
            let scale = (1.0 / (1.0 - p)) as f32;
            let want_kept = if dtype == DType::F32 { scale } else { half::bf16::from_f32(scale).to_f32() };
            for i in 0..n {
                assert_eq!(cpu[i] == 0.0, dev[i] == 0.0, "p={p} {dtype}: element {i} masked differently");
                if dev[i] != 0.0 {
                    assert_eq!(dev[i], want_kept, "p={p} {dtype}: element {i}");
                }
            }
        }
    }
}

#[test]
fn cuda_parity() {
    let mut r = rng(3);
    for dtype in [DType::F32, DType::BF16] {
        let tol = if dtype == DType::F32 { Some(1e-6) } else { None };
        for shape in [&[1usize][..], &[1000], &[3, 5, 7], &[2, 3, 17, 9], &[16, 64, 32, 32]] {
            for p in [0.1, 0.5] {
                parity("dropout", |t| dropout(&t[0], p, 1234), &[randn(shape, &mut r)], &[0], dtype, tol).unwrap();
            }
        }
    }
}

/// A seed in device memory (how a step replayed from a CUDA graph gets new masks) drops exactly what the
/// same seed given by value drops, forward and backward, for several layers of one step.
#[test]
fn a_device_seed_masks_as_the_host_seed_does_on_cuda() {
    use gsure::nn::{layer_seed, TrainSeed};
    use gsure::ops::dropout::Seed;
    let Some(gpu) = gpu_or_skip("dropout with a device seed") else { return };
    let g = gpu.gpu().unwrap().clone();
    let n = 10_007;
    for step_seed in [0u64, 7, u64::MAX - 3] {
        let words = g.upload(&[step_seed]).unwrap();
        for layer in [0u64, 1, 23] {
            let x = ones(n, DType::F32, &gpu).set_requires_grad(true);
            let host = dropout(&x, 0.3, layer_seed(step_seed, layer)).unwrap();
            let device = dropout(&x, 0.3, TrainSeed::Device(words.ptr()).for_layer(layer)).unwrap();
            assert_eq!(host.to_vec_f32().unwrap(), device.to_vec_f32().unwrap(), "seed {step_seed} layer {layer}");
            let gh = gsure::backward(&gsure::ops::sum_all(&host).unwrap()).unwrap();
            let gd = gsure::backward(&gsure::ops::sum_all(&device).unwrap()).unwrap();
            let (gh, gd) = (gh.get(&x).unwrap().to_vec_f32().unwrap(), gd.get(&x).unwrap().to_vec_f32().unwrap());
            assert_eq!(gh, gd, "seed {step_seed} layer {layer}: backward");
            assert_eq!(TrainSeed::Host(step_seed).for_layer(layer), Seed::Host(layer_seed(step_seed, layer)));
        }
    }
    // The CPU has no device memory to read a seed from.
    let x = ones(8, DType::F32, &Device::Cpu);
    assert!(dropout(&x, 0.3, Seed::Device { step_seed: 0x1000, layer: 0 }).is_err());
}
