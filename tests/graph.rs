//! CUDA graphs (`Gpu::capture`): a U-Net's forward and backward captured once and replayed on new inputs
//! gives bit for bit what the same work gives eagerly; a capture that waits for the device is refused and
//! leaves the device usable; the graph's blocks go back to the pool when it is gone.
//!
//! Its own test binary, its tests one at a time (`ONE_AT_A_TIME`): a capture must be the only user of the
//! device while it runs (another thread's work would be recorded into the graph; `capture` refuses the
//! graph when that happens).
use gsure::nn::{DdimUnet, DdimUnetConfig};
use gsure::testing::{gpu_or_skip, randn, rng};
use gsure::{backward, ops, DType, ParamStore, Tensor};

/// The loss and every parameter's gradient of one denoising step of `net` at inputs `x`, `target`, `t`.
fn step(net: &DdimUnet, ps: &ParamStore, x: &Tensor, target: &Tensor, t: &Tensor) -> anyhow::Result<Vec<Tensor>> {
    let loss = ops::mean_all(&ops::square(&ops::sub(&net.forward(x, t, None)?, target)?)?)?;
    let grads = backward(&loss)?;
    let mut out = vec![loss];
    for (name, p) in ps.iter() {
        out.push(grads.get(p).ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))?.clone());
    }
    Ok(out)
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn values(ts: &[Tensor]) -> Vec<Vec<f32>> {
    ts.iter().map(|t| t.to_vec_f32().unwrap()).collect()
}

#[test]
fn a_captured_unet_step_replays_bitwise_as_the_eager_step_on_new_inputs() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = gpu_or_skip("CUDA graph capture") else { return };
    let gpu = dev.gpu().unwrap().clone();
    let cfg = DdimUnetConfig { dropout: 0.0, ..DdimUnetConfig::tiny() };
    let mut ps = ParamStore::new();
    let net = DdimUnet::new(&cfg, &mut ps, 0, &dev, DType::F32).unwrap();
    let shape = [2usize, 1, 16, 16];
    let mut r = rng(5);
    let draw = |r: &mut rand::rngs::StdRng| randn(&shape, r).to_dtype(DType::F32).unwrap().to_device(&dev).unwrap();
    // The graph's inputs: fixed buffers, refreshed in place before each replay.
    let (x, target) = (draw(&mut r), draw(&mut r));
    let t = Tensor::from_f32(&[30.0, 600.0], [2], &dev).unwrap();

    let warm = step(&net, &ps, &x, &target, &t).unwrap(); // the allocator now holds the step's blocks
    drop(warm);
    let allocs_before = gpu.activity().device_allocations;
    let (graph, outputs) = gpu.capture(|| step(&net, &ps, &x, &target, &t)).unwrap();
    assert_eq!(
        gpu.activity().device_allocations,
        allocs_before,
        "after one eager step the capture draws every block from the pool"
    );

    for replay in 0..3 {
        let (nx, ntarget) = (draw(&mut r), draw(&mut r));
        x.overwrite(&nx).unwrap();
        target.overwrite(&ntarget).unwrap();
        let before = gpu.activity();
        graph.launch().unwrap();
        let during = gpu.activity() - before;
        assert_eq!((during.graph_launches, during.launches), (1, 0), "a replay is one graph launch");
        let replayed = values(&outputs);
        let eager = values(&step(&net, &ps, &nx, &ntarget, &t).unwrap());
        assert_eq!(replayed.len(), eager.len());
        for (k, (a, b)) in replayed.iter().zip(&eager).enumerate() {
            assert_eq!(a, b, "replay {replay}: output {k} (0 = the loss, then the gradients) differs from eager");
        }
    }

    // Dropping the graph and its outputs returns their blocks to the pool.
    let in_use = gpu.alloc_stats().in_use_bytes;
    drop(outputs);
    drop(graph);
    assert!(gpu.alloc_stats().in_use_bytes < in_use, "the graph's arena went back to the pool");
}

#[test]
fn a_capture_that_waits_for_the_device_is_refused_and_the_device_still_works() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(dev) = gpu_or_skip("CUDA graph capture refusals") else { return };
    let gpu = dev.gpu().unwrap().clone();
    let a = Tensor::from_f32(&[1.0, 2.0, 3.0], [3], &dev).unwrap();
    let err = gpu.capture(|| ops::mean_all(&a)?.item()).err().expect("a download inside a capture must fail");
    assert!(format!("{err:#}").contains("captured into a CUDA graph"), "{err:#}");
    assert_eq!(ops::mean_all(&a).unwrap().item().unwrap(), 2.0, "the device works after a refused capture");
    // A body that panics leaves the device out of capture mode too.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = gpu.capture(|| -> anyhow::Result<()> {
            let _b = ops::scale(&a, 2.0)?;
            panic!("inside a capture")
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(ops::mean_all(&a).unwrap().item().unwrap(), 2.0, "the device works after a capture that panicked");
}
