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
