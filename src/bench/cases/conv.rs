//! The U-Net's convolutions at batch 128: compute-bound, judged in TFLOP/s.
//! Params: conv2d {"n", "c_in", "h", "w", "c_out", "k", "stride", "pad", "bias", "per_image", "residual"}:
//! with `per_image` a [N, C_out] tensor (the time embedding) and with `residual` an output-shaped one (the
//! skip connection) are added to the output, in gsure in the convolution's epilogue, in the PyTorch
//! reference as the separate adds a residual block makes.
//! norm_conv2d {"n", "c_in", "h", "w", "c_out", "k", "stride", "pad", "groups"}: GroupNorm → SiLU → conv2d
//! (+ bias + per-image values), in gsure one op whose convolution normalises as it reads.
use super::kernels::Kernels;
use crate::bench::BenchCase;
use crate::ops::conv::{conv2d_with, norm_conv2d, Epilogue, InputNorm};
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
    extra: Extra,
) -> BenchCase {
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    let flops_fwd = 2.0 * (n * ho * wo * c_out * c_in * k * k) as f64;
    let (x_el, w_el, y_el) = ((n * c_in * h * w) as f64, (c_out * c_in * k * k) as f64, (n * c_out * ho * wo) as f64);
    BenchCase {
        op: "conv2d",
        label: format!("{n}x{c_in}x{h}x{w} -> {c_out} k{k} s{stride} p{pad}{}{}", extra.suffix(), kernels.suffix()),
        params: serde_json::json!({
            "n": n, "c_in": c_in, "h": h, "w": w, "c_out": c_out, "k": k, "stride": stride, "pad": pad, "bias": true,
            "per_image": extra == Extra::PerImage, "residual": extra == Extra::Residual,
            "tf32": kernels == Kernels::Tf32
        }),
        flops_fwd,
        // dgrad and wgrad are each a GEMM as large as the forward.
        flops_bwd: 2.0 * flops_fwd,
        // fwd reads x, w, bias and writes y; bwd: dgrad reads dy, w and writes dx, wgrad reads x, dy and
        // writes dw, the bias gradient reads dy.
        // The epilogue's operands add their reads to the forward (the residual's gradient is dy itself, the
        // per-image one a second sum of dy).
        elems_fwd: x_el + w_el + c_out as f64 + y_el + extra.elems_fwd(n * c_out, y_el),
        elems_bwd: (y_el + w_el + x_el)
            + (x_el + y_el + w_el)
            + (y_el + c_out as f64)
            + if extra == Extra::PerImage { y_el + (n * c_out) as f64 } else { 0.0 },
        skip: kernels.skip(),
        build: Box::new(move |dev, dt| {
            let mut r = rand::rngs::StdRng::seed_from_u64(7);
            let x = Tensor::randn([n, c_in, h, w], dt, dev, &mut r)?.set_requires_grad(true);
            let scale = 1.0 / ((c_in * k * k) as f64).sqrt();
            let wt = Tensor::rand_uniform([c_out, c_in, k, k], -scale, scale, dt, dev, &mut r)?.set_requires_grad(true);
            let b = Tensor::zeros([c_out], dt, dev)?.set_requires_grad(true);
            let per_image = Tensor::randn([n, c_out], dt, dev, &mut r)?.set_requires_grad(true);
            let residual = Tensor::randn([n, c_out, ho, wo], dt, dev, &mut r)?.set_requires_grad(true);
            let scope = kernels.scope();
            Ok(Box::new(move || {
                let _ = &scope;
                let epi = match extra {
                    Extra::None => Epilogue::with_bias(Some(&b)),
                    Extra::PerImage => Epilogue::with_bias(Some(&b)).with_per_image(&per_image),
                    Extra::Residual => Epilogue::with_bias(Some(&b)).with_residual(&residual),
                };
                conv2d_with(&x, &wt, stride, pad, epi)
            }))
        }),
    }
}

/// A residual block's first layer: GroupNorm(32) → SiLU → 3×3 conv + bias + time embedding, at stride 1;
/// with `drop` > 0, dropout at that rate after the SiLU (where the block's second layer has it).
fn norm_conv(n: usize, c_in: usize, h: usize, w: usize, c_out: usize, drop: f64) -> BenchCase {
    let (k, groups) = (3, 32);
    let dropped = if drop > 0.0 { format!("+dropout{drop}") } else { String::new() };
    let dropped_el = if drop > 0.0 { 2.0 * (n * c_in * h * w) as f64 } else { 0.0 };
    let flops_fwd = 2.0 * (n * h * w * c_out * c_in * k * k) as f64;
    let (x_el, w_el, y_el) = ((n * c_in * h * w) as f64, (c_out * c_in * k * k) as f64, (n * c_out * h * w) as f64);
    BenchCase {
        op: "norm_conv2d",
        label: format!("{n}x{c_in}x{h}x{w} -> {c_out} k3 s1 p1 gn{groups}+silu{dropped} +temb"),
        params: serde_json::json!({
            "n": n, "c_in": c_in, "h": h, "w": w, "c_out": c_out, "k": k, "stride": 1, "pad": 1, "groups": groups,
            "dropout": drop
        }),
        flops_fwd,
        flops_bwd: 2.0 * flops_fwd,
        // fwd: the statistics read x, the convolution reads x and w and writes y; bwd: dgrad (dy, w -> da),
        // the norm's backward (x, da -> dx, two passes), wgrad (x, dy -> dw), the epilogue's sums of dy.
        elems_fwd: 2.0 * x_el + w_el + y_el,
        // (+ dropout's backward over da)
        elems_bwd: (y_el + w_el + x_el) + 3.0 * x_el + (x_el + y_el + w_el) + 2.0 * y_el + dropped_el,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rand::rngs::StdRng::seed_from_u64(8);
            let x = Tensor::randn([n, c_in, h, w], dt, dev, &mut r)?.set_requires_grad(true);
            let scale = 1.0 / ((c_in * k * k) as f64).sqrt();
            let wt = Tensor::rand_uniform([c_out, c_in, k, k], -scale, scale, dt, dev, &mut r)?.set_requires_grad(true);
            let b = Tensor::zeros([c_out], dt, dev)?.set_requires_grad(true);
            let temb = Tensor::randn([n, c_out], dt, dev, &mut r)?.set_requires_grad(true);
            let gamma = Tensor::full([c_in], 1.0, dt, dev)?.set_requires_grad(true);
            let beta = Tensor::zeros([c_in], dt, dev)?.set_requires_grad(true);
            let dropout = crate::ops::dropout::mask(drop, 77, "bench norm_conv2d")?;
            Ok(Box::new(move || {
                let norm = InputNorm { gamma: &gamma, beta: &beta, groups, eps: 1e-6, silu: true, dropout };
                norm_conv2d(&x, norm, &wt, 1, 1, Epilogue::with_bias(Some(&b)).with_per_image(&temb))
            }))
        }),
    }
}

/// What a case adds in the convolution's epilogue besides the bias.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    /// a residual block's first convolution: + temb_proj(temb)[n, co]
    PerImage,
    /// its second: + the skip connection
    Residual,
}

impl Extra {
    fn suffix(self) -> &'static str {
        match self {
            Extra::None => "",
            Extra::PerImage => " +temb",
            Extra::Residual => " +residual",
        }
    }
    fn elems_fwd(self, per_image: usize, y_el: f64) -> f64 {
        match self {
            Extra::None => 0.0,
            Extra::PerImage => per_image as f64,
            Extra::Residual => y_el,
        }
    }
}

pub fn cases() -> Vec<BenchCase> {
    let plain = |n, c, h, w, co, k, s, p| conv(n, c, h, w, co, k, s, p, Kernels::Selected, Extra::None);
    vec![
        plain(128, 128, 32, 32, 128, 3, 1, 1),
        plain(128, 256, 16, 16, 256, 3, 1, 1),
        plain(128, 256, 8, 8, 256, 3, 1, 1),
        plain(128, 512, 4, 4, 512, 3, 1, 1),
        plain(128, 128, 32, 32, 128, 3, 2, 1),
        plain(128, 256, 16, 16, 128, 1, 1, 0),
        // A residual block's two convolutions with what their epilogues add (PyTorch: the separate adds).
        conv(128, 128, 32, 32, 128, 3, 1, 1, Kernels::Selected, Extra::PerImage),
        conv(128, 128, 32, 32, 128, 3, 1, 1, Kernels::Selected, Extra::Residual),
        // ... and the first with its group norm and SiLU inside (PyTorch: group_norm, silu, conv2d, add), then
        // with the second's dropout between them too (PyTorch: + dropout).
        norm_conv(128, 128, 32, 32, 128, 0.0),
        norm_conv(128, 128, 32, 32, 128, 0.1),
        // The wgmma implicit GEMMs (kernels/conv_wgmma.cu), at the two largest shapes.
        conv(128, 128, 32, 32, 128, 3, 1, 1, Kernels::Wgmma, Extra::None),
        conv(128, 256, 16, 16, 256, 3, 1, 1, Kernels::Wgmma, Extra::None),
        // ... and the stride-2 layer (the sub-pixel input gradient on wgmma).
        conv(128, 128, 32, 32, 128, 3, 2, 1, Kernels::Wgmma, Extra::None),
        // f32 on TF32 tensor cores (f32 runs only; PyTorch with TF32 allowed), at the same two shapes and
        // the stride-2 layer (the sub-pixel dgrad).
        conv(128, 128, 32, 32, 128, 3, 1, 1, Kernels::Tf32, Extra::None),
        conv(128, 256, 16, 16, 256, 3, 1, 1, Kernels::Tf32, Extra::None),
        conv(128, 128, 32, 32, 128, 3, 2, 1, Kernels::Tf32, Extra::None),
    ]
}
