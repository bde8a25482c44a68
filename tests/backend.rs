//! Devices, transfers, dtype casts and the caching allocator. GPU tests skip (saying so) without a GPU.
use gsure::backend::cuda::Gpu;
use gsure::testing::{gpu_or_skip, parity, randn, rng};
use gsure::{backward, ops, DType, Device, Tensor};
use std::sync::{Mutex, MutexGuard};

/// Held by every test here that uses the GPU. The caching allocator is one per process and cargo runs a
/// binary's tests on parallel threads: `steady_state_makes_no_device_allocations` compares its global
/// counters before and after, which another test allocating (or the out-of-memory test emptying the cache)
/// in between would break. A test that panics poisons the lock; the next one takes it anyway.
static DEVICE: Mutex<()> = Mutex::new(());

fn device_lock() -> MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn cuda_device_errors_instead_of_panicking_when_unusable() {
    if Gpu::available() {
        return;
    }
    let err = Device::cuda().expect_err("no GPU here").to_string();
    assert!(err.contains("CUDA device unavailable"), "{err}");
    assert!(err.contains("nvcc") || err.contains("driver") || err.contains("device"), "{err}");
    assert!(Device::parse("tpu").is_err());
    assert_eq!(Device::best(), Device::Cpu);
}

#[test]
fn cpu_dtype_round_trip_and_gradient_through_casts() {
    let mut r = rng(1);
    let x = randn(&[3, 4], &mut r).set_requires_grad(true);
    let y = x.to_dtype(DType::F32).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let g = backward(&ops::sum_all(&ops::square(&y).unwrap()).unwrap()).unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dtype(), DType::F64, "gradient comes back in the leaf's dtype");
    for (a, b) in gx.to_vec_f64().unwrap().iter().zip(x.to_vec_f64().unwrap()) {
        assert!((a - 2.0 * b).abs() < 1e-5 * (1.0 + b.abs()));
    }
    assert!(Tensor::zeros([2], DType::BF16, &Device::Cpu).is_err(), "the CPU holds no bf16");
}

#[test]
fn cuda_transfers_round_trip_exactly_in_f32_and_within_bf16_rounding() {
    let _device = device_lock();
    let Some(gpu) = gpu_or_skip("transfers") else { return };
    let mut r = rng(2);
    let x = randn(&[5, 7, 3], &mut r).to_dtype(DType::F32).unwrap();
    let back = x.to_device(&gpu).unwrap().to_device(&Device::Cpu).unwrap();
    assert_eq!(back.to_vec_f32().unwrap(), x.to_vec_f32().unwrap());
    let b16 = x.to_device(&gpu).unwrap().to_dtype(DType::BF16).unwrap();
    for (a, b) in b16.to_vec_f64().unwrap().iter().zip(x.to_vec_f64().unwrap()) {
        assert!((a - b).abs() <= b.abs() * 2f64.powi(-8) + 1e-30);
    }
    let f = b16.to_dtype(DType::F32).unwrap();
    assert_eq!(f.to_vec_f64().unwrap(), b16.to_vec_f64().unwrap(), "bf16 -> f32 is exact");
}

#[test]
fn gradients_flow_across_cuda_and_cpu() {
    let _device = device_lock();
    let Some(gpu) = gpu_or_skip("gradients_flow_across_devices") else { return };
    let mut r = rng(3);
    let x = randn(&[4, 4], &mut r).set_requires_grad(true);
    parity("to_device", |t| t[0].to_device(&Device::Cpu), &[x.clone()], &[0], DType::F32, None).unwrap();
    let y = x.to_device(&gpu).unwrap();
    let g = backward(&ops::sum_all(&ops::scale(&y, 3.0).unwrap()).unwrap()).unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.device(), &Device::Cpu);
    assert!(gx.to_vec_f64().unwrap().iter().all(|&v| (v - 3.0).abs() < 1e-6));
}

#[test]
fn cuda_steady_state_makes_no_device_allocations() {
    let _device = device_lock();
    let Some(dev) = gpu_or_skip("steady_state_makes_no_device_allocations") else { return };
    let gpu = dev.gpu().unwrap().clone();
    let mut r = rng(4);
    let x = randn(&[64, 3, 17, 9], &mut r).to_device(&dev).unwrap().set_requires_grad(true);
    let s = randn(&[3], &mut r).to_device(&dev).unwrap().set_requires_grad(true);
    let step = || {
        let y = ops::silu(&ops::mul_along(&x, &s, 1).unwrap()).unwrap();
        let g = backward(&ops::mean_all(&ops::square(&y).unwrap()).unwrap()).unwrap();
        assert!(g.get(&x).is_some() && g.get(&s).is_some());
    };
    step();
    step();
    let before = gpu.alloc_stats();
    for _ in 0..5 {
        step();
    }
    let after = gpu.alloc_stats();
    assert_eq!(after.device_allocs, before.device_allocs, "steady state hit cuMemAlloc: {before:?} -> {after:?}");
    assert!(after.reuses > before.reuses);
}

#[test]
fn cuda_out_of_memory_is_an_error_naming_the_sizes() {
    let _device = device_lock();
    let Some(dev) = gpu_or_skip("out_of_memory_is_an_error_naming_the_sizes") else { return };
    let gpu = dev.gpu().unwrap();
    let err = gpu.alloc::<f32>(1usize << 46).err().expect("256 TiB cannot be allocated").to_string();
    assert!(err.contains("out of GPU memory") && err.contains("asked for") && err.contains("free"), "{err}");
    // The device still works afterwards.
    let t = Tensor::full([3], 2.0, DType::F32, &dev).unwrap();
    assert_eq!(t.to_vec_f32().unwrap(), vec![2.0; 3]);
}
