//! masked_mse: f64 gradient checks, direct values, no gradient to the weight, CPU/CUDA parity, bad input.
use gsure::autograd::backward;
use gsure::ops::loss::masked_mse;
use gsure::ops::sum_all;
use gsure::testing::{gradcheck, mask, parity, randn, rng, uniform};
use gsure::{DType, Device, Tensor};

/// A weight like the objectives build: observation mask times a positive weighting.
fn weight(shape: &[usize], r: &mut rand::rngs::StdRng) -> Tensor {
    let m = mask(shape, 0.7, r).to_vec_f64().unwrap();
    let s = uniform(shape, 0.5, 2.0, r).to_vec_f64().unwrap();
    let v: Vec<f64> = m.iter().zip(&s).map(|(a, b)| a * b).collect();
    Tensor::from_f64(&v, shape.to_vec(), DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn gradients() {
    let mut r = rng(1);
    for shape in [&[1usize, 1][..], &[4], &[3, 5], &[2, 3, 5, 7]] {
        let inputs = [randn(shape, &mut r), randn(shape, &mut r), weight(shape, &mut r)];
        gradcheck(|t| masked_mse(&t[0], &t[1], &t[2]), &inputs, &[0, 1]).unwrap_or_else(|e| panic!("{shape:?}: {e:#}"));
        gradcheck(|t| masked_mse(&t[0], &t[1], &t[2]), &inputs, &[0]).unwrap();
        gradcheck(|t| masked_mse(&t[0], &t[1], &t[2]), &inputs, &[1]).unwrap();
    }
}

#[test]
fn values_match_the_definition_and_weight_gets_no_gradient() {
    let mut r = rng(2);
    let shape = [3, 2, 5];
    let (p, t, w) = (randn(&shape, &mut r), randn(&shape, &mut r), weight(&shape, &mut r));
    let loss = masked_mse(&p, &t, &w).unwrap();
    assert_eq!(loss.dims(), &[3]);
    let (pv, tv, wv, lv) =
        (p.to_vec_f64().unwrap(), t.to_vec_f64().unwrap(), w.to_vec_f64().unwrap(), loss.to_vec_f64().unwrap());
    for n in 0..3 {
        let direct: f64 = (n * 10..(n + 1) * 10).map(|i| wv[i] * (pv[i] - tv[i]).powi(2)).sum::<f64>() / 10.0;
        assert!((lv[n] - direct).abs() < 1e-12, "{} vs {direct}", lv[n]);
    }
    let (pl, wl) = (p.set_requires_grad(true), w.set_requires_grad(true));
    let grads = backward(&sum_all(&masked_mse(&pl, &t, &wl).unwrap()).unwrap()).unwrap();
    assert!(grads.get(&pl).is_some());
    assert!(grads.get(&wl).is_none(), "weight must get no gradient");
}

#[test]
fn bad_input_is_refused_with_op_and_shapes() {
    let mut r = rng(3);
    let a = randn(&[2, 3], &mut r);
    let err = masked_mse(&a, &randn(&[2, 4], &mut r), &a).unwrap_err().to_string();
    assert!(err.contains("masked_mse") && err.contains("[2, 3]") && err.contains("[2, 4]"), "{err}");
    let err = masked_mse(&a, &a, &randn(&[3, 2], &mut r)).unwrap_err().to_string();
    assert!(err.contains("masked_mse") && err.contains("weight") && err.contains("[3, 2]"), "{err}");
    let f32x = Tensor::zeros([2, 3], DType::F32, &Device::Cpu).unwrap();
    let err = masked_mse(&a, &f32x, &a).unwrap_err().to_string();
    assert!(err.contains("masked_mse") && err.contains("dtype"), "{err}");
    let empty = Tensor::zeros([0, 3], DType::F64, &Device::Cpu).unwrap();
    let err = masked_mse(&empty, &empty, &empty).unwrap_err().to_string();
    assert!(err.contains("masked_mse") && err.contains("[0, 3]"), "{err}");
}

#[test]
fn cuda_parity() {
    let mut r = rng(4);
    // [1, 5000], [3, 70001] and [64, 3, 64, 64] take the split-row path (partials + final pass); the
    // others one block per example.
    let shapes: &[&[usize]] =
        &[&[1, 1], &[7], &[3, 5, 7], &[2, 3, 17, 9], &[1, 5000], &[3, 70001], &[128, 1, 32, 32], &[64, 3, 64, 64]];
    for dtype in [DType::F32, DType::BF16] {
        for shape in shapes {
            let inputs = [randn(shape, &mut r), randn(shape, &mut r), weight(shape, &mut r)];
            let f = |t: &[Tensor]| masked_mse(&t[0], &t[1], &t[2]);
            parity("masked_mse", f, &inputs, &[0, 1], dtype, None).unwrap();
            parity("masked_mse dpred", f, &inputs, &[0], dtype, None).unwrap();
            parity("masked_mse dtarget", f, &inputs, &[1], dtype, None).unwrap();
        }
    }
}
