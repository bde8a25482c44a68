//! The fused FFT-masking kernels of the MRI operator at fastMRI-like sizes (64² to 320², batch 32).
//! Params: masked_fft2c / masked_ifft2c {"n", "h", "w"}: x [n, 2, h, w] complex images (or k-space), mask
//! [n, 1, h, w]. benches/torch_ops.py times cuFFT (fft2 with ortho norm between i/fftshift) plus the mask
//! multiply, on complex64 built from the 2-channel input.
use crate::bench::BenchCase;
use crate::ops::fft;
use crate::tensor::Tensor;
use rand::SeedableRng;

fn case(op: &'static str, n: usize, h: usize, w: usize) -> BenchCase {
    let px = (n * h * w) as f64;
    // The standard estimate 5 N log2 N per complex FFT of N = h*w points.
    let flops = 5.0 * px * ((h * w) as f64).log2();
    BenchCase {
        op,
        label: format!("{n}x2x{h}x{w}"),
        params: serde_json::json!({ "n": n, "h": h, "w": w }),
        flops_fwd: flops,
        flops_bwd: flops,
        // fwd reads x (2 channels) and the mask and writes y (2 channels); bwd the same with the gradient.
        elems_fwd: 5.0 * px,
        elems_bwd: 5.0 * px,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rand::rngs::StdRng::seed_from_u64(6);
            let x = Tensor::randn(vec![n, 2, h, w], dt, dev, &mut r)?.set_requires_grad(true);
            let mask = Tensor::rand_uniform(vec![n, 1, h, w], 0.0, 1.0, dt, dev, &mut r)?;
            Ok(Box::new(move || {
                if op == "masked_fft2c" {
                    fft::masked_fft2c(&x, &mask)
                } else {
                    fft::masked_ifft2c(&x, &mask)
                }
            }))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    let mut v = Vec::new();
    for op in ["masked_fft2c", "masked_ifft2c"] {
        for s in [64, 128, 256, 320] {
            v.push(case(op, 32, s, s));
        }
    }
    v
}
