//! Attention cases: self-attention at 16x16 and 8x8 with 256 channels (one head, and four), and the GSURE
//! paper's DDIM U-Nets' one head of 512 channels at both; the bf16 backward also on the CUDA-core kernels it
//! replaced. Params {n, c, h, w, heads}: q, k, v are [n, c, h*w].
use super::kernels::Kernels;
use crate::bench::BenchCase;
use crate::ops::attention::attention;
use crate::Tensor;

fn case(n: usize, c: usize, h: usize, w: usize, heads: usize, kernels: Kernels) -> BenchCase {
    let t = h * w;
    let flops_fwd = 4.0 * (n * t * t * c) as f64;
    BenchCase {
        op: "attention",
        label: format!("attention n{n} c{c} {h}x{w} heads{heads}{}", kernels.suffix()),
        params: serde_json::json!({ "n": n, "c": c, "h": h, "w": w, "heads": heads }),
        flops_fwd,
        flops_bwd: 2.5 * flops_fwd,
        // Forward reads q, k, v and writes out; backward reads q, k, v, out, dout and writes dq, dk, dv.
        elems_fwd: 4.0 * (n * c * t) as f64,
        elems_bwd: 8.0 * (n * c * t) as f64,
        skip: kernels.skip(),
        build: Box::new(move |device, dtype| {
            let mut rng = crate::testing::rng(0xa77e);
            let mut make = || -> anyhow::Result<Tensor> {
                Ok(Tensor::randn([n, c, t], dtype, device, &mut rng)?.set_requires_grad(true))
            };
            let (q, k, v) = (make()?, make()?, make()?);
            let scope = kernels.scope();
            Ok(Box::new(move || {
                let _ = &scope;
                attention(&q, &k, &v, heads)
            }))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    let mut v = Vec::new();
    for (c, h, heads) in [(256, 16, 1), (256, 16, 4), (256, 8, 1), (256, 8, 4), (512, 16, 1), (512, 8, 1)] {
        v.push(case(128, c, h, h, heads, Kernels::Selected));
    }
    v.push(case(128, 256, 16, 16, 1, Kernels::AttentionCudaCore));
    v.push(case(128, 512, 8, 8, 1, Kernels::AttentionCudaCore));
    v
}
