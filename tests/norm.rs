//! group_norm (with and without the fused SiLU): a direct f64 forward check, f64 gradient checks for x,
//! gamma and beta, CPU/CUDA parity for f32 and bf16, and bad-input errors.
use gsure::ops::norm::group_norm;
use gsure::testing::{gradcheck, parity, randn, rng};
use gsure::{DType, Device, Tensor};

const EPS: f64 = 1e-5;

/// Straightforward f64 group norm over x [N, C, S].
#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    n: usize,
    c: usize,
    s: usize,
    groups: usize,
    silu: bool,
) -> Vec<f64> {
    let cpg = c / groups;
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for g in 0..groups {
            let idx: Vec<usize> =
                (g * cpg..(g + 1) * cpg).flat_map(|ch| (0..s).map(move |k| (i * c + ch) * s + k)).collect();
            let m = idx.len() as f64;
            let mean = idx.iter().map(|&j| x[j]).sum::<f64>() / m;
            let var = idx.iter().map(|&j| (x[j] - mean).powi(2)).sum::<f64>() / m;
            for &j in &idx {
                let ch = (j / s) % c;
                let pre = (x[j] - mean) / (var + EPS).sqrt() * gamma[ch] + beta[ch];
                y[j] = if silu { pre / (1.0 + (-pre).exp()) } else { pre };
            }
        }
    }
    y
}

#[test]
fn forward_matches_direct_formula() {
    let mut r = rng(1);
    for (shape, groups) in
        [(&[2usize, 6, 5, 3][..], 3usize), (&[3, 4][..], 2), (&[2, 8, 7][..], 4), (&[1, 6, 1, 1][..], 6)]
    {
        for silu in [false, true] {
            let (n, c) = (shape[0], shape[1]);
            let s: usize = shape[2..].iter().product();
            let x = randn(shape, &mut r);
            let (gamma, beta) = (randn(&[c], &mut r), randn(&[c], &mut r));
            let got = group_norm(&x, &gamma, &beta, groups, EPS, silu).unwrap();
            assert_eq!(got.dims(), shape);
            let want = reference(
                &x.to_vec_f64().unwrap(),
                &gamma.to_vec_f64().unwrap(),
                &beta.to_vec_f64().unwrap(),
                n,
                c,
                s,
                groups,
                silu,
            );
            for (g, w) in got.to_vec_f64().unwrap().iter().zip(&want) {
                assert!((g - w).abs() < 1e-10, "{shape:?} groups {groups} silu {silu}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn gradients() {
    let mut r = rng(2);
    for shape in [&[2usize, 6, 5, 3][..], &[2, 6][..], &[2, 6, 4][..]] {
        for groups in [1, 2, 3, 6] {
            for silu in [false, true] {
                let inputs = [randn(shape, &mut r), randn(&[6], &mut r), randn(&[6], &mut r)];
                gradcheck(|t| group_norm(&t[0], &t[1], &t[2], groups, EPS, silu), &inputs, &[0, 1, 2])
                    .unwrap_or_else(|e| panic!("{shape:?} groups {groups} silu {silu}: {e:#}"));
            }
        }
    }
    // only x tracked, and only gamma/beta tracked
    let inputs = [randn(&[2, 6, 5, 3], &mut r), randn(&[6], &mut r), randn(&[6], &mut r)];
    gradcheck(|t| group_norm(&t[0], &t[1], &t[2], 2, EPS, true), &inputs, &[0]).unwrap();
    gradcheck(|t| group_norm(&t[0], &t[1], &t[2], 2, EPS, true), &inputs, &[1, 2]).unwrap();
}

#[test]
fn bad_inputs_are_errors_naming_op_and_shapes() {
    let mut r = rng(3);
    let x = randn(&[2, 6, 4, 4], &mut r);
    let (g6, b6) = (randn(&[6], &mut r), randn(&[6], &mut r));
    let err = group_norm(&x, &g6, &b6, 4, EPS, false).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("[2, 6, 4, 4]") && err.contains('4'), "{err}");
    let err = group_norm(&x, &g6, &b6, 0, EPS, false).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("[2, 6, 4, 4]"), "{err}");
    let err = group_norm(&x, &randn(&[5], &mut r), &b6, 2, EPS, false).unwrap_err().to_string();
    assert!(
        err.contains("group_norm") && err.contains("gamma") && err.contains("[5]") && err.contains("[2, 6, 4, 4]"),
        "{err}"
    );
    let err = group_norm(&x, &g6, &randn(&[6, 1], &mut r), 2, EPS, false).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("beta") && err.contains("[6, 1]"), "{err}");
    let err = group_norm(&randn(&[6], &mut r), &g6, &b6, 2, EPS, false).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("[6]"), "{err}");
    let err = group_norm(&x, &g6, &b6, 2, 0.0, false).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("eps"), "{err}");
    let g32 = Tensor::zeros([6], DType::F32, &Device::Cpu).unwrap();
    let err = group_norm(&x, &g32, &b6, 2, EPS, false).unwrap_err().to_string();
    assert!(err.contains("group_norm") && err.contains("f32") && err.contains("f64"), "{err}");
}

#[test]
fn cuda_parity() {
    let mut r = rng(4);
    // (shape, groups): odd spatial sizes, the U-Net's 8x8 at batch 128, 1x1 (fewer elements than threads),
    // a rank-2 input and a group of more channels than the block has warps; 4x4 and 2x2 (16-byte vectors of
    // a channel in both dtypes, and in f32 only)
    let cases: &[(&[usize], usize)] = &[
        (&[3, 64, 17, 13], 32),
        (&[128, 128, 8, 8], 32),
        (&[2, 96, 1, 1], 32),
        (&[5, 12], 3),
        (&[2, 64, 3, 5], 2),
        (&[4, 32, 4, 4], 8),
        (&[4, 16, 2, 2], 4),
    ];
    for dtype in [DType::F32, DType::BF16] {
        for &(shape, groups) in cases {
            for silu in [false, true] {
                let c = shape[1];
                // a non-zero mean and scale, so the statistics matter
                let x = gsure::ops::affine(&randn(shape, &mut r), 1.7, 0.6).unwrap();
                let inputs = [x, randn(&[c], &mut r), randn(&[c], &mut r)];
                parity(
                    &format!("group_norm {shape:?} g={groups} silu={silu}"),
                    |t| group_norm(&t[0], &t[1], &t[2], groups, EPS, silu),
                    &inputs,
                    &[0, 1, 2],
                    dtype,
                    None,
                )
                .unwrap();
            }
        }
    }
}
