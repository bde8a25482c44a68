//! Data: the built-in synthetic phantoms (the default dataset; no downloads) and in-memory image sets.
pub mod phantoms;

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
}

/// Loads the `clean` tensor [N, C, H, W] of a safetensors dataset file (values expected in [-1, 1]).
pub fn load_clean(path: &std::path::Path) -> anyhow::Result<ImageSet> {
    let file = crate::io::safetensors::File::open(path)?;
    let (shape, images) = file.f32("clean").map_err(|e| {
        anyhow::anyhow!("{e:#}; the supervised objective needs clean images [N, C, H, W] under \"clean\"")
    })?;
    let dims: [usize; 4] = shape.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!("{}: tensor \"clean\" has shape {shape:?}; expected [N, C, H, W]", path.display())
    })?;
    if let Some(bad) = images.iter().position(|v| !v.is_finite() || v.abs() > 1.0 + 1e-3) {
        anyhow::bail!(
            "{}: tensor \"clean\" holds {} at flat index {bad}; values must be finite and in [-1, 1] (rescale the data)",
            path.display(),
            images[bad]
        );
    }
    Ok(ImageSet { images, dims })
}
