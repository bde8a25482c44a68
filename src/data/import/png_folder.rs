//! Folders of PNG images. The PNGs directly in the folder form one unlabelled set; when the folder instead
//! holds sub-folders of PNGs, each sub-folder (sorted by name) is a class and its index the label.
//! Palette, low bit depths and 16-bit images are expanded/reduced to 8-bit grey or RGB; alpha is dropped.
use super::Imported;
use crate::data::transforms::Image;
use anyhow::{bail, Result};
use serde_json::{json, Map};
use std::path::{Path, PathBuf};

/// The most bytes one decoded image may take (a corrupt header must not make us allocate gigabytes).
const MAX_IMAGE_BYTES: usize = 256 << 20;

fn pngs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot list the folder ({e}). Fix: pass a folder of PNG images to --input",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    v.sort();
    Ok(v)
}

/// Decodes one PNG into an image with 1 (grey) or 3 (RGB) channels in [-1, 1].
pub fn read_png(path: &Path) -> Result<Image> {
    let p = path.display();
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{p}: cannot open ({e})"))?;
    let mut dec = png::Decoder::new_with_limits(std::io::BufReader::new(file), png::Limits { bytes: MAX_IMAGE_BYTES });
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let broken = |e: png::DecodingError| {
        anyhow::anyhow!("{p}: not a readable PNG ({e}); the file is truncated or corrupt. Fix: re-save or remove it")
    };
    let mut reader = dec.read_info().map_err(broken)?;
    // The header's size is checked before allocating: a corrupt width or height must not allocate gigabytes.
    let (iw, ih) = (reader.info().width as usize, reader.info().height as usize);
    if iw.saturating_mul(ih).saturating_mul(8) > MAX_IMAGE_BYTES {
        bail!(
            "{p}: PNG header says {iw}×{ih} pixels; gsure reads images of at most {} MiB. Fix: resize it first",
            MAX_IMAGE_BYTES >> 20
        );
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(broken)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let (src_c, keep) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        other => bail!("{p}: PNG colour type {other:?} after expansion; expected grey or RGB. Fix: re-save it as 8-bit grey or RGB"),
    };
    if info.bit_depth != png::BitDepth::Eight || info.line_size < w * src_c || buf.len() < info.line_size * h {
        bail!(
            "{p}: PNG decodes to {:?} bits per sample; expected 8. Fix: re-save it as 8-bit grey or RGB",
            info.bit_depth
        );
    }
    // Planar [C, H, W] from interleaved rows (line_size may exceed w·c).
    let mut data = vec![0f32; keep * h * w];
    for y in 0..h {
        let row = &buf[y * info.line_size..y * info.line_size + w * src_c];
        for x in 0..w {
            for c in 0..keep {
                data[(c * h + y) * w + x] = row[x * src_c + c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(Image { data, c: keep, h, w })
}

/// Every PNG of `dir` (or of its class sub-folders), at most `limit`.
pub fn read(dir: &Path, limit: Option<usize>) -> Result<Imported> {
    if !dir.is_dir() {
        bail!(
            "{}: not a folder. Fix: pass a folder of PNG images (or of class sub-folders of PNGs) to --input",
            dir.display()
        );
    }
    let top = pngs_in(dir)?;
    let mut subdirs: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    let mut files: Vec<(PathBuf, Option<usize>)> = top.into_iter().map(|f| (f, None)).collect();
    let mut classes = Vec::new();
    if files.is_empty() {
        for d in subdirs {
            let inner = pngs_in(&d)?;
            if !inner.is_empty() {
                let label = classes.len();
                classes.push(d.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default());
                files.extend(inner.into_iter().map(|f| (f, Some(label))));
            }
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no .png files in this folder or its sub-folders. Fix: pass a folder of PNG images to --input",
            dir.display()
        );
    }
    if let Some(l) = limit {
        files.truncate(l);
    }
    let mut images = Vec::with_capacity(files.len());
    for (f, _) in &files {
        images.push(read_png(f)?);
    }
    let labels = (!classes.is_empty()).then(|| files.iter().map(|(_, l)| l.unwrap_or(0) as f32).collect());
    let mut extra = Map::new();
    if !classes.is_empty() {
        extra.insert("classes".into(), json!(classes));
    }
    let name = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    Ok(Imported { images, labels, source: format!("png:{name}"), extra })
}
