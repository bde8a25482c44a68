//! matmul / linear cases: the U-Net time-embedding MLP at batch 128 (linear 128->512 and 512->512) and a
//! square 4096^3 matmul that shows the tensor-core ceiling; the matmul and the larger linear again on the
//! Hopper wgmma kernels (label "[wgmma]"; the matmul also with TMA copies, "[tma]"), side by side with
//! mma.sync's in the same run, on GPUs that have them.
use super::kernels::Kernels;
use crate::bench::BenchCase;
use crate::ops::matmul::{linear, matmul};
use crate::Tensor;
use rand::SeedableRng;

fn linear_case(n: usize, in_f: usize, out_f: usize, kernels: Kernels) -> BenchCase {
    let (b, i, o) = (n as f64, in_f as f64, out_f as f64);
    BenchCase {
        op: "linear",
        label: format!("linear n={n} {in_f}->{out_f}{}", kernels.suffix()),
        params: serde_json::json!({ "n": n, "in": in_f, "out": out_f }),
        flops_fwd: 2.0 * b * i * o,
        flops_bwd: 4.0 * b * i * o,
        // read x, w, bias, write y; backward reads dy, x, w and writes dx, dw, dbias
        elems_fwd: b * i + o * i + o + b * o,
        elems_bwd: b * o + 2.0 * (b * i + o * i) + o,
        skip: kernels.skip(),
        build: Box::new(move |device, dtype| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let x = Tensor::randn([n, in_f], dtype, device, &mut rng)?.set_requires_grad(true);
            let w = Tensor::randn([out_f, in_f], dtype, device, &mut rng)?.set_requires_grad(true);
            let bias = Tensor::randn([out_f], dtype, device, &mut rng)?.set_requires_grad(true);
            let scope = kernels.scope();
            Ok(Box::new(move || {
                let _ = &scope;
                linear(&x, &w, Some(&bias))
            }))
        }),
    }
}

fn matmul_case(m: usize, k: usize, n: usize, kernels: Kernels) -> BenchCase {
    let (mf, kf, nf) = (m as f64, k as f64, n as f64);
    BenchCase {
        op: "matmul",
        label: format!("matmul {m}x{k} @ {k}x{n}{}", kernels.suffix()),
        params: serde_json::json!({ "m": m, "k": k, "n": n }),
        flops_fwd: 2.0 * mf * nf * kf,
        flops_bwd: 4.0 * mf * nf * kf,
        elems_fwd: mf * kf + kf * nf + mf * nf,
        elems_bwd: mf * nf + 2.0 * (mf * kf + kf * nf),
        skip: kernels.skip(),
        build: Box::new(move |device, dtype| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(2);
            let a = Tensor::randn([m, k], dtype, device, &mut rng)?.set_requires_grad(true);
            let b = Tensor::randn([k, n], dtype, device, &mut rng)?.set_requires_grad(true);
            let scope = kernels.scope();
            Ok(Box::new(move || {
                let _ = &scope;
                matmul(&a, &b)
            }))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![
        linear_case(128, 128, 512, Kernels::Selected),
        linear_case(128, 512, 512, Kernels::Selected),
        matmul_case(4096, 4096, 4096, Kernels::Selected),
        linear_case(128, 512, 512, Kernels::Wgmma),
        matmul_case(4096, 4096, 4096, Kernels::Wgmma),
        matmul_case(4096, 4096, 4096, Kernels::Tma),
    ]
}
