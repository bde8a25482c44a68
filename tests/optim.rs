//! AdamW against its closed form, CPU/CUDA parity of the fused update, EMA and gradient clipping.
use gsure::testing::{gpu_or_skip, randn, rng};
use gsure::train::{clip_grad_norm, AdamConfig, AdamW, Ema};
use gsure::{backward, ops, DType, Device, ParamStore, Tensor};

/// Loss = Σ (w ⊙ p)² / 2 → gradient w² ⊙ p.
fn quadratic_step(ps: &ParamStore, opt: &mut AdamW, w: &Tensor) {
    let p = ps.get("p").unwrap();
    let loss = ops::scale(&ops::sum_all(&ops::square(&ops::mul(p, w).unwrap()).unwrap()).unwrap(), 0.5).unwrap();
    let g = backward(&loss).unwrap();
    opt.step(ps, &g, opt.config.lr, 1.0).unwrap();
}

#[test]
fn adamw_matches_its_closed_form() {
    let cfg = AdamConfig { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 };
    let p0 = [1.0, -2.0, 0.5];
    let w = [1.0, 0.5, 3.0];
    let mut ps = ParamStore::new();
    ps.insert("p", &Tensor::from_f64(&p0, [3], DType::F64, &Device::Cpu).unwrap()).unwrap();
    let wt = Tensor::from_f64(&w, [3], DType::F64, &Device::Cpu).unwrap();
    let mut opt = AdamW::new(cfg, &ps).unwrap();
    let (mut p, mut m, mut v) = (p0, [0.0; 3], [0.0; 3]);
    for step in 1..=5 {
        quadratic_step(&ps, &mut opt, &wt);
        for i in 0..3 {
            let g = w[i] * w[i] * p[i];
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.99 * v[i] + 0.01 * g * g;
            let (mh, vh) = (m[i] / (1.0 - 0.9f64.powi(step)), v[i] / (1.0 - 0.99f64.powi(step)));
            p[i] = p[i] * (1.0 - 0.1 * 0.01) - 0.1 * mh / (vh.sqrt() + 1e-8);
        }
    }
    let got = ps.get("p").unwrap().to_vec_f64().unwrap();
    for i in 0..3 {
        // The hyper-parameters pass through f32 (as on the GPU): agree to f32 precision.
        assert!((got[i] - p[i]).abs() < 1e-6, "{got:?} vs {p:?}");
    }
}

#[test]
fn adamw_cuda_matches_cpu() {
    let Some(gpu) = gpu_or_skip("adamw_cuda_matches_cpu") else { return };
    let mut r = rng(1);
    let shapes: [&[usize]; 3] = [&[5000], &[3, 7], &[64, 32, 3, 3]];
    let init: Vec<Tensor> = shapes.iter().map(|s| randn(s, &mut r).to_dtype(DType::F32).unwrap()).collect();
    let weights: Vec<Tensor> = shapes.iter().map(|s| randn(s, &mut r).to_dtype(DType::F32).unwrap()).collect();
    let run = |device: &Device| {
        let mut ps = ParamStore::new();
        for (i, t) in init.iter().enumerate() {
            // AdamW updates its parameters in place, and `to_device` onto the tensor's own device (the CPU
            // run) shares storage: a deep copy keeps `init` intact for the run that comes second.
            let p = t.to_device(device).unwrap().deep_copy().unwrap();
            assert!(!p.same_storage(t), "each run starts from its own copy of the initial values");
            ps.insert(&format!("p{i}"), &p).unwrap();
        }
        let cfg = AdamConfig { lr: 0.01, weight_decay: 0.1, ..AdamConfig::default() };
        let mut opt = AdamW::new(cfg, &ps).unwrap();
        for _ in 0..3 {
            let mut loss = None;
            for (i, w) in weights.iter().enumerate() {
                let p = ps.get(&format!("p{i}")).unwrap();
                let l =
                    ops::sum_all(&ops::square(&ops::mul(p, &w.to_device(device).unwrap()).unwrap()).unwrap()).unwrap();
                loss = Some(match loss {
                    None => l,
                    Some(acc) => ops::add(&acc, &l).unwrap(),
                });
            }
            let g = backward(&loss.unwrap()).unwrap();
            opt.step(&ps, &g, 0.01, 0.5).unwrap();
        }
        (0..3).map(|i| ps.get(&format!("p{i}")).unwrap().to_vec_f64().unwrap()).collect::<Vec<_>>()
    };
    let (cpu, cuda) = (run(&Device::Cpu), run(&gpu));
    for (a, b) in cpu.iter().zip(&cuda) {
        let err = gsure::testing::rel_error(b, a);
        assert!(err < 1e-5, "AdamW CUDA vs CPU: {err:.2e}");
    }
}

#[test]
fn parameters_from_a_deep_copy_leave_the_source_untouched() {
    // `to_device` onto the CPU is the tensor itself (shared storage): an in-place AdamW step through it
    // would move the source too. `deep_copy` is what gives a run its own starting values.
    let src = Tensor::from_f64(&[1.0, -2.0, 0.5], [3], DType::F32, &Device::Cpu).unwrap();
    assert!(src.to_device(&Device::Cpu).unwrap().same_storage(&src), "same-device to_device shares storage");
    let w = Tensor::from_f64(&[1.0, 1.0, 1.0], [3], DType::F32, &Device::Cpu).unwrap();
    let mut ps = ParamStore::new();
    let copy = src.to_device(&Device::Cpu).unwrap().deep_copy().unwrap();
    assert!(!copy.same_storage(&src));
    ps.insert("p", &copy).unwrap();
    let mut opt = AdamW::new(AdamConfig { lr: 0.1, ..AdamConfig::default() }, &ps).unwrap();
    quadratic_step(&ps, &mut opt, &w);
    assert_ne!(ps.get("p").unwrap().to_vec_f64().unwrap(), vec![1.0, -2.0, 0.5], "the parameter moved");
    assert_eq!(src.to_vec_f64().unwrap(), vec![1.0, -2.0, 0.5], "the source did not");
}

#[test]
fn ema_tracks_the_parameters() {
    let mut ps = ParamStore::new();
    let p = ps.insert("p", &Tensor::from_f64(&[0.0, 10.0], [2], DType::F64, &Device::Cpu).unwrap()).unwrap();
    let mut ema = Ema::new(0.5, &ps).unwrap();
    {
        let mut s = p.storage_mut();
        if let gsure::tensor::Storage::Cpu(gsure::tensor::CpuStorage::F64(v)) = &mut *s {
            v.copy_from_slice(&[4.0, 2.0]);
        }
    }
    ema.update(&ps).unwrap();
    assert_eq!(ema.shadow[0].1.to_vec_f64().unwrap(), vec![2.0, 6.0]);
    assert!(Ema::new(1.0, &ps).is_err());
}

#[test]
fn clipping_scales_the_global_norm_down_only() {
    let mut ps = ParamStore::new();
    let a = ps.insert("a", &Tensor::from_f64(&[3.0], [1], DType::F64, &Device::Cpu).unwrap()).unwrap();
    let b = ps.insert("b", &Tensor::from_f64(&[4.0], [1], DType::F64, &Device::Cpu).unwrap()).unwrap();
    // loss = a² / 2 + b² / 2 → gradients (3, 4), norm 5.
    let loss = ops::scale(&ops::add(&ops::square(&a).unwrap(), &ops::square(&b).unwrap()).unwrap(), 0.5).unwrap();
    let loss = ops::sum_all(&loss).unwrap();
    let g = backward(&loss).unwrap();
    let (norm, scale) = clip_grad_norm(&ps, &g, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-12 && (scale - 1.0 / 5.0).abs() < 1e-6);
    assert_eq!(clip_grad_norm(&ps, &g, 10.0).unwrap().1, 1.0);
}

/// Parameters (two tensors and an empty one), gradients of Σ w ⊙ p² / 2 and that loss, on `device`.
fn gated_problem(device: &Device, scale_loss: f64) -> (ParamStore, gsure::autograd::Grads, Tensor) {
    let mut r = rng(7);
    let mut ps = ParamStore::new();
    for (i, shape) in [&[9000usize][..], &[3, 5], &[0]].iter().enumerate() {
        let t = randn(shape, &mut r).to_dtype(DType::F32).unwrap().to_device(device).unwrap().deep_copy().unwrap();
        ps.insert(&format!("p{i}"), &t).unwrap();
    }
    let mut loss = None;
    for (_, p) in ps.iter() {
        let l = ops::sum_all(&ops::square(p).unwrap()).unwrap();
        loss = Some(match loss {
            None => l,
            Some(acc) => ops::add(&acc, &l).unwrap(),
        });
    }
    let loss = ops::scale(&loss.unwrap(), 0.5 * scale_loss).unwrap();
    let g = backward(&loss).unwrap();
    (ps, g, loss)
}

#[test]
fn clip_gate_holds_loss_norm_scale_and_skip() {
    let (ps, g, loss) = gated_problem(&Device::Cpu, 1.0);
    // The gradient is p itself: its norm is the parameters' norm.
    let want: f64 =
        ps.iter().map(|(_, p)| p.to_vec_f64().unwrap().iter().map(|x| x * x).sum::<f64>()).sum::<f64>().sqrt();
    let mut ws = gsure::train::GateWorkspace::default();
    let v = gsure::train::clip_gate(&ps, &g, Some(&loss), 1.0, &mut ws).unwrap().read().unwrap();
    // f32 gradients summed in f32 per tensor: agree to f32 precision.
    assert!((v.norm - want).abs() < 1e-5 * want, "{v:?} vs norm {want}");
    assert!((v.loss - loss.item().unwrap()).abs() < 1e-12 && !v.skip);
    assert!((v.scale - 1.0 / (v.norm + 1e-6)).abs() < 1e-12);
    let v = gsure::train::clip_gate(&ps, &g, Some(&loss), 1e6, &mut ws).unwrap().read().unwrap();
    assert_eq!((v.scale, v.skip), (1.0, false), "below max_norm nothing is scaled");
    let nan = Tensor::from_f64(&[f64::NAN], [], DType::F32, &Device::Cpu).unwrap();
    let v = gsure::train::clip_gate(&ps, &g, Some(&nan), 1.0, &mut ws).unwrap().read().unwrap();
    assert!(v.skip && v.scale == 0.0 && v.loss.is_nan());
}

/// A skipped gate leaves every weight, moment and average as it was; the CUDA gate and gated step agree
/// with the CPU twin.
#[test]
fn gated_cuda_step_matches_cpu_and_a_skipped_step_changes_nothing() {
    let run = |device: &Device, poison: bool| {
        let (ps, g, loss) = gated_problem(device, 1.0);
        let loss = if poison { ops::scale(&loss, f64::NAN).unwrap() } else { loss };
        let before: Vec<Vec<f64>> = ps.iter().map(|(_, p)| p.to_vec_f64().unwrap()).collect();
        let mut opt = AdamW::new(AdamConfig { lr: 0.01, weight_decay: 0.1, ..AdamConfig::default() }, &ps).unwrap();
        let mut ema = Ema::new(0.5, &ps).unwrap();
        let mut ws = gsure::train::GateWorkspace::default();
        let mut values = Vec::new();
        for _ in 0..2 {
            let gate = gsure::train::clip_gate(&ps, &g, Some(&loss), 10.0, &mut ws).unwrap();
            opt.step_gated(&ps, &g, 0.01, &gate).unwrap();
            ema.update_gated(&ps, Some(&gate)).unwrap();
            values.push(gate.read().unwrap());
        }
        let after: Vec<Vec<f64>> = ps.iter().map(|(_, p)| p.to_vec_f64().unwrap()).collect();
        let avg: Vec<Vec<f64>> = ema.shadow.iter().map(|(_, e)| e.to_vec_f64().unwrap()).collect();
        if poison {
            assert_eq!(after, before, "a skipped step moves no weight ({device:?})");
            assert_eq!(avg, before, "nor any average");
            assert!(values.iter().all(|v| v.skip));
        } else {
            assert_ne!(after, before);
        }
        (values, after, avg)
    };
    let (cpu, cpu_w, cpu_avg) = run(&Device::Cpu, false);
    run(&Device::Cpu, true);
    let Some(gpu) = gpu_or_skip("gated_step_matches_cpu_and_a_skipped_step_changes_nothing") else { return };
    let (cuda, cuda_w, cuda_avg) = run(&gpu, false);
    run(&gpu, true);
    for (a, b) in cpu.iter().zip(&cuda) {
        assert!((a.norm - b.norm).abs() < 1e-5 * a.norm, "norm {a:?} vs {b:?}");
        assert!((a.loss - b.loss).abs() < 1e-5 * a.loss.abs() && (a.scale - b.scale).abs() < 1e-5 && !b.skip);
    }
    for (a, b) in cpu_w.iter().chain(&cpu_avg).zip(cuda_w.iter().chain(&cuda_avg)) {
        let err = gsure::testing::rel_error(b, a);
        assert!(err < 1e-5, "gated AdamW/EMA CUDA vs CPU: {err:.2e}");
    }
}

/// A sticky gate halts the run at the first bad step: a finite step after it is skipped too (halted),
/// so weights read late are still the step-before-the-bad-one's; an ordinary gate judges each step alone.
/// The CUDA kernel and its CPU twin agree.
#[test]
fn a_sticky_cuda_gate_halts_every_step_after_a_bad_one() {
    let run = |device: &Device| {
        let (ps, g, loss) = gated_problem(device, 1.0);
        let nan = ops::scale(&loss, f64::NAN).unwrap();
        let mut opt = AdamW::new(AdamConfig { lr: 0.01, ..AdamConfig::default() }, &ps).unwrap();
        let mut ws = gsure::train::GateWorkspace::sticky();
        let mut seen = Vec::new();
        let mut weights = Vec::new();
        for l in [&loss, &nan, &loss, &loss] {
            let gate = gsure::train::clip_gate(&ps, &g, Some(l), 10.0, &mut ws).unwrap();
            opt.step_gated(&ps, &g, 0.01, &gate).unwrap();
            let v = gate.read().unwrap();
            seen.push((v.skip, v.halted, v.scale == 0.0));
            weights.push(ps.iter().map(|(_, p)| p.to_vec_f64().unwrap()).collect::<Vec<_>>());
        }
        assert_eq!(
            seen,
            [(false, false, false), (true, false, true), (true, true, true), (true, true, true)],
            "{device:?}"
        );
        assert!(
            weights[1] == weights[0] && weights[3] == weights[0],
            "no weight moves after the bad step ({device:?})"
        );
        // Not sticky: the finite step after a bad one goes ahead.
        let mut plain = gsure::train::GateWorkspace::default();
        gsure::train::clip_gate(&ps, &g, Some(&nan), 10.0, &mut plain).unwrap();
        let v = gsure::train::clip_gate(&ps, &g, Some(&loss), 10.0, &mut plain).unwrap().read().unwrap();
        assert!(!v.skip && !v.halted, "{device:?}: {v:?}");
    };
    run(&Device::Cpu);
    let Some(gpu) = gpu_or_skip("a_sticky_gate_halts_every_step_after_a_bad_one") else { return };
    run(&gpu);
}
