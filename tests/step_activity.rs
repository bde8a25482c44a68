//! What one steady-state CUDA training step asks of the stream. The counters are the device's, shared by
//! every thread: this file holds one test so that nothing else runs beside it.
use gsure::train::{LossKind, TrainOptions, Trainer};

fn options(loss: LossKind, config: &str, consistency: f64) -> TrainOptions {
    TrainOptions {
        loss,
        consistency,
        steps: 10,
        batch: 4,
        warmup: 2,
        checkpoint_every: 1000,
        sample_every: 0,
        phantoms: 16,
        beta_start: 4e-4,
        ..TrainOptions::for_config(config)
    }
}

/// What one steady-state CUDA step asks of the stream (the step's cost in round trips, counted by the
/// engine on hardware and on the emulated device alike). Held to one host wait (the step's loss and
/// gradient norm, read after the update) and no driver allocation, for the oracle, GSURE and Ambient-Tweedie
/// with its consistency loss (the objective with the most network evaluations a step); and, queued as a
/// run queues them, to no host wait at all: steps replayed from a CUDA graph, each one copy up, one graph
/// launch, the gate's copy down, and nothing else.
#[test]
fn a_steady_state_cuda_step_waits_once_and_allocates_nothing() {
    let Some(gpu) = gsure::testing::gpu_or_skip("step activity on CUDA") else { return };
    let g = gpu.gpu().unwrap().clone();
    for (loss, config, consistency) in
        [(LossKind::Supervised, "tiny", 0.0), (LossKind::Gsure, "tiny", 0.0), (LossKind::Tweedie, "tiny-edm", 0.01)]
    {
        let o = options(loss, config, consistency);
        let model = gsure::nn::ModelConfig::by_name(&o.config).unwrap();
        let data = gsure::train::load_train_data(None, &o, &model).unwrap();
        let out = std::env::temp_dir().join(format!("gsure-step-activity-{}-{loss:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut t = Trainer::new(o, data, &out, &gpu, false, true).unwrap();
        for _ in 0..2 {
            t.train_step().unwrap();
        }
        let before = g.activity();
        t.train_step().unwrap();
        let a = g.activity() - before;
        println!("{loss:?} step on tiny: {a:?}");
        assert_eq!(a.synchronisations, 1, "{loss:?}: {a:?}");
        assert_eq!(a.device_to_host, 1, "{loss:?}: {a:?}");
        assert_eq!(a.device_allocations, 0, "{loss:?}: {a:?}");
        // As `Trainer::run` drives it: each gate goes to pinned host memory behind its step, and no step
        // waits; the host waits once, for whatever is still in flight, when it needs the weights.
        t.step_nowait().unwrap().into_result().unwrap();
        let before = g.activity();
        let first = t.step + 1;
        let mut arrived = Vec::new();
        for _ in 0..3 {
            arrived.extend(t.step_nowait().unwrap().into_result().unwrap().into_iter().map(|(s, _)| s));
        }
        let a = g.activity() - before;
        println!("{loss:?}: 3 steps queued without waiting: {a:?}");
        assert_eq!(a.synchronisations, 0, "{loss:?}: {a:?}");
        assert_eq!(a.device_to_host, 3, "{loss:?}: {a:?}");
        assert_eq!(a.device_allocations, 0, "{loss:?}: {a:?}");
        {
            let replayed = gsure::backend::cuda::StreamActivity {
                host_to_device: 3,
                device_to_host: 3,
                graph_launches: 3,
                ..Default::default()
            };
            assert_eq!(a, replayed, "{loss:?}: three replayed steps");
        }
        let before = g.activity();
        arrived.extend(t.wait_gates().unwrap().into_result().unwrap().into_iter().map(|(s, _)| s));
        // One wait for what is still in flight: none on the emulated device, whose copies land at once.
        assert!((g.activity() - before).synchronisations <= 1);
        assert_eq!(arrived, (first..first + 3).collect::<Vec<_>>(), "every queued step's gate, once, in order");
        let _ = std::fs::remove_dir_all(&out);
    }
}
