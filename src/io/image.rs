//! PNG output: grids of images (samples, reconstructions); charts are drawn by `io::plot`.
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Writes 8-bit greyscale or RGB pixels as a PNG.
pub fn write_png(path: &Path, width: usize, height: usize, channels: usize, pixels: &[u8]) -> Result<()> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        c => bail!("PNG: {c} channels; expected 1 or 3"),
    };
    if pixels.len() != width * height * channels {
        bail!("PNG: {} bytes for {width}×{height}×{channels}", pixels.len());
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().with_context(|| format!("encoding {}", path.display()))?;
        w.write_image_data(pixels).with_context(|| format!("encoding {}", path.display()))?;
    }
    super::outputs::write_atomic(path, &bytes)
}

/// Tiles N images [N, C, H, W] (C = 1 or 3, values in [lo, hi]; C = 2 is a complex image, drawn by its
/// real part: our MRI images are real images carried as complex ones, and a magnitude would fold the
/// background at `lo` up to bright) into a near-square grid with 2-pixel gaps; images smaller than 64 pixels
/// are enlarged by pixel repetition so that a person can see them.
pub fn grid_png(path: &Path, images: &[f32], dims: [usize; 4], lo: f32, hi: f32) -> Result<()> {
    let [n, c_in, h0, w0] = dims;
    let zoom = (64 / h0.max(w0).max(1)).max(1);
    let (h, w) = (h0 * zoom, w0 * zoom);
    let c = match c_in {
        1 | 3 => c_in,
        2 => 1,
        _ => bail!("image grid: {c_in} channels per image; expected 1, 2 (complex) or 3"),
    };
    if images.len() != n * c_in * h0 * w0 {
        bail!("image grid: {} values for {n}×{c_in}×{h0}×{w0}", images.len());
    }
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols).max(1);
    let gap = 2;
    let (gw, gh) = (cols * (w + gap) + gap, rows * (h + gap) + gap);
    let mut px = vec![32u8; gw * gh * c];
    for i in 0..n {
        let (r, q) = (i / cols, i % cols);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = images[((i * c_in + ch) * h0 + y / zoom) * w0 + x / zoom];
                    let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
                    let (gy, gx) = (gap + r * (h + gap) + y, gap + q * (w + gap) + x);
                    px[(gy * gw + gx) * c + ch] = (t * 255.0).round() as u8;
                }
            }
        }
    }
    write_png(path, gw, gh, c, &px)
}
