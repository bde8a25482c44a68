//! The U-Net's convolutions at batch 128: compute-bound, judged in TFLOP/s.
//! Params: conv2d {"n", "c_in", "h", "w", "c_out", "k", "stride", "pad", "bias"}.
use super::kernels::Kernels;
use crate::bench::BenchCase;
use crate::ops::conv::conv2d;
use crate::tensor::Tensor;
use rand::SeedableRng;

#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    kernels: Kernels,
) -> BenchCase {
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    let flops_fwd = 2.0 * (n * ho * wo * c_out * c_in * k * k) as f64;
    let (x_el, w_el, y_el) = ((n * c_in * h * w) as f64, (c_out * c_in * k * k) as f64, (n * c_out * ho * wo) as f64);
    BenchCase {
        op: "conv2d",
        label: format!("{n}x{c_in}x{h}x{w} -> {c_out} k{k} s{stride} p{pad}{}", kernels.suffix()),
        params: serde_json::json!({
            "n": n, "c_in": c_in, "h": h, "w": w, "c_out": c_out, "k": k, "stride": stride, "pad": pad, "bias": true
        }),
        flops_fwd,
        // dgrad and wgrad are each a GEMM as large as the forward.
        flops_bwd: 2.0 * flops_fwd,
        // fwd reads x, w, bias and writes y; bwd: dgrad reads dy, w and writes dx, wgrad reads x, dy and
        // writes dw, the bias gradient reads dy.
        elems_fwd: x_el + w_el + c_out as f64 + y_el,
        elems_bwd: (y_el + w_el + x_el) + (x_el + y_el + w_el) + (y_el + c_out as f64),
        skip: kernels.skip(),
        build: Box::new(move |dev, dt| {
            let mut r = rand::rngs::StdRng::seed_from_u64(7);
            let x = Tensor::randn([n, c_in, h, w], dt, dev, &mut r)?.set_requires_grad(true);
            let scale = 1.0 / ((c_in * k * k) as f64).sqrt();
            let wt = Tensor::rand_uniform([c_out, c_in, k, k], -scale, scale, dt, dev, &mut r)?.set_requires_grad(true);
            let b = Tensor::zeros([c_out], dt, dev)?.set_requires_grad(true);
            let scope = kernels.scope();
            Ok(Box::new(move || {
                let _ = &scope;
                conv2d(&x, &wt, Some(&b), stride, pad)
            }))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![
        conv(128, 128, 32, 32, 128, 3, 1, 1, Kernels::Selected),
        conv(128, 256, 16, 16, 256, 3, 1, 1, Kernels::Selected),
        conv(128, 256, 8, 8, 256, 3, 1, 1, Kernels::Selected),
        conv(128, 512, 4, 4, 512, 3, 1, 1, Kernels::Selected),
        conv(128, 128, 32, 32, 128, 3, 2, 1, Kernels::Selected),
        conv(128, 256, 16, 16, 128, 1, 1, 0, Kernels::Selected),
        // The wgmma implicit GEMMs (kernels/conv_wgmma.cu), at the two largest shapes.
        conv(128, 128, 32, 32, 128, 3, 1, 1, Kernels::Wgmma),
        conv(128, 256, 16, 16, 256, 3, 1, 1, Kernels::Wgmma),
    ]
}
