//! Sinusoidal embeddings (DDIM and EDM conventions): values against the reference formulas, gradients with
//! respect to t, CPU/CUDA parity and bad input.
use gsure::ops::embedding::{sinusoidal_embedding, EmbeddingKind};
use gsure::testing::{gradcheck, parity, rng, uniform};
use gsure::{DType, Device, Tensor};

fn timesteps(n: usize, r: &mut rand::rngs::StdRng) -> Tensor {
    let v: Vec<f64> = uniform(&[n], 0.0, 1000.0, r).to_vec_f64().unwrap().iter().map(|x| x.floor()).collect();
    Tensor::from_f64(&v, [n], DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn values_match_the_references() {
    let t = Tensor::from_f64(&[0.0, 3.0, 999.0], [3], DType::F64, &Device::Cpu).unwrap();
    // DDIM get_timestep_embedding, dim 7: half 3, freq_k = exp(-ln(10000) k / 2) = 1, 1e-2, 1e-4.
    let out = sinusoidal_embedding(&t, 7, EmbeddingKind::Ddim).unwrap();
    assert_eq!(out.dims(), &[3, 7]);
    let v = out.to_vec_f64().unwrap();
    for (n, &tv) in [0.0f64, 3.0, 999.0].iter().enumerate() {
        let row = &v[n * 7..(n + 1) * 7];
        for (k, f) in [1.0, 1e-2, 1e-4].iter().enumerate() {
            assert!((row[k] - (tv * f).sin()).abs() < 1e-12);
            assert!((row[3 + k] - (tv * f).cos()).abs() < 1e-12);
        }
        assert_eq!(row[6], 0.0, "odd dim is zero-padded");
    }
    // EDM PositionalEmbedding, dim 6: half 3, freq_k = (1/10000)^(k/3).
    let out = sinusoidal_embedding(&t, 6, EmbeddingKind::Edm).unwrap();
    let v = out.to_vec_f64().unwrap();
    for (n, &tv) in [0.0f64, 3.0, 999.0].iter().enumerate() {
        for k in 0..3 {
            let f = (1e-4f64).powf(k as f64 / 3.0);
            assert!((v[n * 6 + k] - (tv * f).cos()).abs() < 1e-12);
            assert!((v[n * 6 + 3 + k] - (tv * f).sin()).abs() < 1e-12);
        }
    }
}

#[test]
fn gradients() {
    let mut r = rng(1);
    for (n, dim) in [(1, 4), (3, 5), (4, 16), (2, 33)] {
        let t = timesteps(n, &mut r);
        gradcheck(|x| sinusoidal_embedding(&x[0], dim, EmbeddingKind::Ddim), &[t], &[0])
            .unwrap_or_else(|e| panic!("ddim n={n} dim={dim}: {e:#}"));
    }
    for (n, dim) in [(1, 2), (3, 6), (5, 32)] {
        let t = uniform(&[n], -2.0, 2.0, &mut r);
        gradcheck(|x| sinusoidal_embedding(&x[0], dim, EmbeddingKind::Edm), &[t], &[0])
            .unwrap_or_else(|e| panic!("edm n={n} dim={dim}: {e:#}"));
    }
}

#[test]
fn bad_input_is_refused_with_op_and_shapes() {
    let mut r = rng(2);
    let err = sinusoidal_embedding(&uniform(&[2, 3], 0.0, 1.0, &mut r), 8, EmbeddingKind::Edm).unwrap_err().to_string();
    assert!(err.contains("sinusoidal_embedding") && err.contains("[2, 3]"), "{err}");
    let t = uniform(&[4], 0.0, 1.0, &mut r);
    let err = sinusoidal_embedding(&t, 3, EmbeddingKind::Ddim).unwrap_err().to_string();
    assert!(err.contains("sinusoidal_embedding") && err.contains("dim 3") && err.contains("[4]"), "{err}");
    let err = sinusoidal_embedding(&t, 5, EmbeddingKind::Edm).unwrap_err().to_string();
    assert!(err.contains("sinusoidal_embedding") && err.contains("dim 5") && err.contains("even"), "{err}");
}

#[test]
fn cuda_parity() {
    let mut r = rng(3);
    for dtype in [DType::F32, DType::BF16] {
        for (n, dim) in [(1, 4), (7, 5), (128, 128), (300, 129), (128, 256)] {
            let t = timesteps(n, &mut r);
            parity(
                "ddim embedding",
                |x| sinusoidal_embedding(&x[0], dim, EmbeddingKind::Ddim),
                &[t],
                &[0],
                dtype,
                None,
            )
            .unwrap();
        }
        for (n, dim) in [(1, 2), (7, 6), (128, 128), (300, 130), (128, 256)] {
            let t = uniform(&[n], -3.0, 3.0, &mut r);
            parity("edm embedding", |x| sinusoidal_embedding(&x[0], dim, EmbeddingKind::Edm), &[t], &[0], dtype, None)
                .unwrap();
        }
    }
}
