//! Channel concat (U-Net skip connections), nearest 2x upsampling and 2x2 average pooling: memory-bound,
//! judged in GB/s. Params: concat {"n", "c1", "c2", "h", "w"}; upsample2x and avg_pool2x {"n", "c", "h", "w"}
//! (h, w of the input).
use crate::bench::BenchCase;
use crate::ops::layout;
use crate::tensor::Tensor;
use rand::SeedableRng;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn concat(n: usize, c1: usize, c2: usize, h: usize, w: usize) -> BenchCase {
    let total = (n * (c1 + c2) * h * w) as f64;
    BenchCase {
        op: "concat",
        label: format!("{n}x({c1}+{c2})x{h}x{w}"),
        params: serde_json::json!({ "n": n, "c1": c1, "c2": c2, "h": h, "w": w }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads both inputs and writes the output; bwd reads the gradient and writes both slices.
        elems_fwd: 2.0 * total,
        elems_bwd: 2.0 * total,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rng(1);
            let a = Tensor::randn([n, c1, h, w], dt, dev, &mut r)?.set_requires_grad(true);
            let b = Tensor::randn([n, c2, h, w], dt, dev, &mut r)?.set_requires_grad(true);
            Ok(Box::new(move || layout::concat_channels(&[&a, &b])))
        }),
    }
}

fn upsample2x(n: usize, c: usize, h: usize, w: usize) -> BenchCase {
    let x = (n * c * h * w) as f64;
    BenchCase {
        op: "upsample2x",
        label: format!("{n}x{c}x{h}x{w}"),
        params: serde_json::json!({ "n": n, "c": c, "h": h, "w": w }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads x and writes 4x as much; bwd reads the 4x gradient and writes dx.
        elems_fwd: 5.0 * x,
        elems_bwd: 5.0 * x,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::randn([n, c, h, w], dt, dev, &mut rng(2))?.set_requires_grad(true);
            Ok(Box::new(move || layout::upsample_nearest2x(&x)))
        }),
    }
}

fn avg_pool2x(n: usize, c: usize, h: usize, w: usize) -> BenchCase {
    let x = (n * c * h * w) as f64;
    BenchCase {
        op: "avg_pool2x",
        label: format!("{n}x{c}x{h}x{w}"),
        params: serde_json::json!({ "n": n, "c": c, "h": h, "w": w }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads x and writes a quarter of it; bwd reads the quarter-size gradient and writes dx.
        elems_fwd: 1.25 * x,
        elems_bwd: 1.25 * x,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::randn([n, c, h, w], dt, dev, &mut rng(3))?.set_requires_grad(true);
            Ok(Box::new(move || layout::avg_pool2x(&x)))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![
        concat(128, 128, 128, 32, 32),
        concat(128, 256, 256, 16, 16),
        concat(128, 512, 256, 8, 8),
        upsample2x(128, 256, 16, 16),
        upsample2x(128, 512, 8, 8),
        upsample2x(128, 128, 32, 32),
        avg_pool2x(128, 128, 32, 32),
        avg_pool2x(128, 256, 16, 16),
        avg_pool2x(128, 512, 8, 8),
    ]
}
