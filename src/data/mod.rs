//! Data: the built-in synthetic phantoms (the default dataset; no downloads), in-memory image sets, dataset
//! files (clean and corrupted, see `dataset`), the batch loader, importers and image transforms.
pub mod dataset;
pub mod import;
pub mod loader;
pub mod phantoms;
pub mod transforms;

pub use phantoms::phantoms;

/// A set of images [N, C, H, W] held in host memory as f32 in [-1, 1].
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub images: Vec<f32>,
    pub dims: [usize; 4],
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.dims[0]
    }
    pub fn is_empty(&self) -> bool {
        self.dims[0] == 0
    }
    pub fn image_numel(&self) -> usize {
        self.dims[1] * self.dims[2] * self.dims[3]
    }
    /// Copies the images at `indices` into one batch [B, C, H, W].
    pub fn gather(&self, indices: &[usize]) -> Vec<f32> {
        let m = self.image_numel();
        let mut out = Vec::with_capacity(indices.len() * m);
        for &i in indices {
            out.extend_from_slice(&self.images[i * m..(i + 1) * m]);
        }
        out
    }
    /// These images in a model's channel layout: unchanged when the channel counts agree, and real
    /// 1-channel images as complex 2-channel ones (imaginary part 0) for a complex (MRI) model; anything
    /// else is refused naming both counts.
    pub fn for_model_channels(&self, model_channels: usize) -> anyhow::Result<ImageSet> {
        let [n, c, h, w] = self.dims;
        match (c, model_channels) {
            (a, b) if a == b => Ok(self.clone()),
            (1, 2) => Ok(ImageSet { images: real_to_complex(&self.images, h * w), dims: [n, 2, h, w] }),
            _ => anyhow::bail!(
                "images of {c} channels for a model of {model_channels} (only real 1-channel images can feed a \
                 complex 2-channel model). Fix: use a run trained on {c}-channel data"
            ),
        }
    }
}

/// Real images (planes of `plane` values, one per image) as complex images [re, im] with im = 0.
pub fn real_to_complex(real: &[f32], plane: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * real.len());
    for img in real.chunks(plane) {
        out.extend_from_slice(img);
        out.resize(out.len() + img.len(), 0.0);
    }
    out
}

/// Loads the clean images [N, C, H, W] (values in [-1, 1]) of a dataset file, validated: a clean dataset
/// (`gsure data import`), or the evaluation-only `clean` tensor of a corrupted dataset (the supervised oracle
/// on the same images).
pub fn load_clean(path: &std::path::Path) -> anyhow::Result<ImageSet> {
    match dataset::kind_of(path)?.as_deref() {
        Some("corrupted") => dataset::CorruptedDataset::open(path)?.clean_images(),
        _ => Ok(dataset::CleanDataset::open(path)?.images()),
    }
}
