//! The trainer: resuming continues exactly; runs are never overwritten by accident; a checkpoint of another
//! model is refused naming the tensor.
use gsure::nn::{DdimUnet, DdimUnetConfig};
use gsure::train::{checkpoint, TrainOptions, Trainer};
use gsure::{DType, Device, ParamStore};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gsure-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        batch: 4,
        warmup: 2,
        checkpoint_every: 1000,
        sample_every: 0,
        phantoms: 16,
        ..TrainOptions::for_config("tiny")
    }
}

fn losses(run: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

/// Every parameter of `a` equals `b`'s, bit for bit.
fn assert_same_params(a: &Trainer, b: &Trainer) {
    for ((name, p), (_, q)) in a.params.iter().zip(b.params.iter()) {
        assert_eq!(p.to_vec_f32().unwrap(), q.to_vec_f32().unwrap(), "parameter {name} differs");
    }
}

fn train(opts: TrainOptions, out: &std::path::Path, resume: bool) -> Trainer {
    let data = gsure::data::phantoms(opts.phantoms, 16, 1);
    let mut t = Trainer::new(opts, data, out, &Device::Cpu, resume, false).unwrap();
    t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
    t
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let (a, b) = (dir("straight"), dir("resumed"));
    let straight = train(options(6), &a, false);
    train(options(3), &b, false);
    let resumed = train(options(6), &b, true);
    assert_eq!(losses(&a), losses(&b), "losses after resuming differ");
    assert_same_params(&straight, &resumed);
    for ((name, e), (_, f)) in straight.ema.shadow.iter().zip(&resumed.ema.shadow) {
        assert_eq!(e.to_vec_f32().unwrap(), f.to_vec_f32().unwrap(), "EMA {name} differs");
    }
}

/// `dropout` replaces every residual block's rate (and so changes the training), is refused outside [0, 1)
/// naming the flag, and is kept by the checkpoint for the run that resumes it.
#[test]
fn the_dropout_option_sets_every_block_and_is_refused_out_of_range() {
    use gsure::nn::ModelConfig;
    let o = TrainOptions { dropout: Some(0.3), log_every: 1, ..options(2) };
    match o.model_config().unwrap() {
        ModelConfig::Ddim(c) => assert_eq!(c.dropout, 0.3),
        other => panic!("tiny is a DDIM U-Net, got {other:?}"),
    }
    for p in [1.0, -0.1, f64::NAN] {
        let err = TrainOptions { dropout: Some(p), ..options(2) }.validate().unwrap_err().to_string();
        assert!(err.contains("--dropout") && err.contains("[0, 1)"), "{err}");
    }
    let (plain, dropped) = (dir("no-dropout"), dir("dropout"));
    train(TrainOptions { log_every: 1, ..options(2) }, &plain, false);
    train(o.clone(), &dropped, false);
    assert_ne!(losses(&plain), losses(&dropped), "dropout 0.3 changed nothing");
    let stored = gsure::train::stored_options(&dropped).unwrap();
    assert_eq!(stored.dropout, Some(0.3));
}

#[test]
fn a_previous_run_is_never_overwritten_without_resume_or_force() {
    let out = dir("guard");
    train(options(1), &out, false);
    let data = gsure::data::phantoms(16, 16, 1);
    let err = Trainer::new(options(2), data.clone(), &out, &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("previous run") && err.contains("--resume") && err.contains("--force"), "{err}");
    assert!(Trainer::new(options(2), data, &out, &Device::Cpu, false, true).is_ok(), "--force starts over");
}

#[test]
fn a_checkpoint_of_another_model_is_refused_naming_the_tensor() {
    let out = dir("other");
    train(options(1), &out, false);
    let other = DdimUnetConfig { ch: 16, ..DdimUnetConfig::tiny() };
    let mut ps = ParamStore::new();
    DdimUnet::new(&other, &mut ps, 0, &Device::Cpu, DType::F32).unwrap();
    let err = checkpoint::load(&out.join("checkpoint.safetensors"), &ps, None, None).unwrap_err().to_string();
    assert!(err.contains("another model") && err.contains("params/"), "{err}");
}

#[test]
fn data_that_does_not_fit_the_model_is_refused() {
    let data = gsure::data::phantoms(4, 32, 1);
    let err = Trainer::new(options(1), data, &dir("misfit"), &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("does not fit") && err.contains("tiny"), "{err}");
}

#[test]
fn a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint() {
    non_finite_stop(&Device::Cpu, "nan");
}

#[test]
fn a_non_finite_loss_stops_a_cuda_run_with_its_weights_untouched() {
    // On CUDA the step is gated on the device (the clip gate's skip flag): AdamW and the EMA leave the
    // weights of the step before, and the host learns of it at the step's one read.
    let Some(gpu) = gsure::testing::gpu_or_skip("non-finite stop on CUDA") else { return };
    non_finite_stop(&gpu, "nan-cuda");
}

fn non_finite_stop(device: &Device, name: &str) {
    late_non_finite_stop(device, &format!("{name}-late"));
    let out = dir(name);
    // A learning rate this large drives the weights to overflow within a few steps.
    let opts = TrainOptions { lr: 1e30, warmup: 1, grad_clip: 0.0, checkpoint_every: 1, ..options(50) };
    let data = gsure::data::phantoms(16, 16, 1);
    let mut t = Trainer::new(opts, data, &out, device, false, false).unwrap();
    let err = t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap_err().to_string();
    let named = format!("at step {}; stopping with the weights of step {}", t.step + 1, t.step);
    assert!(err.contains(&named) && err.contains("last good checkpoint"), "{err}");
    for (name, p) in t.params.iter() {
        assert!(
            p.to_vec_f64().unwrap().iter().all(|v| v.is_finite()),
            "{name}: the skipped step wrote non-finite weights"
        );
    }
    let meta = checkpoint::read_meta(&out.join("checkpoint.safetensors")).unwrap();
    let saved_step = meta["step"].as_u64().unwrap();
    assert!(saved_step < 50 && saved_step == t.step, "checkpoint at step {saved_step}, trainer at {}", t.step);
    let f = gsure::io::safetensors::File::open(&out.join("checkpoint.safetensors")).unwrap();
    for name in f.names() {
        assert!(f.f32(name).unwrap().1.iter().all(|v| v.is_finite()), "{name} holds non-finite values");
    }
}

/// The bad step found when its gate is read, with no checkpoint forcing a wait each step: the log holds
/// every good step before it, the error names it, and the weights are those of the step before it.
fn late_non_finite_stop(device: &Device, name: &str) {
    let out = dir(name);
    let opts = TrainOptions { lr: 1e30, warmup: 1, grad_clip: 0.0, checkpoint_every: 1000, ..options(50) };
    let mut t = Trainer::new(opts, gsure::data::phantoms(16, 16, 1), &out, device, false, false).unwrap();
    let err = t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap_err().to_string();
    let logged: Vec<u64> = losses(&out).iter().enumerate().map(|(i, _)| i as u64 + 1).collect();
    assert_eq!(logged.last().copied().unwrap_or(0), t.step, "every good step is logged, and no other");
    assert!(err.contains(&format!("at step {}", t.step + 1)) && err.contains("no checkpoint"), "{err}");
    assert!(t.params.iter().all(|(_, p)| p.to_vec_f64().unwrap().iter().all(|v| v.is_finite())));
}

#[test]
fn the_edm_family_trains_resumes_and_samples() {
    let opts = |steps| TrainOptions { config: "tiny-edm".into(), ..options(steps) };
    let (a, b) = (dir("edm-straight"), dir("edm-resumed"));
    train(opts(4), &a, false);
    train(opts(2), &b, false);
    train(opts(4), &b, true);
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la, lb, "EDM losses after resuming differ");
    assert!(la.iter().all(|l| l.is_finite()));
    let (dims, values) = gsure::train::sample_run(&a, 2, 0, &Device::Cpu).unwrap();
    assert_eq!(dims, [2, 1, 16, 16]);
    assert!(values.iter().all(|v| v.is_finite()));
}

fn corrupted(opts: &TrainOptions) -> gsure::train::TrainData {
    let model = gsure::nn::ModelConfig::by_name(&opts.config).unwrap();
    gsure::train::load_train_data(None, opts, &model).unwrap()
}

#[test]
fn gsure_trains_on_corrupted_phantoms_and_resumes_exactly() {
    use gsure::train::LossKind;
    let opts = |steps| TrainOptions { loss: LossKind::Gsure, beta_start: 4e-4, ..options(steps) };
    let (a, b) = (dir("gsure-straight"), dir("gsure-resumed"));
    let run = |o: TrainOptions, out: &std::path::Path, resume: bool| {
        let data = corrupted(&o);
        let mut t = Trainer::new(o, data, out, &Device::Cpu, resume, false).unwrap();
        t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
    };
    run(opts(4), &a, false);
    run(opts(2), &b, false);
    run(opts(4), &b, true);
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la, lb);
    assert!(la.iter().all(|l| l.is_finite()));
}

#[test]
fn a_complex_model_trains_on_the_built_in_data_with_every_ddim_loss() {
    // No --data: the oracle sees the phantoms as complex images, GSURE and the naive baseline GSURE's MRI
    // setting (k-space lines at R = 4), so the MRI configurations run out of the box as the image ones do.
    use gsure::train::{LossKind, TrainData};
    for loss in [LossKind::Supervised, LossKind::Naive, LossKind::Gsure] {
        let o = TrainOptions { loss, beta_start: 1e-4, config: "tiny-mri32".into(), steps: 1, ..options(1) };
        let data = corrupted(&o);
        match (&data, loss) {
            (TrainData::Clean(d), LossKind::Supervised) => assert_eq!(d.dims[1], 2),
            (TrainData::Corrupted(d), _) => {
                assert_eq!((d.spec.kind, d.dims[1]), (gsure::corruption::OpKind::Mri, 2), "{loss:?}")
            }
            _ => panic!("{loss:?}: unexpected built-in data"),
        }
        let out = dir(&format!("complex-{loss:?}"));
        let mut t = Trainer::new(o, data, &out, &Device::Cpu, false, false).unwrap();
        let (l, _) = t.train_step().unwrap();
        assert!(l.is_finite(), "{loss:?}: loss {l}");
    }
}

#[test]
fn gsure_refuses_clean_data_edm_models_and_a_too_small_beta_start() {
    use gsure::train::LossKind;
    let clean = gsure::data::phantoms(16, 16, 1);
    let o = TrainOptions { loss: LossKind::Gsure, ..options(1) };
    let err = Trainer::new(o.clone(), clean, &dir("g1"), &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("corrupted"), "{err}");
    // σ0 = 0.02 needs β_start ≥ 4e-4; the default 1e-4 is refused before training, naming the fix.
    let err = Trainer::new(o.clone(), corrupted(&o), &dir("g2"), &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("beta") || err.contains("β"), "{err}");
    let edm = TrainOptions { config: "tiny-edm".into(), beta_start: 4e-4, ..o };
    let err =
        Trainer::new(edm.clone(), corrupted(&edm), &dir("g3"), &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("DDIM"), "{err}");
}

#[test]
fn ambient_and_tweedie_train_resume_and_sample() {
    use gsure::train::LossKind;
    for (loss, config, consistency) in [(LossKind::Ambient, "tiny-ambient", 0.0), (LossKind::Tweedie, "tiny-edm", 0.01)]
    {
        let opts = |steps| TrainOptions { loss, config: config.into(), consistency, ..options(steps) };
        let (a, b) = (dir(&format!("{loss:?}-a")), dir(&format!("{loss:?}-b")));
        let run = |o: TrainOptions, out: &std::path::Path, resume: bool| {
            let data = corrupted(&o);
            let mut t = Trainer::new(o, data, out, &Device::Cpu, resume, false).unwrap();
            t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
        };
        run(opts(3), &a, false);
        run(opts(1), &b, false);
        run(opts(3), &b, true);
        assert_eq!(losses(&a), losses(&b), "{loss:?}: resumed losses differ");
        let (_, values) = gsure::train::sample_run(&a, 2, 0, &Device::Cpu).unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{loss:?}: samples");
    }
}

#[test]
fn ambient_and_tweedie_refuse_mismatched_models_and_data() {
    use gsure::train::LossKind;
    let amb = TrainOptions { loss: LossKind::Ambient, config: "tiny-edm".into(), ..options(1) };
    let err =
        Trainer::new(amb.clone(), corrupted(&amb), &dir("a1"), &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("mask") && err.contains("tiny-ambient"), "{err}");
    let tw = TrainOptions { loss: LossKind::Tweedie, config: "tiny-edm".into(), ..options(1) };
    let wrong = corrupted(&TrainOptions { config: "tiny-ambient".into(), ..amb });
    let err = Trainer::new(tw, wrong, &dir("t1"), &Device::Cpu, false, false).err().unwrap().to_string();
    assert!(err.contains("noise"), "{err}");
}

#[test]
fn resume_equals_an_uninterrupted_run_on_cuda() {
    // Bitwise: every CUDA reduction in the step (conv weight gradients, norms, losses, the gradient norm) sums
    // in a fixed order, so a resumed run repeats the uninterrupted one exactly. In CI this runs on the
    // emulated device, whose workers run blocks in a different order on every run.
    use gsure::train::LossKind;
    let Some(gpu) = gsure::testing::gpu_or_skip("resume on CUDA") else { return };
    let opts = |steps| TrainOptions { loss: LossKind::Gsure, beta_start: 4e-4, ..options(steps) };
    let run = |o: TrainOptions, out: &std::path::Path, resume: bool| {
        let data = corrupted(&o);
        let mut t = Trainer::new(o, data, out, &gpu, resume, false).unwrap();
        t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
        t
    };
    let (a, b) = (dir("cuda-straight"), dir("cuda-resumed"));
    let straight = run(opts(4), &a, false);
    run(opts(2), &b, false);
    let resumed = run(opts(4), &b, true);
    assert_eq!(losses(&a), losses(&b), "losses after resuming differ");
    assert_same_params(&straight, &resumed);
}

/// A step replayed from a captured CUDA graph does what the same step issued launch by launch does, bit for
/// bit: the weights, their average and every logged loss, across the warm-up, the capture and the replays
/// (the learning rate still warming up, so the schedule read from the device changes at every replay), for
/// both model families, f32 and bf16, on clean and on corrupted data, with and without dropout (whose
/// masks a replay derives from the step seed in device memory, inside the convolutions' prologue).
#[test]
fn a_graph_replayed_cuda_run_equals_the_eager_run() {
    use gsure::train::LossKind;
    let Some(gpu) = gsure::testing::gpu_or_skip("graph replay in training") else { return };
    let cases = [
        ("tiny", LossKind::Supervised, false, None),
        ("tiny", LossKind::Naive, true, None),
        ("tiny", LossKind::Gsure, false, Some(0.1)),
        ("tiny-edm", LossKind::Supervised, false, Some(0.2)),
        ("tiny-ambient", LossKind::Ambient, false, None),
        ("tiny-edm", LossKind::Tweedie, false, None),
    ];
    for (config, loss, bf16, dropout) in cases {
        // Tweedie with its consistency loss: the network at four sets of noise levels a step.
        let consistency = if loss == LossKind::Tweedie { 0.01 } else { 0.0 };
        let o = TrainOptions {
            config: config.into(),
            loss,
            bf16,
            consistency,
            dropout,
            warmup: 8,
            beta_start: 4e-4,
            ..options(6)
        };
        let run = |graphs: bool| {
            let out = dir(&format!("graph-{config}-{loss:?}-{graphs}"));
            let mut t = Trainer::new(o.clone(), corrupted(&o), &out, &gpu, false, false).unwrap();
            t.use_cuda_graphs(graphs);
            t.run(&AtomicBool::new(false), |_, _, _| {}).unwrap();
            assert_eq!(t.replays_graph(), graphs, "{config} {loss:?}: replaying a graph");
            (t, losses(&out))
        };
        let ((eager, eager_losses), (replayed, replayed_losses)) = (run(false), run(true));
        assert_eq!(eager_losses, replayed_losses, "{config} {loss:?}: losses");
        assert_same_params(&eager, &replayed);
        for ((name, a), (_, b)) in eager.ema.shadow.iter().zip(&replayed.ema.shadow) {
            assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap(), "{config} {loss:?}: EMA of {name}");
        }
    }
}

#[test]
fn force_keeps_the_previous_run_when_the_new_settings_are_refused() {
    let out = dir("force-refused");
    train(options(2), &out, false);
    let before = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    for (bad, flag) in [
        (TrainOptions { batch: 0, ..options(2) }, "--batch"),
        (TrainOptions { lr: f64::NAN, ..options(2) }, "--lr"),
        (TrainOptions { batch: 10_000, ..options(2) }, "--batch"),
    ] {
        let data = gsure::data::phantoms(bad.phantoms, 16, 1);
        let err = Trainer::new(bad, data, &out, &Device::Cpu, false, true).err().expect("refused").to_string();
        assert!(err.contains(flag), "{err}");
        assert_eq!(std::fs::read(out.join("checkpoint.safetensors")).unwrap(), before, "the old run is intact");
        assert!(out.join("log.jsonl").exists());
    }
    // Accepted settings replace it.
    let data = gsure::data::phantoms(16, 16, 1);
    Trainer::new(options(2), data, &out, &Device::Cpu, false, true).unwrap();
    assert!(!out.join("checkpoint.safetensors").exists(), "--force removed the old run once the new one was ready");
}

#[test]
fn a_resume_repairs_the_log_to_the_checkpoint() {
    // A kill after step 3 (checkpoint at 2) leaves step 3's record and half of step 4's: the resumed run
    // replays steps 3 and 4, and the log ends with each step once, every line whole.
    let out = dir("log-repair");
    let o = |steps| TrainOptions { checkpoint_every: 2, ..options(steps) };
    train(o(2), &out, false);
    {
        use std::io::Write as _;
        let mut log = std::fs::OpenOptions::new().append(true).open(out.join("log.jsonl")).unwrap();
        log.write_all(b"{\"step\":3,\"loss\":0.5,\"grad_norm\":1.0,\"step_ms\":1.0}\n{\"step\":4,\"lo").unwrap();
    }
    train(o(4), &out, true);
    let steps: Vec<u64> = std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line whole")["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    let straight = dir("log-repair-straight");
    train(o(4), &straight, false);
    assert_eq!(losses(&out), losses(&straight), "the replayed steps' records are the uninterrupted run's");
}
