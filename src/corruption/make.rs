//! Corrupted datasets (docs/DESIGN.md "Formats"): [`make_dataset`] applies a seeded random operator to clean
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
//! The file format and its generic validation are [`crate::data::dataset::CorruptedDataset`]'s; this module
//! adds what needs the operator (channels, the mask shared over channels, y zero off O, π > 0).
//!
//! Example i's mask and noise depend only on (seed, i) ([`super::example_rng`]).
use super::{check_observable, example_rng, OpKind, OpSpec, Operator, OperatorBatch, SpectralBatch};
use crate::data::dataset::{Array4, CorruptedDataset, CorruptedMeta};
use crate::data::ImageSet;
use crate::{DType, Device, Tensor};
use anyhow::{bail, Result};
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;
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

/// Refuses a `data make` of `n` images of [C, H, W] under the `kind` family whose buffers would not fit
/// in memory, before any image is drawn: the source and its clean copy, the observations and masks, and
/// the serialised file (which holds all three) are alive at once when it is written.
pub fn check_make_fits(n: usize, chw: [usize; 3], kind: OpKind) -> Result<()> {
    use crate::io::budget::{check_fits, f32_bytes};
    let [c, h, w] = chw;
    let cs = op_chw(kind, chw)[0];
    let bytes = f32_bytes(&[n, c, h, w]).saturating_mul(3).saturating_add(f32_bytes(&[n, cs, h, w]).saturating_mul(4));
    check_fits(&format!("gsure data make: {n} images of {c}×{h}×{w}"), bytes, "lower --n (or --size, for phantoms)")
}

/// Corrupts every image of `source` with the operator of `spec` (masks and noise seeded per example from
/// `seed`), refusing operators under which some coordinate is never observed.
pub fn make_dataset(source: &ImageSet, spec: &OpSpec, seed: u64, source_name: &str) -> Result<CorruptedData> {
    let [n, c, h, w] = source.dims;
    if n == 0 {
        bail!("gsure data make: the source {source_name} holds no images. Fix: give a non-empty dataset");
    }
    check_make_fits(n, [c, h, w], spec.kind)?;
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
    /// The metadata written to the file: [`CorruptedMeta`]'s fields plus, in `extra`, every other operator
    /// parameter with its default resolved, and "count", "basis", "image_channels", "pi".
    pub fn meta(&self) -> Result<CorruptedMeta> {
        let op = self.operator()?;
        let mut extra = serde_json::Map::new();
        let spec = self.spec.to_json();
        for key in ["patch", "box", "acs", "equispaced"] {
            extra.insert(key.into(), spec[key].clone());
        }
        extra.insert("count".into(), json!(self.dims[0]));
        extra.insert("basis".into(), json!(op.basis().name()));
        extra.insert("image_channels".into(), json!(self.clean.as_ref().map(|c| c.1[1])));
        extra.insert("pi".into(), op.pi_description());
        Ok(CorruptedMeta {
            operator: self.spec.kind.name().into(),
            sigma0: self.spec.sigma0,
            p: self.spec.p,
            r: self.spec.r,
            seed: self.seed,
            source: self.source.clone(),
            extra,
        })
    }
    /// Writes the dataset to `path` atomically (through [`CorruptedDataset::write`], which validates it).
    pub fn write(&self, path: &Path) -> Result<()> {
        let y = Array4 { data: &self.y, dims: self.dims };
        let mask = Array4 { data: &self.mask, dims: self.dims };
        let clean = self.clean.as_ref().map(|(data, dims)| Array4 { data, dims: *dims });
        CorruptedDataset::write(path, y, mask, clean, &self.meta()?)
    }

    /// Reads and validates a corrupted dataset: what [`CorruptedDataset::open`] checks (metadata kind and
    /// fields, `y` finite, `mask` 0/1 of shape [N, 1, H, W] or y's, `clean` sharing N, H, W, "count"), then
    /// the operator: its parameters rebuild it (refusing one with π = 0 somewhere), `y` has its spectral
    /// channels, the mask is shared over channels and `y` is zero off it. Errors name the file, the field
    /// and the fix. A mask stored as [N, 1, H, W] is repeated over y's channels.
    pub fn open(path: &Path) -> Result<CorruptedData> {
        let p = path.display();
        const FIX: &str = "re-create the file with `gsure data make`";
        let ds = CorruptedDataset::open(path)?;
        let spec = OpSpec::from_json(&p.to_string(), &ds.meta.to_json())?;
        let dims = ds.y_dims();
        let [n, cs, h, w] = dims;
        let all: Vec<usize> = (0..n).collect();
        let y = ds.gather_y(&all);
        let stored = ds.gather_mask(&all);
        let hw = h * w;
        let mask: Vec<f32> = if ds.mask_dims()[1] == 1 && cs > 1 {
            stored.chunks_exact(hw).flat_map(|m| std::iter::repeat_n(m, cs).flatten().copied()).collect()
        } else {
            stored
        };
        let clean = match ds.clean_dims() {
            Some(cd) => Some((ds.clean_images()?.images, cd)),
            None => None,
        };
        let data = CorruptedData { spec, seed: ds.meta.seed, source: ds.meta.source.clone(), dims, y, mask, clean };
        let op = data.operator().map_err(|e| anyhow::anyhow!("{p}: {e:#}"))?;
        check_observable(op.as_ref()).map_err(|e| anyhow::anyhow!("{p}: {e:#}"))?;
        if op.spectral_channels() != cs {
            bail!(
                "{p}: tensor \"y\" has {cs} channels but the {} operator's spectral coordinates have {}. Fix: {FIX}",
                op.name(),
                op.spectral_channels()
            );
        }
        for i in 0..n * cs * hw {
            let (m, v) = (data.mask[i], data.y[i]);
            if m == 0.0 && v != 0.0 {
                bail!("{p}: tensor \"y\" is {v} at flat index {i}, off the observed set; y must be zero where mask is 0. Fix: {FIX}");
            }
            let ch0 = (i / (cs * hw)) * cs * hw + i % hw;
            if data.mask[ch0] != m {
                bail!("{p}: tensor \"mask\" differs between channels at flat index {i}; the observed set is shared by all channels. Fix: {FIX}");
            }
        }
        data.check_every_coordinate_observed()
            .map_err(|e| anyhow::anyhow!("{p}: tensor \"mask\": {e:#} Fix: {FIX}"))?;
        Ok(data)
    }

    /// Refuses masks under which some coordinate is observed in no example: the losses never see it, so
    /// nothing is learned there (all-zero masks train at loss 0). The operator's π > 0 says the distribution
    /// covers every coordinate; this checks the draws. Every dataset file must pass it ([`Self::open`], and
    /// `gsure data make` before it writes); in memory it is the caller's choice (a one-step parity test
    /// trains on two images on purpose).
    pub fn check_every_coordinate_observed(&self) -> Result<()> {
        let [n, cs, h, w] = self.dims;
        let hw = h * w;
        let mut seen = vec![false; hw];
        for i in 0..n {
            for (s, &m) in seen.iter_mut().zip(&self.mask[i * cs * hw..i * cs * hw + hw]) {
                *s |= m != 0.0;
            }
        }
        let never = seen.iter().filter(|&&s| !s).count();
        if let Some(first) = seen.iter().position(|&s| !s) {
            bail!(
                "{never} of {hw} coordinates are observed in none of the {n} examples (the first at row {}, column \
                 {}); nothing can be learned there, and a set that observes nothing trains at loss 0.",
                first / w,
                first % w
            );
        }
        Ok(())
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
    /// The basis of the operators' spectral coordinates (Fourier for MRI, pixels otherwise).
    pub fn spectral_basis(&self) -> Result<crate::corruption::Basis> {
        Ok(self.batch(&[0])?.basis)
    }

    pub fn spectral(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<SpectralBatch> {
        let batch = self.batch(indices)?;
        let per = self.dims[1] * self.dims[2] * self.dims[3];
        let ybar: Vec<f32> = indices.iter().flat_map(|&i| self.y[i * per..(i + 1) * per].iter().copied()).collect();
        batch.spectral_from_host(Some(&ybar), device, dtype)
    }
}

impl CorruptedData {
    /// A picture of the first `k` examples for a person: pairs (clean image, zero-filled reconstruction
    /// H† y), [2k, C, H, W] with C = 1 or 3 (MRI and other channel counts: the real part / first channel).
    /// Values in [-1, 1] (the reconstruction is clamped).
    pub fn preview(&self, k: usize) -> Result<(Vec<f32>, [usize; 4])> {
        let k = k.min(self.len());
        let idx: Vec<usize> = (0..k).collect();
        let batch = self.batch(&idx)?;
        let [_, cs, h, w] = self.dims;
        let per = cs * h * w;
        let y: Vec<f64> = self.y[..k * per].iter().map(|&v| v as f64).collect();
        let y = Tensor::from_f64(&y, [k, cs, h, w], DType::F64, &Device::Cpu)?;
        let recon = crate::no_grad(|| batch.pinv(&y))?.to_vec_f64()?;
        let rc = batch.image_chw[0];
        let c = if rc == 1 || rc == 3 { rc } else { 1 };
        let hw = h * w;
        let mut out = Vec::with_capacity(2 * k * c * hw);
        for i in 0..k {
            match &self.clean {
                Some((clean, cd)) => {
                    let cc = cd[1];
                    for ch in 0..c {
                        let src = (i * cc + ch.min(cc - 1)) * hw;
                        out.extend_from_slice(&clean[src..src + hw]);
                    }
                }
                None => out.extend(std::iter::repeat_n(-1.0f32, c * hw)),
            }
            for ch in 0..c {
                let src = (i * rc + ch) * hw;
                out.extend(recon[src..src + hw].iter().map(|&v| (v as f32).clamp(-1.0, 1.0)));
            }
        }
        Ok((out, [2 * k, c, h, w]))
    }
}
