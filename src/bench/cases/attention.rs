//! Attention cases: the GSURE U-Net's self-attention at 16x16 with 256 channels (one head, and four), and at
//! 8x8. Params {n, c, h, w, heads}: q, k, v are [n, c, h*w].
use crate::bench::BenchCase;
use crate::ops::attention::attention;
use crate::Tensor;

fn case(n: usize, c: usize, h: usize, w: usize, heads: usize) -> BenchCase {
    let t = h * w;
    let flops_fwd = 4.0 * (n * t * t * c) as f64;
    BenchCase {
        op: "attention",
        label: format!("attention n{n} c{c} {h}x{w} heads{heads}"),
        params: serde_json::json!({ "n": n, "c": c, "h": h, "w": w, "heads": heads }),
        flops_fwd,
        flops_bwd: 2.5 * flops_fwd,
        // Forward reads q, k, v and writes out; backward reads q, k, v, out, dout and writes dq, dk, dv.
        elems_fwd: 4.0 * (n * c * t) as f64,
        elems_bwd: 8.0 * (n * c * t) as f64,
        skip: None,
        build: Box::new(move |device, dtype| {
            let mut rng = crate::testing::rng(0xa77e);
            let mut make = || -> anyhow::Result<Tensor> {
                Ok(Tensor::randn([n, c, t], dtype, device, &mut rng)?.set_requires_grad(true))
            };
            let (q, k, v) = (make()?, make()?, make()?);
            Ok(Box::new(move || attention(&q, &k, &v, heads)))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![case(128, 256, 16, 16, 1), case(128, 256, 16, 16, 4), case(128, 256, 8, 8, 1), case(128, 256, 8, 8, 4)]
}
