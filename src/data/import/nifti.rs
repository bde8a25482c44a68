//! NIfTI-1 volumes (`.nii`, `.nii.gz`), cut into 2-D slices.
//!
//! The 348-byte header is read at its fixed offsets: sizeof_hdr (0, must be 348, which also tells the byte
//! order), dim[8] (40), datatype (70), bitpix (72), pixdim[8] (76), vox_offset (108), scl_slope (112),
//! scl_inter (116), magic (344, "n+1\0" for a single file). The voxels start at vox_offset, x fastest, then
//! y, then z. Values are scaled by scl_slope/scl_inter (when the slope is not 0), clipped at two percentiles
//! of the volume and mapped to [-1, 1].
use super::{open_maybe_gz, read_up_to, ImportOptions, Imported};
use crate::data::transforms::{center_pad, Image};
use anyhow::{bail, Result};
use serde_json::{json, Map};
use std::path::{Path, PathBuf};

pub const HEADER_SIZE: usize = 348;

/// A 3-D volume: dims [nx, ny, nz], values (x fastest) after scl_slope/scl_inter.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub dims: [usize; 3],
    pub pixdim: [f32; 3],
    pub data: Vec<f32>,
}

/// The NIfTI-1 datatype codes gsure reads, with their sizes in bytes.
fn datatype(code: i16) -> Option<(&'static str, usize)> {
    Some(match code {
        2 => ("uint8", 1),
        4 => ("int16", 2),
        8 => ("int32", 4),
        16 => ("float32", 4),
        64 => ("float64", 8),
        256 => ("int8", 1),
        512 => ("uint16", 2),
        768 => ("uint32", 4),
        _ => return None,
    })
}

const FIX: &str = "download or re-create the file (or convert it with a NIfTI tool such as fslmaths or nibabel)";

/// The header at the start of `b` (which must hold at least its 348 bytes; the voxels need not follow).
fn header(path: &Path, b: &[u8]) -> Result<Header> {
    let p = path.display();
    if b.len() < HEADER_SIZE {
        bail!(
            "{p}: {} bytes, shorter than the 348-byte NIfTI-1 header; the file is truncated or not NIfTI. Fix: {FIX}",
            b.len()
        );
    }
    let le = match (i32::from_le_bytes([b[0], b[1], b[2], b[3]]), i32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
        (348, _) => true,
        (_, 348) => false,
        (540, _) | (_, 540) => {
            bail!("{p}: header field sizeof_hdr is 540: this is NIfTI-2, which gsure does not read. Fix: convert it to NIfTI-1 (e.g. nibabel Nifti1Image)")
        }
        (v, _) => bail!("{p}: header field sizeof_hdr is {v}; a NIfTI-1 file has 348 (in either byte order). The file is not NIfTI-1 or is corrupt. Fix: {FIX}"),
    };
    let i16_at =
        |o: usize| if le { i16::from_le_bytes([b[o], b[o + 1]]) } else { i16::from_be_bytes([b[o], b[o + 1]]) };
    let f32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            f32::from_le_bytes(a)
        } else {
            f32::from_be_bytes(a)
        }
    };
    match &b[344..348] {
        b"n+1\0" => {}
        b"ni1\0" => bail!("{p}: header field magic is \"ni1\": the voxels are in a separate .img file. Fix: convert the .hdr/.img pair to one .nii file (e.g. fslchfiletype NIFTI)"),
        m => bail!("{p}: header field magic is {m:?}; a single-file NIfTI-1 has \"n+1\\0\" (this may be ANALYZE 7.5 or a corrupt file). Fix: {FIX}"),
    }
    let dim: Vec<i16> = (0..8).map(|i| i16_at(40 + 2 * i)).collect();
    let nd = dim[0];
    if !(1..=7).contains(&nd) {
        bail!("{p}: header field dim[0] (the number of dimensions) is {nd}; it must be 1 to 7. Fix: {FIX}");
    }
    let nd = nd as usize;
    if let Some(i) = (1..=nd).find(|&i| dim[i] < 1) {
        bail!("{p}: header field dim[{i}] is {}; every used dimension must be at least 1. Fix: {FIX}", dim[i]);
    }
    if let Some(i) = (4..=nd).find(|&i| dim[i] != 1) {
        bail!("{p}: header field dim[{i}] is {} (dim = {:?}): a series of volumes; gsure imports one 3-D volume per file. Fix: split the series into 3-D files (e.g. fslsplit)", dim[i], &dim[1..=nd]);
    }
    let size = |i: usize| if i <= nd { dim[i] as usize } else { 1 };
    let dims = [size(1), size(2), size(3)];
    let code = i16_at(70);
    let Some((tname, esize)) = datatype(code) else {
        bail!("{p}: header field datatype is {code}; gsure reads uint8 (2), int16 (4), int32 (8), float32 (16), float64 (64), int8 (256), uint16 (512), uint32 (768). Fix: convert the volume to one of these (e.g. fslmaths -odt float)");
    };
    let bitpix = i16_at(72);
    if bitpix as usize != esize * 8 {
        bail!("{p}: header field bitpix is {bitpix} but datatype {code} ({tname}) has {} bits; the header is inconsistent. Fix: {FIX}", esize * 8);
    }
    let vox = f32_at(108);
    if !vox.is_finite() || vox < HEADER_SIZE as f32 || vox.fract() != 0.0 || vox > super::MAX_BYTES as f32 {
        bail!("{p}: header field vox_offset is {vox}; it must be a whole number of bytes >= 348. Fix: {FIX}");
    }
    let vox = vox as usize;
    let count = dims[0] * dims[1] * dims[2]; // each < 2^15: no overflow
    let end = vox + count * esize;
    let (mut slope, mut inter) = (f32_at(112), f32_at(116));
    if !slope.is_finite() || (slope != 0.0 && !inter.is_finite()) {
        bail!("{p}: header fields scl_slope/scl_inter are {slope}/{inter}; they must be finite. Fix: {FIX}");
    }
    if slope == 0.0 {
        // The standard's convention: a zero slope means the voxel values are used as stored.
        (slope, inter) = (1.0, 0.0);
    }
    let pixdim = [f32_at(80), f32_at(84), f32_at(88)];
    Ok(Header { le, dims, pixdim, code, tname, esize, vox, end, slope, inter })
}

/// The header's fields that place and decode the voxels, checked.
struct Header {
    le: bool,
    dims: [usize; 3],
    pixdim: [f32; 3],
    code: i16,
    tname: &'static str,
    esize: usize,
    vox: usize,
    /// The byte after the last voxel: vox_offset + voxels × size.
    end: usize,
    slope: f32,
    inter: f32,
}

/// Parses NIfTI-1 bytes read from `path`.
pub fn parse(path: &Path, b: &[u8]) -> Result<Volume> {
    let p = path.display();
    let Header { le, dims, pixdim, code, tname, esize, vox, end, slope, inter } = header(path, b)?;
    if b.len() < end {
        bail!("{p}: the header (dim {dims:?}, {tname}, vox_offset {vox}) needs {end} bytes but the file holds {}; it is truncated. Fix: {FIX}", b.len());
    }
    let raw = &b[vox..end];
    let data: Vec<f32> = raw
        .chunks_exact(esize)
        .map(|c| {
            let v: f64 = match (code, le) {
                (2, _) => c[0] as f64,
                (256, _) => c[0] as i8 as f64,
                (4, true) => i16::from_le_bytes([c[0], c[1]]) as f64,
                (4, false) => i16::from_be_bytes([c[0], c[1]]) as f64,
                (512, true) => u16::from_le_bytes([c[0], c[1]]) as f64,
                (512, false) => u16::from_be_bytes([c[0], c[1]]) as f64,
                (8, true) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (8, false) => i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (768, true) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (768, false) => u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (16, true) => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (16, false) => f32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64,
                (_, true) => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                (_, false) => f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            };
            (v * slope as f64 + inter as f64) as f32
        })
        .collect();
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        let (x, y, z) = (i % dims[0], (i / dims[0]) % dims[1], i / (dims[0] * dims[1]));
        bail!("{p}: voxel ({x}, {y}, {z}) is {} (values must be finite). Fix: replace non-finite voxels (e.g. fslmaths IN -nan OUT)", data[i]);
    }
    Ok(Volume { dims, pixdim, data })
}

/// Reads a `.nii` or `.nii.gz` file: the header, then the bytes up to its last voxel and nothing after
/// (a small compressed file that inflates far beyond them costs what its header claims, never more), with
/// memory for those bytes and the volume's copies checked first.
pub fn read_file(path: &Path) -> Result<Volume> {
    let mut stream = open_maybe_gz(path)?;
    let mut bytes = read_up_to(&mut *stream, HEADER_SIZE, path)?;
    if bytes.len() < HEADER_SIZE {
        return parse(path, &bytes);
    }
    let h = header(path, &bytes)?;
    // The bytes, the volume in f32, its slices and the dataset file made from them.
    let what = format!("{}: a volume of {:?} voxels", path.display(), h.dims);
    crate::io::budget::check_fits(
        &what,
        h.end as u128 + 12 * (h.dims.iter().product::<usize>() as u128),
        "import smaller volumes",
    )?;
    bytes.extend(read_up_to(&mut *stream, h.end - HEADER_SIZE, path)?);
    parse(path, &bytes)
}

/// The value at percentile `q` (0-100) of `values` (nearest rank).
fn percentile(values: &mut [f32], q: f64) -> f32 {
    let k = (((q / 100.0) * (values.len() - 1) as f64).round() as usize).min(values.len() - 1);
    *values.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
}

/// Slice `s` across `axis`, upright for a volume in RAS-like orientation (the second in-plane axis is
/// flipped so that it points up): axis 2 gives [ny, nx], axis 1 [nz, nx], axis 0 [nz, ny].
pub fn slice(vol: &Volume, axis: usize, s: usize) -> Image {
    let [nx, ny, nz] = vol.dims;
    let at = |i: usize, j: usize, k: usize| vol.data[i + nx * (j + ny * k)];
    let (h, w) = match axis {
        2 => (ny, nx),
        1 => (nz, nx),
        _ => (nz, ny),
    };
    let mut data = Vec::with_capacity(h * w);
    for r in 0..h {
        let up = h - 1 - r;
        for c in 0..w {
            data.push(match axis {
                2 => at(c, up, s),
                1 => at(c, s, up),
                _ => at(s, c, up),
            });
        }
    }
    Image { data, c: 1, h, w }
}

/// Normalises a volume (percentile clip, then [-1, 1]) and cuts the selected, non-empty slices, each
/// padded to a square with -1. Returns the images and the slice indices kept.
pub fn slices(path: &Path, vol: &Volume, opts: &ImportOptions) -> Result<(Vec<Image>, Vec<usize>)> {
    let p = path.display();
    if opts.axis > 2 {
        bail!("--axis {}: a volume has axes 0, 1, 2 (x, y, z)", opts.axis);
    }
    let (qlo, qhi) = opts.clip_percentiles;
    if !((0.0..100.0).contains(&qlo) && qlo < qhi && qhi <= 100.0) {
        bail!("clip percentiles {qlo}/{qhi}: they must satisfy 0 <= low < high <= 100");
    }
    let mut tmp = vol.data.clone();
    let lo = percentile(&mut tmp, qlo);
    let hi = percentile(&mut tmp, qhi);
    if hi <= lo {
        bail!("{p}: intensities between percentiles {qlo} and {qhi} are constant ({lo}); there is nothing to normalise. Fix: check the volume, or widen the clip percentiles");
    }
    // In f64: hi - lo may overflow f32 for extreme (but finite) voxel values.
    let (lo64, scale) = (lo as f64, 2.0 / (hi as f64 - lo as f64));
    let n = vol.dims[opts.axis];
    let range = match opts.slices {
        Some(r) if r.end > n => {
            bail!("{p}: --slices {}..{} but the volume has {n} slices across axis {} (dims {:?}). Fix: choose a range within 0..{n}", r.start, r.end, opts.axis, vol.dims)
        }
        Some(r) => r.start..r.end,
        None => {
            let f = opts.central_fraction.clamp(0.0, 1.0);
            let k = ((n as f64 * f).round() as usize).clamp(1, n);
            (n - k) / 2..(n - k) / 2 + k
        }
    };
    // Foreground: above a tenth of the clipped intensity range.
    let fg = -1.0 + 0.2;
    let (mut images, mut kept) = (Vec::new(), Vec::new());
    for s in range {
        let mut img = slice(vol, opts.axis, s);
        for v in img.data.iter_mut() {
            *v = ((v.clamp(lo, hi) as f64 - lo64) * scale - 1.0).clamp(-1.0, 1.0) as f32;
        }
        let frac = img.data.iter().filter(|&&v| v > fg).count() as f64 / img.data.len() as f64;
        if frac < opts.min_foreground {
            continue;
        }
        let side = img.h.max(img.w);
        images.push(center_pad(&img, side, side, -1.0));
        kept.push(s);
    }
    Ok((images, kept))
}

/// The `.nii` / `.nii.gz` files of a folder (sorted), or the one file given.
fn volume_files(input: &Path) -> Result<Vec<PathBuf>> {
    if !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| anyhow::anyhow!("{}: cannot list the folder ({e})", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
            n.ends_with(".nii") || n.ends_with(".nii.gz")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no .nii or .nii.gz files in this folder. Fix: pass a NIfTI file or a folder of them to --input",
            input.display()
        );
    }
    Ok(files)
}

/// Slices of every volume in `input` (a file or a folder of files).
pub fn read(input: &Path, opts: &ImportOptions) -> Result<Imported> {
    let mut images = Vec::new();
    let mut volumes = Vec::new();
    for f in volume_files(input)? {
        let vol = read_file(&f)?;
        let (imgs, kept) = slices(&f, &vol, opts)?;
        if opts.limit.is_some_and(|l| images.len() >= l) {
            break;
        }
        volumes.push(json!({"file": f.display().to_string(), "dims": vol.dims, "pixdim": vol.pixdim, "slices": kept}));
        images.extend(imgs);
    }
    if let Some(l) = opts.limit {
        images.truncate(l);
    }
    let mut extra = Map::new();
    extra.insert("volumes".into(), json!(volumes));
    extra.insert("axis".into(), json!(opts.axis));
    extra.insert("clip_percentiles".into(), json!([opts.clip_percentiles.0, opts.clip_percentiles.1]));
    extra.insert("min_foreground".into(), json!(opts.min_foreground));
    let name = input.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    Ok(Imported { images, labels: None, source: format!("nifti:{name}"), extra })
}

/// Encodes a single-file NIfTI-1 volume (for tests): `datatype` code, little- or big-endian, the voxels
/// given as f64 and stored in that type, vox_offset 352.
pub fn encode(
    dims: [usize; 3],
    datatype_code: i16,
    little_endian: bool,
    values: &[f64],
    slope: f32,
    inter: f32,
) -> Vec<u8> {
    let esize = datatype(datatype_code).map_or(1, |d| d.1);
    let mut h = vec![0u8; 352];
    let put16 = |h: &mut Vec<u8>, o: usize, v: i16| {
        h[o..o + 2].copy_from_slice(&if little_endian { v.to_le_bytes() } else { v.to_be_bytes() })
    };
    let put32 = |h: &mut Vec<u8>, o: usize, v: [u8; 4], be: [u8; 4]| {
        h[o..o + 4].copy_from_slice(if little_endian { &v } else { &be })
    };
    put32(&mut h, 0, 348i32.to_le_bytes(), 348i32.to_be_bytes());
    put16(&mut h, 40, 3);
    for (i, &d) in dims.iter().enumerate() {
        put16(&mut h, 42 + 2 * i, d as i16);
    }
    for i in 3..7 {
        put16(&mut h, 42 + 2 * i, 1);
    }
    put16(&mut h, 70, datatype_code);
    put16(&mut h, 72, (esize * 8) as i16);
    for i in 0..4 {
        put32(&mut h, 76 + 4 * i, 1f32.to_le_bytes(), 1f32.to_be_bytes());
    }
    put32(&mut h, 108, 352f32.to_le_bytes(), 352f32.to_be_bytes());
    put32(&mut h, 112, slope.to_le_bytes(), slope.to_be_bytes());
    put32(&mut h, 116, inter.to_le_bytes(), inter.to_be_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    for &v in values {
        let le = little_endian;
        let bytes: Vec<u8> = match datatype_code {
            2 => vec![v as u8],
            256 => vec![v as i8 as u8],
            4 => {
                if le {
                    (v as i16).to_le_bytes().to_vec()
                } else {
                    (v as i16).to_be_bytes().to_vec()
                }
            }
            512 => {
                if le {
                    (v as u16).to_le_bytes().to_vec()
                } else {
                    (v as u16).to_be_bytes().to_vec()
                }
            }
            8 => {
                if le {
                    (v as i32).to_le_bytes().to_vec()
                } else {
                    (v as i32).to_be_bytes().to_vec()
                }
            }
            768 => {
                if le {
                    (v as u32).to_le_bytes().to_vec()
                } else {
                    (v as u32).to_be_bytes().to_vec()
                }
            }
            16 => {
                if le {
                    (v as f32).to_le_bytes().to_vec()
                } else {
                    (v as f32).to_be_bytes().to_vec()
                }
            }
            _ => {
                if le {
                    v.to_le_bytes().to_vec()
                } else {
                    v.to_be_bytes().to_vec()
                }
            }
        };
        h.extend_from_slice(&bytes);
    }
    h
}
