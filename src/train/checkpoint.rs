//! Checkpoints: one safetensors file holding `params/<name>`, `ema/<name>`, `adam_m/<name>`,
//! `adam_v/<name>` (all f32) and JSON metadata (options, model configuration, step, optimiser step,
//! version). Written atomically; loading refuses a checkpoint of another model, naming the tensor.
use crate::io::safetensors::{self, Entry};
use crate::ops::optim::{AdamW, Ema};
use crate::{ParamStore, Tensor};
use anyhow::{bail, Context, Result};
use std::path::Path;

fn host(t: &Tensor) -> Result<(Vec<usize>, Vec<f32>)> {
    Ok((t.dims().to_vec(), t.to_vec_f32()?))
}

/// Writes params, EMA and Adam state with `meta` (the optimiser step is added under "adam_step").
pub fn save(path: &Path, params: &ParamStore, ema: &Ema, opt: &AdamW, meta: &serde_json::Value) -> Result<()> {
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, p) in params.iter() {
        let (s, v) = host(p)?;
        owned.push((format!("params/{name}"), s, v));
    }
    for (name, e) in &ema.shadow {
        let (s, v) = host(e)?;
        owned.push((format!("ema/{name}"), s, v));
    }
    for (name, m, v) in &opt.moments {
        let (s, d) = host(m)?;
        owned.push((format!("adam_m/{name}"), s, d));
        let (s, d) = host(v)?;
        owned.push((format!("adam_v/{name}"), s, d));
    }
    let entries: Vec<Entry> =
        owned.iter().map(|(n, s, d)| Entry { name: n.clone(), shape: s.clone(), data: d }).collect();
    let mut meta = meta.clone();
    meta["adam_step"] = serde_json::json!(opt.step);
    meta["version"] = serde_json::json!(env!("CARGO_PKG_VERSION"));
    safetensors::write(path, &entries, &meta)
}

/// Reads a checkpoint's metadata without loading tensors.
pub fn read_meta(path: &Path) -> Result<serde_json::Value> {
    Ok(safetensors::File::open(path)?.meta().clone())
}

fn load_into(file: &safetensors::File, prefix: &str, name: &str, dst: &Tensor) -> Result<()> {
    let key = format!("{prefix}/{name}");
    if !file.contains(&key) {
        bail!(
            "checkpoint {} was made for another model: it has no tensor {key:?}; train a new run or pick the right --config",
            file.path().display()
        );
    }
    let (shape, values) = file.f32(&key)?;
    if shape != dst.dims() {
        bail!(
            "checkpoint {} was made for another model: tensor {key:?} has shape {shape:?} there but {} here",
            file.path().display(),
            dst.shape()
        );
    }
    dst.assign(&Tensor::from_f32(&values, shape, &crate::Device::Cpu)?)
}

/// Loads params (and EMA and Adam state when given) in place; returns the metadata.
pub fn load(
    path: &Path,
    params: &ParamStore,
    ema: Option<&mut Ema>,
    opt: Option<&mut AdamW>,
) -> Result<serde_json::Value> {
    let file = safetensors::File::open(path)?;
    for (name, p) in params.iter() {
        load_into(&file, "params", name, p)?;
    }
    if let Some(ema) = ema {
        for (name, e) in &ema.shadow {
            load_into(&file, "ema", name, e)?;
        }
    }
    if let Some(opt) = opt {
        for (name, m, v) in &opt.moments {
            load_into(&file, "adam_m", name, m)?;
            load_into(&file, "adam_v", name, v)?;
        }
        opt.step = file.meta()["adam_step"]
            .as_u64()
            .with_context(|| format!("checkpoint {}: metadata lacks adam_step", path.display()))?;
    }
    Ok(file.meta().clone())
}

/// Loads only the weights stored under `prefix` ("params" or "ema") into `params`; returns the metadata.
pub fn load_weights(path: &Path, params: &ParamStore, prefix: &str) -> Result<serde_json::Value> {
    let file = safetensors::File::open(path)?;
    for (name, p) in params.iter() {
        load_into(&file, prefix, name, p)?;
    }
    Ok(file.meta().clone())
}
