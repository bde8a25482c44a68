//! The tape: shared subgraphs, reuse of one tensor, reshape views, no-grad mode, and the parameter store.
use gsure::ops;
use gsure::testing::{randn, rng};
use gsure::{backward, no_grad, DType, Device, ParamStore, Tensor};

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

#[test]
fn a_tensor_used_twice_gets_the_sum_of_both_gradients() {
    // y = sum(x * x + x)  =>  dy/dx = 2x + 1
    let x = Tensor::from_f64(&[1.0, -2.0, 3.0], [3], DType::F64, &Device::Cpu).unwrap().set_requires_grad(true);
    let y = ops::sum_all(&ops::add(&ops::mul(&x, &x).unwrap(), &x).unwrap()).unwrap();
    let g = backward(&y).unwrap();
    assert_eq!(vals(g.get(&x).unwrap()), vec![3.0, -3.0, 7.0]);
}

#[test]
fn shared_subgraphs_are_differentiated_once_per_path() {
    // h = silu(x); y = sum(h * 2 + h * h): the node for h is reached through three uses.
    let mut r = rng(1);
    let x0 = randn(&[5], &mut r);
    let x = x0.set_requires_grad(true);
    let h = ops::silu(&x).unwrap();
    let y = ops::sum_all(&ops::add(&ops::scale(&h, 2.0).unwrap(), &ops::mul(&h, &h).unwrap()).unwrap()).unwrap();
    let g = vals(backward(&y).unwrap().get(&x).unwrap());
    for (gi, xi) in g.iter().zip(vals(&x0)) {
        let s = 1.0 / (1.0 + (-xi).exp());
        let h = xi * s;
        let dh = s * (1.0 + xi * (1.0 - s));
        assert!((gi - (2.0 + 2.0 * h) * dh).abs() < 1e-12);
    }
}

#[test]
fn gradients_flow_through_reshape_views() {
    let x = Tensor::from_f64(&[1.0, 2.0, 3.0, 4.0], [2, 2], DType::F64, &Device::Cpu).unwrap().set_requires_grad(true);
    let v = x.reshape([4]).unwrap();
    let w = Tensor::from_f64(&[1.0, 10.0, 100.0, 1000.0], [4], DType::F64, &Device::Cpu).unwrap();
    let g = backward(&ops::sum_all(&ops::mul(&v, &w).unwrap()).unwrap()).unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dims(), &[2, 2]);
    assert_eq!(vals(gx), vec![1.0, 10.0, 100.0, 1000.0]);
}

#[test]
fn no_grad_records_nothing() {
    let x = Tensor::from_f64(&[1.0, 2.0], [2], DType::F64, &Device::Cpu).unwrap().set_requires_grad(true);
    let y = no_grad(|| ops::silu(&x).unwrap());
    assert!(!y.tracks_grad());
    let z = ops::silu(&x).unwrap();
    assert!(z.tracks_grad(), "recording resumes after no_grad");
}

#[test]
fn constants_get_no_gradient_and_backward_needs_a_scalar() {
    let mut r = rng(2);
    let c = randn(&[3], &mut r);
    let x = randn(&[3], &mut r).set_requires_grad(true);
    let y = ops::mul(&x, &c).unwrap();
    let err = backward(&y).err().unwrap().to_string();
    assert!(err.contains("one element"), "{err}");
    let g = backward(&ops::sum_all(&y).unwrap()).unwrap();
    assert!(g.get(&c).is_none());
    assert_eq!(vals(g.get(&x).unwrap()), vals(&c));
}

#[test]
fn parameter_store_names_are_stable_and_unique() {
    let mut ps = ParamStore::new();
    let mut r = rng(3);
    let b = ps.insert("layer.bias", &randn(&[4], &mut r)).unwrap();
    ps.insert("layer.weight", &randn(&[4, 3], &mut r)).unwrap();
    assert!(b.requires_grad());
    assert!(ps.insert("layer.bias", &randn(&[4], &mut r)).is_err());
    let names: Vec<_> = ps.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, vec!["layer.bias", "layer.weight"]);
    assert_eq!(ps.num_scalars(), 16);
}
