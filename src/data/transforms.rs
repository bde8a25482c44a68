//! Image transforms used by the importers, on one image [C, H, W] of f32: centre crop, centre pad, resize
//! (bilinear or area), greyscale, and the seeded train/test split.
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// One image [C, H, W] in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub data: Vec<f32>,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Image {
    pub fn new(data: Vec<f32>, c: usize, h: usize, w: usize) -> Result<Image> {
        if data.len() != c * h * w {
            bail!("image: {} values for [C={c}, H={h}, W={w}]", data.len());
        }
        Ok(Image { data, c, h, w })
    }
    fn at(&self, ch: usize, y: usize, x: usize) -> f32 {
        self.data[(ch * self.h + y) * self.w + x]
    }
}

/// How `--size S` brings an image to S×S.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Centre-crop to a square, then area-average when shrinking and bilinear when enlarging.
    Auto,
    /// Centre-crop to a square, then bilinear interpolation.
    Bilinear,
    /// Centre-crop to a square, then area averaging (exact box filter with fractional overlaps).
    Area,
    /// No resampling: centre-pad (with `pad_value`) or centre-crop each side to S (MNIST 28 → 32).
    Pad,
}

/// The centre `th`×`tw` window (each side at most the image's).
pub fn center_crop(img: &Image, th: usize, tw: usize) -> Image {
    let (th, tw) = (th.min(img.h), tw.min(img.w));
    let (y0, x0) = ((img.h - th) / 2, (img.w - tw) / 2);
    let mut data = Vec::with_capacity(img.c * th * tw);
    for ch in 0..img.c {
        for y in 0..th {
            let row = (ch * img.h + y0 + y) * img.w + x0;
            data.extend_from_slice(&img.data[row..row + tw]);
        }
    }
    Image { data, c: img.c, h: th, w: tw }
}

/// The image centred in a `th`×`tw` canvas filled with `value` (each side at least the image's).
pub fn center_pad(img: &Image, th: usize, tw: usize, value: f32) -> Image {
    let (th, tw) = (th.max(img.h), tw.max(img.w));
    let (y0, x0) = ((th - img.h) / 2, (tw - img.w) / 2);
    let mut data = vec![value; img.c * th * tw];
    for ch in 0..img.c {
        for y in 0..img.h {
            let src = (ch * img.h + y) * img.w;
            let dst = (ch * th + y0 + y) * tw + x0;
            data[dst..dst + img.w].copy_from_slice(&img.data[src..src + img.w]);
        }
    }
    Image { data, c: img.c, h: th, w: tw }
}

/// Bilinear resize with pixel centres at half-integers (the `align_corners = false` convention), clamping
/// at the borders.
pub fn resize_bilinear(img: &Image, th: usize, tw: usize) -> Image {
    let sy = img.h as f64 / th as f64;
    let sx = img.w as f64 / tw as f64;
    let taps = |t: usize, s: f64, n: usize| {
        let f = ((t as f64 + 0.5) * s - 0.5).clamp(0.0, (n - 1) as f64);
        let i0 = f.floor() as usize;
        (i0, (i0 + 1).min(n - 1), (f - i0 as f64) as f32)
    };
    let xs: Vec<_> = (0..tw).map(|x| taps(x, sx, img.w)).collect();
    let mut data = Vec::with_capacity(img.c * th * tw);
    for ch in 0..img.c {
        for y in 0..th {
            let (y0, y1, fy) = taps(y, sy, img.h);
            for &(x0, x1, fx) in &xs {
                let top = img.at(ch, y0, x0) * (1.0 - fx) + img.at(ch, y0, x1) * fx;
                let bot = img.at(ch, y1, x0) * (1.0 - fx) + img.at(ch, y1, x1) * fx;
                data.push(top * (1.0 - fy) + bot * fy);
            }
        }
    }
    Image { data, c: img.c, h: th, w: tw }
}

/// Weights of the source cells overlapping each target cell when `n` cells are mapped onto `t` cells.
fn area_weights(n: usize, t: usize) -> Vec<Vec<(usize, f64)>> {
    let s = n as f64 / t as f64;
    (0..t)
        .map(|i| {
            let (a, b) = (i as f64 * s, (i + 1) as f64 * s);
            let mut w = Vec::new();
            let mut j = a.floor() as usize;
            while (j as f64) < b && j < n {
                let overlap = (b.min(j as f64 + 1.0) - a.max(j as f64)).max(0.0);
                if overlap > 0.0 {
                    w.push((j, overlap / s));
                }
                j += 1;
            }
            w
        })
        .collect()
}

/// Area (box-filter) resize: each target pixel is the mean of the source area it covers, fractional cells
/// weighted by their overlap. Exact for integer factors; for enlargement it reduces to nearest neighbour.
pub fn resize_area(img: &Image, th: usize, tw: usize) -> Image {
    let wy = area_weights(img.h, th);
    let wx = area_weights(img.w, tw);
    let mut data = Vec::with_capacity(img.c * th * tw);
    for ch in 0..img.c {
        for ry in &wy {
            for rx in &wx {
                let mut acc = 0.0f64;
                for &(y, a) in ry {
                    for &(x, b) in rx {
                        acc += a * b * img.at(ch, y, x) as f64;
                    }
                }
                data.push(acc as f32);
            }
        }
    }
    Image { data, c: img.c, h: th, w: tw }
}

/// Brings an image to `size`×`size` by `mode` (see [`Resize`]).
pub fn fit(img: &Image, size: usize, mode: Resize, pad_value: f32) -> Image {
    if mode == Resize::Pad {
        return center_pad(&center_crop(img, size, size), size, size, pad_value);
    }
    let side = img.h.min(img.w);
    let sq = center_crop(img, side, side);
    if side == size {
        return sq;
    }
    match mode {
        Resize::Bilinear => resize_bilinear(&sq, size, size),
        Resize::Area => resize_area(&sq, size, size),
        _ if size < side => resize_area(&sq, size, size),
        _ => resize_bilinear(&sq, size, size),
    }
}

/// Luma (ITU-R BT.601 weights) of an RGB image; a one-channel image is returned unchanged.
pub fn greyscale(img: &Image) -> Image {
    if img.c != 3 {
        return img.clone();
    }
    let n = img.h * img.w;
    let data = (0..n).map(|i| 0.299 * img.data[i] + 0.587 * img.data[n + i] + 0.114 * img.data[2 * n + i]).collect();
    Image { data, c: 1, h: img.h, w: img.w }
}

/// Replicates a one-channel image into three (to mix greyscale and RGB images in one set).
pub fn to_rgb(img: &Image) -> Image {
    if img.c != 1 {
        return img.clone();
    }
    let mut data = Vec::with_capacity(3 * img.data.len());
    for _ in 0..3 {
        data.extend_from_slice(&img.data);
    }
    Image { data, c: 3, h: img.h, w: img.w }
}

/// A seeded split of 0..n into (train, test) index lists, each in increasing order; the test part holds
/// round(n · test_fraction) items.
pub fn split_indices(n: usize, test_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        bail!("split: test fraction {test_fraction}; it must be in [0, 1)");
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let n_test = ((n as f64) * test_fraction).round() as usize;
    let mut test = order[..n_test].to_vec();
    let mut train = order[n_test..].to_vec();
    test.sort_unstable();
    train.sort_unstable();
    Ok((train, test))
}
