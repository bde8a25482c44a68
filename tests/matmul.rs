//! matmul and linear: f64 gradient checks and a naive-loop forward check on the CPU, CPU/CUDA parity for
//! f32 and bf16 at shapes that are not multiples of the kernels' tiles, and bad-input errors.
use gsure::ops::matmul::{cpu as matmul_cpu, cuda as matmul_cuda};
use gsure::ops::matmul::{linear, matmul};
use gsure::tensor::Storage;
use gsure::testing::{gpu_or_skip, gradcheck, parity, randn, rel_error, rng, round_to};
use gsure::{DType, Device, Tensor};

/// (M, K, N) for matmul gradient checks: odd sizes, vectors, 1x1.
const GRAD_SHAPES: &[(usize, usize, usize)] = &[(3, 5, 7), (1, 1, 1), (4, 1, 6), (2, 9, 1), (1, 6, 3)];

fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

#[test]
fn matmul_forward_matches_naive_loops() {
    let mut r = rng(1);
    for &(m, k, n) in GRAD_SHAPES.iter().chain(&[(17, 33, 9)]) {
        let (a, b) = (randn(&[m, k], &mut r), randn(&[k, n], &mut r));
        let got = matmul(&a, &b).unwrap().to_vec_f64().unwrap();
        let want = naive(&a.to_vec_f64().unwrap(), &b.to_vec_f64().unwrap(), m, k, n);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{m}x{k}x{n}: {g} vs {w}");
        }
        // f32 storage goes through sgemm
        let a32 = a.to_dtype(DType::F32).unwrap();
        let b32 = b.to_dtype(DType::F32).unwrap();
        let got32 = matmul(&a32, &b32).unwrap().to_vec_f64().unwrap();
        for (g, w) in got32.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "f32 {m}x{k}x{n}: {g} vs {w}");
        }
    }
}

#[test]
fn linear_forward_matches_naive_loops() {
    let mut r = rng(2);
    let (bsz, inf, outf) = (5, 7, 3);
    let (x, w, bias) = (randn(&[bsz, inf], &mut r), randn(&[outf, inf], &mut r), randn(&[outf], &mut r));
    let got = linear(&x, &w, Some(&bias)).unwrap().to_vec_f64().unwrap();
    let (xv, wv, bv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap(), bias.to_vec_f64().unwrap());
    for i in 0..bsz {
        for o in 0..outf {
            let want: f64 = bv[o] + (0..inf).map(|p| xv[i * inf + p] * wv[o * inf + p]).sum::<f64>();
            assert!((got[i * outf + o] - want).abs() < 1e-12);
        }
    }
    // leading axes are flattened into rows
    let x3 = x.reshape([1, bsz, inf]).unwrap();
    let y3 = linear(&x3, &w, Some(&bias)).unwrap();
    assert_eq!(y3.dims(), &[1, bsz, outf]);
    assert_eq!(y3.to_vec_f64().unwrap(), got);
}

#[test]
fn matmul_gradients() {
    let mut r = rng(3);
    for &(m, k, n) in GRAD_SHAPES {
        let inputs = [randn(&[m, k], &mut r), randn(&[k, n], &mut r)];
        gradcheck(|t| matmul(&t[0], &t[1]), &inputs, &[0, 1]).unwrap_or_else(|e| panic!("{m}x{k}x{n}: {e:#}"));
        // one side at a time (the other one is not tracked)
        gradcheck(|t| matmul(&t[0], &t[1]), &inputs, &[0]).unwrap();
        gradcheck(|t| matmul(&t[0], &t[1]), &inputs, &[1]).unwrap();
    }
}

#[test]
fn linear_gradients() {
    let mut r = rng(4);
    for &(bsz, inf, outf) in &[(4, 5, 3), (1, 1, 1), (3, 7, 1), (2, 1, 6)] {
        let inputs = [randn(&[bsz, inf], &mut r), randn(&[outf, inf], &mut r), randn(&[outf], &mut r)];
        gradcheck(|t| linear(&t[0], &t[1], Some(&t[2])), &inputs, &[0, 1, 2])
            .unwrap_or_else(|e| panic!("{bsz}x{inf}->{outf}: {e:#}"));
        gradcheck(|t| linear(&t[0], &t[1], None), &inputs[..2], &[0, 1]).unwrap();
    }
    let inputs = [randn(&[2, 3, 4], &mut r), randn(&[5, 4], &mut r), randn(&[5], &mut r)];
    gradcheck(|t| linear(&t[0], &t[1], Some(&t[2])), &inputs, &[0, 1, 2]).unwrap();
}

#[test]
fn bad_inputs_are_errors_naming_op_and_shapes() {
    let mut r = rng(5);
    let err = matmul(&randn(&[3, 5], &mut r), &randn(&[4, 7], &mut r)).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains("[3, 5]") && err.contains("[4, 7]"), "{err}");
    let err = matmul(&randn(&[3, 5, 2], &mut r), &randn(&[2, 7], &mut r)).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains("[3, 5, 2]") && err.contains("[2, 7]"), "{err}");
    let f32a = Tensor::zeros([3, 5], DType::F32, &Device::Cpu).unwrap();
    let err = matmul(&f32a, &randn(&[5, 7], &mut r)).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains("f32") && err.contains("f64"), "{err}");

    let err = linear(&randn(&[4, 5], &mut r), &randn(&[3, 6], &mut r), None).unwrap_err().to_string();
    assert!(err.contains("linear") && err.contains("[4, 5]") && err.contains("[3, 6]"), "{err}");
    let err =
        linear(&randn(&[4, 5], &mut r), &randn(&[3, 5], &mut r), Some(&randn(&[4], &mut r))).unwrap_err().to_string();
    assert!(err.contains("linear") && err.contains("[3]") && err.contains("[4]"), "{err}");
    let err = linear(&randn(&[5], &mut r), &randn(&[3, 5], &mut r), None).unwrap_err().to_string();
    assert!(err.contains("linear") && err.contains("[5]") && err.contains("[3, 5]"), "{err}");
}

/// (M, K, N): 1x1x1, odd sizes, tile multiples, K odd, 16-byte-aligned rows with partial tiles (the
/// cp.async path with zero-fill), and large ones that select the 128x128 bf16 tile: the forward "nn"
/// (aligned and not) and, through dB = A^T · dC of M=72 K=1540 N=1544, "tn" with unaligned A rows.
const PARITY_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (17, 33, 65),
    (128, 256, 512),
    (130, 70, 257),
    (130, 264, 72),
    (1540, 72, 1544),
    (1537, 33, 1539),
    (72, 1540, 1544),
];

#[test]
fn cuda_parity() {
    let mut r = rng(6);
    for dtype in [DType::F32, DType::BF16] {
        for &(m, k, n) in PARITY_SHAPES {
            let inputs = [randn(&[m, k], &mut r), randn(&[k, n], &mut r)];
            parity(&format!("matmul {m}x{k}x{n}"), |t| matmul(&t[0], &t[1]), &inputs, &[0, 1], dtype, None).unwrap();
        }
        // (1540, 72, 1544): the forward x · W^T is a 128x128-tile "nt" GEMM with aligned rows.
        for &(bsz, inf, outf) in &[(128, 512, 2048), (3, 17, 5), (130, 72, 40), (1540, 72, 1544)] {
            let inputs = [randn(&[bsz, inf], &mut r), randn(&[outf, inf], &mut r), randn(&[outf], &mut r)];
            parity(
                &format!("linear {bsz}x{inf}->{outf}"),
                |t| linear(&t[0], &t[1], Some(&t[2])),
                &inputs,
                &[0, 1, 2],
                dtype,
                None,
            )
            .unwrap();
        }
    }
}

/// The two 128x128-tile bf16 GEMMs the shapes above leave out. `linear` of x [1536, 9] with w [1408, 9]: the
/// forward x · W^T is a 132-tile "nt" GEMM whose rows (9 columns) are not 16-byte multiples (scalar loads);
/// `matmul` of [8, 1536] @ [1536, 1408]: its dB = A^T · dC is a 132-tile "tn" GEMM with aligned rows
/// (cp.async). K = 9 and 8 keep the big GEMMs to one K step; the other products run on 64x64 tiles.
#[test]
fn cuda_parity_bf16_big_tiles_nt_unaligned_tn_aligned() {
    let mut r = rng(7);
    let (bsz, inf, outf) = (1536, 9, 1408);
    let inputs = [randn(&[bsz, inf], &mut r), randn(&[outf, inf], &mut r)];
    parity(&format!("linear {bsz}x{inf}->{outf}"), |t| linear(&t[0], &t[1], None), &inputs, &[0, 1], DType::BF16, None)
        .unwrap();
    let (m, k, n) = (8, 1536, 1408);
    let inputs = [randn(&[m, k], &mut r), randn(&[k, n], &mut r)];
    parity(&format!("matmul {m}x{k}x{n}"), |t| matmul(&t[0], &t[1]), &inputs, &[0, 1], DType::BF16, None).unwrap();
}

/// C = A^T · B^T (A stored [K, M], B stored [N, K]) from the public launcher `ops::matmul::cuda::matmul`
/// against its CPU twin `ops::matmul::cpu::matmul`. No op asks for both transposes (matmul and linear and
/// their gradients use nn, nt and tn only), so this is the only way to the "tt" kernels: f32, and bf16 on
/// 64x64 tiles with unaligned rows (M = 17) and aligned ones (M, K multiples of 8), and on 128x128 tiles
/// (at least 132 of them) unaligned and aligned.
#[test]
fn cuda_launcher_both_transposed_matches_cpu_twin() {
    let mut r = rng(8);
    // The CPU twin's "tt" against naive loops over explicitly transposed copies.
    let (m, k, n) = (5, 7, 3);
    let (a, b) = (randn(&[k, m], &mut r).to_vec_f64().unwrap(), randn(&[n, k], &mut r).to_vec_f64().unwrap());
    let at: Vec<f64> = (0..m * k).map(|x| a[(x % k) * m + x / k]).collect(); // [m, k]
    let bt: Vec<f64> = (0..k * n).map(|x| b[(x % n) * k + x / n]).collect(); // [k, n]
    let got = matmul_cpu::matmul(&a, &b, m, k, n, true, true);
    for (g, w) in got.iter().zip(naive(&at, &bt, m, k, n)) {
        assert!((g - w).abs() < 1e-12, "cpu tt: {g} vs {w}");
    }

    let Some(device) = gpu_or_skip("cuda_launcher_both_transposed_matches_cpu_twin") else { return };
    let gpu = device.gpu().unwrap();
    let small: &[(usize, usize, usize)] = &[(1, 1, 1), (17, 33, 65), (24, 40, 72)];
    let big: &[(usize, usize, usize)] = &[(1537, 9, 1409), (1536, 16, 1408)];
    for dtype in [DType::F32, DType::BF16] {
        let shapes: Vec<_> =
            if dtype == DType::F32 { small.to_vec() } else { small.iter().chain(big).copied().collect() };
        for (m, k, n) in shapes {
            let a = round_to(&randn(&[k, m], &mut r).to_vec_f64().unwrap(), dtype);
            let b = round_to(&randn(&[n, k], &mut r).to_vec_f64().unwrap(), dtype);
            let want = matmul_cpu::matmul(&a, &b, m, k, n, true, true);
            let (ga, gb) = (
                Tensor::from_f64(&a, [k, m], dtype, &device).unwrap(),
                Tensor::from_f64(&b, [n, k], dtype, &device).unwrap(),
            );
            let c = {
                let (sa, sb) = (ga.storage(), gb.storage());
                let (Storage::Cuda(sa), Storage::Cuda(sb)) = (&*sa, &*sb) else { panic!("operands not on the GPU") };
                matmul_cuda::matmul(gpu, sa, sb, m, k, n, true, true).unwrap()
            };
            let got = Tensor::from_storage(Storage::Cuda(c), [m, n], device.clone()).unwrap().to_vec_f64().unwrap();
            let err = rel_error(&got, &want);
            println!("tt {m}x{k}x{n} {dtype}: {err:.2e}");
            assert!(err <= dtype.tolerance(), "tt {m}x{k}x{n} {dtype}: CUDA vs CPU twin {err:.2e}");
        }
    }
}

/// The Hopper wgmma kernels (kernels/matmul_wgmma.cu, cp.async and TMA main loops) in all four layouts against the CPU twin: M and N
/// not multiples of the 128x128 tile, K over several 64-deep tiles of the 4-stage ring with a partial last
/// one, a single exact tile, a matrix smaller than one 8x8 chunk grid, and an unaligned row length (17),
/// which runs on mma.sync's scalar-load kernel whichever is named.
#[test]
fn cuda_wgmma_gemm_matches_cpu_twin() {
    use gsure::ops::matmul::cuda::Bf16Gemm;
    let Some(device) = gpu_or_skip("cuda_wgmma_gemm_matches_cpu_twin") else { return };
    let gpu = device.gpu().unwrap();
    if let Some(why) = Bf16Gemm::Wgmma.unsupported(gpu) {
        println!("skipped: {why}");
        return;
    }
    let mut r = rng(9);
    let dtype = DType::BF16;
    let shapes: &[(usize, usize, usize)] = &[(200, 328, 136), (128, 64, 128), (8, 8, 8), (136, 520, 264), (24, 17, 40)];
    for (kernels, &(m, k, n)) in
        [Bf16Gemm::Wgmma, Bf16Gemm::Tma].into_iter().flat_map(|g| shapes.iter().map(move |s| (g, s)))
    {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (a_dims, b_dims) = (if ta { [k, m] } else { [m, k] }, if tb { [n, k] } else { [k, n] });
            let a = round_to(&randn(&a_dims, &mut r).to_vec_f64().unwrap(), dtype);
            let b = round_to(&randn(&b_dims, &mut r).to_vec_f64().unwrap(), dtype);
            let want = matmul_cpu::matmul(&a, &b, m, k, n, ta, tb);
            let (ga, gb) = (
                Tensor::from_f64(&a, a_dims, dtype, &device).unwrap(),
                Tensor::from_f64(&b, b_dims, dtype, &device).unwrap(),
            );
            let c = {
                let (sa, sb) = (ga.storage(), gb.storage());
                let (Storage::Cuda(sa), Storage::Cuda(sb)) = (&*sa, &*sb) else { panic!("operands not on the GPU") };
                matmul_cuda::matmul_with(gpu, sa, sb, m, k, n, ta, tb, kernels).unwrap()
            };
            let got = Tensor::from_storage(Storage::Cuda(c), [m, n], device.clone()).unwrap().to_vec_f64().unwrap();
            let err = rel_error(&got, &want);
            let what = format!("{} ta={ta} tb={tb} {m}x{k}x{n}", kernels.name());
            println!("{what}: {err:.2e}");
            assert!(err <= dtype.tolerance(), "{what}: CUDA vs CPU twin {err:.2e}");
        }
    }
}
