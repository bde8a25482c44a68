//! The training-step bench on the CPU: the tiny U-Net for two timed steps, the report's fields (what
//! `benches/torch_train.py` and `scripts/gpu-check` read), the settings list, the model counts and bad input.
use gsure::bench::train::{self, count_model, TrainBenchOptions, TrainSetting};
use gsure::nn::{DdimUnet, DdimUnetConfig};
use gsure::{DType, Device, ParamStore};

fn tiny_opts() -> TrainBenchOptions {
    TrainBenchOptions {
        configs: vec!["tiny".into()],
        bf16: false,
        batch: Some(4),
        steps: 2,
        warmup: 1,
        max_seconds: None,
        cuda_graph: true,
    }
}

#[test]
fn tiny_on_cpu_reports_every_field() {
    let mut seen = Vec::new();
    let report = train::run(&tiny_opts(), &Device::Cpu, |i, n, r| seen.push((i, n, r.config.clone()))).unwrap();
    assert_eq!(seen, vec![(1, 1, "tiny".to_string())]);
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.device.kind, "cpu");
    assert_eq!(report.dtype, "f32");
    assert_eq!((report.steps, report.warmup), (2, 1));
    let r = &report.results[0];
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.config, "tiny");
    assert_eq!(r.setting.batch, 4);
    assert_eq!(r.step_ms.len(), 2);
    assert!(r.step_ms.iter().all(|&t| t > 0.0 && t.is_finite()));
    let stats = r.step.as_ref().unwrap();
    assert_eq!(stats.repeats, 2);
    assert!(stats.min_ms <= stats.median_ms && stats.median_ms <= stats.p90_ms);
    let ips = r.images_per_s.unwrap();
    assert!((ips - 4.0 / (stats.median_ms * 1e-3)).abs() < 1e-6 * ips);
    let tflops = r.model_tflops.unwrap();
    assert!(tflops > 0.0 && tflops.is_finite());
    assert!((r.setting.flops_train_per_image - 3.0 * r.setting.flops_fwd_per_image).abs() < 1.0);
    let loss = r.last_loss.unwrap();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    assert!(r.last_grad_norm.unwrap().is_finite());
    if std::path::Path::new("/proc/self/status").exists() {
        assert!(r.peak_memory_bytes.unwrap() > 1 << 20, "peak RSS {:?}", r.peak_memory_bytes);
        assert!(r.peak_memory_kind.as_deref().unwrap().contains("VmHWM"));
    }
    assert!(r.seconds > 0.0);

    // The JSON report: the fields torch_train.py --gsure-json and gpu-check read.
    let j = report.to_json();
    assert_eq!(j["kind"], "gsure bench train");
    let row = &j["results"][0];
    assert_eq!(row["config"], "tiny");
    assert_eq!(row["dtype"], "f32");
    assert!(row["step"]["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(row["setting"]["batch"], 4);
    assert_eq!(row["setting"]["model"]["ch"], 32);
    assert!(row["error"].is_null());
    let table = report.table();
    assert!(table.contains("tiny") && table.contains("median ms"), "{table}");
}

#[test]
fn settings_list_the_trainers_hyperparameters() {
    let s = train::settings(&["tiny".into(), "gsure-celeba32".into()], None).unwrap();
    assert_eq!(s[0].batch, 16);
    let c = &s[1];
    assert_eq!((c.batch, c.lr, c.ema_decay, c.grad_clip), (128, 5e-5, 0.9999, 1.0));
    assert_eq!((c.beta_start, c.beta_end, c.timesteps), (1e-4, 0.02, 1000));
    assert_eq!(c.params, 78_696_193);
    assert!((c.flops_fwd_per_image / 1e9 - 12.77).abs() < 0.01, "{}", c.flops_fwd_per_image);
    let j = train::list_json(&s);
    assert_eq!(j[1]["name"], "gsure-celeba32");
    assert_eq!(j[1]["model"]["ch_mult"], serde_json::json!([1, 2, 2, 2, 4]));
    assert_eq!(j[1]["model"]["prediction"], "x0");
    assert_eq!(j[1]["adam"]["eps"], 1e-8);
    assert_eq!(TrainSetting::new("tiny", Some(7)).unwrap().batch, 7);
}

#[test]
fn the_count_matches_the_built_model() {
    for config in [DdimUnetConfig::tiny(), DdimUnetConfig { ch_mult: vec![1, 2, 3], ..DdimUnetConfig::tiny() }] {
        let mut store = ParamStore::new();
        DdimUnet::new(&config, &mut store, 0, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(count_model(&config).params, store.num_scalars() as u64, "{config:?}");
    }
}

#[test]
fn bad_input_is_refused() {
    let e = train::settings(&["nope".into()], None).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("tiny"), "{e}");
    let e = train::run(&TrainBenchOptions { bf16: true, ..tiny_opts() }, &Device::Cpu, |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("--bf16"), "{e}");
    let e = train::run(&TrainBenchOptions { steps: 0, ..tiny_opts() }, &Device::Cpu, |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("--steps"), "{e}");
    assert!(train::settings(&[], None).is_err());
    assert!(TrainSetting::new("tiny", Some(0)).is_err());
}
