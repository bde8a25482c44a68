//! Dataset files: safetensors, memory-mapped, validated on open.
//!
//! A *clean* dataset (what `gsure data import` writes) holds
//! - `clean` [N, C, H, W]: images, finite, in [-1, 1];
//! - `labels` [N] (optional): class ids as f32 (non-negative integers);
//! - metadata `{"kind": "clean", "source": str, "split": str, "count": N, ...}`.
//!
//! A *corrupted* dataset (what `gsure data make` writes) holds
//! - `y` [N, C', H, W]: observations in spectral coordinates (docs/METHODS.md §2), finite;
//! - `mask` [N, C'', H, W]: the observed set, 0 or 1, with C'' = 1 (shared by all channels) or C'' = C';
//! - `clean` [N, C, H, W] (optional, evaluation only): finite, in [-1, 1], same N, H, W as `y`;
//! - metadata `{"kind": "corrupted", "operator": str, "sigma0": number >= 0, "p": number in [0, 1] or null,
//!   "R": number >= 1 or null, "seed": integer >= 0, "source": str, ...}`.
//!
//! Every tensor is read from the memory map: `open` streams once through each tensor to validate it (shape,
//! N, finite values, declared range) without copying it, and `gather` copies only the rows asked for. Every
//! refusal names the file, the field and the fix. Tensors may be stored as F32 (what gsure writes), or F64,
//! BF16, F16, U8 (what a Python writer may produce); they are converted to f32 when read.
use super::ImageSet;
use crate::io::safetensors::{self as st, Entry};
use anyhow::{bail, Result};
use safetensors::tensor::Dtype;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Tolerance on the [-1, 1] range of images (rounding in converters).
pub const RANGE_TOL: f32 = 1e-3;

/// A borrowed 4-D array [N, C, H, W] of f32 in host memory (arguments of the writers).
#[derive(Clone, Copy, Debug)]
pub struct Array4<'a> {
    pub data: &'a [f32],
    pub dims: [usize; 4],
}

/// Metadata of a clean dataset. `extra` carries any further fields (the importer's settings).
#[derive(Clone, Debug, PartialEq)]
pub struct CleanMeta {
    pub source: String,
    pub split: String,
    pub count: usize,
    pub extra: Map<String, Value>,
}

impl CleanMeta {
    pub fn new(source: impl Into<String>, split: impl Into<String>, count: usize) -> Self {
        CleanMeta { source: source.into(), split: split.into(), count, extra: Map::new() }
    }
    pub fn to_json(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("kind".into(), json!("clean"));
        m.insert("source".into(), json!(self.source));
        m.insert("split".into(), json!(self.split));
        m.insert("count".into(), json!(self.count));
        Value::Object(m)
    }
    fn from_json(path: &Path, v: &Value) -> Result<Self> {
        let m = meta_object(path, v, "clean")?;
        let source = meta_str(path, m, "source")?;
        let split = meta_str(path, m, "split")?;
        let count = meta_u64(path, m, "count")? as usize;
        let extra = strip(m, &["kind", "source", "split", "count"]);
        Ok(CleanMeta { source, split, count, extra })
    }
}

/// Metadata of a corrupted dataset (docs/METHODS.md §2): the operator's name and parameters, the noise level σ0,
/// the seed of the random operators and noise, and where the clean images came from.
#[derive(Clone, Debug, PartialEq)]
pub struct CorruptedMeta {
    pub operator: String,
    pub sigma0: f64,
    /// Drop probability of the inpainting operators (None for the others).
    pub p: Option<f64>,
    /// MRI acceleration R (None for the others); stored as "R".
    pub r: Option<f64>,
    pub seed: u64,
    pub source: String,
    pub extra: Map<String, Value>,
}

impl CorruptedMeta {
    pub fn to_json(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("kind".into(), json!("corrupted"));
        m.insert("operator".into(), json!(self.operator));
        m.insert("sigma0".into(), json!(self.sigma0));
        m.insert("p".into(), json!(self.p));
        m.insert("R".into(), json!(self.r));
        m.insert("seed".into(), json!(self.seed));
        m.insert("source".into(), json!(self.source));
        Value::Object(m)
    }
    fn from_json(path: &Path, v: &Value) -> Result<Self> {
        let m = meta_object(path, v, "corrupted")?;
        let operator = meta_str(path, m, "operator")?;
        let sigma0 = meta_f64(path, m, "sigma0")?;
        if sigma0 < 0.0 {
            bail!("{}: metadata field \"sigma0\" is {sigma0}; it must be >= 0 (the noise level σ0). Fix: re-create the file with `gsure data make`", path.display());
        }
        let p = meta_opt_f64(path, m, "p")?;
        if let Some(p) = p {
            if !(0.0..=1.0).contains(&p) {
                bail!("{}: metadata field \"p\" is {p}; it must be a probability in [0, 1] (or null). Fix: re-create the file with `gsure data make`", path.display());
            }
        }
        let r = meta_opt_f64(path, m, "R")?;
        if let Some(r) = r {
            if r < 1.0 {
                bail!("{}: metadata field \"R\" is {r}; an acceleration must be >= 1 (or null). Fix: re-create the file with `gsure data make`", path.display());
            }
        }
        let seed = meta_u64(path, m, "seed")?;
        let source = meta_str(path, m, "source")?;
        let extra = strip(m, &["kind", "operator", "sigma0", "p", "R", "seed", "source"]);
        Ok(CorruptedMeta { operator, sigma0, p, r, seed, source, extra })
    }
}

/// The "kind" field of a dataset file's metadata ("clean", "corrupted"), or None when the file has no gsure
/// metadata. Errors only when the file cannot be read as safetensors.
pub fn kind_of(path: &Path) -> Result<Option<String>> {
    let f = st::File::open(path)?;
    Ok(f.meta().get("kind").and_then(|k| k.as_str()).map(|s| s.to_string()))
}

/// A clean dataset file, memory-mapped and validated.
pub struct CleanDataset {
    file: st::File,
    dims: [usize; 4],
    has_labels: bool,
    pub meta: CleanMeta,
}

impl CleanDataset {
    /// Opens and validates a clean dataset (see the module documentation for what is checked).
    pub fn open(path: &Path) -> Result<CleanDataset> {
        let file = st::File::open(path)?;
        let tensors = views_of(&file)?;
        let (dims, has_labels, meta) = validate_clean(path, file.meta(), &tensors)?;
        drop(tensors);
        Ok(CleanDataset { file, dims, has_labels, meta })
    }

    /// Writes a clean dataset atomically after checking it as `open` would (so that what is written can be
    /// read back); `meta.count` must equal N.
    pub fn write(path: &Path, clean: Array4, labels: Option<&[f32]>, meta: &CleanMeta) -> Result<()> {
        let mut tensors = HashMap::new();
        tensors.insert("clean", view_f32(clean.data, &clean.dims));
        if let Some(l) = labels {
            tensors.insert("labels", view_f32(l, &[l.len()]));
        }
        let meta_json = meta.to_json();
        validate_clean(path, &meta_json, &tensors)?;
        let mut entries = vec![Entry { name: "clean".into(), shape: clean.dims.to_vec(), data: clean.data }];
        if let Some(l) = labels {
            entries.push(Entry { name: "labels".into(), shape: vec![l.len()], data: l });
        }
        st::write(path, &entries, &meta_json)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
    pub fn len(&self) -> usize {
        self.dims[0]
    }
    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }
    /// [N, C, H, W] of `clean`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }
    pub fn has_labels(&self) -> bool {
        self.has_labels
    }
    /// All images, copied into host memory.
    pub fn images(&self) -> ImageSet {
        let all: Vec<usize> = (0..self.len()).collect();
        ImageSet { images: self.gather(&all), dims: self.dims }
    }
    /// The images at `indices` as one batch [B, C, H, W]. Panics on an index >= len (a programming error).
    pub fn gather(&self, indices: &[usize]) -> Vec<f32> {
        gather_rows(&self.file, "clean", indices)
    }
    /// The labels at `indices` (None when the file has none).
    pub fn gather_labels(&self, indices: &[usize]) -> Option<Vec<f32>> {
        self.has_labels.then(|| gather_rows(&self.file, "labels", indices))
    }
    /// All labels (None when the file has none).
    pub fn labels(&self) -> Option<Vec<f32>> {
        let all: Vec<usize> = (0..self.len()).collect();
        self.gather_labels(&all)
    }
}

/// A corrupted dataset file, memory-mapped and validated.
pub struct CorruptedDataset {
    file: st::File,
    y_dims: [usize; 4],
    mask_dims: [usize; 4],
    clean_dims: Option<[usize; 4]>,
    pub meta: CorruptedMeta,
}

impl CorruptedDataset {
    /// Opens and validates a corrupted dataset (see the module documentation for what is checked).
    pub fn open(path: &Path) -> Result<CorruptedDataset> {
        let file = st::File::open(path)?;
        let tensors = views_of(&file)?;
        let (y_dims, mask_dims, clean_dims, meta) = validate_corrupted(path, file.meta(), &tensors)?;
        drop(tensors);
        Ok(CorruptedDataset { file, y_dims, mask_dims, clean_dims, meta })
    }

    /// Writes a corrupted dataset atomically after checking it as `open` would.
    pub fn write(path: &Path, y: Array4, mask: Array4, clean: Option<Array4>, meta: &CorruptedMeta) -> Result<()> {
        let mut tensors = HashMap::new();
        tensors.insert("y", view_f32(y.data, &y.dims));
        tensors.insert("mask", view_f32(mask.data, &mask.dims));
        if let Some(c) = &clean {
            tensors.insert("clean", view_f32(c.data, &c.dims));
        }
        let meta_json = meta.to_json();
        validate_corrupted(path, &meta_json, &tensors)?;
        let mut entries = vec![
            Entry { name: "y".into(), shape: y.dims.to_vec(), data: y.data },
            Entry { name: "mask".into(), shape: mask.dims.to_vec(), data: mask.data },
        ];
        if let Some(c) = clean {
            entries.push(Entry { name: "clean".into(), shape: c.dims.to_vec(), data: c.data });
        }
        st::write(path, &entries, &meta_json)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
    pub fn len(&self) -> usize {
        self.y_dims[0]
    }
    pub fn is_empty(&self) -> bool {
        self.y_dims[0] == 0
    }
    pub fn y_dims(&self) -> [usize; 4] {
        self.y_dims
    }
    pub fn mask_dims(&self) -> [usize; 4] {
        self.mask_dims
    }
    pub fn clean_dims(&self) -> Option<[usize; 4]> {
        self.clean_dims
    }
    pub fn has_clean(&self) -> bool {
        self.clean_dims.is_some()
    }
    pub fn gather_y(&self, indices: &[usize]) -> Vec<f32> {
        gather_rows(&self.file, "y", indices)
    }
    pub fn gather_mask(&self, indices: &[usize]) -> Vec<f32> {
        gather_rows(&self.file, "mask", indices)
    }
    /// Clean images at `indices` (evaluation only; None when the file has none).
    pub fn gather_clean(&self, indices: &[usize]) -> Option<Vec<f32>> {
        self.clean_dims.map(|_| gather_rows(&self.file, "clean", indices))
    }
    /// All clean images (evaluation, or the supervised oracle), or an error naming the file and the fix.
    pub fn clean_images(&self) -> Result<ImageSet> {
        let Some(dims) = self.clean_dims else {
            bail!(
                "{}: this corrupted dataset has no tensor \"clean\" (it is optional, for evaluation only). Fix: \
                 re-create it with `gsure data make` from a clean dataset, or train with a corrupted-data objective",
                self.path().display()
            );
        };
        let all: Vec<usize> = (0..self.len()).collect();
        Ok(ImageSet { images: gather_rows(&self.file, "clean", &all), dims })
    }
}

// ---- validation -----------------------------------------------------------------------------------------

struct View<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

fn view_f32<'a>(data: &'a [f32], shape: &[usize]) -> View<'a> {
    View { dtype: Dtype::F32, shape: shape.to_vec(), bytes: bytemuck::cast_slice(data) }
}

fn views_of(file: &st::File) -> Result<HashMap<&'static str, View<'_>>> {
    let mut out = HashMap::new();
    for name in ["clean", "labels", "y", "mask"] {
        if file.contains(name) {
            let (dtype, shape, bytes) = file.raw(name)?;
            out.insert(name, View { dtype, shape: shape.to_vec(), bytes });
        }
    }
    Ok(out)
}

/// The values a tensor must hold.
#[derive(Clone, Copy)]
enum Range {
    Finite,
    Signed,
    Binary,
    ClassId,
}

impl Range {
    fn ok(self, v: f32) -> bool {
        match self {
            Range::Finite => v.is_finite(),
            Range::Signed => v.is_finite() && v.abs() <= 1.0 + RANGE_TOL,
            Range::Binary => v == 0.0 || v == 1.0,
            Range::ClassId => v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 16_777_216.0,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Range::Finite => "finite",
            Range::Signed => "finite and in [-1, 1]",
            Range::Binary => "0 or 1",
            Range::ClassId => "non-negative integers (class ids)",
        }
    }
}

fn elem_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        Dtype::BF16 | Dtype::F16 => Some(2),
        Dtype::U8 => Some(1),
        _ => None,
    }
}

/// Converts stored little-endian values to f32, appending to `out`. The dtype must be one `elem_size` knows.
fn decode(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::F64 => out.extend(
            bytes.chunks_exact(8).map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32),
        ),
        Dtype::BF16 => out.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::F16 => out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::U8 => out.extend(bytes.iter().map(|&b| b as f32)),
        _ => unreachable!("dtype checked on open"),
    }
}

/// Checks one tensor: supported dtype, rank, and every value in `range`. Returns its shape.
fn check_tensor(path: &Path, name: &str, v: &View, rank: usize, range: Range, fix: &str) -> Result<Vec<usize>> {
    let p = path.display();
    let Some(size) = elem_size(v.dtype) else {
        bail!("{p}: tensor \"{name}\" has dtype {:?}; gsure reads F32, F64, BF16, F16 or U8. Fix: {fix}", v.dtype);
    };
    if v.shape.len() != rank {
        let want = if rank == 4 { "[N, C, H, W]" } else { "[N]" };
        bail!("{p}: tensor \"{name}\" has shape {:?}; expected {want}. Fix: {fix}", v.shape);
    }
    let numel: usize = v.shape.iter().product();
    if v.bytes.len() != numel * size {
        bail!("{p}: tensor \"{name}\" has {} values for shape {:?}. Fix: {fix}", v.bytes.len() / size, v.shape);
    }
    if v.shape.contains(&0) {
        bail!("{p}: tensor \"{name}\" has shape {:?}, which holds no values. Fix: {fix}", v.shape);
    }
    let row: usize = v.shape[1..].iter().product();
    // Stream in chunks so that validating a large file does not copy it.
    let chunk = 1 << 16;
    let mut buf = Vec::with_capacity(chunk);
    for (c, bytes) in v.bytes.chunks(chunk * size).enumerate() {
        buf.clear();
        decode(v.dtype, bytes, &mut buf);
        if let Some(i) = buf.iter().position(|&x| !range.ok(x)) {
            let flat = c * chunk + i;
            bail!(
                "{p}: tensor \"{name}\" holds {} at item {} (flat index {flat}); values must be {}. Fix: {fix}",
                buf[i],
                flat / row.max(1),
                range.describe()
            );
        }
    }
    Ok(v.shape.clone())
}

fn dims4(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

const CLEAN_FIX: &str =
    "re-create the file with `gsure data import` (which scales images to [-1, 1]) or `CleanDataset::write`";
const CORRUPT_FIX: &str = "re-create the file with `gsure data make` or `CorruptedDataset::write`";

fn validate_clean(path: &Path, meta: &Value, t: &HashMap<&str, View>) -> Result<([usize; 4], bool, CleanMeta)> {
    let p = path.display();
    let meta = CleanMeta::from_json(path, meta)?;
    let Some(clean) = t.get("clean") else {
        bail!("{p}: no tensor \"clean\" [N, C, H, W]; a clean dataset needs it. Fix: {CLEAN_FIX}");
    };
    let dims = dims4(&check_tensor(path, "clean", clean, 4, Range::Signed, CLEAN_FIX)?);
    let has_labels = match t.get("labels") {
        Some(l) => {
            let s = check_tensor(path, "labels", l, 1, Range::ClassId, CLEAN_FIX)?;
            if s[0] != dims[0] {
                bail!("{p}: tensor \"labels\" has {} entries but \"clean\" holds {} images; they must match. Fix: {CLEAN_FIX}", s[0], dims[0]);
            }
            true
        }
        None => false,
    };
    if meta.count != dims[0] {
        bail!(
            "{p}: metadata field \"count\" is {} but \"clean\" holds {} images; they must match. Fix: {CLEAN_FIX}",
            meta.count,
            dims[0]
        );
    }
    Ok((dims, has_labels, meta))
}

type CorruptedShapes = ([usize; 4], [usize; 4], Option<[usize; 4]>, CorruptedMeta);

fn validate_corrupted(path: &Path, meta: &Value, t: &HashMap<&str, View>) -> Result<CorruptedShapes> {
    let p = path.display();
    let meta = CorruptedMeta::from_json(path, meta)?;
    let (Some(y), Some(mask)) = (t.get("y"), t.get("mask")) else {
        let missing = if t.contains_key("y") { "mask" } else { "y" };
        bail!("{p}: no tensor \"{missing}\"; a corrupted dataset needs \"y\" [N, C', H, W] and \"mask\" [N, C'', H, W]. Fix: {CORRUPT_FIX}");
    };
    let yd = dims4(&check_tensor(path, "y", y, 4, Range::Finite, CORRUPT_FIX)?);
    let md = dims4(&check_tensor(path, "mask", mask, 4, Range::Binary, CORRUPT_FIX)?);
    if md[0] != yd[0] || md[2] != yd[2] || md[3] != yd[3] || (md[1] != 1 && md[1] != yd[1]) {
        bail!("{p}: tensor \"mask\" has shape {md:?} and \"y\" has {yd:?}; the mask must be [N, 1, H, W] or [N, C', H, W] with y's N, C', H, W. Fix: {CORRUPT_FIX}");
    }
    let cd = match t.get("clean") {
        Some(c) => {
            let cd = dims4(&check_tensor(path, "clean", c, 4, Range::Signed, CORRUPT_FIX)?);
            if cd[0] != yd[0] || cd[2] != yd[2] || cd[3] != yd[3] {
                bail!("{p}: tensor \"clean\" has shape {cd:?} and \"y\" has {yd:?}; they must share N, H and W. Fix: {CORRUPT_FIX}");
            }
            Some(cd)
        }
        None => None,
    };
    if let Some(c) = meta.extra.get("count") {
        if c.as_u64() != Some(yd[0] as u64) {
            bail!("{p}: metadata field \"count\" is {c} but \"y\" holds {} observations; they must match. Fix: {CORRUPT_FIX}", yd[0]);
        }
    }
    Ok((yd, md, cd, meta))
}

fn meta_object<'a>(path: &Path, v: &'a Value, kind: &str) -> Result<&'a Map<String, Value>> {
    let p = path.display();
    let fix = if kind == "clean" { CLEAN_FIX } else { CORRUPT_FIX };
    let Some(m) = v.as_object() else {
        bail!(
            "{p}: metadata field \"kind\" is missing (the file has no gsure metadata: the \"{}\" entry of the \
             safetensors header must be a JSON object with \"kind\": \"{kind}\"). Fix: {fix}; from Python, pass \
             metadata={{\"{}\": json.dumps({{\"kind\": \"{kind}\", ...}})}} to save_file",
            st::META_KEY,
            st::META_KEY
        );
    };
    match m.get("kind") {
        Some(Value::String(k)) if k == kind => Ok(m),
        Some(Value::String(k)) => {
            bail!("{p}: metadata field \"kind\" is \"{k}\" but a {kind} dataset was expected. Fix: pass a {kind} dataset file here (or {fix})")
        }
        Some(other) => bail!("{p}: metadata field \"kind\" is {other}; it must be the string \"{kind}\". Fix: {fix}"),
        None => bail!("{p}: metadata field \"kind\" is missing; it must be the string \"{kind}\". Fix: {fix}"),
    }
}

fn field_fix(m: &Map<String, Value>) -> &'static str {
    if m.get("kind").and_then(|k| k.as_str()) == Some("clean") {
        CLEAN_FIX
    } else {
        CORRUPT_FIX
    }
}

fn meta_str(path: &Path, m: &Map<String, Value>, field: &str) -> Result<String> {
    match m.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!(
            "{}: metadata field \"{field}\" is {other}; it must be a string. Fix: {}",
            path.display(),
            field_fix(m)
        ),
        None => bail!("{}: metadata field \"{field}\" (a string) is missing. Fix: {}", path.display(), field_fix(m)),
    }
}

fn meta_u64(path: &Path, m: &Map<String, Value>, field: &str) -> Result<u64> {
    match m.get(field) {
        Some(v) if v.as_u64().is_some() => Ok(v.as_u64().unwrap_or_default()),
        Some(other) => bail!(
            "{}: metadata field \"{field}\" is {other}; it must be a non-negative integer. Fix: {}",
            path.display(),
            field_fix(m)
        ),
        None => {
            bail!(
                "{}: metadata field \"{field}\" (a non-negative integer) is missing. Fix: {}",
                path.display(),
                field_fix(m)
            )
        }
    }
}

fn meta_f64(path: &Path, m: &Map<String, Value>, field: &str) -> Result<f64> {
    match meta_opt_f64(path, m, field)? {
        Some(x) => Ok(x),
        None => bail!("{}: metadata field \"{field}\" (a number) is missing. Fix: {}", path.display(), field_fix(m)),
    }
}

/// A number, or None when the field is absent or null.
fn meta_opt_f64(path: &Path, m: &Map<String, Value>, field: &str) -> Result<Option<f64>> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => bail!(
                "{}: metadata field \"{field}\" is {v}; it must be a number. Fix: {}",
                path.display(),
                field_fix(m)
            ),
        },
    }
}

fn strip(m: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    m.iter().filter(|(k, _)| !known.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Copies rows `indices` of tensor `name` (validated on open) out of the memory map as f32.
fn gather_rows(file: &st::File, name: &str, indices: &[usize]) -> Vec<f32> {
    let (dtype, shape, bytes) = file.raw(name).expect("tensor validated on open");
    let row: usize = shape[1..].iter().product();
    let rb = row * elem_size(dtype).expect("dtype validated on open");
    let mut out = Vec::with_capacity(indices.len() * row);
    for &i in indices {
        assert!(i < shape[0], "{}: row {i} of \"{name}\" out of range (N = {})", file.path().display(), shape[0]);
        decode(dtype, &bytes[i * rb..(i + 1) * rb], &mut out);
    }
    out
}

/// The path of the test half written next to `out` by a seeded split: `mnist.safetensors` → `mnist-test.safetensors`.
pub fn sibling_path(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let ext = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    out.with_file_name(format!("{stem}-{suffix}{ext}"))
}
