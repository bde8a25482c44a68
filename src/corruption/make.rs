//! Corrupted datasets (DESIGN.md "Formats"): [`make_dataset`] applies a seeded random operator to clean
//! images, [`CorruptedData::write`] stores the result as safetensors and [`CorruptedData::open`] reads and
//! validates it back, handing the objectives [`SpectralBatch`]es.
//!
//! File layout (all f32):
//! - `y` [N, C_s, H, W]: ȳ = M ⊙ (Vᵀ x + σ0 z), the observations in spectral coordinates, zero off O
//!   (C_s = 2 for MRI: real and imaginary parts of k-space);
//! - `mask` [N, C_s, H, W]: the observed set O as 0/1 (the per-example mask repeated over channels);
//! - `clean` [N, C, H, W]: the source images, for evaluation only;
//! - metadata {"kind": "corrupted", "operator", "sigma0", "p", "patch", "box", "R", "acs", "equispaced",
//!   "seed", "source", "count", "basis", "image_channels", "pi"}: every operator parameter with its default
//!   resolved (so the file rebuilds its operator, hence π and W², without the command line), null where it
//!   does not apply. ν = σ0² on O is derived from "sigma0" and not stored.
//!
//! Example i's mask and noise depend only on (seed, i) ([`super::example_rng`]).
use super::{check_observable, example_rng, OpKind, OpSpec, Operator, OperatorBatch, SpectralBatch};
use crate::data::ImageSet;
use crate::io::safetensors::{self as st, Entry};
use crate::{DType, Device, Tensor};
use anyhow::{bail, Result};
use rand_distr::{Distribution, StandardNormal};
use serde_json::{json, Value};
use std::path::Path;

/// A corrupted dataset in host memory.
#[derive(Clone, Debug)]
pub struct CorruptedData {
    /// The operator's parameters, defaults resolved.
    pub spec: OpSpec,
    pub seed: u64,
    /// Where the clean images came from ("phantoms", a file name).
    pub source: String,
    /// [N, C_s, H, W] of `y` and `mask`.
    pub dims: [usize; 4],
    pub y: Vec<f32>,
    pub mask: Vec<f32>,
    /// The clean images and their dims (evaluation only).
    pub clean: Option<(Vec<f32>, [usize; 4])>,
}

/// Corrupts every image of `source` with the operator of `spec` (masks and noise seeded per example from
/// `seed`), refusing operators under which some coordinate is never observed.
pub fn make_dataset(source: &ImageSet, spec: &OpSpec, seed: u64, source_name: &str) -> Result<CorruptedData> {
    let [n, c, h, w] = source.dims;
    if n == 0 {
        bail!("gsure data make: the source {source_name} holds no images. Fix: give a non-empty dataset");
    }
    let op = spec.build(op_chw(spec.kind, [c, h, w]))?;
    check_observable(op.as_ref())?;
    let cs = op.spectral_channels();
    let per = cs * h * w;
    let mut y = Vec::with_capacity(n * per);
    let mut mask = Vec::with_capacity(n * per);
    const CHUNK: usize = 32;
    for start in (0..n).step_by(CHUNK) {
        let idx: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
        let batch = op.batch(seed, &idx);
        let x: Vec<f64> = source.gather(&idx).iter().map(|&v| v as f64).collect();
        let x = Tensor::from_f64(&x, [idx.len(), c, h, w], DType::F64, &Device::Cpu)?;
        let hx = crate::no_grad(|| batch.forward(&x))?.to_vec_f64()?;
        let observed = batch.observed_host();
        for (k, &i) in idx.iter().enumerate() {
            let mut rng = example_rng(seed, i, 1);
            for j in k * per..(k + 1) * per {
                let z: f64 = StandardNormal.sample(&mut rng);
                let m = observed[j];
                y.push(if m != 0.0 { (hx[j] + op.sigma0() * z) as f32 } else { 0.0 });
                mask.push(m);
            }
        }
    }
    Ok(CorruptedData {
        spec: op.spec(),
        seed,
        source: source_name.to_string(),
        dims: [n, cs, h, w],
        y,
        mask,
        clean: Some((source.images.clone(), source.dims)),
    })
}

/// The image [C, H, W] an operator family acts on given the source images: MRI promotes real images to
/// complex ones.
fn op_chw(kind: OpKind, chw: [usize; 3]) -> [usize; 3] {
    match kind {
        OpKind::Mri if chw[0] <= 2 => [2, chw[1], chw[2]],
        _ => chw,
    }
}

impl CorruptedData {
    pub fn len(&self) -> usize {
        self.dims[0]
    }
    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }
    /// The operator family of this dataset (rebuilt from its parameters).
    pub fn operator(&self) -> Result<Box<dyn Operator>> {
        let [_, cs, h, w] = self.dims;
        self.spec.build(op_chw(self.spec.kind, [cs, h, w]))
    }
    /// The metadata JSON written to the file.
    pub fn meta(&self) -> Result<Value> {
        let op = self.operator()?;
        let mut m = self.spec.to_json();
        let o = m.as_object_mut().expect("to_json gives an object");
        o.insert("kind".into(), json!("corrupted"));
        o.insert("seed".into(), json!(self.seed));
        o.insert("source".into(), json!(self.source));
        o.insert("count".into(), json!(self.dims[0]));
        o.insert("basis".into(), json!(op.basis().name()));
        o.insert("image_channels".into(), json!(self.clean.as_ref().map(|c| c.1[1])));
        o.insert("pi".into(), op.pi_description());
        Ok(m)
    }
    /// Writes the dataset to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut entries = vec![
            Entry { name: "y".into(), shape: self.dims.to_vec(), data: &self.y },
            Entry { name: "mask".into(), shape: self.dims.to_vec(), data: &self.mask },
        ];
        if let Some((clean, dims)) = &self.clean {
            entries.push(Entry { name: "clean".into(), shape: dims.to_vec(), data: clean });
        }
        st::write(path, &entries, &self.meta()?)
    }

    /// Reads and validates a corrupted dataset: metadata kind and operator parameters (rebuilding the
    /// operator, refusing one with π = 0 somewhere), `y` and `mask` of one shape [N, C_s, H, W] with the
    /// operator's channels, `mask` 0/1 and the same over channels, `y` finite and zero off the mask, and the
    /// optional `clean` sharing N, H and W. Errors name the file, the field and the fix.
    pub fn open(path: &Path) -> Result<CorruptedData> {
        let p = path.display();
        const FIX: &str = "re-create the file with `gsure data make`";
        let file = st::File::open(path)?;
        let meta = file.meta();
        match meta.get("kind").and_then(|k| k.as_str()) {
            Some("corrupted") => {}
            Some(k) => bail!("{p}: metadata field \"kind\" is \"{k}\" but a corrupted dataset was expected. Fix: pass a file written by `gsure data make`"),
            None => bail!("{p}: metadata field \"kind\" is missing (no gsure metadata). Fix: {FIX}"),
        }
        let spec = OpSpec::from_json(&p.to_string(), meta)?;
        let seed = meta.get("seed").and_then(|v| v.as_u64()).ok_or_else(|| {
            anyhow::anyhow!("{p}: metadata field \"seed\" is missing or not a non-negative integer. Fix: {FIX}")
        })?;
        let source = meta.get("source").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let (yd, y) = file.f32("y")?;
        let (md, mask) = file.f32("mask")?;
        let dims: [usize; 4] = yd
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{p}: tensor \"y\" has shape {yd:?}; expected [N, C, H, W]. Fix: {FIX}"))?;
        if md != yd {
            bail!("{p}: tensor \"mask\" has shape {md:?} but \"y\" has {yd:?}; they must match. Fix: {FIX}");
        }
        let data = CorruptedData { spec, seed, source, dims, y, mask, clean: None };
        let op = data.operator().map_err(|e| anyhow::anyhow!("{p}: {e:#}"))?;
        check_observable(op.as_ref()).map_err(|e| anyhow::anyhow!("{p}: {e:#}"))?;
        if op.spectral_channels() != dims[1] {
            bail!(
                "{p}: tensor \"y\" has {} channels but the {} operator's spectral coordinates have {}. Fix: {FIX}",
                dims[1],
                op.name(),
                op.spectral_channels()
            );
        }
        if let Some(c) = data.meta_count(meta) {
            if c != dims[0] {
                bail!("{p}: metadata field \"count\" is {c} but \"y\" holds {} observations. Fix: {FIX}", dims[0]);
            }
        }
        let [n, cs, h, w] = dims;
        let hw = h * w;
        for i in 0..n * cs * hw {
            let (m, v) = (data.mask[i], data.y[i]);
            if m != 0.0 && m != 1.0 {
                bail!("{p}: tensor \"mask\" holds {m} at flat index {i}; it must be 0 or 1. Fix: {FIX}");
            }
            if !v.is_finite() {
                bail!("{p}: tensor \"y\" holds {v} at flat index {i}; observations must be finite. Fix: {FIX}");
            }
            if m == 0.0 && v != 0.0 {
                bail!("{p}: tensor \"y\" is {v} at flat index {i}, off the observed set; y must be zero where mask is 0. Fix: {FIX}");
            }
            let ch0 = (i / (cs * hw)) * cs * hw + i % hw;
            if data.mask[ch0] != m {
                bail!("{p}: tensor \"mask\" differs between channels at flat index {i}; the observed set is shared by all channels. Fix: {FIX}");
            }
        }
        let clean = if file.contains("clean") {
            let (cd, c) = file.f32("clean")?;
            let cd: [usize; 4] = cd.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("{p}: tensor \"clean\" has shape {cd:?}; expected [N, C, H, W]. Fix: {FIX}")
            })?;
            if cd[0] != n || cd[2] != h || cd[3] != w {
                bail!("{p}: tensor \"clean\" has shape {cd:?} and \"y\" has {dims:?}; they must share N, H and W. Fix: {FIX}");
            }
            Some((c, cd))
        } else {
            None
        };
        Ok(CorruptedData { clean, ..data })
    }
    fn meta_count(&self, meta: &Value) -> Option<usize> {
        meta.get("count").and_then(|v| v.as_u64()).map(|c| c as usize)
    }

    /// The operators of examples `indices`, with the masks stored in the file.
    pub fn batch(&self, indices: &[usize]) -> Result<OperatorBatch> {
        let op = self.operator()?;
        let [n, cs, h, w] = self.dims;
        let hw = h * w;
        let mut masks = Vec::with_capacity(indices.len() * hw);
        for &i in indices {
            if i >= n {
                bail!("corrupted dataset: example index {i} is out of range (the dataset holds {n})");
            }
            masks.extend_from_slice(&self.mask[i * cs * hw..i * cs * hw + hw]);
        }
        Ok(OperatorBatch::from_masks(op.as_ref(), masks))
    }
    /// The spectral view of examples `indices` (ȳ, O, ν, W²) as `dtype` on `device`.
    pub fn spectral(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<SpectralBatch> {
        let batch = self.batch(indices)?;
        let per = self.dims[1] * self.dims[2] * self.dims[3];
        let ybar: Vec<f32> = indices.iter().flat_map(|&i| self.y[i * per..(i + 1) * per].iter().copied()).collect();
        batch.spectral_from_host(Some(&ybar), device, dtype)
    }
}
