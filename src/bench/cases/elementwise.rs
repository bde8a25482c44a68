//! Pointwise ops, the per-channel scale and the full sum: memory-bound, judged in GB/s against the copy
//! bandwidth. Params: silu/add/sum_all {"shape"}, mul_along {"shape", "axis"}.
use crate::bench::BenchCase;
use crate::ops;
use crate::tensor::Tensor;
use rand::SeedableRng;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn numel(shape: &[usize]) -> f64 {
    shape.iter().product::<usize>() as f64
}

fn label(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

fn silu(shape: &[usize]) -> BenchCase {
    let n = numel(shape);
    let s = shape.to_vec();
    BenchCase {
        op: "silu",
        label: label(shape),
        params: serde_json::json!({ "shape": shape }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads x, writes y; bwd reads x, y and dy, writes dx.
        elems_fwd: 2.0 * n,
        elems_bwd: 4.0 * n,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::randn(s.clone(), dt, dev, &mut rng(1))?.set_requires_grad(true);
            Ok(Box::new(move || ops::silu(&x)))
        }),
    }
}

fn add(shape: &[usize]) -> BenchCase {
    let n = numel(shape);
    let s = shape.to_vec();
    BenchCase {
        op: "add",
        label: label(shape),
        params: serde_json::json!({ "shape": shape }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads a and b, writes the sum; bwd hands the upstream gradient to both inputs (no traffic).
        elems_fwd: 3.0 * n,
        elems_bwd: 0.0,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rng(2);
            let a = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            let b = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            Ok(Box::new(move || ops::add(&a, &b)))
        }),
    }
}

fn mul_along(shape: &[usize], axis: usize) -> BenchCase {
    let n = numel(shape);
    let c = shape[axis] as f64;
    let s = shape.to_vec();
    BenchCase {
        op: "mul_along",
        label: format!("{} axis {axis}", label(shape)),
        params: serde_json::json!({ "shape": shape, "axis": axis }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads x (and the small scale), writes y; bwd reads dy and x, writes dx, reduces to ds.
        elems_fwd: 2.0 * n + c,
        elems_bwd: 3.0 * n + 2.0 * c,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rng(3);
            let x = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            let scale = Tensor::randn(vec![s[axis]], dt, dev, &mut r)?.set_requires_grad(true);
            Ok(Box::new(move || ops::mul_along(&x, &scale, axis)))
        }),
    }
}

fn sum_all(shape: &[usize]) -> BenchCase {
    let n = numel(shape);
    let s = shape.to_vec();
    BenchCase {
        op: "sum_all",
        label: label(shape),
        params: serde_json::json!({ "shape": shape }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads x; bwd writes the expanded gradient.
        elems_fwd: n,
        elems_bwd: n,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::randn(s.clone(), dt, dev, &mut rng(4))?.set_requires_grad(true);
            Ok(Box::new(move || ops::sum_all(&x)))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![
        silu(&[128, 128, 32, 32]),
        silu(&[128, 256, 16, 16]),
        silu(&[128, 512, 4, 4]),
        add(&[128, 128, 32, 32]),
        add(&[128, 256, 16, 16]),
        mul_along(&[128, 256, 16, 16], 1),
        sum_all(&[128, 128, 32, 32]),
        sum_all(&[128, 3, 32, 32]),
    ]
}
