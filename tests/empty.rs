//! Empty tensors (a batch of 0, 0 rows or columns, 0 channels, parameters of 0 elements) through the
//! public op API, on the CPU and on the GPU (those tests skip, saying so, without one). Ops that take them
//! return empty (or all-zero) results and gradients; on CUDA they must not launch a grid of 0 blocks,
//! which the driver refuses (CUDA_ERROR_INVALID_VALUE). Ops that refuse empty inputs say so with an
//! error naming the op, never a panic.
use gsure::ops::{self, EmbeddingKind};
use gsure::testing::gpu_or_skip;
use gsure::train::{clip_grad_norm, AdamConfig, AdamW, Ema};
use gsure::{backward, DType, Device, ParamStore, Tensor};

/// A trainable leaf of `shape` filled with `value`.
fn leaf(shape: &[usize], value: f64, dt: DType, dev: &Device) -> Tensor {
    Tensor::full(shape.to_vec(), value, dt, dev).unwrap().set_requires_grad(true)
}

/// Checks `out` has `shape` (on `dev`), backpropagates sum(out) and checks every leaf gets a gradient of
/// its own shape, dtype and device whose entries are all `grad_value` (vacuous for an empty leaf).
fn check(what: &str, out: &Tensor, shape: &[usize], leaves: &[(&Tensor, f64)], dev: &Device) {
    assert_eq!(out.dims(), shape, "{what}: output shape");
    assert_eq!(out.device(), dev, "{what}: output device");
    let loss = ops::sum_all(out).unwrap_or_else(|e| panic!("{what}: sum_all: {e:#}"));
    let g = backward(&loss).unwrap_or_else(|e| panic!("{what}: backward: {e:#}"));
    let total = loss.item().unwrap();
    assert!(total.is_finite(), "{what}: sum of the output is {total}");
    for (i, (x, value)) in leaves.iter().enumerate() {
        let gx = g.get(x).unwrap_or_else(|| panic!("{what}: no gradient for input {i}"));
        assert_eq!((gx.shape(), gx.dtype(), gx.device()), (x.shape(), x.dtype(), x.device()), "{what}: gradient {i}");
        let v = gx.to_vec_f64().unwrap();
        assert!(v.iter().all(|g| g == value), "{what}: gradient {i} should be all {value}, got {v:?}");
    }
}

/// Every op that takes empty tensors, forward and backward, in `dt` on `dev`.
fn ops_take_empty_tensors(dev: &Device, dt: DType) {
    let e = |shape: &[usize]| leaf(shape, 0.0, dt, dev);
    let x = e(&[0, 3]);

    // Elementwise (grid-stride kernels), dropout.
    for (name, y) in [
        ("silu", ops::silu(&x)),
        ("sigmoid", ops::sigmoid(&x)),
        ("exp", ops::exp(&x)),
        ("square", ops::square(&x)),
        ("affine", ops::affine(&x, 2.0, 1.0)),
        ("scale", ops::scale(&x, 3.0)),
        ("add", ops::add(&x, &x)),
        ("sub", ops::sub(&x, &x)),
        ("mul", ops::mul(&x, &x)),
        ("where", ops::where_(&x.detach(), &x, &x)),
        ("dropout", ops::dropout(&x, 0.5, 7)),
    ] {
        check(name, &y.unwrap(), &[0, 3], &[(&x, 0.0)], dev);
    }

    // Broadcasts along an axis: an empty batch, and an empty axis.
    let s = leaf(&[3], 1.5, dt, dev);
    check("add_along", &ops::add_along(&x, &s, 1).unwrap(), &[0, 3], &[(&x, 0.0), (&s, 0.0)], dev);
    check("mul_along", &ops::mul_along(&x, &s, 1).unwrap(), &[0, 3], &[(&x, 0.0), (&s, 0.0)], dev);
    let (x3, s0) = (e(&[2, 0, 5]), e(&[0]));
    check("mul_along (empty axis)", &ops::mul_along(&x3, &s0, 1).unwrap(), &[2, 0, 5], &[(&x3, 0.0), (&s0, 0.0)], dev);

    // Reductions: nothing to sum gives 0; an empty kept axis gives an empty result.
    check("sum_all", &ops::sum_all(&x).unwrap(), &[1], &[(&x, 0.0)], dev);
    assert_eq!(ops::sum_all(&x).unwrap().item().unwrap(), 0.0);
    let kept = ops::sum_except(&x, 1).unwrap();
    assert_eq!(kept.to_vec_f64().unwrap(), vec![0.0; 3], "sum over an empty batch");
    check("sum_except (empty batch)", &kept, &[3], &[(&x, 0.0)], dev);
    check("sum_except (empty axis)", &ops::sum_except(&x3, 1).unwrap(), &[0], &[(&x3, 0.0)], dev);
    check("sum_per_example", &ops::sum_per_example(&x).unwrap(), &[0], &[(&x, 0.0)], dev);

    // Matrix products: 0 rows, 0 columns, and an empty inner dimension (a zero matrix, and 0 blocks of K).
    let (a, b) = (leaf(&[2, 3], 0.5, dt, dev), leaf(&[3, 4], 0.25, dt, dev));
    check("matmul (M = 0)", &ops::matmul(&x, &b).unwrap(), &[0, 4], &[(&x, 0.0), (&b, 0.0)], dev);
    let b0 = e(&[3, 0]);
    check("matmul (N = 0)", &ops::matmul(&a, &b0).unwrap(), &[2, 0], &[(&a, 0.0), (&b0, 0.0)], dev);
    let (a0, b1) = (e(&[2, 0]), e(&[0, 4]));
    let c = ops::matmul(&a0, &b1).unwrap();
    assert_eq!(c.to_vec_f64().unwrap(), vec![0.0; 8], "a product over K = 0 is zero");
    check("matmul (K = 0)", &c, &[2, 4], &[(&a0, 0.0), (&b1, 0.0)], dev);
    let (w, bias) = (leaf(&[4, 3], 0.5, dt, dev), leaf(&[4], 1.0, dt, dev));
    // An empty batch: dW = dYᵀ X and db reduce over 0 rows, so they are zero.
    let y = ops::linear(&x, &w, Some(&bias)).unwrap();
    check("linear (empty batch)", &y, &[0, 4], &[(&x, 0.0), (&w, 0.0), (&bias, 0.0)], dev);

    // Group norm of an empty batch: empty output, zero parameter gradients.
    let (xn, gamma, beta) = (e(&[0, 4, 3, 3]), leaf(&[4], 1.0, dt, dev), leaf(&[4], 0.0, dt, dev));
    for silu in [false, true] {
        let y = ops::group_norm(&xn, &gamma, &beta, 2, 1e-5, silu).unwrap();
        check("group_norm (empty batch)", &y, &[0, 4, 3, 3], &[(&xn, 0.0), (&gamma, 0.0), (&beta, 0.0)], dev);
    }

    // Channel layout: empty batches, empty pieces, zero-height maps.
    let (p, q) = (e(&[0, 2, 4, 4]), e(&[0, 3, 4, 4]));
    check("concat_channels", &ops::concat_channels(&[&p, &q]).unwrap(), &[0, 5, 4, 4], &[(&p, 0.0), (&q, 0.0)], dev);
    let full = leaf(&[2, 3, 4, 4], 1.0, dt, dev);
    // No channel taken: the gradient pads back to a zero tensor of the input's (non-empty) shape.
    check("narrow_channels (len 0)", &ops::narrow_channels(&full, 1, 0).unwrap(), &[2, 0, 4, 4], &[(&full, 0.0)], dev);
    let pieces = ops::split_channels(&full, &[3, 0]).unwrap();
    assert_eq!(pieces[1].dims(), &[2, 0, 4, 4]);
    check("split_channels (empty piece)", &pieces[1], &[2, 0, 4, 4], &[(&full, 0.0)], dev);
    check("upsample_nearest2x", &ops::upsample_nearest2x(&p).unwrap(), &[0, 2, 8, 8], &[(&p, 0.0)], dev);
    let flat = e(&[2, 2, 0, 4]);
    check("upsample_nearest2x (H = 0)", &ops::upsample_nearest2x(&flat).unwrap(), &[2, 2, 0, 8], &[(&flat, 0.0)], dev);
    check("avg_pool2x", &ops::avg_pool2x(&p).unwrap(), &[0, 2, 2, 2], &[(&p, 0.0)], dev);

    // Time embeddings of no time steps.
    let t = e(&[0]);
    for kind in [EmbeddingKind::Ddim, EmbeddingKind::Edm] {
        check("sinusoidal_embedding", &ops::sinusoidal_embedding(&t, 8, kind).unwrap(), &[0, 8], &[(&t, 0.0)], dev);
    }
}

/// Ops whose contract is a non-empty input refuse an empty one with an error naming the op.
fn ops_refuse_empty_tensors(dev: &Device, dt: DType) {
    let z = |shape: &[usize]| Tensor::zeros(shape.to_vec(), dt, dev).unwrap();
    let refused = |what: &str, r: anyhow::Result<Tensor>| {
        let err = format!("{:#}", r.err().unwrap_or_else(|| panic!("{what} on an empty input should be refused")));
        assert!(err.contains(what), "{what}: {err}");
    };
    refused("conv2d", ops::conv2d(&z(&[0, 3, 8, 8]), &z(&[4, 3, 3, 3]), None, 1, 1));
    for shape in [[0, 4, 16], [2, 4, 0]] {
        let q = z(&shape);
        refused("attention", ops::attention(&q, &q, &q, 2));
    }
    let m = z(&[0, 3]);
    refused("masked_mse", ops::masked_mse(&m, &m, &m));
    let coef = ops::gsure_loss::GsureCoefs { c_fid: vec![], c_div: vec![] };
    refused("gsure_loss", ops::gsure_loss::gsure_loss(&m, &m, &m, &m, &m, None, &m, &coef));
    refused("fft2c", ops::fft::fft2c(&z(&[0, 2, 8, 8])));
}

/// AdamW, EMA and clipping over a parameter set that holds parameters of 0 elements.
fn training_steps_skip_empty_parameters(dev: &Device, dt: DType) {
    let mut ps = ParamStore::new();
    let a = ps.insert("a", &Tensor::zeros([0], dt, dev).unwrap()).unwrap();
    let b = ps.insert("b", &Tensor::full([3], 1.0, dt, dev).unwrap()).unwrap();
    let c = ps.insert("c", &Tensor::zeros([0, 4], dt, dev).unwrap()).unwrap();
    let mut opt = AdamW::new(AdamConfig { lr: 0.1, ..AdamConfig::default() }, &ps).unwrap();
    let mut ema = Ema::new(0.5, &ps).unwrap();
    for _ in 0..2 {
        let loss = ops::add(&ops::sum_all(&ops::square(&b).unwrap()).unwrap(), &ops::sum_all(&a).unwrap()).unwrap();
        let loss = ops::add(&loss, &ops::sum_all(&c).unwrap()).unwrap();
        let g = backward(&loss).unwrap();
        assert!(g.get(&a).is_some() && g.get(&c).is_some(), "empty parameters get (empty) gradients");
        let (norm, scale) = clip_grad_norm(&ps, &g, 1.0).unwrap();
        let expected = 2.0 * b.to_vec_f64().unwrap().iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - expected).abs() < 1e-5, "only b contributes to the norm: {norm} vs {expected}");
        opt.step(&ps, &g, 0.1, scale).unwrap();
        ema.update(&ps).unwrap();
    }
    assert_eq!((a.numel(), c.numel()), (0, 0));
    let bv = b.to_vec_f64().unwrap();
    assert!(bv.iter().all(|&v| v < 1.0 && v > 0.5), "b took two steps of about lr down: {bv:?}");
    let shadow: Vec<usize> = ema.shadow.iter().map(|(_, t)| t.numel()).collect();
    assert_eq!(shadow, vec![0, 3, 0]);
}

#[test]
fn empty_tensors_through_the_ops_on_the_cpu() {
    for dt in [DType::F64, DType::F32] {
        ops_take_empty_tensors(&Device::Cpu, dt);
        ops_refuse_empty_tensors(&Device::Cpu, dt);
    }
}

#[test]
fn empty_parameters_in_training_on_the_cpu() {
    for dt in [DType::F64, DType::F32] {
        training_steps_skip_empty_parameters(&Device::Cpu, dt);
    }
}

#[test]
fn empty_tensors_through_the_ops_on_cuda() {
    let Some(gpu) = gpu_or_skip("empty_tensors_through_the_ops_on_cuda") else { return };
    ops_take_empty_tensors(&gpu, DType::F32);
    ops_refuse_empty_tensors(&gpu, DType::F32);
    gpu.gpu().unwrap().synchronize().unwrap();
}

#[test]
fn empty_parameters_in_training_on_cuda() {
    let Some(gpu) = gpu_or_skip("empty_parameters_in_training_on_cuda") else { return };
    training_steps_skip_empty_parameters(&gpu, DType::F32);
    gpu.gpu().unwrap().synchronize().unwrap();
}
