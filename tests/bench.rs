//! The bench runner on the CPU with tiny cases: timings, rates, the backward through the recorded node,
//! failures reported per case, and the JSON fields `benches/torch_ops.py` and `scripts/gpu-check` read.
use gsure::bench::{self, BenchCase, Options};
use gsure::{ops, DType, Device, Tensor};

fn tiny_silu(requires_grad: bool) -> BenchCase {
    BenchCase {
        op: "silu",
        label: "tiny 4x8".into(),
        params: serde_json::json!({ "shape": [4, 8] }),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        elems_fwd: 64.0,
        elems_bwd: 128.0,
        skip: None,
        build: Box::new(move |dev, dt| {
            let x = Tensor::full([4, 8], 0.5, dt, dev)?.set_requires_grad(requires_grad);
            Ok(Box::new(move || ops::silu(&x)))
        }),
    }
}

fn failing() -> BenchCase {
    BenchCase {
        op: "add",
        label: "mismatched".into(),
        params: serde_json::json!({}),
        flops_fwd: 0.0,
        flops_bwd: 0.0,
        elems_fwd: 1.0,
        elems_bwd: 1.0,
        skip: None,
        build: Box::new(|dev, dt| {
            let (a, b) = (Tensor::zeros([2], dt, dev)?, Tensor::zeros([3], dt, dev)?);
            Ok(Box::new(move || ops::add(&a, &b)))
        }),
    }
}

fn opts() -> Options {
    Options { warmup: 1, repeats: 3, filter: None, quick: true }
}

#[test]
fn cpu_runner_times_forward_and_backward_and_writes_json() {
    let report = bench::run(vec![tiny_silu(true)], &Device::Cpu, DType::F32, &opts(), |_, _, _| {}).unwrap();
    let j = report.to_json();
    for key in ["gsure_version", "commit", "date", "device", "dtype", "ceilings", "cases", "repeats", "warmup"] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    assert_eq!(j["dtype"], "f32");
    assert_eq!(j["partial"], false);
    assert_eq!(j["device"]["kind"], "cpu");
    assert_eq!(j["gsure_version"], env!("CARGO_PKG_VERSION"));
    assert!(j["date"].as_str().unwrap().ends_with('Z'));
    assert!(j["ceilings"]["mem_gbps"].is_null(), "no ceilings on the CPU");
    let c = &j["cases"][0];
    assert_eq!(c["op"], "silu");
    assert_eq!(c["params"]["shape"], serde_json::json!([4, 8]));
    assert!(c["error"].is_null(), "{c}");
    for dir in ["forward", "backward"] {
        let d = &c[dir];
        assert_eq!(d["repeats"], 3, "{dir}: {d}");
        let (med, min, p90) =
            (d["median_ms"].as_f64().unwrap(), d["min_ms"].as_f64().unwrap(), d["p90_ms"].as_f64().unwrap());
        assert!(min >= 0.0 && min <= med && med <= p90, "{dir}: {d}");
        assert!(d["tflops"].is_null(), "flops = 0 gives no TFLOP/s");
        assert!(d["gbps"].as_f64().unwrap() > 0.0, "{dir}: {d}");
    }
    assert!(report.table().contains("silu"));
}

#[test]
fn no_node_means_backward_na_and_errors_do_not_stop_the_run() {
    let cases = vec![tiny_silu(false), failing(), tiny_silu(true)];
    let mut seen = 0;
    let report = bench::run(cases, &Device::Cpu, DType::F32, &opts(), |_, n, _| {
        seen += 1;
        assert_eq!(n, 3);
    })
    .unwrap();
    assert_eq!(seen, 3);
    let r = &report.cases;
    assert!(r[0].forward.is_some() && r[0].backward.is_none());
    assert!(r[0].backward_note.as_deref().unwrap().starts_with("n/a"));
    let err = r[1].error.as_deref().expect("the mismatched add fails");
    assert!(err.contains("add"), "{err}");
    assert!(r[2].backward.is_some(), "the run went on after the failure");
    assert!(report.table().contains("FAILED"));
}

#[test]
fn filter_and_case_list() {
    let mut o = opts();
    o.filter = Some("nothing-matches, tiny".into());
    let report = bench::run(vec![tiny_silu(true), failing()], &Device::Cpu, DType::F32, &o, |_, _, _| {}).unwrap();
    assert_eq!(report.cases.len(), 1);
    assert!(bench::run(vec![], &Device::Cpu, DType::BF16, &o, |_, _, _| {}).is_err(), "no bf16 on the CPU");

    let cases = bench::all_cases();
    let list = bench::list_json(&cases);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), cases.len());
    for c in list {
        for key in ["op", "label", "params", "flops_fwd", "flops_bwd", "elems_fwd", "elems_bwd"] {
            assert!(c.get(key).is_some(), "missing {key} in {c}");
        }
    }
    let ew: Vec<_> = list.iter().filter(|c| c["op"] == "mul_along").collect();
    assert!(!ew.is_empty(), "the elementwise cases are registered");
    assert_eq!(ew[0]["params"]["axis"], 1);
}
