//! The per-example weighted MSE of the objectives: memory-bound, judged in GB/s. Params: masked_mse
//! {"shape"} (pred, target and weight all have it; the loss is [shape[0]]).
use crate::bench::BenchCase;
use crate::ops::loss;
use crate::tensor::Tensor;
use rand::SeedableRng;

fn masked_mse(shape: &[usize]) -> BenchCase {
    let n = shape.iter().product::<usize>() as f64;
    let rows = shape[0] as f64;
    let s = shape.to_vec();
    BenchCase {
        op: "masked_mse",
        label: shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
        params: serde_json::json!({ "shape": shape }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads pred, target, weight and writes the [N] loss; bwd reads them again plus the [N]
        // gradient and writes dpred (the target is data and needs no gradient).
        elems_fwd: 3.0 * n + rows,
        elems_bwd: 4.0 * n + rows,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rand::rngs::StdRng::seed_from_u64(4);
            let pred = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            let target = Tensor::randn(s.clone(), dt, dev, &mut r)?;
            let weight = Tensor::rand_uniform(s.clone(), 0.0, 2.0, dt, dev, &mut r)?;
            Ok(Box::new(move || loss::masked_mse(&pred, &target, &weight)))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![masked_mse(&[128, 1, 32, 32]), masked_mse(&[128, 3, 32, 32]), masked_mse(&[128, 3, 64, 64])]
}
