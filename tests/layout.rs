//! Channel concat/split, nearest 2x upsampling and 2x2 average pooling: f64 gradient checks on the CPU,
//! exact value checks, CPU/CUDA parity and bad input.
use gsure::ops::layout::{avg_pool2x, concat_channels, narrow_channels, split_channels, upsample_nearest2x};
use gsure::testing::{gradcheck, parity, randn, rng};
use gsure::{DType, Device, Tensor};

/// Splits x into `sizes` and concatenates the pieces back in reverse order (every piece feeds the output,
/// so split's backward must add the padded gradients of all of them).
fn split_reversed(x: &Tensor, sizes: &[usize]) -> anyhow::Result<Tensor> {
    let parts = split_channels(x, sizes)?;
    let refs: Vec<&Tensor> = parts.iter().rev().collect();
    concat_channels(&refs)
}

#[test]
fn concat_and_split_gradients() {
    let mut r = rng(1);
    let cases: &[(&[usize], &[usize])] =
        &[(&[1, 1, 1, 1], &[1, 2, 1, 1]), (&[2, 3, 5, 7], &[2, 4, 5, 7]), (&[3, 2], &[3, 5]), (&[2, 1, 3], &[2, 2, 3])];
    for (a, b) in cases {
        let inputs = [randn(a, &mut r), randn(b, &mut r)];
        gradcheck(|t| concat_channels(&[&t[0], &t[1]]), &inputs, &[0, 1]).unwrap_or_else(|e| panic!("{a:?}: {e:#}"));
        let c = {
            let mut d = a.to_vec();
            d[1] = 1;
            randn(&d, &mut r)
        };
        let three = [inputs[0].clone(), c, inputs[1].clone()];
        gradcheck(|t| concat_channels(&[&t[0], &t[1], &t[2]]), &three, &[0, 2]).unwrap();
    }
    for (shape, sizes) in [(&[2usize, 6, 3, 5][..], &[1usize, 3, 2][..]), (&[1, 7, 1, 1], &[7]), (&[3, 5], &[2, 0, 3])]
    {
        let x = randn(shape, &mut r);
        gradcheck(|t| split_reversed(&t[0], sizes), &[x.clone()], &[0]).unwrap_or_else(|e| panic!("{shape:?}: {e:#}"));
        // Only one piece used: the others contribute no gradient.
        gradcheck(|t| narrow_channels(&t[0], 1, shape[1] - 1), &[x], &[0]).unwrap();
    }
}

#[test]
fn resample_gradients() {
    let mut r = rng(2);
    for shape in [&[1usize, 1, 1, 1][..], &[2, 3, 5, 7], &[1, 2, 4, 6]] {
        gradcheck(|t| upsample_nearest2x(&t[0]), &[randn(shape, &mut r)], &[0])
            .unwrap_or_else(|e| panic!("upsample {shape:?}: {e:#}"));
    }
    for shape in [&[1usize, 1, 2, 2][..], &[2, 3, 6, 10], &[1, 2, 4, 2]] {
        gradcheck(|t| avg_pool2x(&t[0]), &[randn(shape, &mut r)], &[0])
            .unwrap_or_else(|e| panic!("pool {shape:?}: {e:#}"));
    }
}

#[test]
fn values_are_exact() {
    let cpu = Device::Cpu;
    // x [1, 1, 2, 2] = [[1, 2], [3, 4]]
    let x = Tensor::from_f64(&[1., 2., 3., 4.], [1, 1, 2, 2], DType::F64, &cpu).unwrap();
    let up = upsample_nearest2x(&x).unwrap();
    assert_eq!(up.dims(), &[1, 1, 4, 4]);
    assert_eq!(up.to_vec_f64().unwrap(), vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
    assert_eq!(avg_pool2x(&up).unwrap().to_vec_f64().unwrap(), vec![1., 2., 3., 4.]);
    assert_eq!(avg_pool2x(&x).unwrap().to_vec_f64().unwrap(), vec![2.5]);

    let mut r = rng(3);
    let a = randn(&[2, 3, 4, 5], &mut r);
    let b = randn(&[2, 1, 4, 5], &mut r);
    let cat = concat_channels(&[&a, &b]).unwrap();
    assert_eq!(cat.dims(), &[2, 4, 4, 5]);
    let (av, bv, cv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), cat.to_vec_f64().unwrap());
    assert_eq!(&cv[..60], &av[..60]);
    assert_eq!(&cv[60..80], &bv[..20]);
    assert_eq!(&cv[80..140], &av[60..]);
    let parts = split_channels(&cat, &[3, 1]).unwrap();
    assert_eq!(parts[0].to_vec_f64().unwrap(), av);
    assert_eq!(parts[1].to_vec_f64().unwrap(), bv);
    assert_eq!(parts[1].dims(), &[2, 1, 4, 5]);
}

#[test]
fn bad_input_is_refused_with_op_and_shapes() {
    let mut r = rng(4);
    let err = concat_channels(&[&randn(&[2, 3, 4, 4], &mut r), &randn(&[2, 3, 4, 5], &mut r)]).unwrap_err().to_string();
    assert!(err.contains("concat_channels") && err.contains("[2, 3, 4, 4]") && err.contains("[2, 3, 4, 5]"), "{err}");
    let err = concat_channels(&[&randn(&[2, 3, 4], &mut r), &randn(&[3, 3, 4], &mut r)]).unwrap_err().to_string();
    assert!(err.contains("concat_channels") && err.contains("[3, 3, 4]"), "{err}");
    let err = concat_channels(&[]).unwrap_err().to_string();
    assert!(err.contains("concat_channels"), "{err}");
    let err = concat_channels(&[&randn(&[5], &mut r)]).unwrap_err().to_string();
    assert!(err.contains("concat_channels") && err.contains("[5]"), "{err}");
    let f32x = Tensor::zeros([2, 3], DType::F32, &Device::Cpu).unwrap();
    let err = concat_channels(&[&randn(&[2, 3], &mut r), &f32x]).unwrap_err().to_string();
    assert!(err.contains("concat_channels") && err.contains("dtype"), "{err}");
    let err = split_channels(&randn(&[2, 5, 3], &mut r), &[2, 2]).unwrap_err().to_string();
    assert!(err.contains("split_channels") && err.contains("[2, 5, 3]") && err.contains("[2, 2]"), "{err}");
    let err = narrow_channels(&randn(&[2, 5, 3], &mut r), 4, 2).unwrap_err().to_string();
    assert!(err.contains("narrow_channels") && err.contains("[2, 5, 3]"), "{err}");
    let err = avg_pool2x(&randn(&[1, 2, 5, 4], &mut r)).unwrap_err().to_string();
    assert!(err.contains("avg_pool2x") && err.contains("[1, 2, 5, 4]") && err.contains("even"), "{err}");
    let err = avg_pool2x(&randn(&[1, 2, 4, 3], &mut r)).unwrap_err().to_string();
    assert!(err.contains("avg_pool2x") && err.contains("[1, 2, 4, 3]"), "{err}");
    let err = upsample_nearest2x(&randn(&[2, 4, 4], &mut r)).unwrap_err().to_string();
    assert!(err.contains("upsample_nearest2x") && err.contains("[2, 4, 4]"), "{err}");
}

#[test]
fn cuda_parity() {
    let mut r = rng(5);
    // Odd channel/spatial sizes take the scalar copy path (and unaligned slab offsets); multiples of 8
    // take the 16-byte path; the last case is U-Net sized.
    let pairs: &[(&[usize], &[usize])] = &[
        (&[1, 1, 1, 1], &[1, 2, 1, 1]),
        (&[2, 3, 5, 7], &[2, 4, 5, 7]),
        (&[3, 5], &[3, 9]),
        (&[2, 8, 4, 4], &[2, 16, 4, 4]),
        (&[16, 64, 32, 32], &[16, 64, 32, 32]),
    ];
    for dtype in [DType::F32, DType::BF16] {
        for (a, b) in pairs {
            let inputs = [randn(a, &mut r), randn(b, &mut r)];
            parity("concat_channels", |t| concat_channels(&[&t[0], &t[1]]), &inputs, &[0, 1], dtype, Some(1e-6))
                .unwrap();
            let mut c = a.to_vec();
            c[1] += b[1];
            let sizes = [a[1], b[1]];
            parity("split_channels", |t| split_reversed(&t[0], &sizes), &[randn(&c, &mut r)], &[0], dtype, Some(1e-6))
                .unwrap();
        }
        // Widths that are multiples of 4 take the vector paths (4 columns a thread), others the scalar ones.
        for shape in [&[1usize, 1, 1, 1][..], &[2, 3, 5, 7], &[3, 7, 9, 1], &[2, 3, 4, 4], &[16, 128, 16, 16]] {
            parity("upsample_nearest2x", |t| upsample_nearest2x(&t[0]), &[randn(shape, &mut r)], &[0], dtype, None)
                .unwrap();
        }
        for shape in [&[1usize, 1, 2, 2][..], &[2, 3, 6, 10], &[3, 5, 2, 14], &[2, 3, 8, 8], &[16, 128, 32, 32]] {
            parity("avg_pool2x", |t| avg_pool2x(&t[0]), &[randn(shape, &mut r)], &[0], dtype, None).unwrap();
        }
    }
}
