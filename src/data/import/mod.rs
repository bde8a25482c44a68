//! Importers: IDX (MNIST, Fashion-MNIST), NIfTI-1 volumes (brain MRI, sliced to 2-D) and folders of PNG
//! images, converted to clean dataset files (values in [-1, 1]) by `gsure data import`.
//!
//! Every reader refuses a broken file (truncated, wrong magic number, inconsistent header, sizes that do
//! not add up) with an error naming the file, the field and the fix; none panics, whatever the bytes.
pub mod idx;
pub mod nifti;
pub mod png_folder;

use super::dataset::{sibling_path, Array4, CleanDataset, CleanMeta};
use super::transforms::{fit, greyscale, split_indices, to_rgb, Image, Resize};
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// The largest file (after decompression) an importer reads: bounds the memory a hostile header or a gzip
/// bomb can make us allocate.
pub const MAX_BYTES: u64 = 4 << 30;

/// Input formats of `gsure data import`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Idx,
    Nifti,
    Png,
}

/// How the imported set is split: one named split (`train`, `test`, `all`, ...) or a seeded random split
/// `test=F` into a train file (--out) and a test file (--out with `-test` before the extension).
#[derive(Clone, Debug, PartialEq)]
pub enum Split {
    Named(String),
    Test(f64),
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Split> {
        match s.strip_prefix("test=") {
            Some(f) => {
                let f: f64 = f.parse().map_err(|_| anyhow::anyhow!("--split {s}: expected test=F with F in [0, 1)"))?;
                if !(0.0..1.0).contains(&f) {
                    bail!("--split {s}: the test fraction must be in [0, 1)");
                }
                Ok(Split::Test(f))
            }
            None if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
                Ok(Split::Named(s.to_string()))
            }
            None => bail!("--split {s}: expected a split name (train, test, all) or test=F"),
        }
    }
}

/// A half-open range of slice indices `a..b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceRange {
    pub start: usize,
    pub end: usize,
}

impl std::str::FromStr for SliceRange {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<SliceRange> {
        let parsed = s.split_once("..").and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        match parsed {
            Some((start, end)) if start < end => Ok(SliceRange { start, end }),
            _ => bail!("--slices {s}: expected a..b with a < b (slice indices, b excluded)"),
        }
    }
}

/// Everything `gsure data import` takes.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub format: Format,
    /// A file (IDX images, a NIfTI volume) or a folder (NIfTI volumes, PNG images).
    pub input: PathBuf,
    /// IDX labels file.
    pub labels: Option<PathBuf>,
    /// Output side S (images become S×S); None keeps the input size (which must then be uniform).
    pub size: Option<usize>,
    pub resize: Resize,
    /// Convert RGB to one channel.
    pub grey: bool,
    pub split: Split,
    /// Seed of the train/test split.
    pub seed: u64,
    /// Keep only the first N images (before the split).
    pub limit: Option<usize>,
    /// NIfTI: the axis (0, 1, 2 = x, y, z of the volume) across which 2-D slices are cut.
    pub axis: usize,
    /// NIfTI: slice indices to keep (default: the central fraction).
    pub slices: Option<SliceRange>,
    /// NIfTI: the central fraction of slices kept when no range is given.
    pub central_fraction: f64,
    /// NIfTI: slices with fewer than this fraction of foreground pixels are skipped.
    pub min_foreground: f64,
    /// NIfTI: intensity percentiles (0-100) clipped to -1 and 1.
    pub clip_percentiles: (f64, f64),
    /// Replace output files that exist (never the input itself).
    pub force: bool,
}

impl ImportOptions {
    pub fn new(format: Format, input: impl Into<PathBuf>) -> Self {
        ImportOptions {
            format,
            input: input.into(),
            labels: None,
            size: None,
            resize: Resize::Auto,
            grey: false,
            split: Split::Named("all".into()),
            seed: 0,
            limit: None,
            axis: 2,
            slices: None,
            central_fraction: 0.8,
            min_foreground: 0.1,
            clip_percentiles: (0.5, 99.5),
            force: false,
        }
    }
}

/// What a reader produces: images in [-1, 1] (sizes may differ), optional class ids, and a description.
pub struct Imported {
    pub images: Vec<Image>,
    pub labels: Option<Vec<f32>>,
    pub source: String,
    /// Reader-specific metadata (volume shapes, slice indices, class names, ...).
    pub extra: Map<String, Value>,
}

/// One file written by [`import`].
#[derive(Clone, Debug)]
pub struct Written {
    pub path: PathBuf,
    pub split: String,
    pub dims: [usize; 4],
    pub labels: bool,
}

/// Reads the input of `opts` (no transforms).
pub fn read(opts: &ImportOptions) -> Result<Imported> {
    if opts.labels.is_some() && opts.format != Format::Idx {
        bail!("--labels is for IDX input (PNG folders take their classes from sub-folders); remove it");
    }
    match opts.format {
        Format::Idx => idx::read(&opts.input, opts.labels.as_deref(), opts.limit),
        Format::Nifti => nifti::read(&opts.input, opts),
        Format::Png => png_folder::read(&opts.input, opts.limit),
    }
}

/// Applies `--grey` and `--size`, promotes greyscale images to RGB when the set mixes both, and checks that
/// every image ends up the same size. Returns the images as one [N, C, H, W] array.
pub fn transform(mut images: Vec<Image>, opts: &ImportOptions, source: &str) -> Result<(Vec<f32>, [usize; 4])> {
    if images.is_empty() {
        bail!("{source}: no images to import. Fix: check --input (and --slices / --min-foreground for NIfTI)");
    }
    if opts.size == Some(0) {
        bail!("--size 0: the output side must be at least 1");
    }
    let rgb = !opts.grey && images.iter().any(|i| i.c == 3);
    if let Some(side) = opts.size {
        // The resized images, the dataset array and the serialised file are alive at once.
        let c = if opts.grey {
            1
        } else if rgb {
            3
        } else {
            images[0].c
        };
        let bytes = crate::io::budget::f32_bytes(&[images.len(), c, side, side]).saturating_mul(3);
        let what = format!("{source}: {} images at --size {side}", images.len());
        crate::io::budget::check_fits(&what, bytes, "lower --size or --limit")?;
    }
    for img in images.iter_mut() {
        if opts.grey {
            *img = greyscale(img);
        } else if rgb {
            *img = to_rgb(img);
        }
        if let Some(s) = opts.size {
            *img = fit(img, s, opts.resize, -1.0);
        }
    }
    let (c, h, w) = (images[0].c, images[0].h, images[0].w);
    if let Some((i, b)) = images.iter().enumerate().find(|(_, b)| (b.c, b.h, b.w) != (c, h, w)) {
        bail!(
            "{source}: image {i} is {}×{} but image 0 is {h}×{w}; a dataset needs one size. Fix: pass --size S",
            b.h,
            b.w
        );
    }
    let n = images.len();
    let mut data = Vec::with_capacity(n * c * h * w);
    for img in &images {
        data.extend(img.data.iter().map(|v| v.clamp(-1.0, 1.0)));
    }
    Ok((data, [n, c, h, w]))
}

/// Reads, transforms, splits and writes: the whole of `gsure data import`. Returns what was written.
pub fn import(opts: &ImportOptions, out: &Path) -> Result<Vec<Written>> {
    let outputs = match &opts.split {
        Split::Named(_) => vec![out.to_path_buf()],
        Split::Test(_) => vec![out.to_path_buf(), sibling_path(out, "test")],
    };
    let mut inputs = vec![opts.input.as_path()];
    inputs.extend(opts.labels.as_deref());
    crate::io::outputs::check_new(&outputs, &inputs, opts.force, "--out")?;
    let imported = read(opts)?;
    let (data, dims) = transform(imported.images, opts, &imported.source)?;
    let m = dims[1] * dims[2] * dims[3];
    let mut extra = imported.extra;
    extra.insert("format".into(), json!(format!("{:?}", opts.format).to_lowercase()));
    extra.insert("input".into(), json!(opts.input.display().to_string()));
    extra.insert("size".into(), json!(opts.size));
    extra.insert("resize".into(), json!(opts.resize));
    extra.insert("grey".into(), json!(opts.grey));
    extra.insert("gsure_version".into(), json!(env!("CARGO_PKG_VERSION")));
    let parts: Vec<(String, PathBuf, Vec<usize>)> = match &opts.split {
        Split::Named(name) => vec![(name.clone(), out.to_path_buf(), (0..dims[0]).collect())],
        Split::Test(f) => {
            let (train, test) = split_indices(dims[0], *f, opts.seed)?;
            if train.is_empty() || test.is_empty() {
                bail!("--split test={f} of {} images leaves an empty part; choose another fraction", dims[0]);
            }
            extra.insert("split_seed".into(), json!(opts.seed));
            extra.insert("split_test_fraction".into(), json!(f));
            vec![("train".into(), out.to_path_buf(), train), ("test".into(), sibling_path(out, "test"), test)]
        }
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the output folder {}", dir.display()))?;
    }
    let mut written = Vec::new();
    for (split, path, idx) in parts {
        let mut part = Vec::with_capacity(idx.len() * m);
        for &i in &idx {
            part.extend_from_slice(&data[i * m..(i + 1) * m]);
        }
        let labels: Option<Vec<f32>> = imported.labels.as_ref().map(|l| idx.iter().map(|&i| l[i]).collect());
        let pdims = [idx.len(), dims[1], dims[2], dims[3]];
        let mut meta = CleanMeta::new(imported.source.clone(), split.clone(), idx.len());
        meta.extra = extra.clone();
        CleanDataset::write(&path, Array4 { data: &part, dims: pdims }, labels.as_deref(), &meta)?;
        written.push(Written { path, split, dims: pdims, labels: labels.is_some() });
    }
    Ok(written)
}

/// Reads a whole file, decompressing it when it is gzip (recognised by its magic bytes, whatever its name),
/// refusing more than [`MAX_BYTES`].
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..]).take(MAX_BYTES + 1).read_to_end(&mut out).map_err(|e| {
        anyhow::anyhow!(
            "{}: the gzip stream is broken ({e}); the file is truncated or corrupt. Fix: download or re-create it",
            path.display()
        )
    })?;
    if out.len() as u64 > MAX_BYTES {
        bail!("{}: decompresses to more than {} GiB; gsure refuses files this large", path.display(), MAX_BYTES >> 30);
    }
    Ok(out)
}

/// The file, decompressed on the fly when it starts with gzip's magic bytes (whatever its name).
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buffered = std::io::BufReader::new(file);
    let start = buffered.fill_buf().with_context(|| format!("reading {}", path.display()))?;
    if start.len() >= 2 && start[0] == 0x1f && start[1] == 0x8b {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Up to `len` bytes (fewer only at the end of the stream); a broken gzip stream is named as such.
pub(crate) fn read_up_to(reader: &mut dyn Read, len: usize, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut out).map_err(|e| {
        anyhow::anyhow!(
            "{}: the gzip stream is broken ({e}); the file is truncated or corrupt. Fix: download or re-create it",
            path.display()
        )
    })?;
    Ok(out)
}
