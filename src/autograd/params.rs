use crate::tensor::Tensor;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Trainable parameters under stable, dotted names (`down.0.conv1.weight`); the names are the checkpoint
/// keys. Iteration is in name order, so optimiser state lines up across runs.
#[derive(Default)]
pub struct ParamStore {
    params: BTreeMap<String, Tensor>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers `value` as the trainable parameter `name`, returning the leaf to use in the model.
    pub fn insert(&mut self, name: &str, value: &Tensor) -> Result<Tensor> {
        if self.params.contains_key(name) {
            bail!("parameter {name:?} is registered twice");
        }
        let leaf = value.set_requires_grad(true);
        self.params.insert(name.to_string(), leaf.clone());
        Ok(leaf)
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.params.iter()
    }
    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    /// Total number of scalar parameters.
    pub fn num_scalars(&self) -> usize {
        self.params.values().map(|t| t.numel()).sum()
    }
}

impl ParamStore {
    /// Overwrites every parameter's values with those of the same name in `values` (e.g. EMA weights
    /// into a sampling copy of the model). Shapes must match.
    pub fn copy_values_from(&self, values: &[(String, Tensor)]) -> Result<()> {
        for (name, src) in values {
            let Some(dst) = self.params.get(name) else { bail!("no parameter named {name:?} to copy into") };
            if dst.shape() != src.shape() {
                bail!("parameter {name}: shape {} cannot take values of shape {}", dst.shape(), src.shape());
            }
            dst.assign(src)?;
        }
        Ok(())
    }
}
