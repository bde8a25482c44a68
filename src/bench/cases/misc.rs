//! The remaining memory-bound ops: dropout {"shape", "p"}, where {"shape"}, affine {"shape"} and the
//! sinusoidal time embedding {"n", "dim"}.
use crate::bench::BenchCase;
use crate::ops::{self, EmbeddingKind};
use crate::tensor::Tensor;
use rand::SeedableRng;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn label(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

fn dropout(shape: &[usize], p: f64) -> BenchCase {
    let n = shape.iter().product::<usize>() as f64;
    let s = shape.to_vec();
    BenchCase {
        op: "dropout",
        label: format!("{} p={p}", label(shape)),
        params: serde_json::json!({ "shape": shape, "p": p }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // The mask is recomputed from the seed, never stored: x in, y out (dy in, dx out).
        elems_fwd: 2.0 * n,
        elems_bwd: 2.0 * n,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::randn(s.clone(), dt, dev, &mut rng(11))?.set_requires_grad(true);
            Ok(Box::new(move || ops::dropout(&x, p, 1234)))
        }),
    }
}

fn where_(shape: &[usize]) -> BenchCase {
    let n = shape.iter().product::<usize>() as f64;
    let s = shape.to_vec();
    BenchCase {
        op: "where",
        label: label(shape),
        params: serde_json::json!({ "shape": shape }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        elems_fwd: 4.0 * n,
        // Two passes of (mask, g, zeros) -> out.
        elems_bwd: 8.0 * n,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rng(12);
            let m = Tensor::rand_uniform(s.clone(), 0.0, 1.0, dt, dev, &mut r)?;
            let m = ops::affine(&m, 1.0, -0.5)?; // nonzero almost everywhere: the kernel's cost does not care
            let a = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            let b = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            Ok(Box::new(move || ops::where_(&m, &a, &b)))
        }),
    }
}

fn affine(shape: &[usize]) -> BenchCase {
    let n = shape.iter().product::<usize>() as f64;
    let s = shape.to_vec();
    BenchCase {
        op: "affine",
        label: label(shape),
        params: serde_json::json!({ "shape": shape }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        elems_fwd: 2.0 * n,
        elems_bwd: 2.0 * n,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::randn(s.clone(), dt, dev, &mut rng(13))?.set_requires_grad(true);
            Ok(Box::new(move || ops::affine(&x, 0.5, 0.1)))
        }),
    }
}

fn embedding(n: usize, dim: usize) -> BenchCase {
    BenchCase {
        op: "embedding",
        label: format!("{n}x{dim}"),
        params: serde_json::json!({ "n": n, "dim": dim }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        elems_fwd: (n + n * dim) as f64,
        elems_bwd: (n + n * dim) as f64,
        skip: None,
        build: Box::new(move |dev, _dt| {
            // Timesteps are f32 whatever the activations' dtype (bf16 cannot hold 999).
            let t =
                Tensor::rand_uniform([n], 0.0, 1000.0, crate::DType::F32, dev, &mut rng(14))?.set_requires_grad(true);
            Ok(Box::new(move || ops::sinusoidal_embedding(&t, dim, EmbeddingKind::Ddim)))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![
        dropout(&[128, 256, 16, 16], 0.1),
        where_(&[128, 128, 32, 32]),
        affine(&[128, 128, 32, 32]),
        embedding(128, 128),
    ]
}
