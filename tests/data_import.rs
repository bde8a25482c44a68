//! Importers (IDX, IDX.gz, NIfTI-1 .nii/.nii.gz, PNG folders) and transforms: round trips on small files
//! written here by hand, refusals of broken input (each naming the file, the field and the fix), and no
//! panic on truncated or bit-flipped copies of every format.
use gsure::data::dataset::CleanDataset;
use gsure::data::import::{self, idx, nifti, png_folder, Format, ImportOptions, SliceRange, Split};
use gsure::data::transforms::{self, Image, Resize};
use std::io::Write;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gsure-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn assert_names(err: &anyhow::Error, file: &str, field: &str) {
    let s = format!("{err:#}");
    assert!(s.contains(file), "error does not name the file {file}: {s}");
    assert!(s.contains(field), "error does not name the field {field}: {s}");
    assert!(s.contains("Fix"), "error does not say how to fix it: {s}");
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Small MNIST-like IDX files: 6 images 5×4, labels 0..6 mod 4.
fn idx_pair(dir_tag: &str, compress: bool) -> (PathBuf, PathBuf, Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..6 * 20).map(|i| (i * 53 % 256) as u8).collect();
    let labels: Vec<u8> = (0..6).map(|i| (i % 4) as u8).collect();
    let ext = if compress { ".gz" } else { "" };
    let (pi, pl) =
        (tmp(&format!("{dir_tag}-images-idx3-ubyte{ext}")), tmp(&format!("{dir_tag}-labels-idx1-ubyte{ext}")));
    let (bi, bl) = (idx::encode(&[6, 5, 4], &pixels), idx::encode(&[6], &labels));
    std::fs::write(&pi, if compress { gz(&bi) } else { bi }).unwrap();
    std::fs::write(&pl, if compress { gz(&bl) } else { bl }).unwrap();
    (pi, pl, pixels, labels)
}

#[test]
fn idx_round_trip_plain_and_gz() {
    for compress in [false, true] {
        let (pi, pl, pixels, labels) = idx_pair(if compress { "gz" } else { "plain" }, compress);
        let mut o = ImportOptions::new(Format::Idx, &pi);
        o.labels = Some(pl);
        let out = tmp(&format!("idx-{compress}.safetensors"));
        let w = import::import(&o, &out).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].dims, [6, 1, 5, 4]);
        let ds = CleanDataset::open(&out).unwrap();
        assert_eq!(ds.meta.split, "all");
        assert_eq!(ds.meta.count, 6);
        let want: Vec<f32> = pixels.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        assert_eq!(ds.images().images, want);
        assert_eq!(ds.labels().unwrap(), labels.iter().map(|&l| l as f32).collect::<Vec<_>>());
        assert_eq!(ds.meta.extra["classes"], 4);
    }
}

#[test]
fn idx_split_pad_and_limit() {
    let (pi, pl, pixels, labels) = idx_pair("split", false);
    let mut o = ImportOptions::new(Format::Idx, &pi);
    o.labels = Some(pl);
    o.split = "test=0.34".parse().unwrap();
    o.size = Some(8);
    o.resize = Resize::Pad;
    o.seed = 3;
    let out = tmp("split.safetensors");
    let w = import::import(&o, &out).unwrap();
    assert_eq!(w.iter().map(|w| (w.split.as_str(), w.dims[0])).collect::<Vec<_>>(), [("train", 4), ("test", 2)]);
    assert_eq!(w[1].path, tmp("split-test.safetensors"));
    let (tr, te) = (CleanDataset::open(&w[0].path).unwrap(), CleanDataset::open(&w[1].path).unwrap());
    assert_eq!(tr.dims(), [4, 1, 8, 8]);
    // Padding puts the 5×4 image at rows 1..6, columns 2..6 of an 8×8 canvas of -1.
    let (train_idx, test_idx) = transforms::split_indices(6, 0.34, 3).unwrap();
    let all_labels: Vec<f32> = [tr.labels().unwrap(), te.labels().unwrap()].concat();
    let want: Vec<f32> = train_idx.iter().chain(&test_idx).map(|&i| labels[i] as f32).collect();
    assert_eq!(all_labels, want);
    let first = &tr.gather(&[0]);
    let i0 = train_idx[0];
    for y in 0..8 {
        for x in 0..8 {
            let v = if (1..6).contains(&y) && (2..6).contains(&x) {
                pixels[i0 * 20 + (y - 1) * 4 + (x - 2)] as f32 / 127.5 - 1.0
            } else {
                -1.0
            };
            assert_eq!(first[y * 8 + x], v, "pixel ({y}, {x})");
        }
    }
    // --limit keeps the first images.
    let mut o = ImportOptions::new(Format::Idx, &pi);
    o.limit = Some(2);
    let w = import::import(&o, &tmp("limit.safetensors")).unwrap();
    assert_eq!(w[0].dims[0], 2);
}

#[test]
fn idx_refusals() {
    let (pi, pl, _, _) = idx_pair("bad", false);
    // Labels given as images and images as labels: wrong magic numbers.
    let err = idx::read_file(&pl, idx::MAGIC_IMAGES).err().unwrap();
    assert_names(&err, "bad-labels-idx1-ubyte", "magic number 0x00000801");
    let mut o = ImportOptions::new(Format::Idx, &pi);
    o.labels = Some(pi.clone());
    assert_names(&import::read(&o).err().unwrap(), "bad-images-idx3-ubyte", "magic number 0x00000803");
    // Truncated body and header.
    let bytes = std::fs::read(&pi).unwrap();
    let t = tmp("trunc-images-idx3-ubyte");
    std::fs::write(&t, &bytes[..bytes.len() - 3]).unwrap();
    let err = idx::read_file(&t, idx::MAGIC_IMAGES).err().unwrap();
    assert_names(&err, "trunc-images", "dimension sizes");
    assert!(format!("{err}").contains("truncated"), "{err}");
    std::fs::write(&t, &bytes[..9]).unwrap();
    assert_names(&idx::read_file(&t, idx::MAGIC_IMAGES).err().unwrap(), "trunc-images", "header");
    std::fs::write(&t, &bytes[..2]).unwrap();
    assert_names(&idx::read_file(&t, idx::MAGIC_IMAGES).err().unwrap(), "trunc-images", "magic");
    // Trailing bytes: the sizes do not add up.
    std::fs::write(&t, [&bytes[..], &[0, 0]].concat()).unwrap();
    assert_names(&idx::read_file(&t, idx::MAGIC_IMAGES).err().unwrap(), "trunc-images", "dimension sizes");
    // A header claiming 2^32-ish items must not allocate or overflow.
    let huge = idx::encode(&[u32::MAX as usize, u32::MAX as usize, 65536], &[1, 2, 3]);
    std::fs::write(&t, &huge).unwrap();
    assert_names(&idx::read_file(&t, idx::MAGIC_IMAGES).err().unwrap(), "trunc-images", "dimension sizes");
    // Labels for another set.
    let other = tmp("other-labels-idx1-ubyte");
    std::fs::write(&other, idx::encode(&[5], &[0, 1, 2, 3, 4])).unwrap();
    let mut o = ImportOptions::new(Format::Idx, &pi);
    o.labels = Some(other);
    let err = import::read(&o).err().unwrap();
    assert_names(&err, "other-labels", "5 labels");
    // A broken gzip stream.
    let g = gz(&bytes);
    let t = tmp("broken.gz");
    std::fs::write(&t, &g[..g.len() / 2]).unwrap();
    let err = idx::read_file(&t, idx::MAGIC_IMAGES).err().unwrap();
    assert_names(&err, "broken.gz", "gzip");
}

/// A 5×6×7 volume with distinct values (x fastest).
fn volume_values() -> Vec<f64> {
    (0..5 * 6 * 7).map(|i| ((i * 7) % 97) as f64 + 3.0).collect()
}

#[test]
fn nifti_round_trip_every_datatype_and_byte_order() {
    let v = volume_values();
    for code in [2i16, 4, 8, 16, 64, 256, 512, 768] {
        for le in [true, false] {
            for (slope, inter) in [(0.0f32, 0.0f32), (2.0, -5.0)] {
                let vals: Vec<f64> = if code == 256 { v.iter().map(|x| x - 50.0).collect() } else { v.clone() };
                let bytes = nifti::encode([5, 6, 7], code, le, &vals, slope, inter);
                for compress in [false, true] {
                    let name = format!("vol-{code}-{le}.nii{}", if compress { ".gz" } else { "" });
                    let p = tmp(&name);
                    std::fs::write(&p, if compress { gz(&bytes) } else { bytes.clone() }).unwrap();
                    let vol = nifti::read_file(&p).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                    assert_eq!(vol.dims, [5, 6, 7]);
                    let (s, b) = if slope == 0.0 { (1.0, 0.0) } else { (slope as f64, inter as f64) };
                    let want: Vec<f32> = vals.iter().map(|x| (x * s + b) as f32).collect();
                    assert_eq!(vol.data, want, "{name} slope {slope}");
                }
            }
        }
    }
}

#[test]
fn nifti_slices_orientation_normalisation_and_selection() {
    let v = volume_values();
    let vol = nifti::Volume { dims: [5, 6, 7], pixdim: [1.0; 3], data: v.iter().map(|&x| x as f32).collect() };
    let at = |i: usize, j: usize, k: usize| v[i + 5 * (j + 6 * k)] as f32;
    // Axis 2: [ny, nx] with y flipped (row 0 is the largest y).
    let s = nifti::slice(&vol, 2, 3);
    assert_eq!((s.h, s.w), (6, 5));
    assert_eq!(s.data[0], at(0, 5, 3));
    assert_eq!(s.data[2 * 5 + 4], at(4, 3, 3));
    let s = nifti::slice(&vol, 1, 2);
    assert_eq!((s.h, s.w), (7, 5));
    assert_eq!(s.data[5 + 1], at(1, 2, 5));
    let s = nifti::slice(&vol, 0, 4);
    assert_eq!((s.h, s.w), (7, 6));
    assert_eq!(s.data[3 * 6 + 2], at(4, 2, 3));

    // Through the importer: a file, explicit range, no clipping, padded to 6×6.
    let p = tmp("sel.nii");
    std::fs::write(&p, nifti::encode([5, 6, 7], 16, true, &v, 1.0, 0.0)).unwrap();
    let mut o = ImportOptions::new(Format::Nifti, &p);
    o.slices = Some("2..5".parse().unwrap());
    o.min_foreground = 0.0;
    o.clip_percentiles = (0.0, 100.0);
    let imp = import::read(&o).unwrap();
    assert_eq!(imp.images.len(), 3);
    let (lo, hi) = (3.0f32, 99.0f32); // min and max of the volume
    let first = &imp.images[0];
    assert_eq!((first.h, first.w), (6, 6));
    // Column 0 is padding (5 → 6 wide puts the slice at columns 0..5; centre padding puts one column after).
    let expect = |x: usize, y: usize| ((at(x, 5 - y, 2) - lo) * 2.0 / (hi - lo) - 1.0).clamp(-1.0, 1.0);
    assert!((first.data[0] - expect(0, 0)).abs() < 1e-6);
    assert_eq!(first.data[5], -1.0, "padding");
    assert_eq!(imp.extra["volumes"][0]["slices"], serde_json::json!([2, 3, 4]));
    // Central fraction: 7 slices × 0.5 → 4 (rounded), centred: 1..5.
    let mut o2 = o.clone();
    o2.slices = None;
    o2.central_fraction = 0.5;
    let imp = import::read(&o2).unwrap();
    assert_eq!(imp.extra["volumes"][0]["slices"], serde_json::json!([1, 2, 3, 4]));
    // Near-empty slices are skipped: zero everything but slice 3.
    let sparse: Vec<f64> = (0..v.len()).map(|i| if i / 30 == 3 { 100.0 } else { 0.0 }).collect();
    let p2 = tmp("sparse.nii.gz");
    std::fs::write(&p2, gz(&nifti::encode([5, 6, 7], 2, false, &sparse, 0.0, 0.0))).unwrap();
    let mut o3 = ImportOptions::new(Format::Nifti, &p2);
    o3.central_fraction = 1.0;
    let imp = import::read(&o3).unwrap();
    assert_eq!(imp.extra["volumes"][0]["slices"], serde_json::json!([3]));
    // A folder of volumes; the written dataset is in [-1, 1] and reaches both ends.
    let dir = tmp("vols");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&p, dir.join("a.nii")).unwrap();
    std::fs::copy(&p2, dir.join("b.nii.gz")).unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let mut o4 = ImportOptions::new(Format::Nifti, &dir);
    o4.size = Some(4);
    o4.central_fraction = 1.0;
    o4.min_foreground = 0.0;
    let w = import::import(&o4, &tmp("vols.safetensors")).unwrap();
    assert_eq!(w[0].dims, [14, 1, 4, 4]);
    let ds = CleanDataset::open(&w[0].path).unwrap().images();
    let (mn, mx) = ds.images.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(mn >= -1.0 && mx <= 1.0 && mn < -0.99 && mx > 0.9, "{mn} {mx}");
}

#[test]
fn nifti_refusals() {
    let v = volume_values();
    let good = nifti::encode([5, 6, 7], 4, true, &v, 1.0, 0.0);
    let p = tmp("broken.nii");
    let check = |bytes: &[u8], field: &str| {
        std::fs::write(&p, bytes).unwrap();
        let err = nifti::read_file(&p).err().unwrap_or_else(|| panic!("accepted a file with bad {field}"));
        assert_names(&err, "broken.nii", field);
    };
    let mut b = good.clone();
    b[0..4].copy_from_slice(&349i32.to_le_bytes());
    check(&b, "sizeof_hdr");
    let mut b = good.clone();
    b[344..348].copy_from_slice(b"ni1\0");
    check(&b, "magic");
    let mut b = good.clone();
    b[344..348].copy_from_slice(b"xyz\0");
    check(&b, "magic");
    let mut b = good.clone();
    b[70..72].copy_from_slice(&128i16.to_le_bytes()); // RGB24
    check(&b, "datatype");
    let mut b = good.clone();
    b[72..74].copy_from_slice(&8i16.to_le_bytes());
    check(&b, "bitpix");
    let mut b = good.clone();
    b[108..112].copy_from_slice(&100f32.to_le_bytes());
    check(&b, "vox_offset");
    let mut b = good.clone();
    b[108..112].copy_from_slice(&f32::NAN.to_le_bytes());
    check(&b, "vox_offset");
    let mut b = good.clone();
    b[40..42].copy_from_slice(&4i16.to_le_bytes());
    b[48..50].copy_from_slice(&3i16.to_le_bytes()); // dim[4] = 3 time points
    check(&b, "dim[4]");
    let mut b = good.clone();
    b[40..42].copy_from_slice(&9i16.to_le_bytes());
    check(&b, "dim[0]");
    let mut b = good.clone();
    b[44..46].copy_from_slice(&(-6i16).to_le_bytes());
    check(&b, "dim[2]");
    let mut b = good.clone();
    b[112..116].copy_from_slice(&f32::INFINITY.to_le_bytes());
    check(&b, "scl_slope");
    check(&good[..good.len() - 1], "truncated");
    check(&good[..200], "348-byte");
    // NaN voxel in a float volume.
    let mut nan = v.clone();
    nan[17] = f64::NAN;
    check(&nifti::encode([5, 6, 7], 16, false, &nan, 1.0, 0.0), "voxel (2, 3, 0)");
    // Constant volume; slice range outside the volume.
    std::fs::write(&p, nifti::encode([5, 6, 7], 2, true, &vec![7.0; 210], 0.0, 0.0)).unwrap();
    let o = ImportOptions::new(Format::Nifti, &p);
    assert_names(&import::read(&o).err().unwrap(), "broken.nii", "constant");
    std::fs::write(&p, &good).unwrap();
    let mut o = ImportOptions::new(Format::Nifti, &p);
    o.slices = Some(SliceRange { start: 3, end: 9 });
    assert_names(&import::read(&o).err().unwrap(), "broken.nii", "--slices");
    // Everything skipped as empty.
    let mut o = ImportOptions::new(Format::Nifti, &p);
    o.min_foreground = 1.01;
    assert!(format!("{:#}", import::import(&o, &tmp("none.safetensors")).err().unwrap()).contains("no images"));
}

fn write_png(path: &Path, w: usize, h: usize, c: usize, px: &[u8]) {
    gsure::io::image::write_png(path, w, h, c, px).unwrap();
}

#[test]
fn png_folder_round_trip_classes_and_transforms() {
    let dir = tmp("pngs");
    std::fs::create_dir_all(&dir).unwrap();
    let grey: Vec<u8> = (0..6 * 4).map(|i| (i * 11) as u8).collect();
    let rgb: Vec<u8> = (0..6 * 4 * 3).map(|i| (i * 3 % 256) as u8).collect();
    write_png(&dir.join("a.png"), 6, 4, 1, &grey);
    write_png(&dir.join("b.PNG"), 6, 4, 3, &rgb);
    std::fs::write(dir.join("readme.txt"), "not an image").unwrap();
    let imp = png_folder::read(&dir, None).unwrap();
    assert_eq!(imp.images.len(), 2);
    assert!(imp.labels.is_none());
    let to = |v: u8| v as f32 / 127.5 - 1.0;
    assert_eq!(imp.images[0].data, grey.iter().map(|&v| to(v)).collect::<Vec<_>>());
    let b = &imp.images[1];
    assert_eq!((b.c, b.h, b.w), (3, 4, 6));
    // Planar layout: channel 1 at (y=2, x=5) is interleaved byte (2·6 + 5)·3 + 1.
    assert_eq!(b.data[(4 + 2) * 6 + 5], to(rgb[(2 * 6 + 5) * 3 + 1]));

    // Mixed grey and RGB: grey is promoted to RGB; --grey gives luma.
    let o = ImportOptions::new(Format::Png, &dir);
    let w = import::import(&o, &tmp("png.safetensors")).unwrap();
    assert_eq!(w[0].dims, [2, 3, 4, 6]);
    let ds = CleanDataset::open(&w[0].path).unwrap();
    let g = ds.gather(&[0]);
    assert_eq!(&g[..24], &g[24..48]);
    let mut o = ImportOptions::new(Format::Png, &dir);
    o.grey = true;
    let w = import::import(&o, &tmp("png-grey.safetensors")).unwrap();
    assert_eq!(w[0].dims, [2, 1, 4, 6]);
    let ds = CleanDataset::open(&w[0].path).unwrap();
    let luma = ds.gather(&[1]);
    let i = 7;
    let want = 0.299 * to(rgb[i * 3]) + 0.587 * to(rgb[i * 3 + 1]) + 0.114 * to(rgb[i * 3 + 2]);
    assert!((luma[i] - want).abs() < 1e-5);

    // Different sizes need --size.
    write_png(&dir.join("c.png"), 3, 3, 1, &[0; 9]);
    let o = ImportOptions::new(Format::Png, &dir);
    let err = import::import(&o, &tmp("mixed.safetensors")).err().unwrap();
    assert!(format!("{err}").contains("--size"), "{err}");
    let mut o = ImportOptions::new(Format::Png, &dir);
    o.size = Some(2);
    o.grey = true;
    let w = import::import(&o, &tmp("sized.safetensors")).unwrap();
    assert_eq!(w[0].dims, [3, 1, 2, 2]);

    // Class sub-folders become labels.
    let classes = tmp("classes");
    for (k, name) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir_all(classes.join(name)).unwrap();
        for j in 0..k + 1 {
            write_png(&classes.join(name).join(format!("{j}.png")), 2, 2, 1, &[k as u8 * 100; 4]);
        }
    }
    let imp = png_folder::read(&classes, None).unwrap();
    assert_eq!(imp.labels.unwrap(), vec![0.0, 1.0, 1.0]);
    assert_eq!(imp.extra["classes"], serde_json::json!(["cat", "dog"]));

    // Refusals: empty folder, a file given, a broken PNG.
    let empty = tmp("empty-pngs");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(format!("{}", png_folder::read(&empty, None).err().unwrap()).contains("no .png"));
    assert!(png_folder::read(&dir.join("a.png"), None).is_err());
    let bytes = std::fs::read(dir.join("a.png")).unwrap();
    std::fs::write(dir.join("d.png"), &bytes[..bytes.len() / 2]).unwrap();
    let err = png_folder::read(&dir, None).err().unwrap();
    assert_names(&err, "d.png", "PNG");
}

#[test]
fn transforms_crop_pad_resize_grey_split() {
    let img = Image::new((0..2 * 4 * 6).map(|i| i as f32).collect(), 2, 4, 6).unwrap();
    let c = transforms::center_crop(&img, 2, 2);
    assert_eq!(c.data, vec![8.0, 9.0, 14.0, 15.0, 32.0, 33.0, 38.0, 39.0]);
    let p = transforms::center_pad(&c, 4, 3, -1.0);
    assert_eq!(&p.data[..12], &[-1.0, -1.0, -1.0, 8.0, 9.0, -1.0, 14.0, 15.0, -1.0, -1.0, -1.0, -1.0]);
    // Area: exact 2×2 means for a factor of 2.
    let a = transforms::resize_area(&img, 2, 3);
    assert_eq!(&a.data[..3], &[3.5, 5.5, 7.5]);
    // Area for a non-integer factor conserves the mean.
    let a = transforms::resize_area(&img, 3, 5);
    let mean = |d: &[f32]| d.iter().sum::<f32>() / d.len() as f32;
    assert!((mean(&a.data[..15]) - mean(&img.data[..24])).abs() < 1e-4);
    // Bilinear keeps constants and linear ramps (inside the border).
    let ramp = Image::new((0..8 * 8).map(|i| (i % 8) as f32).collect(), 1, 8, 8).unwrap();
    let up = transforms::resize_bilinear(&ramp, 16, 16);
    for x in 1..15 {
        assert!((up.data[3 * 16 + x] - ((x as f32 + 0.5) / 2.0 - 0.5)).abs() < 1e-5, "x = {x}");
    }
    let k = Image::new(vec![0.25; 3 * 5 * 7], 3, 5, 7).unwrap();
    assert!(transforms::resize_bilinear(&k, 9, 4).data.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    // fit: crop to a square, then resize.
    let f = transforms::fit(&img, 2, Resize::Auto, -1.0);
    assert_eq!((f.c, f.h, f.w), (2, 2, 2));
    assert_eq!(f.data[0], (1.0 + 2.0 + 7.0 + 8.0) / 4.0);
    assert_eq!(transforms::fit(&img, 8, Resize::Bilinear, -1.0).h, 8);
    assert_eq!(transforms::fit(&img, 4, Resize::Area, -1.0).data, transforms::center_crop(&img, 4, 4).data);
    // Greyscale: BT.601 luma.
    let rgb = Image::new(vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 3, 1, 2).unwrap();
    assert_eq!(transforms::greyscale(&rgb).data, vec![0.299, 0.587]);
    // Split: seeded, disjoint, complete, the right size.
    let (tr, te) = transforms::split_indices(100, 0.1, 5).unwrap();
    assert_eq!((tr.len(), te.len()), (90, 10));
    let mut all = [tr.clone(), te.clone()].concat();
    all.sort();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(transforms::split_indices(100, 0.1, 5).unwrap(), (tr, te.clone()));
    assert_ne!(transforms::split_indices(100, 0.1, 6).unwrap().1, te);
    assert!(transforms::split_indices(10, 1.0, 0).is_err());
    // CLI value parsing.
    assert_eq!("test=0.25".parse::<Split>().unwrap(), Split::Test(0.25));
    assert_eq!("train".parse::<Split>().unwrap(), Split::Named("train".into()));
    assert!("test=1.5".parse::<Split>().is_err() && "a/b".parse::<Split>().is_err());
    assert_eq!("3..7".parse::<SliceRange>().unwrap(), SliceRange { start: 3, end: 7 });
    assert!("7..3".parse::<SliceRange>().is_err() && "x".parse::<SliceRange>().is_err());
}

/// Feeds truncated and bit-flipped copies of `bytes` (written as `name`) to `read`; it must return, never
/// panic, and every error must name the file.
fn fuzz(
    name: &str,
    bytes: &[u8],
    header: &[std::ops::Range<usize>],
    seed: u64,
    read: &dyn Fn(&Path) -> anyhow::Result<()>,
) {
    let p = tmp(name);
    let run = |b: &[u8]| {
        std::fs::write(&p, b).unwrap();
        if let Err(e) = read(&p) {
            assert!(format!("{e:#}").contains(name), "error does not name {name}: {e:#}");
        }
    };
    let step = (bytes.len() / 100).max(1);
    for len in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
        run(&bytes[..len]);
    }
    let mut s = seed;
    for _ in 0..200 {
        let mut b = bytes.to_vec();
        for _ in 0..1 + xorshift(&mut s) % 4 {
            let bit = (xorshift(&mut s) % (b.len() as u64 * 8)) as usize;
            b[bit / 8] ^= 1 << (bit % 8);
        }
        run(&b);
    }
    // Headers are where the dangerous values live: set each of their bytes (in `header`) to extremes.
    for i in header.iter().cloned().flatten().filter(|&i| i < bytes.len()) {
        for v in [0x00, 0xff, 0x7f, 0x80] {
            let mut b = bytes.to_vec();
            b[i] = v;
            run(&b);
        }
    }
}

/// The NIfTI-1 header fields gsure reads: sizeof_hdr, dim, datatype, bitpix, pixdim[1..4], vox_offset,
/// scl_slope, scl_inter, magic.
const NII_FIELDS: &[std::ops::Range<usize>] = &[0..4, 40..56, 70..74, 80..92, 108..120, 344..348];

#[test]
fn broken_files_of_every_format_never_panic() {
    let (pi, pl, _, _) = idx_pair("fzsrc", false);
    let images = std::fs::read(&pi).unwrap();
    let labels = std::fs::read(&pl).unwrap();
    let read_images = |p: &Path| idx::read_file(p, idx::MAGIC_IMAGES).map(|_| ());
    fuzz("fz-images-idx3-ubyte", &images, &[0..16], 1, &read_images);
    fuzz("fz-labels-idx1-ubyte", &labels, &[0..8], 2, &|p: &Path| idx::read_file(p, idx::MAGIC_LABELS).map(|_| ()));
    fuzz("fz-images-idx3-ubyte.gz", &gz(&images), &[0..16], 3, &read_images);
    // Importing (labels checked against images) also must not panic.
    fuzz("fz2-labels-idx1-ubyte.gz", &gz(&labels), &[0..16], 4, &|p: &Path| {
        let mut o = ImportOptions::new(Format::Idx, &pi);
        o.labels = Some(p.to_path_buf());
        import::read(&o).map(|_| ())
    });

    let v = volume_values();
    let nii = nifti::encode([5, 6, 7], 4, true, &v, 1.0, 0.0);
    let nii_be = nifti::encode([5, 6, 7], 16, false, &v, 2.0, 1.0);
    let slice_all = |p: &Path| {
        let mut o = ImportOptions::new(Format::Nifti, p);
        o.min_foreground = 0.0;
        o.size = Some(4);
        let imp = import::read(&o)?;
        import::transform(imp.images, &o, &imp.source).map(|_| ())
    };
    fuzz("fz-vol.nii", &nii, NII_FIELDS, 5, &slice_all);
    fuzz("fz-vol-be.nii", &nii_be, NII_FIELDS, 6, &slice_all);
    fuzz("fz-vol.nii.gz", &gz(&nii), &[0..16], 7, &slice_all);

    let dir = tmp("fz-png");
    std::fs::create_dir_all(&dir).unwrap();
    let src = tmp("fz-src.png");
    let px: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 17) as u8).collect();
    write_png(&src, 5, 3, 3, &px);
    let png = std::fs::read(&src).unwrap();
    fuzz("fz-png/x.png", &png, &[0..40], 8, &|p: &Path| {
        let mut o = ImportOptions::new(Format::Png, p.parent().unwrap());
        o.size = Some(4);
        let imp = import::read(&o)?;
        import::transform(imp.images, &o, &imp.source).map(|_| ())
    });
}

#[test]
fn an_import_never_replaces_a_file_without_force_nor_its_own_input() {
    let dir = std::env::temp_dir().join(format!("gsure-import-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let existing = dir.join("data.safetensors");
    std::fs::write(&existing, b"the user's file").unwrap();
    // The check comes before any reading: the input need not even exist for the refusal.
    let opts = gsure::data::import::ImportOptions::new(gsure::data::import::Format::Idx, dir.join("missing-idx"));
    let err = gsure::data::import::import(&opts, &existing).err().expect("refused").to_string();
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"the user's file");
    // Its own input is refused even with --force.
    let own = gsure::data::import::ImportOptions {
        force: true,
        ..gsure::data::import::ImportOptions::new(gsure::data::import::Format::Idx, &existing)
    };
    let err = gsure::data::import::import(&own, &existing).err().expect("refused").to_string();
    assert!(err.contains("is an input"), "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"the user's file");
    // A split's -test sibling counts as an output too.
    let sibling = gsure::data::dataset::sibling_path(&dir.join("new.safetensors"), "test");
    std::fs::write(&sibling, b"keep").unwrap();
    let split = gsure::data::import::ImportOptions {
        split: "test=0.5".parse().unwrap(),
        ..gsure::data::import::ImportOptions::new(gsure::data::import::Format::Idx, dir.join("missing-idx"))
    };
    let err = gsure::data::import::import(&split, &dir.join("new.safetensors")).err().expect("refused").to_string();
    assert!(err.contains("-test") || err.contains(&sibling.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
