//! What a run trains on, and where it comes from when no `--data` is given.
use super::options::TrainOptions;
use crate::corruption::make::CorruptedData;
use crate::data::loader::{HostTensor, Source};
use crate::data::ImageSet;
use crate::nn::ModelConfig;
use anyhow::{bail, Result};
use std::path::Path;
use std::sync::Arc;

/// What a run trains on: clean images, or a corrupted dataset (observations, masks and, for evaluation
/// and the oracle only, the clean images).
pub enum TrainData {
    Clean(ImageSet),
    Corrupted(CorruptedData),
}

impl From<ImageSet> for TrainData {
    fn from(d: ImageSet) -> Self {
        TrainData::Clean(d)
    }
}

impl TrainData {
    pub fn len(&self) -> usize {
        match self {
            TrainData::Clean(d) => d.len(),
            TrainData::Corrupted(d) => d.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// [N, C, H, W] of what the network sees (spectral channels for corrupted data).
    pub fn dims(&self) -> [usize; 4] {
        match self {
            TrainData::Clean(d) => d.dims,
            TrainData::Corrupted(d) => d.dims,
        }
    }
    /// What the data loader batches: the images of clean data; indices only for corrupted data, whose
    /// objective reads what it needs for them on the training thread.
    pub fn loader_source(&self) -> Arc<dyn Source> {
        match self {
            TrainData::Clean(d) => Arc::new(d.clone()),
            TrainData::Corrupted(d) => Arc::new(IndexSource(d.len())),
        }
    }
}

/// The data a run trains on: the dataset at `path` (clean or corrupted, by its metadata), or else the
/// built-in phantoms at the model's resolution, corrupted for a corrupted-data loss by its paper's operator.
pub fn load_train_data(path: Option<&Path>, options: &TrainOptions, model: &ModelConfig) -> Result<TrainData> {
    let operator = crate::objectives::for_loss(options.loss).default_operator(model.image_channels());
    match path {
        Some(p) => {
            let kind = crate::data::dataset::kind_of(p)?;
            if kind.as_deref() == Some("corrupted") {
                Ok(TrainData::Corrupted(CorruptedData::open(p)?))
            } else if operator.is_some() {
                bail!(
                    "{}: --loss {:?} trains on corrupted observations, and this is a clean dataset; make one with \
                     `gsure data make --source {} --op ... --out FILE`",
                    p.display(),
                    options.loss,
                    p.display()
                )
            } else {
                Ok(TrainData::Clean(complex_if_model_is(crate::data::load_clean(p)?, model)))
            }
        }
        None => {
            let clean = crate::data::phantoms(options.phantoms, model.resolution(), 1234);
            let Some(spec) = operator else { return Ok(TrainData::Clean(complex_if_model_is(clean, model))) };
            let name = format!("phantoms(n={}, size={}, seed=1234)", options.phantoms, model.resolution());
            Ok(TrainData::Corrupted(crate::corruption::make::make_dataset(&clean, &spec, options.seed, &name)?))
        }
    }
}

/// Real 1-channel images as complex ones for a complex (MRI) model; anything else unchanged, for the
/// trainer's check to refuse by name if it does not fit.
fn complex_if_model_is(clean: ImageSet, model: &ModelConfig) -> ImageSet {
    let [n, c, h, w] = clean.dims;
    match (c, model.image_channels()) {
        (1, 2) => ImageSet { images: crate::data::real_to_complex(&clean.images, h * w), dims: [n, 2, h, w] },
        _ => clean,
    }
}

/// Batches of indices only.
struct IndexSource(usize);

impl Source for IndexSource {
    fn len(&self) -> usize {
        self.0
    }
    fn gather(&self, _: &[usize]) -> Vec<HostTensor> {
        Vec::new()
    }
}
