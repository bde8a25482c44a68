//! The fused GSURE loss: memory-bound, judged in GB/s against the HBM ceiling. Params: gsure_loss {"shape",
//! "nu"} (D, D_ε, target, observed, W², probe and, when "nu", ν all have "shape"; the loss is [shape[0]]).
use crate::bench::BenchCase;
use crate::ops::gsure_loss::{gsure_loss, GsureCoefs};
use crate::tensor::Tensor;
use rand::SeedableRng;

fn case(shape: &[usize], with_nu: bool) -> BenchCase {
    let n = shape.iter().product::<usize>() as f64;
    let rows = shape[0];
    let s = shape.to_vec();
    let nu_elems = if with_nu { 1.0 } else { 0.0 };
    BenchCase {
        op: "gsure_loss",
        label: format!(
            "{}{}",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
            if with_nu { " ybar" } else { " xt" }
        ),
        params: serde_json::json!({ "shape": shape, "nu": with_nu }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        // fwd reads D, D_ε, r, O, W², b (+ ν) once and writes the [N] loss; bwd reads D, r, O, W², b (+ ν)
        // and the [N] gradient (D_ε is not needed: the loss is linear in it) and writes dD and dD_ε.
        elems_fwd: (6.0 + nu_elems) * n + rows as f64,
        elems_bwd: (5.0 + nu_elems + 2.0) * n + rows as f64,
        skip: None,
        build: Box::new(move |dev, dt| {
            let mut r = rand::rngs::StdRng::seed_from_u64(5);
            let d = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            let de = Tensor::randn(s.clone(), dt, dev, &mut r)?.set_requires_grad(true);
            let target = Tensor::randn(s.clone(), dt, dev, &mut r)?;
            let obs = Tensor::full(s.clone(), 1.0, dt, dev)?;
            let w2 = Tensor::rand_uniform(s.clone(), 1.0, 2.0, dt, dev, &mut r)?;
            let probe = Tensor::randn(s.clone(), dt, dev, &mut r)?;
            let nu = Tensor::full(s.clone(), 1e-4, dt, dev)?;
            let coef = GsureCoefs::new(&vec![2.0; rows], &vec![1e-2; rows])?;
            Ok(Box::new(move || {
                gsure_loss(&d, &de, &target, &obs, &w2, if with_nu { Some(&nu) } else { None }, &probe, &coef)
            }))
        }),
    }
}

pub fn cases() -> Vec<BenchCase> {
    vec![case(&[128, 1, 32, 32], true), case(&[32, 2, 320, 320], true), case(&[32, 2, 320, 320], false)]
}
