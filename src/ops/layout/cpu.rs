//! CPU twins of kernels/layout.cu.
use crate::backend::cpu::Real;
use rayon::prelude::*;

/// Concatenation along axis 1: input `i` is viewed as [rows, row_lens[i]] (row_len = C_i * H * W) and the
/// output row is the inputs' rows side by side.
pub fn concat<T: Real>(parts: &[&[T]], rows: usize, row_lens: &[usize]) -> Vec<T> {
    let total: usize = row_lens.iter().sum();
    let mut out = Vec::with_capacity(rows * total);
    for r in 0..rows {
        for (part, &len) in parts.iter().zip(row_lens) {
            out.extend_from_slice(&part[r * len..(r + 1) * len]);
        }
    }
    out
}

/// Elements [off, off + len) of every row of `x` viewed as [rows, row_len].
pub fn narrow<T: Real>(x: &[T], rows: usize, row_len: usize, off: usize, len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * len);
    for r in 0..rows {
        out.extend_from_slice(&x[r * row_len + off..r * row_len + off + len]);
    }
    out
}

/// The inverse of [`narrow`]: `x` ([rows, len]) placed at [off, off + len) of zero rows of `row_len`.
pub fn pad<T: Real>(x: &[T], rows: usize, row_len: usize, off: usize, len: usize) -> Vec<T> {
    let mut out = vec![T::zero(); rows * row_len];
    for r in 0..rows {
        out[r * row_len + off..r * row_len + off + len].copy_from_slice(&x[r * len..(r + 1) * len]);
    }
    out
}

/// Nearest 2x upsampling times `scale`: [planes, h, w] -> [planes, 2h, 2w].
pub fn upsample2x<T: Real>(x: &[T], planes: usize, h: usize, w: usize, scale: f64) -> Vec<T> {
    let s = T::of(scale);
    let mut out = vec![T::zero(); planes * 4 * h * w];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(o, p)| {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                o[oy * 2 * w + ox] = s * p[(oy / 2) * w + ox / 2];
            }
        }
    });
    out
}

/// Sums of 2x2 windows times `scale`: [planes, 2h, 2w] -> [planes, h, w].
pub fn pool2x<T: Real>(x: &[T], planes: usize, h: usize, w: usize, scale: f64) -> Vec<T> {
    let s = T::of(scale);
    let mut out = vec![T::zero(); planes * h * w];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(h * w).zip(x.par_chunks(4 * h * w)).for_each(|(o, p)| {
        let wi = 2 * w;
        for oy in 0..h {
            for ox in 0..w {
                let t = 2 * oy * wi + 2 * ox;
                o[oy * w + ox] = s * (p[t] + p[t + 1] + p[t + wi] + p[t + wi + 1]);
            }
        }
    });
    out
}
