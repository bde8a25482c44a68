//! Dataset files (clean and corrupted): round trips, validation on open (every refusal names the file, the
//! field and the fix), no panic on truncated or bit-flipped files, load_clean, and the batch loader.
use gsure::data::dataset::{Array4, CleanDataset, CleanMeta, CorruptedDataset, CorruptedMeta};
use gsure::data::loader::{epoch_order, Loader, LoaderOptions, Source};
use gsure::io::safetensors::{write, Entry};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gsure-dataset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Deterministic values in [-1, 1].
fn images(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0).clamp(-1.0, 1.0)).collect()
}

fn corrupted_meta() -> CorruptedMeta {
    CorruptedMeta {
        operator: "pixel_inpainting".into(),
        sigma0: 0.1,
        p: Some(0.5),
        r: None,
        seed: 7,
        source: "test".into(),
        extra: Default::default(),
    }
}

/// Asserts that `err` names the file, the field and the fix.
fn assert_names(err: &anyhow::Error, file: &str, field: &str) {
    let s = format!("{err:#}");
    assert!(s.contains(file), "error does not name the file {file}: {s}");
    assert!(s.contains(field), "error does not name the field {field}: {s}");
    assert!(s.contains("Fix"), "error does not say how to fix it: {s}");
}

#[test]
fn clean_round_trip() {
    let path = tmp("clean.safetensors");
    let dims = [5, 2, 3, 4];
    let x = images(5 * 24);
    let labels = [0.0, 3.0, 1.0, 1.0, 9.0];
    let mut meta = CleanMeta::new("unit", "train", 5);
    meta.extra.insert("note".into(), json!("kept"));
    CleanDataset::write(&path, Array4 { data: &x, dims }, Some(&labels), &meta).unwrap();
    let ds = CleanDataset::open(&path).unwrap();
    assert_eq!(ds.dims(), dims);
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.meta, meta);
    assert_eq!(ds.images().images, x);
    assert_eq!(ds.gather(&[3, 1]), [&x[72..96], &x[24..48]].concat());
    assert_eq!(ds.gather_labels(&[4, 0]).unwrap(), vec![9.0, 0.0]);
    assert_eq!(ds.labels().unwrap(), labels.to_vec());
    let set = gsure::data::load_clean(&path).unwrap();
    assert_eq!((set.dims, set.images), (dims, x));
}

#[test]
fn clean_without_labels_and_other_dtypes() {
    // A file written from Python with float64 images and uint8 labels (safetensors.numpy.save_file).
    let path = tmp("f64.safetensors");
    let x: Vec<f64> = vec![-1.0, 0.25, 0.5, 1.0];
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lb: Vec<u8> = vec![2, 7];
    use safetensors::tensor::{Dtype, TensorView};
    let views = vec![
        ("clean".to_string(), TensorView::new(Dtype::F64, vec![2, 1, 1, 2], &xb).unwrap()),
        ("labels".to_string(), TensorView::new(Dtype::U8, vec![2], &lb).unwrap()),
    ];
    let meta = json!({"kind": "clean", "source": "py", "split": "all", "count": 2}).to_string();
    let info = std::collections::HashMap::from([("gsure".to_string(), meta)]);
    safetensors::serialize_to_file(views, Some(info), &path).unwrap();
    let ds = CleanDataset::open(&path).unwrap();
    assert_eq!(ds.images().images, vec![-1.0, 0.25, 0.5, 1.0]);
    assert_eq!(ds.labels().unwrap(), vec![2.0, 7.0]);

    let path = tmp("nolabels.safetensors");
    CleanDataset::write(&path, Array4 { data: &[0.0; 4], dims: [1, 1, 2, 2] }, None, &CleanMeta::new("a", "b", 1))
        .unwrap();
    let ds = CleanDataset::open(&path).unwrap();
    assert!(!ds.has_labels() && ds.labels().is_none());
}

#[test]
fn corrupted_round_trip_and_load_clean() {
    let path = tmp("corrupted.safetensors");
    let y: Vec<f32> = (0..3 * 2 * 4 * 4).map(|i| i as f32 * 0.37 - 5.0).collect();
    let mask: Vec<f32> = (0..3 * 16).map(|i| (i % 3 == 0) as u8 as f32).collect();
    let clean = images(3 * 16);
    let meta = corrupted_meta();
    CorruptedDataset::write(
        &path,
        Array4 { data: &y, dims: [3, 2, 4, 4] },
        Array4 { data: &mask, dims: [3, 1, 4, 4] },
        Some(Array4 { data: &clean, dims: [3, 1, 4, 4] }),
        &meta,
    )
    .unwrap();
    let ds = CorruptedDataset::open(&path).unwrap();
    assert_eq!(ds.meta, meta);
    assert_eq!((ds.y_dims(), ds.mask_dims(), ds.clean_dims()), ([3, 2, 4, 4], [3, 1, 4, 4], Some([3, 1, 4, 4])));
    assert_eq!(ds.gather_y(&[2]), y[64..96].to_vec());
    assert_eq!(ds.gather_mask(&[1, 0]), [&mask[16..32], &mask[0..16]].concat());
    assert_eq!(ds.gather_clean(&[0]).unwrap(), clean[..16].to_vec());
    // The supervised oracle can train on a corrupted file's evaluation images.
    assert_eq!(gsure::data::load_clean(&path).unwrap().images, clean);
    // A clean reader refuses a corrupted file (and says which kind it is).
    let err = CleanDataset::open(&path).err().unwrap();
    assert_names(&err, "corrupted.safetensors", "\"kind\"");

    // Without clean images: still a valid corrupted dataset; the oracle is refused with the fix.
    let path = tmp("noclean.safetensors");
    let meta = CorruptedMeta { p: None, r: Some(4.0), operator: "mri".into(), ..corrupted_meta() };
    CorruptedDataset::write(
        &path,
        Array4 { data: &y, dims: [3, 2, 4, 4] },
        Array4 { data: &[1.0; 3 * 2 * 16], dims: [3, 2, 4, 4] },
        None,
        &meta,
    )
    .unwrap();
    let ds = CorruptedDataset::open(&path).unwrap();
    assert_eq!(ds.meta.r, Some(4.0));
    assert!(!ds.has_clean());
    assert_names(&gsure::data::load_clean(&path).err().unwrap(), "noclean.safetensors", "\"clean\"");
}

#[test]
fn writers_refuse_bad_values_and_shapes() {
    let p = tmp("bad.safetensors");
    let meta = CleanMeta::new("s", "all", 2);
    let d = [2, 1, 2, 2];
    let mut x = images(8);
    for (bad, what) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (1.5, "1.5"), (-2.0, "-2")] {
        x[5] = bad;
        let err = CleanDataset::write(&p, Array4 { data: &x, dims: d }, None, &meta).err().unwrap();
        assert_names(&err, "bad.safetensors", "\"clean\"");
        assert!(format!("{err}").contains(what) && format!("{err}").contains("item 1"), "{err}");
    }
    assert!(!p.exists(), "a refused write must not leave a file");
    let x = images(8);
    let err = CleanDataset::write(&p, Array4 { data: &x, dims: d }, Some(&[0.0, 0.5]), &meta).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"labels\"");
    let err = CleanDataset::write(&p, Array4 { data: &x, dims: d }, Some(&[0.0, 1.0, 2.0]), &meta).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"labels\"");
    let err =
        CleanDataset::write(&p, Array4 { data: &x, dims: d }, None, &CleanMeta::new("s", "all", 3)).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"count\"");
    let err = CleanDataset::write(&p, Array4 { data: &[], dims: [0, 1, 2, 2] }, None, &CleanMeta::new("s", "a", 0))
        .err()
        .unwrap();
    assert_names(&err, "bad.safetensors", "\"clean\"");

    let y = vec![0.5f32; 2 * 2 * 2 * 2];
    let m = |data: &'static [f32], dims| Array4 { data, dims };
    let ya = Array4 { data: &y, dims: [2, 2, 2, 2] };
    let cm = corrupted_meta();
    // Mask not 0/1.
    static HALF: [f32; 8] = [0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 1.0];
    let err = CorruptedDataset::write(&p, ya, m(&HALF, [2, 1, 2, 2]), None, &cm).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"mask\"");
    // Mask with the wrong N or channel count.
    static ONES12: [f32; 12] = [1.0; 12];
    let err = CorruptedDataset::write(&p, ya, m(&ONES12, [3, 1, 2, 2]), None, &cm).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"mask\"");
    let err = CorruptedDataset::write(&p, ya, m(&ONES12, [1, 3, 2, 2]), None, &cm).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"mask\"");
    // Non-finite observation.
    let mut yb = y.clone();
    yb[3] = f32::NEG_INFINITY;
    static ONES8: [f32; 8] = [1.0; 8];
    let err = CorruptedDataset::write(&p, Array4 { data: &yb, dims: [2, 2, 2, 2] }, m(&ONES8, [2, 1, 2, 2]), None, &cm)
        .err()
        .unwrap();
    assert_names(&err, "bad.safetensors", "\"y\"");
    // Clean of another size.
    let err =
        CorruptedDataset::write(&p, ya, m(&ONES8, [2, 1, 2, 2]), Some(m(&ONES12, [2, 1, 2, 3])), &cm).err().unwrap();
    assert_names(&err, "bad.safetensors", "\"clean\"");
    // Metadata out of range.
    for (meta, field) in [
        (CorruptedMeta { sigma0: -1.0, ..corrupted_meta() }, "\"sigma0\""),
        (CorruptedMeta { p: Some(1.5), ..corrupted_meta() }, "\"p\""),
        (CorruptedMeta { r: Some(0.5), ..corrupted_meta() }, "\"R\""),
    ] {
        let err = CorruptedDataset::write(&p, ya, m(&ONES8, [2, 1, 2, 2]), None, &meta).err().unwrap();
        assert_names(&err, "bad.safetensors", field);
    }
}

/// Writes tensors and metadata with the raw writer (no validation), as a foreign tool might.
fn raw_file(name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: serde_json::Value) -> PathBuf {
    let p = tmp(name);
    let entries: Vec<Entry> =
        tensors.iter().map(|(n, s, d)| Entry { name: n.to_string(), shape: s.clone(), data: d }).collect();
    write(&p, &entries, &meta).unwrap();
    p
}

#[test]
fn open_refuses_bad_metadata_and_tensors() {
    let good = vec![0.0f32; 8];
    let clean = |m: serde_json::Value| raw_file("m.safetensors", &[("clean", vec![2, 1, 2, 2], good.clone())], m);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::Value::Null, "\"kind\""),
        (json!({"source": "s", "split": "a", "count": 2}), "\"kind\""),
        (json!({"kind": 3, "source": "s", "split": "a", "count": 2}), "\"kind\""),
        (json!({"kind": "clean", "split": "a", "count": 2}), "\"source\""),
        (json!({"kind": "clean", "source": 1, "split": "a", "count": 2}), "\"source\""),
        (json!({"kind": "clean", "source": "s", "split": null, "count": 2}), "\"split\""),
        (json!({"kind": "clean", "source": "s", "split": "a", "count": "2"}), "\"count\""),
        (json!({"kind": "clean", "source": "s", "split": "a", "count": -2}), "\"count\""),
        (json!({"kind": "clean", "source": "s", "split": "a", "count": 5}), "\"count\""),
    ];
    for (meta, field) in cases {
        let err = CleanDataset::open(&clean(meta.clone())).err().unwrap_or_else(|| panic!("accepted {meta}"));
        assert_names(&err, "m.safetensors", field);
    }
    let meta = json!({"kind": "clean", "source": "s", "split": "a", "count": 2});
    // Missing tensor, wrong rank, mismatched labels, out-of-range values.
    let p = raw_file("t.safetensors", &[("images", vec![2, 1, 2, 2], good.clone())], meta.clone());
    assert_names(&CleanDataset::open(&p).err().unwrap(), "t.safetensors", "\"clean\"");
    let p = raw_file("t.safetensors", &[("clean", vec![2, 4], good.clone())], meta.clone());
    assert_names(&CleanDataset::open(&p).err().unwrap(), "t.safetensors", "\"clean\"");
    let p = raw_file(
        "t.safetensors",
        &[("clean", vec![2, 1, 2, 2], good.clone()), ("labels", vec![2, 1], vec![0.0, 1.0])],
        meta.clone(),
    );
    assert_names(&CleanDataset::open(&p).err().unwrap(), "t.safetensors", "\"labels\"");
    let p = raw_file(
        "t.safetensors",
        &[("clean", vec![2, 1, 2, 2], good.clone()), ("labels", vec![3], vec![0.0, 1.0, 2.0])],
        meta.clone(),
    );
    assert_names(&CleanDataset::open(&p).err().unwrap(), "t.safetensors", "\"labels\"");
    let mut nan = good.clone();
    nan[7] = f32::NAN;
    let p = raw_file("t.safetensors", &[("clean", vec![2, 1, 2, 2], nan)], meta.clone());
    let err = CleanDataset::open(&p).err().unwrap();
    assert_names(&err, "t.safetensors", "\"clean\"");
    assert!(format!("{err}").contains("NaN"), "{err}");

    // Corrupted metadata of the wrong type.
    let ym = [("y", vec![1, 1, 2, 2], vec![0.0; 4]), ("mask", vec![1, 1, 2, 2], vec![1.0; 4])];
    let base =
        json!({"kind": "corrupted", "operator": "box", "sigma0": 0.0, "p": null, "R": null, "seed": 1, "source": "s"});
    let p = raw_file("c.safetensors", &ym, base.clone());
    CorruptedDataset::open(&p).unwrap();
    for (field, value) in [
        ("operator", json!(5)),
        ("sigma0", json!("0.1")),
        ("p", json!("half")),
        ("R", json!([4])),
        ("seed", json!(-1)),
        ("seed", json!(1.5)),
        ("source", json!(null)),
        ("count", json!(2)),
    ] {
        let mut m = base.clone();
        m[field] = value.clone();
        let p = raw_file("c.safetensors", &ym, m);
        let err = CorruptedDataset::open(&p).err().unwrap_or_else(|| panic!("accepted {field} = {value}"));
        assert_names(&err, "c.safetensors", &format!("\"{field}\""));
    }
    let p = raw_file("c.safetensors", &ym[..1], base.clone());
    assert_names(&CorruptedDataset::open(&p).err().unwrap(), "c.safetensors", "\"mask\"");
    let p = raw_file("c.safetensors", &ym[1..], base);
    assert_names(&CorruptedDataset::open(&p).err().unwrap(), "c.safetensors", "\"y\"");
}

/// Small xorshift for deterministic corruption.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn truncated_and_bit_flipped_files_never_panic() {
    let clean = tmp("fz-clean.safetensors");
    let x = images(3 * 16);
    CleanDataset::write(
        &clean,
        Array4 { data: &x, dims: [3, 1, 4, 4] },
        Some(&[1.0, 2.0, 0.0]),
        &CleanMeta::new("f", "a", 3),
    )
    .unwrap();
    let corrupted = tmp("fz-corrupted.safetensors");
    let mask: Vec<f32> = (0..48).map(|i| (i % 2) as f32).collect();
    CorruptedDataset::write(
        &corrupted,
        Array4 { data: &x, dims: [3, 1, 4, 4] },
        Array4 { data: &mask, dims: [3, 1, 4, 4] },
        Some(Array4 { data: &x, dims: [3, 1, 4, 4] }),
        &corrupted_meta(),
    )
    .unwrap();
    let out = tmp("fz-mutant.safetensors");
    let mut seed = 0x1234_5678_9abc_def0u64;
    for src in [&clean, &corrupted] {
        let bytes = std::fs::read(src).unwrap();
        let open = |b: &[u8]| {
            std::fs::write(&out, b).unwrap();
            let r1 = CleanDataset::open(&out).map(|d| d.images().images.len());
            let r2 = CorruptedDataset::open(&out).map(|d| d.gather_y(&[0]).len());
            let r3 = gsure::data::load_clean(&out).map(|s| s.len());
            for e in [r1.err(), r2.err(), r3.err()].into_iter().flatten() {
                assert!(format!("{e:#}").contains("fz-mutant"), "error does not name the file: {e:#}");
            }
        };
        for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            open(&bytes[..len]);
        }
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + xorshift(&mut seed) % 3 {
                let bit = (xorshift(&mut seed) % (b.len() as u64 * 8)) as usize;
                b[bit / 8] ^= 1 << (bit % 8);
            }
            open(&b);
        }
    }
}

#[test]
fn loader_is_seeded_complete_and_prefetches() {
    let n = 23;
    let set = gsure::data::ImageSet { images: (0..n * 4).map(|i| i as f32).collect(), dims: [n, 1, 2, 2] };
    let src: Arc<dyn Source> = Arc::new(set.clone());
    let mut o = LoaderOptions::new(5, 42);
    o.epochs = Some(3);
    let a: Vec<_> = Loader::new(src.clone(), o.clone()).unwrap().collect();
    let b: Vec<_> = Loader::new(src.clone(), o.clone()).unwrap().collect();
    assert_eq!(a, b, "same seed, same batches");
    assert_eq!(a.len(), 3 * 5);
    for e in 0..3u64 {
        let mut seen: Vec<usize> = a.iter().filter(|x| x.epoch == e).flat_map(|x| x.indices.clone()).collect();
        assert_eq!(seen, epoch_order(n, 42, e));
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "each epoch visits every item once");
    }
    assert_ne!(epoch_order(n, 42, 0), epoch_order(n, 42, 1));
    assert_ne!(epoch_order(n, 42, 0), epoch_order(n, 43, 0));
    // Contents match the indices.
    for batch in &a {
        let t = batch.get("clean").unwrap();
        assert_eq!(t.dims, vec![batch.len(), 1, 2, 2]);
        assert_eq!(t.data, set.gather(&batch.indices));
    }
    // Resuming at (epoch 1, batch 2) repeats what the uninterrupted loader gave.
    let mut r = o.clone();
    r.start_epoch = 1;
    r.start_batch = 2;
    let c: Vec<_> = Loader::new(src.clone(), r).unwrap().collect();
    assert_eq!(c[..], a[7..]);
    // drop_last, no shuffle.
    let mut d = LoaderOptions::new(5, 0);
    d.shuffle = false;
    d.drop_last = true;
    d.epochs = Some(1);
    let l = Loader::new(src.clone(), d).unwrap();
    assert_eq!(l.batches_per_epoch(), 4);
    let batches: Vec<_> = l.collect();
    assert_eq!(batches.iter().map(|b| b.indices.clone()).collect::<Vec<_>>()[3], vec![15, 16, 17, 18, 19]);
    // An endless loader dropped early stops its thread (the test would hang otherwise).
    let mut endless = Loader::new(src.clone(), LoaderOptions::new(4, 1)).unwrap();
    assert_eq!(endless.next().unwrap().len(), 4);
    drop(endless);
    // Bad options.
    assert!(Loader::new(src.clone(), LoaderOptions::new(0, 1)).is_err());
    let mut big = LoaderOptions::new(100, 1);
    big.drop_last = true;
    assert!(Loader::new(src, big).is_err());
}

#[test]
fn loader_over_dataset_files() {
    let path = tmp("loader-clean.safetensors");
    let x = images(7 * 4);
    let labels: Vec<f32> = (0..7).map(|i| (i % 3) as f32).collect();
    CleanDataset::write(&path, Array4 { data: &x, dims: [7, 1, 2, 2] }, Some(&labels), &CleanMeta::new("l", "a", 7))
        .unwrap();
    let ds = Arc::new(CleanDataset::open(&path).unwrap());
    let mut o = LoaderOptions::new(3, 9);
    o.epochs = Some(1);
    for b in Loader::new(ds.clone(), o.clone()).unwrap() {
        let l = b.get("labels").unwrap();
        assert_eq!(l.data, b.indices.iter().map(|&i| labels[i]).collect::<Vec<_>>());
        assert_eq!(b.get("clean").unwrap().data, ds.gather(&b.indices));
    }
    let path = tmp("loader-corrupted.safetensors");
    let mask: Vec<f32> = (0..28).map(|i| (i % 2) as f32).collect();
    CorruptedDataset::write(
        &path,
        Array4 { data: &x, dims: [7, 1, 2, 2] },
        Array4 { data: &mask, dims: [7, 1, 2, 2] },
        None,
        &corrupted_meta(),
    )
    .unwrap();
    let ds = Arc::new(CorruptedDataset::open(&path).unwrap());
    let batches: Vec<_> = Loader::new(ds.clone(), o).unwrap().collect();
    assert_eq!(batches.len(), 3);
    for b in batches {
        assert!(b.get("clean").is_none());
        assert_eq!(b.get("y").unwrap().data, ds.gather_y(&b.indices));
        assert_eq!(b.get("mask").unwrap().dims, vec![b.len(), 1, 2, 2]);
    }
}
