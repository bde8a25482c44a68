//! conv2d: f64 gradient checks and a naive-loop reference on the CPU, CPU/CUDA parity in f32 and bf16, and
//! refusal of bad input.
use gsure::ops::conv::{conv2d, conv2d_with, norm_conv2d, Epilogue, InputNorm};
use gsure::testing::{gradcheck, parity, randn, rng, uniform};
use gsure::{DType, Device, Tensor};

/// (n, c_in, h, w, c_out, k, stride, pad)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

fn inputs(case: Case, seed: u64) -> Vec<Tensor> {
    let (n, ci, h, w, co, k, _, _) = case;
    let mut r = rng(seed);
    vec![randn(&[n, ci, h, w], &mut r), randn(&[co, ci, k, k], &mut r), randn(&[co], &mut r)]
}

/// The seven-loop definition, in f64, with the bias added.
fn naive(x: &[f64], w: &[f64], b: &[f64], case: Case) -> Vec<f64> {
    let (n, ci, h, wd, co, k, s, p) = case;
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (wd + 2 * p - k) / s + 1;
    let mut y = vec![0.0; n * co * ho * wo];
    for img in 0..n {
        for o in 0..co {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = b[o];
                    for c in 0..ci {
                        for kh in 0..k {
                            for kw in 0..k {
                                let ih = (oh * s + kh) as isize - p as isize;
                                let iw = (ow * s + kw) as isize - p as isize;
                                if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < wd {
                                    acc += x[((img * ci + c) * h + ih as usize) * wd + iw as usize]
                                        * w[((o * ci + c) * k + kh) * k + kw];
                                }
                            }
                        }
                    }
                    y[((img * co + o) * ho + oh) * wo + ow] = acc;
                }
            }
        }
    }
    y
}

const GRAD_CASES: &[Case] = &[
    (2, 3, 7, 5, 4, 3, 1, 1),
    (2, 3, 7, 9, 4, 3, 2, 1),
    (2, 3, 5, 6, 4, 1, 1, 0),
    (2, 2, 9, 7, 3, 3, 2, 0),
    (1, 2, 4, 4, 2, 5, 1, 2),
    (5, 2, 5, 4, 3, 3, 1, 1), // several images: dW sums over the batch
    (1, 2, 6, 7, 2, 1, 2, 0), // 1x1 stride 2: odd rows/cols never reached, their dx is 0
    // small images, a batch that does not divide evenly: several images share each CPU GEMM, the last
    // group shorter (3×3, 1×1 and stride 2)
    (7, 2, 4, 3, 3, 3, 1, 1),
    (7, 3, 4, 4, 2, 1, 1, 0),
    (7, 2, 5, 4, 3, 3, 2, 1),
];

#[test]
fn gradients_for_input_weights_and_bias() {
    for (i, &case) in GRAD_CASES.iter().enumerate() {
        let (_, _, _, _, _, _, s, p) = case;
        gradcheck(|t| conv2d(&t[0], &t[1], Some(&t[2]), s, p), &inputs(case, 10 + i as u64), &[0, 1, 2])
            .unwrap_or_else(|e| panic!("{case:?}: {e:#}"));
    }
}

/// x, w, bias, then the epilogue's per-image values [N, C_out] and residual [N, C_out, H_out, W_out].
fn epilogue_inputs(case: Case, seed: u64) -> Vec<Tensor> {
    let (n, _, h, w, co, k, s, p) = case;
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut t = inputs(case, seed);
    let mut r = rng(seed + 1000);
    t.push(randn(&[n, co], &mut r));
    t.push(randn(&[n, co, ho, wo], &mut r));
    t
}

/// conv2d with every epilogue operand and a scale, as the residual blocks call it.
fn conv_epilogue(t: &[Tensor], s: usize, p: usize, scale: f64) -> anyhow::Result<Tensor> {
    let epi = Epilogue { bias: Some(&t[2]), per_image: Some(&t[3]), residual: Some(&t[4]), scale };
    conv2d_with(&t[0], &t[1], s, p, epi)
}

#[test]
fn epilogue_gradients_for_every_operand() {
    for (i, &case) in [(2, 3, 5, 4, 4, 3, 1, 1), (3, 2, 6, 5, 3, 3, 2, 1), (7, 3, 4, 4, 2, 1, 1, 0)].iter().enumerate()
    {
        let (s, p) = (case.6, case.7);
        gradcheck(|t| conv_epilogue(t, s, p, 0.7), &epilogue_inputs(case, 40 + i as u64), &[0, 1, 2, 3, 4])
            .unwrap_or_else(|e| panic!("{case:?}: {e:#}"));
    }
}

/// f(t) and the gradients of Σ f(t) ⊙ weight for every tensor of `t`, as f64 vectors.
fn output_and_grads(f: &dyn Fn(&[Tensor]) -> anyhow::Result<Tensor>, t: &[Tensor], weight: &Tensor) -> Vec<Vec<f64>> {
    let y = f(t).unwrap();
    let grads = gsure::backward(&gsure::ops::sum_all(&gsure::ops::mul(&y, weight).unwrap()).unwrap()).unwrap();
    let mut all = vec![y.to_vec_f64().unwrap()];
    all.extend(t.iter().map(|t| grads.get(t).unwrap().to_vec_f64().unwrap()));
    all
}

/// On the CPU the epilogue makes the separate ops' adds in their order: f32 outputs and gradients are
/// bitwise those of conv2d, add_along, add and scale.
#[test]
fn epilogue_equals_the_separate_ops_on_cpu() {
    use gsure::ops::{add, add_along, scale};
    let case = (3, 4, 6, 5, 5, 3, 1, 1);
    let (n, co) = (case.0, case.4);
    let t: Vec<Tensor> =
        epilogue_inputs(case, 77).iter().map(|t| t.to_dtype(DType::F32).unwrap().set_requires_grad(true)).collect();
    let separate = |t: &[Tensor]| -> anyhow::Result<Tensor> {
        let y = conv2d(&t[0], &t[1], Some(&t[2]), 1, 1)?;
        let (h, w) = (y.dims()[2], y.dims()[3]);
        let y = add_along(&y.reshape([n * co, h * w])?, &t[3].reshape([n * co])?, 0)?.reshape([n, co, h, w])?;
        scale(&add(&t[4], &y)?, 0.7)
    };
    let weight = randn(&[n, co, 6, 5], &mut rng(5)).to_dtype(DType::F32).unwrap();
    let run = |f: &dyn Fn(&[Tensor]) -> anyhow::Result<Tensor>| output_and_grads(f, &t, &weight);
    let (fused, apart) = (run(&|t| conv_epilogue(t, 1, 1, 0.7)), run(&separate));
    for (what, (a, b)) in ["y", "dx", "dw", "db", "d per_image", "d residual"].iter().zip(fused.iter().zip(&apart)) {
        assert_eq!(a, b, "{what}: fused epilogue and separate ops differ");
    }
}

/// x, w, bias, per-image values, then the norm's gamma and beta (not ones and zeros, so that both matter).
fn norm_conv_inputs(case: Case, seed: u64) -> Vec<Tensor> {
    let mut t = epilogue_inputs(case, seed);
    t.truncate(4);
    let mut r = rng(seed + 2000);
    t.push(uniform(&[case.1], 0.5, 1.5, &mut r));
    t.push(randn(&[case.1], &mut r));
    t
}

/// The input's norm of a norm-conv case: its groups, SiLU or not, and a dropout rate (0 for none).
#[derive(Clone, Copy, Debug)]
struct NormIn {
    groups: usize,
    silu: bool,
    drop: f64,
}

/// The host seed every norm-conv test's dropout mask is drawn from.
const DROP_SEED: u64 = 4242;

/// group_norm (+ SiLU) (+ dropout) into conv2d with a per-image add in the epilogue, as one op.
fn norm_conv(t: &[Tensor], n: NormIn, s: usize, p: usize) -> anyhow::Result<Tensor> {
    let dropout = gsure::ops::dropout::mask(n.drop, DROP_SEED, "test")?;
    let norm = InputNorm { gamma: &t[4], beta: &t[5], groups: n.groups, eps: 1e-5, silu: n.silu, dropout };
    norm_conv2d(&t[0], norm, &t[1], s, p, Epilogue::with_bias(Some(&t[2])).with_per_image(&t[3]))
}

const fn norm_in(groups: usize, silu: bool, drop: f64) -> NormIn {
    NormIn { groups, silu, drop }
}

/// 3×3 with SiLU and dropout, stride 2, a 1×1 without SiLU, with dropout.
const NORM_CONV_CASES: &[(Case, NormIn)] = &[
    ((2, 4, 5, 4, 3, 3, 1, 1), norm_in(2, true, 0.3)),
    ((3, 6, 6, 5, 4, 3, 2, 1), norm_in(3, true, 0.0)),
    ((2, 4, 4, 4, 5, 1, 1, 0), norm_in(4, false, 0.5)),
];

#[test]
fn norm_conv_gradients_for_every_input() {
    for (i, &(case, norm)) in NORM_CONV_CASES.iter().enumerate() {
        let (s, p) = (case.6, case.7);
        let t = norm_conv_inputs(case, 60 + i as u64);
        gradcheck(|t| norm_conv(t, norm, s, p), &t, &[0, 1, 2, 3, 4, 5])
            .unwrap_or_else(|e| panic!("{case:?} {norm:?}: {e:#}"));
    }
}

/// On the CPU the fused op is the norm (and mask) into a tensor and the plain convolution: f32 outputs
/// and gradients are bitwise those of group_norm, dropout and conv2d_with in turn.
#[test]
fn norm_conv_equals_the_separate_ops_on_cpu() {
    use gsure::ops::{dropout::dropout, group_norm};
    let case = (3, 6, 7, 5, 4, 3, 1, 1);
    for norm in [norm_in(3, true, 0.0), norm_in(3, true, 0.25)] {
        let t: Vec<Tensor> = norm_conv_inputs(case, 88)
            .iter()
            .map(|t| t.to_dtype(DType::F32).unwrap().set_requires_grad(true))
            .collect();
        let separate = |t: &[Tensor]| -> anyhow::Result<Tensor> {
            let a = dropout(&group_norm(&t[0], &t[4], &t[5], norm.groups, 1e-5, norm.silu)?, norm.drop, DROP_SEED)?;
            conv2d_with(&a, &t[1], 1, 1, Epilogue::with_bias(Some(&t[2])).with_per_image(&t[3]))
        };
        let weight = randn(&[3, 4, 7, 5], &mut rng(6)).to_dtype(DType::F32).unwrap();
        let run = |f: &dyn Fn(&[Tensor]) -> anyhow::Result<Tensor>| output_and_grads(f, &t, &weight);
        let (fused, apart) = (run(&|t| norm_conv(t, norm, 1, 1)), run(&separate));
        let names = ["y", "dx", "dw", "db", "d per_image", "dgamma", "dbeta"];
        for (what, (a, b)) in names.iter().zip(fused.iter().zip(&apart)) {
            assert_eq!(a, b, "{what} {norm:?}: fused norm-conv and separate ops differ");
        }
    }
}

#[test]
fn gradients_without_bias() {
    let case = (2, 3, 6, 5, 2, 3, 2, 1);
    let t = inputs(case, 7);
    gradcheck(|t| conv2d(&t[0], &t[1], None, 2, 1), &t[..2], &[0, 1]).unwrap();
    // Only one input tracked: the other gradient is skipped without harm.
    gradcheck(|t| conv2d(&t[0], &t[1], None, 2, 1), &t[..2], &[1]).unwrap();
}

#[test]
fn forward_matches_naive_loops() {
    let cases: &[Case] = &[
        (2, 3, 7, 5, 4, 3, 1, 1),
        (3, 5, 13, 11, 7, 3, 2, 1),
        (2, 4, 6, 6, 3, 1, 1, 0),
        (1, 2, 8, 7, 3, 3, 2, 0),
        (2, 3, 5, 4, 2, 3, 1, 3), // padding wider than the kernel reach
        // images side by side in one GEMM (small images, uneven groups), as in GRAD_CASES
        (9, 3, 5, 4, 4, 3, 1, 1),
        (9, 4, 6, 6, 3, 1, 1, 0),
        (9, 3, 7, 5, 2, 3, 2, 1),
    ];
    for (i, &case) in cases.iter().enumerate() {
        let t = inputs(case, 100 + i as u64);
        let (s, p) = (case.6, case.7);
        let y = conv2d(&t[0], &t[1], Some(&t[2]), s, p).unwrap();
        let v: Vec<Vec<f64>> = t.iter().map(|t| t.to_vec_f64().unwrap()).collect();
        let want = naive(&v[0], &v[1], &v[2], case);
        let got = y.to_vec_f64().unwrap();
        assert_eq!(got.len(), want.len(), "{case:?}");
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(err < 1e-12, "{case:?}: max error {err:e}");
        // f32 CPU path (sgemm) agrees to f32 precision.
        let t32: Vec<Tensor> = t.iter().map(|t| t.to_dtype(DType::F32).unwrap()).collect();
        let got32 = conv2d(&t32[0], &t32[1], Some(&t32[2]), s, p).unwrap().to_vec_f64().unwrap();
        let err32 = got32.iter().zip(&want).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0, f64::max);
        assert!(err32 < 1e-4, "{case:?} f32: max error {err32:e}");
    }
}

#[test]
fn output_shapes() {
    let x = Tensor::zeros([2, 3, 9, 8], DType::F64, &Device::Cpu).unwrap();
    for (k, s, p, want) in
        [(3, 1, 1, [9, 8]), (3, 2, 1, [5, 4]), (1, 1, 0, [9, 8]), (3, 2, 0, [4, 3]), (1, 2, 0, [5, 4])]
    {
        let w = Tensor::zeros([4, 3, k, k], DType::F64, &Device::Cpu).unwrap();
        let y = conv2d(&x, &w, None, s, p).unwrap();
        assert_eq!(y.dims(), &[2, 4, want[0], want[1]], "k {k} s {s} p {p}");
    }
}

/// Parity shapes: odd and not tile multiples, a U-Net-like layer, stride-2 downsampling, 1x1.
const PARITY_CASES: &[Case] = &[
    (3, 5, 13, 11, 7, 3, 1, 1),
    (3, 5, 13, 11, 7, 3, 2, 1),
    (2, 64, 16, 16, 128, 3, 1, 1),
    (2, 32, 16, 16, 64, 3, 2, 1),
    (2, 48, 9, 9, 40, 3, 2, 0),
    (2, 96, 8, 8, 130, 1, 1, 0),
    (1, 3, 4, 5, 2, 5, 1, 2),
    (8, 16, 16, 16, 24, 3, 1, 1), // long wgrad reduction: split-K over several blocks
    (2, 6, 8, 10, 5, 3, 2, 0),    // stride 2: the last input row and column are never reached (dx = 0)
    (2, 8, 7, 7, 12, 1, 2, 0),    // 1x1 stride-2 shortcut: three in four input pixels get no gradient
    // The input gradient's sub-pixel classes at other strides and kernels: stride 3 (nine classes of one or
    // two taps a side, H and W not multiples of 3), 5x5 stride 2 (two or three taps), 4x4 stride 2 (an even
    // kernel: two taps in every class).
    (1, 4, 10, 11, 6, 3, 3, 1),
    (1, 3, 9, 8, 4, 5, 2, 2),
    (2, 5, 8, 9, 3, 4, 2, 1),
];

#[test]
fn cuda_parity_f32_and_bf16() {
    for (i, &case) in PARITY_CASES.iter().enumerate() {
        let (s, p) = (case.6, case.7);
        let mut r = rng(200 + i as u64);
        let (n, ci, h, w, co, k, _, _) = case;
        // Weights scaled like a fan-in init so outputs stay O(1) and bf16 errors comparable across shapes.
        let scale = 1.0 / ((ci * k * k) as f64).sqrt();
        let t =
            vec![randn(&[n, ci, h, w], &mut r), uniform(&[co, ci, k, k], -scale, scale, &mut r), randn(&[co], &mut r)];
        for dtype in [DType::F32, DType::BF16] {
            let f = |t: &[Tensor]| conv2d(&t[0], &t[1], Some(&t[2]), s, p);
            let res = parity(&format!("conv2d {case:?}"), f, &t, &[0, 1, 2], dtype, None).unwrap();
            if res.is_none() {
                return; // no GPU: parity printed "skipped"
            }
            let g = |t: &[Tensor]| conv2d(&t[0], &t[1], None, s, p);
            parity(&format!("conv2d no bias {case:?}"), g, &t[..2], &[0, 1], dtype, None).unwrap();
        }
    }
}

/// A scoped kernel choice holds on the thread that made it, nests, and ends with its scope: parallel tests
/// that time one family beside another never see each other's choice (a TF32 scope once turned a
/// concurrently running f32 parity test's weight gradient into TF32).
#[test]
fn a_scoped_kernel_choice_holds_on_its_own_thread_only() {
    use gsure::ops::conv::cuda::F32Conv;
    let process = F32Conv::selected().unwrap();
    let other = if process == F32Conv::Tf32 { F32Conv::Ffma } else { F32Conv::Tf32 };
    {
        let _outer = other.scoped();
        assert_eq!(F32Conv::selected().unwrap(), other);
        std::thread::spawn(move || assert_eq!(F32Conv::selected().unwrap(), process, "another thread")).join().unwrap();
        {
            let _inner = process.scoped();
            assert_eq!(F32Conv::selected().unwrap(), process, "the inner scope");
        }
        assert_eq!(F32Conv::selected().unwrap(), other, "the outer scope again");
    }
    {
        // dropped out of order: the inner scope's choice holds until the inner scope itself ends
        let outer = other.scoped();
        let inner = process.scoped();
        drop(outer);
        assert_eq!(F32Conv::selected().unwrap(), process, "the inner scope, its outer one gone");
        drop(inner);
    }
    assert_eq!(F32Conv::selected().unwrap(), process, "after both scopes");
}

/// f32 on the TF32 tensor-core kernels (`GSURE_F32_CONV=tf32`) against the f64 CPU twin: every direction
/// at the parity shapes (strides 1-3, kernels 1-5, the sub-pixel classes of dgrad, tiles cut by every edge),
/// a U-Net layer (several k tiles, split-K in wgrad), and the epilogue and the norm-dropout prologue. Each
/// operand is rounded to 10 mantissa bits (relative 2^-11) before an f32-accumulated product, so the errors
/// sit between f32's and bf16's.
#[test]
fn cuda_parity_on_tf32() {
    use gsure::ops::conv::cuda::F32Conv;
    let Some(_) = gsure::testing::gpu_or_skip("cuda_parity_on_tf32") else { return };
    let _scope = F32Conv::Tf32.scoped();
    let tol = Some(4e-3);
    let unet = (2, 64, 16, 16, 64, 3, 1, 1);
    for (i, &case) in PARITY_CASES.iter().chain([&unet]).enumerate() {
        let (n, ci, h, w, co, k, s, p) = case;
        let mut r = rng(900 + i as u64);
        let scale = 1.0 / ((ci * k * k) as f64).sqrt();
        let t =
            vec![randn(&[n, ci, h, w], &mut r), uniform(&[co, ci, k, k], -scale, scale, &mut r), randn(&[co], &mut r)];
        let f = |t: &[Tensor]| conv2d(&t[0], &t[1], Some(&t[2]), s, p);
        parity(&format!("conv2d tf32 {case:?}"), f, &t, &[0, 1, 2], DType::F32, tol).unwrap();
    }
    let case = (2, 4, 6, 5, 5, 3, 1, 1);
    let t = epilogue_inputs(case, 901);
    parity("conv2d tf32 epilogue", |t| conv_epilogue(t, 1, 1, 0.7), &t, &[0, 1, 2, 3, 4], DType::F32, tol).unwrap();
    let case = (2, 32, 8, 8, 32, 3, 1, 1);
    let mut t = norm_conv_inputs(case, 902);
    t[1] = uniform(t[1].dims(), -1.0 / 17.0, 1.0 / 17.0, &mut rng(903));
    let f = |t: &[Tensor]| norm_conv(t, norm_in(8, true, 0.2), 1, 1);
    parity("norm_conv2d tf32 +dropout", f, &t, &[0, 1, 2, 3, 4, 5], DType::F32, tol).unwrap();
}

/// The norm-conv op on the CUDA kernels (the prologue in conv.cu's fwd and wgrad loaders, in conv_wgmma.cu's
/// transpose of x) against the CPU, f32 and bf16 on both kernel families; C_in % 8 == 0 in the last two
/// cases, so the wgmma kernels take them.
#[test]
fn cuda_parity_of_norm_conv() {
    use gsure::ops::matmul::cuda::Bf16Gemm;
    let Some(device) = gsure::testing::gpu_or_skip("cuda_parity_of_norm_conv") else { return };
    let wgmma = Bf16Gemm::Wgmma.unsupported(device.gpu().unwrap()).is_none();
    // the mask in the weight gradient's gather (mma.sync: LoadXByTap) and the forward's (LoadXByPixel; on
    // wgmma, the channels-last transpose), with and without dropout
    let cases: &[(Case, NormIn)] = &[
        ((2, 6, 9, 7, 12, 3, 1, 1), norm_in(3, true, 0.0)),
        ((2, 6, 9, 7, 12, 3, 1, 1), norm_in(3, true, 0.2)),
        ((2, 32, 16, 16, 64, 3, 2, 1), norm_in(8, true, 0.1)),
        ((2, 16, 8, 8, 24, 1, 1, 0), norm_in(4, false, 0.0)),
        ((2, 32, 8, 8, 32, 3, 1, 1), norm_in(8, true, 0.5)),
    ];
    for (i, &(case, norm)) in cases.iter().enumerate() {
        let (s, p) = (case.6, case.7);
        let mut t = norm_conv_inputs(case, 600 + i as u64);
        let fan_in = (case.1 * case.5 * case.5) as f64;
        t[1] = uniform(t[1].dims(), -1.0 / fan_in.sqrt(), 1.0 / fan_in.sqrt(), &mut rng(700 + i as u64));
        let f = |t: &[Tensor]| norm_conv(t, norm, s, p);
        let runs = [(DType::F32, Bf16Gemm::MmaSync), (DType::BF16, Bf16Gemm::MmaSync), (DType::BF16, Bf16Gemm::Wgmma)];
        for (dtype, kernels) in runs.into_iter().filter(|&(_, k)| wgmma || k != Bf16Gemm::Wgmma) {
            let _scope = kernels.scoped();
            let name = format!("norm_conv2d {case:?} {norm:?} {dtype:?} {}", kernels.name());
            parity(&name, f, &t, &[0, 1, 2, 3, 4, 5], dtype, None).unwrap();
        }
    }
}

/// The prologue's mask from a seed in device memory (a step replayed from a CUDA graph) drops what the same
/// seed given by value drops: output and every gradient bitwise equal, on each kernel family, several
/// layers of one step.
#[test]
fn norm_conv_with_a_device_seed_masks_as_the_host_seed_does_on_cuda() {
    use gsure::nn::{layer_seed, TrainSeed};
    use gsure::ops::dropout::mask;
    use gsure::ops::matmul::cuda::Bf16Gemm;
    let Some(device) = gsure::testing::gpu_or_skip("norm_conv with a device seed") else { return };
    let g = device.gpu().unwrap().clone();
    let wgmma = Bf16Gemm::Wgmma.unsupported(&g).is_none();
    let case = (2, 16, 6, 6, 16, 3, 1, 1);
    let weight = randn(&[2, 16, 6, 6], &mut rng(9)).to_device(&device).unwrap();
    for (dtype, kernels) in
        [(DType::F32, Bf16Gemm::MmaSync), (DType::BF16, Bf16Gemm::MmaSync), (DType::BF16, Bf16Gemm::Wgmma)]
            .into_iter()
            .filter(|&(_, k)| wgmma || k != Bf16Gemm::Wgmma)
    {
        let _scope = kernels.scoped();
        let t: Vec<Tensor> = norm_conv_inputs(case, 31)
            .iter()
            .map(|t| t.to_device(&device).unwrap().to_dtype(dtype).unwrap().set_requires_grad(true))
            .collect();
        let weight = weight.to_dtype(dtype).unwrap();
        for (step_seed, layer) in [(5u64, 0u64), (5, 3), (u64::MAX, 3)] {
            let words = g.upload(&[step_seed]).unwrap();
            let with = |seed: gsure::ops::dropout::Seed| {
                move |t: &[Tensor]| {
                    let dropout = mask(0.3, seed, "test")?;
                    let norm = InputNorm { gamma: &t[4], beta: &t[5], groups: 4, eps: 1e-5, silu: true, dropout };
                    norm_conv2d(&t[0], norm, &t[1], 1, 1, Epilogue::with_bias(Some(&t[2])).with_per_image(&t[3]))
                }
            };
            let host = output_and_grads(&with(layer_seed(step_seed, layer).into()), &t, &weight);
            let dev = output_and_grads(&with(TrainSeed::Device(words.ptr()).for_layer(layer)), &t, &weight);
            assert_eq!(host, dev, "{dtype:?} {}: step seed {step_seed}, layer {layer}", kernels.name());
        }
    }
}

/// The forward epilogue on the CUDA kernels (conv.cu's f32 and mma.sync bf16, conv_wgmma.cu where the
/// GPU has it and C_in % 8 == 0) against the CPU: a 3x3 and a stride-2 layer, a 1x1 skip, a U-Net layer.
#[test]
fn cuda_parity_of_the_epilogue() {
    use gsure::ops::matmul::cuda::Bf16Gemm;
    let Some(device) = gsure::testing::gpu_or_skip("cuda_parity_of_the_epilogue") else { return };
    let wgmma = Bf16Gemm::Wgmma.unsupported(device.gpu().unwrap()).is_none();
    let cases: &[Case] = &[(3, 5, 13, 11, 7, 3, 1, 1), (2, 32, 16, 16, 64, 3, 2, 1), (2, 8, 7, 7, 12, 1, 1, 0)];
    for (i, &case) in cases.iter().chain(&[(2, 64, 8, 8, 128, 3, 1, 1)]).enumerate() {
        let (s, p) = (case.6, case.7);
        let mut t = epilogue_inputs(case, 400 + i as u64);
        let fan_in = (case.1 * case.5 * case.5) as f64;
        t[1] = uniform(t[1].dims(), -1.0 / fan_in.sqrt(), 1.0 / fan_in.sqrt(), &mut rng(500 + i as u64));
        let f = |t: &[Tensor]| conv_epilogue(t, s, p, 0.7);
        let runs = [(DType::F32, Bf16Gemm::MmaSync), (DType::BF16, Bf16Gemm::MmaSync), (DType::BF16, Bf16Gemm::Wgmma)];
        for (dtype, kernels) in runs.into_iter().filter(|&(_, k)| wgmma || k != Bf16Gemm::Wgmma) {
            let _scope = kernels.scoped();
            let name = format!("conv2d epilogue {case:?} {dtype:?} {}", kernels.name());
            parity(&name, f, &t, &[0, 1, 2, 3, 4], dtype, None).unwrap();
        }
    }
}

fn err_of(x: &[usize], w: &[usize], b: Option<&[usize]>, s: usize, p: usize) -> String {
    let z = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F64, &Device::Cpu).unwrap();
    let b = b.map(z);
    match conv2d(&z(x), &z(w), b.as_ref(), s, p) {
        Ok(y) => panic!("conv2d accepted x {x:?} w {w:?} bias {b:?}: got {:?}", y.dims()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_input_is_refused_with_shapes() {
    let e = err_of(&[2, 3, 8], &[4, 3, 3, 3], None, 1, 1);
    assert!(e.contains("conv2d") && e.contains("[2, 3, 8]"), "{e}");
    let e = err_of(&[2, 3, 8, 8], &[4, 3, 3], None, 1, 1);
    assert!(e.contains("conv2d") && e.contains("[4, 3, 3]"), "{e}");
    let e = err_of(&[2, 3, 8, 8], &[4, 5, 3, 3], None, 1, 1);
    assert!(e.contains("conv2d") && e.contains("[2, 3, 8, 8]") && e.contains("[4, 5, 3, 3]"), "{e}");
    let e = err_of(&[2, 3, 8, 8], &[4, 3, 3, 2], None, 1, 1);
    assert!(e.contains("conv2d") && e.contains("square"), "{e}");
    let e = err_of(&[2, 3, 2, 8], &[4, 3, 5, 5], None, 1, 1);
    assert!(e.contains("conv2d") && e.contains("larger than the padded input"), "{e}");
    let e = err_of(&[2, 3, 8, 8], &[4, 3, 3, 3], None, 1, usize::MAX);
    assert!(e.contains("conv2d") && e.contains("padding"), "{e}");
    let e = err_of(&[0, 3, 8, 8], &[4, 3, 3, 3], None, 1, 1);
    assert!(e.contains("conv2d") && e.contains("zero-sized"), "{e}");
    let e = err_of(&[2, 3, 8, 8], &[4, 3, 3, 3], None, 0, 1);
    assert!(e.contains("conv2d") && e.contains("stride"), "{e}");
    let e = err_of(&[2, 3, 8, 8], &[4, 3, 3, 3], Some(&[3]), 1, 1);
    assert!(e.contains("conv2d") && e.contains("bias") && e.contains("[3]"), "{e}");
    // dtype mismatch
    let x = Tensor::zeros([1, 2, 4, 4], DType::F64, &Device::Cpu).unwrap();
    let w = Tensor::zeros([1, 2, 3, 3], DType::F32, &Device::Cpu).unwrap();
    let e = format!("{:#}", conv2d(&x, &w, None, 1, 1).unwrap_err());
    assert!(e.contains("conv2d") && e.contains("dtype"), "{e}");
}

#[test]
fn cuda_weight_gradient_is_bitwise_reproducible() {
    // The weight gradient's split-K partials are summed in a fixed order (conv2d_wgrad_sum), not with float
    // atomics, so two runs give the same bits whatever order the blocks ran in. On the emulated device the
    // blocks of each split run on several workers concurrently; a GPU reorders them freely.
    let Some(gpu) = gsure::testing::gpu_or_skip("conv2d wgrad reproducibility") else { return };
    let (n, ci, h, w, co, k) = (8, 16, 16, 16, 24, 3); // a long reduction: several splits
    let mut r = rng(31);
    let x = randn(&[n, ci, h, w], &mut r);
    let wt = randn(&[co, ci, k, k], &mut r);
    for dtype in [DType::F32, DType::BF16] {
        let dw = || -> Vec<f64> {
            let x = x.to_device(&gpu).unwrap().to_dtype(dtype).unwrap();
            let wt = wt.to_device(&gpu).unwrap().to_dtype(dtype).unwrap().set_requires_grad(true);
            let y = conv2d(&x, &wt, None, 1, 1).unwrap();
            let g = gsure::autograd::backward(&gsure::ops::sum_all(&y).unwrap()).unwrap();
            g.get(&wt).unwrap().to_vec_f64().unwrap()
        };
        let (a, b) = (dw(), dw());
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{dtype}: dw differs between two runs");
    }
}

/// The Hopper implicit GEMMs (kernels/conv_wgmma.cu: channels-last transposes, then wgmma) against the CPU
/// twin in bf16, all three directions: 3x3 stride 1 and 2 with padding, 1x1, C_in from 8 to 72 (a tap
/// boundary inside a 64-deep k tile), C_out below, at and above the 128-wide tile, M = N*Ho*Wo not a
/// multiple of 128, a long weight-gradient reduction (split over blocks), with and without bias. Shapes the
/// wgmma kernels do not take run on conv.cu's whichever is named (C_in = 6; the stride-2 input gradient;
/// the weight gradient where Ho*Wo % 8 != 0), and are checked all the same.
#[test]
fn cuda_wgmma_conv_matches_cpu_twin() {
    use gsure::ops::conv::{cpu as conv_cpu, cuda as conv_cuda, Geom};
    use gsure::ops::matmul::cuda::Bf16Gemm;
    use gsure::tensor::Storage;
    use gsure::testing::{gpu_or_skip, rel_error, round_to};
    let Some(device) = gpu_or_skip("cuda_wgmma_conv_matches_cpu_twin") else { return };
    let gpu = device.gpu().unwrap();
    if let Some(why) = Bf16Gemm::Wgmma.unsupported(gpu) {
        println!("skipped: {why}");
        return;
    }
    let cases: &[Case] = &[
        (2, 16, 9, 7, 24, 3, 1, 1),
        (3, 72, 8, 8, 136, 3, 1, 1),
        (2, 32, 9, 9, 128, 3, 2, 1),
        (2, 16, 8, 8, 24, 3, 2, 1),
        (4, 24, 16, 16, 32, 3, 1, 1),
        (2, 64, 8, 8, 40, 1, 1, 0),
        (1, 8, 4, 4, 8, 3, 1, 0),
        (2, 6, 5, 5, 16, 3, 1, 1),
        // the sub-pixel input gradient: a 1x1 stride 2 (classes no tap reaches: dx = 0 there), stride 3, an
        // even kernel over two C_in tiles, a 5x5 stride 2
        (2, 16, 7, 8, 16, 1, 2, 0),
        (1, 8, 10, 11, 24, 3, 3, 1),
        (2, 136, 9, 9, 16, 4, 2, 1),
        (1, 8, 5, 5, 8, 5, 2, 2),
    ];
    let dtype = DType::BF16;
    let on_gpu = |v: &[f64], dims: &[usize]| Tensor::from_f64(v, dims.to_vec(), dtype, &device).unwrap();
    let to_host = |c, dims: [usize; 4]| {
        Tensor::from_storage(Storage::Cuda(c), dims.to_vec(), device.clone()).unwrap().to_vec_f64().unwrap()
    };
    let check = |what: String, got: Vec<f64>, want: Vec<f64>| {
        let err = rel_error(&got, &want);
        println!("wgmma {what}: {err:.2e}");
        assert!(err <= dtype.tolerance(), "wgmma {what}: CUDA vs CPU twin {err:.2e}");
    };
    for (i, &case) in cases.iter().enumerate() {
        let (n, ci, h, w, co, k, s, p) = case;
        let mut r = rng(300 + i as u64);
        let scale = 1.0 / ((ci * k * k) as f64).sqrt();
        let g = Geom::new(&[n, ci, h, w], &[co, ci, k, k], s, p).unwrap();
        let x = round_to(&randn(&g.x_dims(), &mut r).to_vec_f64().unwrap(), dtype);
        let wt = round_to(&uniform(&g.w_dims(), -scale, scale, &mut r).to_vec_f64().unwrap(), dtype);
        let b = round_to(&randn(&[co], &mut r).to_vec_f64().unwrap(), dtype);
        let dy = round_to(&randn(&g.y_dims(), &mut r).to_vec_f64().unwrap(), dtype);
        let (gx, gw, gb, gdy) =
            (on_gpu(&x, &g.x_dims()), on_gpu(&wt, &g.w_dims()), on_gpu(&b, &[co]), on_gpu(&dy, &g.y_dims()));
        let (sx, sw, sb, sdy) = (gx.storage(), gw.storage(), gb.storage(), gdy.storage());
        let (Storage::Cuda(sx), Storage::Cuda(sw), Storage::Cuda(sb), Storage::Cuda(sdy)) = (&*sx, &*sw, &*sb, &*sdy)
        else {
            panic!("operands not on the GPU")
        };
        for with_bias in [true, false] {
            let epi = Epilogue::with_bias(with_bias.then_some(sb));
            let y = conv_cuda::fwd_with(gpu, &g, sx, sw, None, epi, Bf16Gemm::Wgmma).unwrap();
            let want = conv_cpu::fwd(&g, &x, &wt, &Epilogue::with_bias(with_bias.then_some(&b[..])));
            check(format!("fwd {case:?} bias={with_bias}"), to_host(y, g.y_dims()), want);
        }
        let dx = conv_cuda::dgrad_with(gpu, &g, sdy, sw, Bf16Gemm::Wgmma).unwrap();
        check(format!("dgrad {case:?}"), to_host(dx, g.x_dims()), conv_cpu::dgrad(&g, &dy, &wt));
        let dw = conv_cuda::wgrad_with(gpu, &g, sx, None, sdy, Bf16Gemm::Wgmma).unwrap();
        check(format!("wgrad {case:?}"), to_host(dw, g.w_dims()), conv_cpu::wgrad(&g, &x, &dy));
    }
}
