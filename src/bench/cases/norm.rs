//! group_norm cases at the U-Net's resolutions, batch 128, 32 groups: (128ch 32x32), (256ch 16x16),
//! (512ch 4x4) with the fused SiLU, and 256ch 16x16 without it. Memory-bound: the forward reads x and writes
//! y, the backward reads x and dy and writes dx (gamma, beta and the statistics are negligible).
use crate::bench::BenchCase;
use crate::ops::norm::group_norm;
use crate::Tensor;
use rand::SeedableRng;

fn case(n: usize, c: usize, h: usize, w: usize, groups: usize, silu: bool) -> BenchCase {
    let numel = (n * c * h * w) as f64;
    BenchCase {
        op: "group_norm",
        label: format!("group_norm n={n} c={c} {h}x{w} g={groups}{}", if silu { " +silu" } else { "" }),
        params: serde_json::json!({ "n": n, "c": c, "h": h, "w": w, "groups": groups, "silu": silu }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        elems_fwd: 2.0 * numel,
        elems_bwd: 3.0 * numel,
        skip: None,
        build: Box::new(move |device, dtype| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let x = Tensor::randn([n, c, h, w], dtype, device, &mut rng)?.set_requires_grad(true);
            let gamma = Tensor::randn([c], dtype, device, &mut rng)?.set_requires_grad(true);
            let beta = Tensor::randn([c], dtype, device, &mut rng)?.set_requires_grad(true);
            Ok(Box::new(move || group_norm(&x, &gamma, &beta, groups, 1e-5, silu)))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![
        case(128, 128, 32, 32, 32, true),
        case(128, 256, 16, 16, 32, true),
        case(128, 256, 16, 16, 32, false),
        case(128, 512, 4, 4, 32, true),
    ]
}
