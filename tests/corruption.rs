//! Corruption operators (docs/METHODS.md §2): the adjoint identity for every operator, the spectral view
//! (H = U Σ Vᵀ, H† H = P on O, ȳ = observed spectral coefficients plus noise), W² = 1/π by Monte Carlo, MRI
//! line masks, per-example seeding, bad input, and corrupted datasets (make, write, open).
use gsure::corruption::make::make_dataset;
use gsure::corruption::{check_observable, Basis, CorruptedData, OpKind, OpSpec, Operator, OperatorBatch};
use gsure::testing::{randn, rng};
use gsure::{DType, Device, Tensor};

fn spec(kind: OpKind) -> OpSpec {
    OpSpec::new(kind)
}
fn pixel(p: f64) -> OpSpec {
    OpSpec { p: Some(p), ..spec(OpKind::Pixel) }
}
fn patch(p: f64, k: usize) -> OpSpec {
    OpSpec { p: Some(p), patch: Some(k), ..spec(OpKind::Patch) }
}
fn boxed(s: usize) -> OpSpec {
    OpSpec { box_size: Some(s), ..spec(OpKind::Box) }
}
fn noise(sigma0: f64) -> OpSpec {
    OpSpec { sigma0, ..spec(OpKind::Noise) }
}
fn mri(r: f64, acs: usize, equispaced: bool) -> OpSpec {
    OpSpec { r: Some(r), acs: Some(acs), equispaced, ..spec(OpKind::Mri) }
}

/// Every image-domain operator at [C, H, W] (with noise σ0 = 0.2 where the test wants it).
fn pixel_ops(sigma0: f64) -> Vec<OpSpec> {
    [pixel(0.3), patch(0.4, 4), patch(0.5, 3), boxed(3), noise(0.2)]
        .into_iter()
        .map(|s| OpSpec { sigma0: if s.kind == OpKind::Noise { s.sigma0 } else { sigma0 }, ..s })
        .collect()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.to_vec_f64().unwrap().iter().zip(b.to_vec_f64().unwrap()).map(|(x, y)| x * y).sum()
}
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    a.to_vec_f64().unwrap().iter().zip(b.to_vec_f64().unwrap()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// (operator spec, image [C, H, W], batch) cases covering every family, odd sizes and MRI at 8×10, 16×16 and
/// 320×320.
fn cases() -> Vec<(OpSpec, [usize; 3], usize)> {
    let mut v = Vec::new();
    for chw in [[1, 8, 8], [3, 7, 9], [2, 5, 6]] {
        for s in pixel_ops(0.1) {
            v.push((s, chw, 3));
        }
    }
    v.push((mri(2.5, 2, false), [2, 8, 10], 3));
    v.push((mri(4.0, 4, true), [2, 16, 16], 2));
    v.push((mri(4.0, 26, false), [2, 320, 320], 1));
    v
}

fn batch_of(s: &OpSpec, chw: [usize; 3], n: usize, seed: u64) -> (Box<dyn Operator>, OperatorBatch) {
    let op = s.build(chw).unwrap();
    let idx: Vec<usize> = (0..n).map(|i| 7 * i + 1).collect();
    let b = op.batch(seed, &idx);
    (op, b)
}

#[test]
fn adjoint_identity_for_every_operator() {
    let mut r = rng(1);
    for (s, chw, n) in cases() {
        let (_, b) = batch_of(&s, chw, n, 11);
        let x = randn(&b.image_dims(), &mut r);
        let y = randn(&b.spectral_dims(), &mut r);
        let (lhs, rhs) = (dot(&b.forward(&x).unwrap(), &y), dot(&x, &b.adjoint(&y).unwrap()));
        let scale = (x.numel() as f64).sqrt() * 3.0;
        assert!((lhs - rhs).abs() < 1e-10 * scale, "{:?} {chw:?}: <Hx, y> = {lhs}, <x, H^T y> = {rhs}", s.kind);
    }
}

#[test]
fn spectral_view_is_consistent_with_the_operator() {
    let mut r = rng(2);
    for (s, chw, n) in cases() {
        let (op, b) = batch_of(&s, chw, n, 12);
        let name = format!("{:?} {chw:?}", s.kind);
        let x = randn(&b.image_dims(), &mut r);
        let y = b.forward(&randn(&b.image_dims(), &mut r)).unwrap();
        // Vᵀ Hᵀ y = Σ Uᵀ y = M ⊙ y = ȳ (U = I, Σ = Σ† = M).
        let sb = b.spectral(&y, &Device::Cpu, DType::F64).unwrap();
        assert_eq!(sb.basis, op.basis());
        let vt_ht_y = b.to_spectral(&b.adjoint(&y).unwrap()).unwrap();
        assert!(max_diff(&vt_ht_y, &sb.ybar) < 1e-10, "{name}: V^T H^T y != ybar");
        // H = U Σ Vᵀ: H x = M ⊙ Vᵀ x.
        let xbar = b.to_spectral(&x).unwrap();
        assert!(max_diff(&b.forward(&x).unwrap(), &b.project(&xbar).unwrap()) < 1e-10, "{name}: H x != M V^T x");
        // V Vᵀ = I.
        assert!(max_diff(&b.from_spectral(&xbar).unwrap(), &x) < 1e-10, "{name}: V V^T x != x");
        // H† H = V P Vᵀ, a projector, and H H† H = H.
        let php = b.pinv(&b.forward(&x).unwrap()).unwrap();
        assert!(max_diff(&b.to_spectral(&php).unwrap(), &b.project(&xbar).unwrap()) < 1e-10, "{name}: H+ H != P");
        let php2 = b.pinv(&b.forward(&php).unwrap()).unwrap();
        assert!(max_diff(&php, &php2) < 1e-10, "{name}: H+ H is not idempotent");
        assert!(max_diff(&b.forward(&php).unwrap(), &b.forward(&x).unwrap()) < 1e-10, "{name}: H H+ H != H");
        // O, ν and W² of the spectral view.
        let (obs, nu, w2) =
            (sb.observed.to_vec_f64().unwrap(), sb.nu.to_vec_f64().unwrap(), sb.w2.to_vec_f64().unwrap());
        let [_, cs, h, w] = b.spectral_dims();
        let pi = op.pi();
        for (i, &o) in obs.iter().enumerate() {
            let ex = i / (cs * h * w);
            assert_eq!(o as f32, b.masks[ex * h * w + i % (h * w)], "{name}: O is the mask on every channel");
            let want_nu = o * op.sigma0() * op.sigma0();
            assert!((nu[i] - want_nu).abs() < 1e-12, "{name}: nu");
            let want_w2 = if o != 0.0 { 1.0 / pi[i % (h * w)] } else { 0.0 };
            assert!((w2[i] - want_w2).abs() < 1e-9 * want_w2.max(1.0), "{name}: w2 = {} != {want_w2}", w2[i]);
        }
    }
}

#[test]
fn observations_are_observed_coefficients_plus_noise_on_o() {
    let mut r = rng(3);
    for s in [pixel(0.3), patch(0.5, 4), boxed(5), noise(0.0), mri(2.0, 4, false), mri(3.0, 2, true)] {
        let sigma0 = 0.3;
        let s = OpSpec { sigma0, ..s };
        let chw = if s.kind == OpKind::Mri { [2, 16, 20] } else { [3, 16, 20] };
        let (_, b) = batch_of(&s, chw, 16, 13);
        let x = randn(&b.image_dims(), &mut r);
        let y = b.observe(&x, &mut r).unwrap();
        let sb = b.spectral(&y, &Device::Cpu, DType::F64).unwrap();
        let xbar = b.to_spectral(&x).unwrap().to_vec_f64().unwrap();
        let (ybar, obs) = (sb.ybar.to_vec_f64().unwrap(), sb.observed.to_vec_f64().unwrap());
        let resid: Vec<f64> = (0..ybar.len())
            .filter_map(|i| {
                if obs[i] == 0.0 {
                    assert_eq!(ybar[i], 0.0, "{:?}: ybar is zero off O", s.kind);
                    None
                } else {
                    Some(ybar[i] - xbar[i])
                }
            })
            .collect();
        let m = resid.len() as f64;
        let mean = resid.iter().sum::<f64>() / m;
        let var = resid.iter().map(|e| e * e).sum::<f64>() / m;
        let s2 = sigma0 * sigma0;
        assert!(mean.abs() < 5.0 * sigma0 / m.sqrt(), "{:?}: noise mean {mean}", s.kind);
        assert!((var - s2).abs() < 5.0 * s2 * (2.0 / m).sqrt(), "{:?}: noise variance {var} vs {s2}", s.kind);
    }
}

#[test]
fn w2_is_one_over_pi_by_monte_carlo() {
    const T: usize = 4000;
    let mut specs: Vec<(OpSpec, [usize; 3])> = vec![
        (pixel(0.3), [1, 7, 9]),
        (patch(0.6, 4), [1, 7, 9]),
        (patch(0.2, 2), [1, 6, 6]),
        (boxed(4), [1, 7, 9]),
        (boxed(0), [1, 5, 5]),
        (noise(0.1), [1, 4, 5]),
    ];
    specs.push((mri(2.5, 2, false), [2, 4, 10]));
    specs.push((mri(2.5, 2, true), [2, 4, 10]));
    specs.push((mri(3.0, 3, true), [2, 2, 15]));
    for (s, chw) in specs {
        let op = s.build(chw).unwrap();
        check_observable(op.as_ref()).unwrap();
        let pi = op.pi();
        let hw = chw[1] * chw[2];
        let mut count = vec![0usize; hw];
        for i in 0..T {
            for (k, &m) in op.mask_of(99, i).iter().enumerate() {
                assert!(m == 0.0 || m == 1.0);
                count[k] += m as usize;
            }
        }
        for k in 0..hw {
            let f = count[k] as f64 / T as f64;
            let sd = (pi[k] * (1.0 - pi[k]) / T as f64).sqrt();
            assert!(
                (f - pi[k]).abs() <= 5.0 * sd + 1e-12,
                "{:?} {chw:?} coord {k}: frequency {f} vs π {}",
                s.kind,
                pi[k]
            );
            // E[W² 1_O] = π · (1/π) = 1: the empirical mean of W² 1_O, within 5σ (σ² = (1 − π)/(π T)).
            let e = count[k] as f64 / pi[k] / T as f64;
            let sd = ((1.0 - pi[k]) / pi[k] / T as f64).sqrt();
            assert!((e - 1.0).abs() <= 5.0 * sd + 1e-12, "{:?} coord {k}: E[W^2 1_O] = {e}", s.kind);
        }
        if s.kind == OpKind::Box {
            assert!(pi.iter().any(|&p| p < 1.0 - 1e-9) || s.box_size == Some(0), "box π varies over the image");
        }
    }
}

#[test]
fn box_pi_matches_an_enumeration_of_positions() {
    for (h, w, s) in [(7, 9, 4), (8, 8, 4), (5, 6, 1), (6, 6, 6)] {
        let op = boxed(s).build([1, h, w]).unwrap();
        let pi = op.pi();
        let positions = (h - s + 1) * (w - s + 1);
        for i in 0..h {
            for j in 0..w {
                let mut covered = 0;
                for top in 0..=h - s {
                    for left in 0..=w - s {
                        covered += (top <= i && i < top + s && left <= j && j < left + s) as usize;
                    }
                }
                let want = 1.0 - covered as f64 / positions as f64;
                assert!((pi[i * w + j] - want).abs() < 1e-12, "box {s} in {h}x{w} at ({i},{j})");
            }
        }
    }
}

#[test]
fn mri_masks_have_the_centre_lines_and_reach_r() {
    for (w, r, acs, eq) in [
        (10, 2.5, 2, false),
        (16, 4.0, 2, true),
        (320, 4.0, 26, false),
        (320, 8.0, 26, true),
        (15, 3.0, 3, true),
        (9, 1.0, 3, false),
        (16, 4.0, 16, false),
    ] {
        let op = mri(r, acs, eq).build([1, 6, w]).unwrap();
        check_observable(op.as_ref()).unwrap();
        let mri = gsure::corruption::MriSingleCoil::new(r, acs, eq, 0.0, [6, w]);
        let centre = mri.acs_range();
        assert!(centre.contains(&(w / 2)), "the DC column {} is a centre line", w / 2);
        let target = (w as f64 / r).round() as usize;
        for i in 0..50 {
            let m = op.mask_of(5, i);
            let lines: Vec<bool> = (0..w).map(|c| m[c] == 1.0).collect();
            for row in 0..6 {
                assert!((0..w).all(|c| (m[row * w + c] == 1.0) == lines[c]), "a column mask: every row alike");
            }
            assert!(centre.clone().all(|c| lines[c]), "W={w} R={r}: all {acs} centre lines sampled");
            let n = lines.iter().filter(|&&l| l).count();
            // round(W/R) lines (more only when the centre block alone is larger).
            assert_eq!(n, target.max(acs), "W={w} R={r} acs={acs}: {n} lines for round(W/R) = {target}");
            assert!(acs > target || n.abs_diff(target) <= 1);
            if eq && mri.sampled_outer() > 1 {
                let outer = mri.outer_lines();
                let pos: Vec<usize> = (0..outer.len()).filter(|&k| lines[outer[k]]).collect();
                let (n_out, m_out) = (outer.len(), mri.sampled_outer());
                for k in 0..pos.len() {
                    let gap = (pos[(k + 1) % pos.len()] + n_out - pos[k]) % n_out;
                    assert!(gap == n_out / m_out || gap == n_out.div_ceil(m_out), "equispaced gap {gap}");
                }
            }
        }
        // W² = 1 on the centre lines and #outer / #sampled outer elsewhere.
        let pi = op.pi();
        for (c, &pc) in pi.iter().enumerate().take(w) {
            let want = if centre.contains(&c) { 1.0 } else { (w - acs) as f64 / mri.sampled_outer() as f64 };
            assert!(
                (1.0 / pc - want).abs() < 1e-12,
                "W={w} R={r} acs={acs}: W^2 of column {c} is {} not {want}",
                1.0 / pc
            );
        }
    }
}

#[test]
fn masks_depend_only_on_seed_and_example_index() {
    let op = pixel(0.5).build([1, 8, 8]).unwrap();
    let b = op.batch(3, &[4, 9]);
    assert_eq!(b.masks, [op.mask_of(3, 4), op.mask_of(3, 9)].concat());
    assert_eq!(op.batch(3, &[9]).masks, op.mask_of(3, 9));
    assert_ne!(op.mask_of(3, 4), op.mask_of(3, 5));
    assert_ne!(op.mask_of(3, 4), op.mask_of(4, 4));
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_input_is_refused_naming_the_field_and_the_fix() {
    for p in [1.0, 1.5, -0.1, f64::NAN] {
        for s in [pixel(p), patch(p, 4)] {
            let e = err_of(s.build([1, 8, 8]));
            assert!(e.contains("\"p\"") && e.contains("--p") && e.contains("[0, 1)") && e.contains("Fix"), "{e}");
        }
    }
    let e = err_of(spec(OpKind::Pixel).build([1, 8, 8]));
    assert!(e.contains("\"p\"") && e.contains("missing") && e.contains("Fix"), "{e}");
    for r in [0.5, 0.0, -2.0, f64::INFINITY] {
        let e = err_of(mri(r, 2, false).build([1, 16, 16]));
        assert!(e.contains("\"R\"") && e.contains("--R") && e.contains(">= 1") && e.contains("Fix"), "{e}");
    }
    let e = err_of(mri(2.0, 17, false).build([1, 16, 16]));
    assert!(e.contains("\"acs\"") && e.contains("--acs 16") && e.contains("Fix"), "{e}");
    let e = err_of(mri(2.0, 2, false).build([1, 16, 14]));
    assert!(e.contains("W = 14") && e.contains("Fix"), "{e}");
    let e = err_of(mri(2.0, 2, false).build([3, 16, 16]));
    assert!(e.contains("3 channels") && e.contains("Fix"), "{e}");
    let e = err_of(boxed(9).build([1, 8, 8]));
    assert!(e.contains("\"box\"") && e.contains("--box 8") && e.contains("Fix"), "{e}");
    let e = err_of(patch(0.5, 0).build([1, 8, 8]));
    assert!(e.contains("\"patch\"") && e.contains("Fix"), "{e}");
    let e = err_of(OpSpec { sigma0: -1.0, ..pixel(0.5) }.build([1, 8, 8]));
    assert!(e.contains("\"sigma0\"") && e.contains("--sigma0") && e.contains("Fix"), "{e}");

    // π = 0: a box that always covers the centre; R so high that no outer line is ever sampled.
    let op = boxed(5).build([1, 8, 8]).unwrap();
    let e = err_of(check_observable(op.as_ref()));
    assert!(e.contains("never observed") && e.contains("π = 0") && e.contains("--box 4"), "{e}");
    check_observable(boxed(4).build([1, 8, 8]).unwrap().as_ref()).unwrap();
    check_observable(boxed(5).build([1, 8, 10]).unwrap().as_ref()).unwrap();
    let op = mri(16.0, 4, false).build([1, 16, 16]).unwrap();
    let e = err_of(check_observable(op.as_ref()));
    assert!(e.contains("never observed") && e.contains("--R") && e.contains("--acs"), "{e}");
    check_observable(mri(16.0, 16, false).build([1, 16, 16]).unwrap().as_ref()).unwrap();
    check_observable(mri(3.2, 4, false).build([1, 16, 16]).unwrap().as_ref()).unwrap();

    // Shapes that do not fit the batch.
    let (_, b) = batch_of(&pixel(0.5), [3, 8, 8], 2, 1);
    let e = err_of(b.forward(&Tensor::zeros([2, 1, 8, 8], DType::F64, &Device::Cpu).unwrap()));
    assert!(e.contains("pixel operator") && e.contains("[2, 1, 8, 8]") && e.contains("[2, 3, 8, 8]"), "{e}");
    let (_, b) = batch_of(&mri(2.0, 2, false), [2, 8, 10], 2, 1);
    let e = err_of(b.adjoint(&Tensor::zeros([2, 1, 8, 10], DType::F64, &Device::Cpu).unwrap()));
    assert!(e.contains("mri operator") && e.contains("[2, 2, 8, 10]"), "{e}");
    // Real images are promoted to complex ones.
    let x = randn(&[2, 1, 8, 10], &mut rng(4));
    let x2 =
        gsure::ops::layout::concat_channels(&[&x, &Tensor::zeros([2, 1, 8, 10], DType::F64, &Device::Cpu).unwrap()])
            .unwrap();
    assert!(max_diff(&b.forward(&x).unwrap(), &b.forward(&x2).unwrap()) == 0.0);
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from("/tmp/operators-helper");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn corrupted_datasets_round_trip_and_match_the_operator() {
    // Enough examples that every coordinate is observed in some example (make_dataset and open refuse less).
    let src = gsure::data::phantoms(64, 16, 1);
    for s in [
        OpSpec { sigma0: 0.1, ..pixel(0.5) },
        patch(0.3, 4),
        boxed(6),
        noise(0.2),
        OpSpec { sigma0: 0.05, ..mri(4.0, 2, false) },
        mri(2.0, 4, true),
    ] {
        let d = make_dataset(&src, &s, 17, "phantoms").unwrap();
        let path = tmp(&format!("rt-{}.safetensors", s.kind.name()));
        d.write(&path).unwrap();
        let back = CorruptedData::open(&path).unwrap();
        assert_eq!(back.y, d.y);
        assert_eq!(back.mask, d.mask);
        assert_eq!(back.spec, d.spec);
        assert_eq!(back.seed, 17);
        assert_eq!(back.clean.as_ref().unwrap().0, src.images);
        let meta = gsure::io::safetensors::File::open(&path).unwrap().meta().clone();
        assert_eq!(meta["kind"], "corrupted");
        assert_eq!(meta["operator"], s.kind.name());
        assert_eq!(meta["count"], 64);
        assert_eq!(meta["source"], "phantoms");
        let op = back.operator().unwrap();
        assert_eq!(meta["basis"], op.basis().name());
        let cs = if s.kind == OpKind::Mri { 2 } else { 1 };
        assert_eq!(back.dims, [64, cs, 16, 16]);
        // The stored masks are the seeded masks, and y is H x (plus noise only on O) in spectral coordinates.
        let idx = [0, 3, 4];
        let b = op.batch(17, &idx);
        assert_eq!(back.batch(&idx).unwrap().masks, b.masks);
        let x: Vec<f64> = src.gather(&idx).iter().map(|&v| v as f64).collect();
        let x = Tensor::from_f64(&x, [3, 1, 16, 16], DType::F64, &Device::Cpu).unwrap();
        let hx = b.forward(&x).unwrap().to_vec_f64().unwrap();
        let sb = back.spectral(&idx, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(sb.basis, if cs == 2 { Basis::Fourier } else { Basis::Pixel });
        let ybar = sb.ybar.to_vec_f64().unwrap();
        let err = ybar.iter().zip(&hx).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let tol = if s.sigma0 == 0.0 { 1e-5 } else { 6.0 * s.sigma0 };
        assert!(err < tol, "{:?}: ybar - H x = {err}", s.kind);
        assert!(sb.nu.to_vec_f64().unwrap().iter().all(|&v| (v - s.sigma0.powi(2)).abs() < 1e-6 || v == 0.0));
    }
    // Example i's observation does not depend on the dataset's size or chunking (32 per chunk).
    let big = gsure::data::phantoms(40, 8, 2);
    let small = gsure::data::ImageSet { images: big.images[..35 * 64].to_vec(), dims: [35, 1, 8, 8] };
    let s = OpSpec { sigma0: 0.1, ..pixel(0.4) };
    let (a, b) = (make_dataset(&big, &s, 5, "p").unwrap(), make_dataset(&small, &s, 5, "p").unwrap());
    assert_eq!(a.y[..35 * 64], b.y[..]);
    assert_ne!(make_dataset(&small, &s, 6, "p").unwrap().y, b.y);
}

#[test]
fn corrupted_dataset_files_are_validated() {
    use gsure::io::safetensors::{write, Entry};
    let n = 16;
    let src = gsure::data::phantoms(n, 8, 1);
    let d = make_dataset(&src, &pixel(0.5), 1, "phantoms").unwrap();
    let meta = d.meta().unwrap().to_json();
    let path = tmp("bad.safetensors");
    let put = |y: &[f32], mask: &[f32], meta: &serde_json::Value| {
        let dims = vec![n, 1, 8, 8];
        write(
            &path,
            &[
                Entry { name: "y".into(), shape: dims.clone(), data: y },
                Entry { name: "mask".into(), shape: dims, data: mask },
            ],
            meta,
        )
        .unwrap();
        err_of(CorruptedData::open(&path))
    };
    let mut y = d.y.clone();
    let off = d.mask.iter().position(|&m| m == 0.0).unwrap();
    y[off] = 0.5;
    let e = put(&y, &d.mask, &meta);
    assert!(e.contains("\"y\"") && e.contains("off the observed set") && e.contains("Fix"), "{e}");
    let mut m = d.mask.clone();
    m[0] = 0.5;
    let e = put(&d.y, &m, &meta);
    assert!(e.contains("\"mask\"") && e.contains("0 or 1"), "{e}");
    // Stored masks under which a coordinate is observed in no example (here pixel 9), or nothing at all.
    let (mut y, mut m) = (d.y.clone(), d.mask.clone());
    for i in 0..n {
        y[i * 64 + 9] = 0.0;
        m[i * 64 + 9] = 0.0;
    }
    let e = put(&y, &m, &meta);
    assert!(e.contains("bad.safetensors") && e.contains("\"mask\""), "{e}");
    assert!(
        e.contains("1 of 64 coordinates are observed in none of the 16 examples (the first at row 1, column 1)"),
        "{e}"
    );
    let zeros = vec![0.0; d.mask.len()];
    let e = put(&zeros, &zeros, &meta);
    assert!(e.contains("64 of 64 coordinates") && e.contains("Fix"), "{e}");
    let mut bad = meta.clone();
    bad["kind"] = "clean".into();
    let e = put(&d.y, &d.mask, &bad);
    assert!(e.contains("\"kind\"") && e.contains("Fix"), "{e}");
    let mut bad = meta.clone();
    bad["p"] = 1.0.into();
    let e = put(&d.y, &d.mask, &bad);
    assert!(e.contains("bad.safetensors") && e.contains("\"p\""), "{e}");
    let mut bad = meta.clone();
    bad["count"] = 3.into();
    let e = put(&d.y, &d.mask, &bad);
    assert!(e.contains("\"count\""), "{e}");
    // make_dataset refuses what check_observable refuses, and draws that leave a coordinate unobserved.
    let e = err_of(make_dataset(&src, &boxed(6), 1, "phantoms"));
    assert!(e.contains("never observed") && e.contains("--box"), "{e}");
    let few = make_dataset(&gsure::data::phantoms(2, 8, 1), &pixel(0.5), 1, "phantoms").unwrap();
    let e = err_of(few.check_every_coordinate_observed());
    assert!(e.contains("observed in none of the 2 examples"), "{e}");
}

#[test]
fn a_mask_stored_once_per_example_is_shared_over_channels() {
    use gsure::data::dataset::{Array4, CorruptedDataset};
    let src = gsure::data::phantoms(24, 8, 1);
    let d = make_dataset(&src, &OpSpec { sigma0: 0.1, ..mri(2.0, 2, false) }, 4, "phantoms").unwrap();
    let hw = 64;
    let single: Vec<f32> = d.mask.chunks_exact(2 * hw).flat_map(|m| m[..hw].to_vec()).collect();
    let path = tmp("mask1.safetensors");
    let y = Array4 { data: &d.y, dims: d.dims };
    let mask = Array4 { data: &single, dims: [24, 1, 8, 8] };
    CorruptedDataset::write(&path, y, mask, None, &d.meta().unwrap()).unwrap();
    let back = CorruptedData::open(&path).unwrap();
    assert_eq!(back.mask, d.mask);
    assert!(back.clean.is_none());
    let sb = back.spectral(&[2, 0], &Device::Cpu, DType::F32).unwrap();
    assert_eq!(sb.observed.dims(), [2, 2, 8, 8]);
    assert!(err_of(back.spectral(&[24], &Device::Cpu, DType::F32)).contains("out of range"));
}

#[test]
fn operators_on_cuda_match_the_cpu() {
    let Some(gpu) = gsure::testing::gpu_or_skip("operators_on_cuda_match_the_cpu") else { return };
    let mut r = rng(6);
    for (s, chw, n) in [
        (pixel(0.3), [3, 7, 9], 2),
        (boxed(3), [1, 8, 8], 2),
        (mri(2.5, 2, false), [2, 8, 10], 3),
        (mri(4.0, 26, true), [2, 320, 320], 1),
    ] {
        let (_, b) = batch_of(&OpSpec { sigma0: 0.1, ..s }, chw, n, 21);
        let x = randn(&b.image_dims(), &mut r).to_dtype(DType::F32).unwrap();
        let y = randn(&b.spectral_dims(), &mut r).to_dtype(DType::F32).unwrap();
        let (xg, yg) = (x.to_device(&gpu).unwrap(), y.to_device(&gpu).unwrap());
        let back = |t: Tensor| t.to_device(&Device::Cpu).unwrap();
        assert!(max_diff(&back(b.forward(&xg).unwrap()), &b.forward(&x).unwrap()) < 1e-4, "{:?} forward", s.kind);
        assert!(max_diff(&back(b.adjoint(&yg).unwrap()), &b.adjoint(&y).unwrap()) < 1e-4, "{:?} adjoint", s.kind);
        let (sg, sc) = (b.spectral(&yg, &gpu, DType::F32).unwrap(), b.spectral(&y, &Device::Cpu, DType::F32).unwrap());
        assert!(sg.ybar.device().is_cuda() && sg.w2.device().is_cuda());
        for (g, c) in [(sg.ybar, sc.ybar), (sg.observed, sc.observed), (sg.nu, sc.nu), (sg.w2, sc.w2)] {
            assert!(max_diff(&back(g), &c) < 1e-5, "{:?} spectral view", s.kind);
        }
    }
}
