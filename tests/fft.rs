//! The centred unitary 2-D DFT (ops::fft): the CPU reference against a naive f64 DFT, unitarity, centring,
//! the adjoint identity, f64 gradient checks, CPU/CUDA parity (both CUDA paths), bad input.
use gsure::autograd::backward;
use gsure::ops::fft::cpu::naive_centred_dft;
use gsure::ops::fft::{cuda as fft_cuda, fft2c, ifft2c, masked_fft2c, masked_ifft2c};
use gsure::ops::sum_all;
use gsure::testing::{gradcheck, mask, parity, randn, rel_error, rng, uniform};
use gsure::{DType, Device, Tensor};

/// The centred 2-D DFT of every image of x [N, 2, H, W] from the definition, in f64: the naive 1-D centred
/// DFT along each row, then along each column (the 2-D kernel exp(σ2πi((k-c)(j-c)/W + (u-d)(i-d)/H))
/// separates), scaled by 1/√(HW).
fn naive_2d(x: &[f64], n: usize, h: usize, w: usize, inverse: bool) -> Vec<f64> {
    let hw = h * w;
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        let (re, im) = (&x[b * 2 * hw..b * 2 * hw + hw], &x[b * 2 * hw + hw..(b + 1) * 2 * hw]);
        let mut a: Vec<(f64, f64)> = (0..hw).map(|k| (re[k], im[k])).collect();
        for i in 0..h {
            let row = naive_centred_dft(&a[i * w..(i + 1) * w], inverse);
            a[i * w..(i + 1) * w].copy_from_slice(&row);
        }
        for j in 0..w {
            let col: Vec<(f64, f64)> = (0..h).map(|i| a[i * w + j]).collect();
            for (i, v) in naive_centred_dft(&col, inverse).into_iter().enumerate() {
                a[i * w + j] = v;
            }
        }
        let s = 1.0 / (hw as f64).sqrt();
        for k in 0..hw {
            out[b * 2 * hw + k] = a[k].0 * s;
            out[b * 2 * hw + hw + k] = a[k].1 * s;
        }
    }
    out
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cast(t: &Tensor, dt: DType) -> Tensor {
    Tensor::from_f64(&t.to_vec_f64().unwrap(), t.shape().clone(), dt, &Device::Cpu).unwrap()
}

/// A real mask [N, 1, H, W] like the MRI weights: zero or a positive weight.
fn weights(n: usize, h: usize, w: usize, r: &mut rand::rngs::StdRng) -> Tensor {
    let m = mask(&[n, 1, h, w], 0.6, r).to_vec_f64().unwrap();
    let s = uniform(&[n, 1, h, w], 0.5, 2.0, r).to_vec_f64().unwrap();
    let v: Vec<f64> = m.iter().zip(&s).map(|(a, b)| a * b).collect();
    Tensor::from_f64(&v, vec![n, 1, h, w], DType::F64, &Device::Cpu).unwrap()
}

const SIZES: &[(usize, usize)] = &[
    (1, 1),
    (2, 2),
    (3, 3),
    (5, 5),
    (8, 8),
    (12, 12),
    (15, 15),
    (30, 30),
    (64, 64),
    (6, 10),
    (10, 6),
    (1, 8),
    (9, 1),
    (4, 320),
    (320, 3),
    (25, 27),
    (16, 45),
];

#[test]
fn cpu_matches_the_naive_dft() {
    let mut r = rng(1);
    for &(h, w) in SIZES {
        let n = 2;
        let x = randn(&[n, 2, h, w], &mut r);
        let xv = x.to_vec_f64().unwrap();
        for inverse in [false, true] {
            let want = naive_2d(&xv, n, h, w, inverse);
            let got = if inverse { ifft2c(&x) } else { fft2c(&x) }.unwrap().to_vec_f64().unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-12, "{h}x{w} inverse={inverse}: f64 off the naive DFT by {err:.2e}");
            // f32: the same transform to f32 accuracy.
            let got32 = if inverse { ifft2c(&cast(&x, DType::F32)) } else { fft2c(&cast(&x, DType::F32)) }
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let e32 = rel_error(&got32, &want);
            assert!(e32 < 2e-6, "{h}x{w} inverse={inverse}: f32 off the naive DFT by {e32:.2e}");
        }
        // The masks: forward masks the output, the adjoint masks the input.
        let m = weights(n, h, w, &mut r);
        let mv = m.to_vec_f64().unwrap();
        let hw = h * w;
        let mask_of = |k: usize| mv[(k / (2 * hw)) * hw + k % hw];
        let fwd = masked_fft2c(&x, &m).unwrap().to_vec_f64().unwrap();
        let want: Vec<f64> = naive_2d(&xv, n, h, w, false).iter().enumerate().map(|(k, v)| v * mask_of(k)).collect();
        assert!(max_abs_diff(&fwd, &want) < 1e-12, "{h}x{w}: masked_fft2c");
        let masked_in: Vec<f64> = xv.iter().enumerate().map(|(k, v)| v * mask_of(k)).collect();
        let adj = masked_ifft2c(&x, &m).unwrap().to_vec_f64().unwrap();
        assert!(max_abs_diff(&adj, &naive_2d(&masked_in, n, h, w, true)) < 1e-12, "{h}x{w}: masked_ifft2c");
    }
}

#[test]
fn the_320_square_of_fastmri_matches_the_naive_dft() {
    let mut r = rng(2);
    let x = randn(&[1, 2, 320, 320], &mut r);
    let want = naive_2d(&x.to_vec_f64().unwrap(), 1, 320, 320, false);
    let err = max_abs_diff(&fft2c(&x).unwrap().to_vec_f64().unwrap(), &want);
    assert!(err < 1e-11, "320x320 off by {err:.2e}");
}

#[test]
fn unitary_and_inverse() {
    let mut r = rng(3);
    for &(h, w) in SIZES {
        let x = randn(&[3, 2, h, w], &mut r);
        let xv = x.to_vec_f64().unwrap();
        let y = fft2c(&x).unwrap();
        let yv = y.to_vec_f64().unwrap();
        assert!((norm(&yv) - norm(&xv)).abs() < 1e-12 * norm(&xv), "{h}x{w}: ‖F x‖ != ‖x‖");
        let back = ifft2c(&y).unwrap().to_vec_f64().unwrap();
        assert!(max_abs_diff(&back, &xv) < 1e-12, "{h}x{w}: Fᴴ F x != x");
        let fwd_of_inv = fft2c(&ifft2c(&x).unwrap()).unwrap().to_vec_f64().unwrap();
        assert!(max_abs_diff(&fwd_of_inv, &xv) < 1e-12, "{h}x{w}: F Fᴴ x != x");
    }
}

#[test]
fn centring_puts_dc_at_the_middle() {
    for &(h, w) in SIZES {
        let hw = h * w;
        // A constant image 2 + 1i: all its energy at k-space index (H/2, W/2), value (2 + i)·√(HW).
        let mut v = vec![2.0; hw];
        v.extend(vec![1.0; hw]);
        let y = fft2c(&Tensor::from_f64(&v, vec![1, 2, h, w], DType::F64, &Device::Cpu).unwrap())
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let dc = (h / 2) * w + w / 2;
        let s = (hw as f64).sqrt();
        for k in 0..hw {
            let (re, im) = if k == dc { (2.0 * s, s) } else { (0.0, 0.0) };
            assert!((y[k] - re).abs() < 1e-12 && (y[hw + k] - im).abs() < 1e-12, "{h}x{w}: k-space index {k}");
        }
        // A delta at the image centre has a flat real spectrum 1/√(HW) (no phase ramp: centring is right).
        let mut d = vec![0.0; 2 * hw];
        d[dc] = 1.0;
        let y = fft2c(&Tensor::from_f64(&d, vec![1, 2, h, w], DType::F64, &Device::Cpu).unwrap())
            .unwrap()
            .to_vec_f64()
            .unwrap();
        for k in 0..hw {
            assert!((y[k] - 1.0 / s).abs() < 1e-12 && y[hw + k].abs() < 1e-12, "{h}x{w}: delta, index {k}");
        }
    }
}

#[test]
fn adjoint_identity() {
    let mut r = rng(4);
    for &(h, w) in SIZES {
        let (x, y, m) = (randn(&[2, 2, h, w], &mut r), randn(&[2, 2, h, w], &mut r), weights(2, h, w, &mut r));
        let lhs = dot(&masked_fft2c(&x, &m).unwrap().to_vec_f64().unwrap(), &y.to_vec_f64().unwrap());
        let rhs = dot(&x.to_vec_f64().unwrap(), &masked_ifft2c(&y, &m).unwrap().to_vec_f64().unwrap());
        assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()), "{h}x{w}: ⟨M F x, y⟩ = {lhs} vs ⟨x, Fᴴ M y⟩ = {rhs}");
    }
}

#[test]
fn gradients() {
    let mut r = rng(5);
    for (n, h, w) in [(1, 1, 1), (2, 6, 10), (1, 5, 5), (2, 3, 4), (1, 15, 2)] {
        let inputs = [randn(&[n, 2, h, w], &mut r), weights(n, h, w, &mut r)];
        let tag = format!("{n}x2x{h}x{w}");
        gradcheck(|t| masked_fft2c(&t[0], &t[1]), &inputs, &[0])
            .unwrap_or_else(|e| panic!("masked_fft2c {tag}: {e:#}"));
        gradcheck(|t| masked_ifft2c(&t[0], &t[1]), &inputs, &[0])
            .unwrap_or_else(|e| panic!("masked_ifft2c {tag}: {e:#}"));
        gradcheck(|t| fft2c(&t[0]), &inputs[..1], &[0]).unwrap_or_else(|e| panic!("fft2c {tag}: {e:#}"));
        gradcheck(|t| ifft2c(&t[0]), &inputs[..1], &[0]).unwrap_or_else(|e| panic!("ifft2c {tag}: {e:#}"));
    }
}

#[test]
fn mask_gets_no_gradient() {
    let mut r = rng(6);
    let x = randn(&[1, 2, 6, 10], &mut r).set_requires_grad(true);
    let m = weights(1, 6, 10, &mut r).set_requires_grad(true);
    for f in [masked_fft2c, masked_ifft2c] {
        let g = backward(&sum_all(&f(&x, &m).unwrap()).unwrap()).unwrap();
        assert!(g.get(&x).is_some());
        assert!(g.get(&m).is_none(), "the mask must get no gradient");
    }
}

#[test]
fn bad_input_is_refused_with_op_and_shapes() {
    let z = |s: &[usize]| Tensor::zeros(s.to_vec(), DType::F64, &Device::Cpu).unwrap();
    let err = fft2c(&z(&[1, 2, 7, 8])).unwrap_err().to_string();
    assert!(err.contains("fft2c") && err.contains("7x8") && err.contains("2, 3 and 5"), "{err}");
    let err = masked_fft2c(&z(&[2, 2, 8, 14]), &z(&[2, 1, 8, 14])).unwrap_err().to_string();
    assert!(err.contains("masked_fft2c") && err.contains("[2, 2, 8, 14]") && err.contains("14"), "{err}");
    let err = masked_ifft2c(&z(&[2, 2, 8, 10]), &z(&[2, 1, 10, 8])).unwrap_err().to_string();
    assert!(err.contains("masked_ifft2c") && err.contains("[2, 1, 10, 8]") && err.contains("[2, 2, 8, 10]"), "{err}");
    let err = masked_fft2c(&z(&[2, 2, 8, 10]), &z(&[1, 1, 8, 10])).unwrap_err().to_string();
    assert!(err.contains("masked_fft2c") && err.contains("[1, 1, 8, 10]"), "{err}");
    let err = masked_fft2c(&z(&[2, 3, 8, 10]), &z(&[2, 1, 8, 10])).unwrap_err().to_string();
    assert!(err.contains("masked_fft2c") && err.contains("[2, 3, 8, 10]"), "{err}");
    let err = ifft2c(&z(&[2, 8, 10])).unwrap_err().to_string();
    assert!(err.contains("ifft2c") && err.contains("[2, 8, 10]"), "{err}");
    let err = fft2c(&z(&[0, 2, 8, 10])).unwrap_err().to_string();
    assert!(err.contains("fft2c") && err.contains("[0, 2, 8, 10]"), "{err}");
    let m32 = Tensor::zeros([2, 1, 8, 10], DType::F32, &Device::Cpu).unwrap();
    let err = masked_fft2c(&z(&[2, 2, 8, 10]), &m32).unwrap_err().to_string();
    assert!(err.contains("masked_fft2c") && err.contains("dtype"), "{err}");
}

#[test]
fn cuda_parity() {
    let mut r = rng(7);
    // 64², 12x20, 15x15, 6x10, 1x1 take the single-launch kernel; 128², 256², 320² (and 2x4096 with one row
    // per row tile) the two-pass kernels; then the small sizes again forced through the two-pass path.
    let sizes: &[(usize, usize, usize)] = &[
        (3, 64, 64),
        (2, 12, 20),
        (2, 15, 15),
        (1, 6, 10),
        (2, 1, 1),
        (2, 45, 80),
        (2, 128, 128),
        (2, 256, 256),
        (2, 320, 320),
        (1, 2, 4096),
        (1, 320, 5),
    ];
    let run = |r: &mut rand::rngs::StdRng, n: usize, h: usize, w: usize, tag: &str| {
        for dtype in [DType::F32, DType::BF16] {
            let inputs = [randn(&[n, 2, h, w], r), weights(n, h, w, r)];
            let name = format!("masked_fft2c {n}x2x{h}x{w} {tag}");
            parity(&name, |t| masked_fft2c(&t[0], &t[1]), &inputs, &[0], dtype, None).unwrap();
            let name = format!("masked_ifft2c {n}x2x{h}x{w} {tag}");
            parity(&name, |t| masked_ifft2c(&t[0], &t[1]), &inputs, &[0], dtype, None).unwrap();
            let name = format!("fft2c {n}x2x{h}x{w} {tag}");
            parity(&name, |t| fft2c(&t[0]), &inputs[..1], &[0], dtype, None).unwrap();
            let name = format!("ifft2c {n}x2x{h}x{w} {tag}");
            parity(&name, |t| ifft2c(&t[0]), &inputs[..1], &[0], dtype, None).unwrap();
        }
    };
    for &(n, h, w) in sizes {
        run(&mut r, n, h, w, "auto");
    }
    fft_cuda::force_path(fft_cuda::Path::TwoPass);
    for &(n, h, w) in &[(2, 64, 64), (2, 12, 20), (2, 15, 15), (2, 1, 1), (3, 30, 8)] {
        run(&mut r, n, h, w, "two-pass");
    }
    fft_cuda::force_path(fft_cuda::Path::Auto);
}
