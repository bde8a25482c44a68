//! PNG output: grids of images (samples, reconstructions) and simple line plots (loss curves).
use super::font::{draw_text, text_width};
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
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().with_context(|| format!("writing {}", path.display()))?;
    w.write_image_data(pixels).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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

/// A line plot of one or more series (x, y) on a white background, log-scaled in y when `log_y`, with a
/// title, axis labels and the extreme values printed at the axes' ends.
pub fn plot_png(path: &Path, title: &str, x_label: &str, series: &[&[(f64, f64)]], log_y: bool) -> Result<()> {
    let (w, h, margin) = (640usize, 360usize, 48usize);
    let tf = |y: f64| if log_y { y.max(1e-30).log10() } else { y };
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.iter().map(|&(x, y)| (x, tf(y)))).collect();
    if pts.is_empty() {
        bail!("plot: no points");
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.iter().filter(|p| p.1.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let mut px = vec![255u8; w * h * 3];
    let colours = [[31u8, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];
    let to_px = |x: f64, y: f64| {
        let px = margin as f64 + (x - x0) / (x1 - x0) * (w - 2 * margin) as f64;
        let py = (h - margin) as f64 - (y - y0) / (y1 - y0) * (h - 2 * margin) as f64;
        (px, py)
    };
    // Axes.
    for x in margin..w - margin {
        let i = ((h - margin) * w + x) * 3;
        px[i..i + 3].copy_from_slice(&[0, 0, 0]);
    }
    for y in margin..h - margin {
        let i = (y * w + margin) * 3;
        px[i..i + 3].copy_from_slice(&[0, 0, 0]);
    }
    let ink = [0u8, 0, 0];
    let fmt = |v: f64| {
        if v.fract() == 0.0 && v.abs() < 1e7 {
            format!("{v:.0}")
        } else if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-2) {
            format!("{v:.2e}")
        } else {
            format!("{v:.3}")
        }
    };
    let y_of = |v: f64| if log_y { 10f64.powf(v) } else { v };
    draw_text(&mut px, w, (w - text_width(title)) / 2, 8, title, ink);
    draw_text(&mut px, w, 2, margin - 4, &fmt(y_of(y1)), ink);
    draw_text(&mut px, w, 2, h - margin - 4, &fmt(y_of(y0)), ink);
    draw_text(&mut px, w, margin, h - margin + 6, &fmt(x0), ink);
    let right = fmt(x1);
    draw_text(&mut px, w, w - margin - text_width(&right), h - margin + 6, &right, ink);
    draw_text(&mut px, w, (w - text_width(x_label)) / 2, h - margin + 18, x_label, ink);
    for (k, s) in series.iter().enumerate() {
        let col = colours[k % colours.len()];
        for pair in s.windows(2) {
            let (a, b) = (to_px(pair[0].0, tf(pair[0].1)), to_px(pair[1].0, tf(pair[1].1)));
            if !(a.1.is_finite() && b.1.is_finite()) {
                continue;
            }
            let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
            for j in 0..=steps {
                let t = j as f64 / steps as f64;
                let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
                let (xi, yi) = (x.round() as isize, y.round() as isize);
                if xi >= 0 && yi >= 0 && (xi as usize) < w && (yi as usize) < h {
                    let i = (yi as usize * w + xi as usize) * 3;
                    px[i..i + 3].copy_from_slice(&col);
                }
            }
        }
    }
    write_png(path, w, h, 3, &px)
}
