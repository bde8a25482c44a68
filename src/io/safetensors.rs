//! Reading and writing named f32 tensors as safetensors, with a JSON metadata entry. Writes are atomic
//! (temporary file in the same folder, then rename), reads are memory-mapped and every failure names the
//! file and the tensor.
use super::outputs::write_via_temp;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The metadata key under which gsure stores its JSON.
pub const META_KEY: &str = "gsure";

/// One tensor to write: name, shape and f32 values.
pub struct Entry<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Writes `entries` and `meta` to `path` atomically: a crash leaves either the old file or the new one.
pub fn write(path: &Path, entries: &[Entry], meta: &serde_json::Value) -> Result<()> {
    let mut views = Vec::with_capacity(entries.len());
    for e in entries {
        if e.shape.iter().product::<usize>() != e.data.len() {
            bail!("writing {}: tensor {} has {} values for shape {:?}", path.display(), e.name, e.data.len(), e.shape);
        }
        let view = TensorView::new(Dtype::F32, e.shape.clone(), bytemuck::cast_slice(e.data))
            .with_context(|| format!("writing {}: tensor {}", path.display(), e.name))?;
        views.push((e.name.clone(), view));
    }
    let info = HashMap::from([(META_KEY.to_string(), meta.to_string())]);
    write_via_temp(path, |tmp| {
        safetensors::serialize_to_file(views, Some(info), tmp).with_context(|| format!("writing {}", tmp.display()))
    })
}

/// A memory-mapped safetensors file.
pub struct File {
    path: PathBuf,
    mmap: memmap2::Mmap,
    header: HashMap<String, (Dtype, Vec<usize>, usize, usize)>,
    meta: serde_json::Value,
}

impl File {
    pub fn open(path: &Path) -> Result<File> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the map is read-only; a file truncated underneath us is a user error we cannot prevent
        // (as with every mmap reader), and each access below is bounds-checked against the header.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("mapping {}", path.display()))?;
        let parsed = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file ({e:?}); it may be truncated or corrupt: re-create it",
                path.display()
            )
        })?;
        let mut header = HashMap::new();
        let base = mmap.as_ptr() as usize;
        for (name, view) in parsed.tensors() {
            let start = view.data().as_ptr() as usize - base;
            header.insert(name, (view.dtype(), view.shape().to_vec(), start, view.data().len()));
        }
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| anyhow::anyhow!("{}: unreadable header ({e:?})", path.display()))?;
        let meta = match metadata.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
            Some(s) => serde_json::from_str(s)
                .with_context(|| format!("{}: metadata entry {META_KEY:?} is not valid JSON", path.display()))?,
            None => serde_json::Value::Null,
        };
        Ok(File { path: path.to_path_buf(), mmap, header, meta })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// gsure's JSON metadata (Null when the file has none).
    pub fn meta(&self) -> &serde_json::Value {
        &self.meta
    }
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.header.keys().map(|s| s.as_str()).collect();
        v.sort();
        v
    }
    pub fn contains(&self, name: &str) -> bool {
        self.header.contains_key(name)
    }
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.1)
    }
    fn entry(&self, name: &str) -> Result<&(Dtype, Vec<usize>, usize, usize)> {
        self.header.get(name).with_context(|| format!("{}: no tensor named {name:?}", self.path.display()))
    }
    /// The stored bytes of tensor `name` (little-endian, no copy), with its dtype and shape: for readers that
    /// stream through a large tensor or pick rows out of it without converting all of it.
    pub fn raw(&self, name: &str) -> Result<(Dtype, &[usize], &[u8])> {
        let (dtype, shape, start, len) = self.entry(name)?;
        Ok((*dtype, shape, &self.mmap[*start..*start + *len]))
    }
    /// The values of tensor `name` as f32 (stored as F32, or F64/BF16/F16/U8 converted), with its shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dtype, shape, start, len) = self.entry(name)?;
        let bytes = &self.mmap[*start..*start + *len];
        let values: Vec<f32> = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            Dtype::BF16 => {
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect()
            }
            Dtype::F16 => {
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect()
            }
            Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
            other => bail!(
                "{}: tensor {name} has dtype {other:?}; gsure reads F32, F64, BF16, F16 and U8",
                self.path.display()
            ),
        };
        Ok((shape.clone(), values))
    }
}
