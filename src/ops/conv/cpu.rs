//! CPU twin of kernels/conv.cu: im2col per image + GEMM (matrixmultiply), parallel over the batch.
//!
//! Per image n, with col = im2col(x[n]) of shape [C_in*K*K, H_out*W_out] (row r = (c, kh, kw), column
//! q = (oh, ow), zero where the window reads padding):
//!   forward  y[n]  = W · col + b            (W viewed as [C_out, C_in*K*K])
//!   dgrad    dx[n] = col2im(W^T · dy[n])    (col2im sums every column entry back onto its input pixel)
//!   wgrad    dW    = sum_n dy[n] · col^T
use super::Geom;
use crate::backend::cpu::Real;
use rayon::prelude::*;

/// The output columns [lo, hi) whose tap `kw` reads inside the image (0 ≤ ow·s − p + kw < W), so that the
/// copy loops below carry no per-pixel bounds test (hi ≤ lo when no column does).
fn valid_columns(g: &Geom, kw: usize) -> (usize, usize) {
    // ow·s ≥ p − kw  ⇔  ow ≥ ⌈(p − kw)/s⌉;  ow·s + kw − p ≤ W − 1  ⇔  ow ≤ ⌊(W − 1 + p − kw)/s⌋.
    let lo = g.pad.saturating_sub(kw).div_ceil(g.stride);
    let hi = if g.w + g.pad > kw { ((g.w - 1 + g.pad - kw) / g.stride + 1).min(g.wo) } else { 0 };
    (lo.min(g.wo), hi)
}

/// col[(c*K + kh)*K + kw][oh*W_out + ow] = x[c, oh*s - p + kh, ow*s - p + kw] (0 outside the image).
fn im2col<T: Real>(g: &Geom, x: &[T], col: &mut [T]) {
    let (q, k) = (g.ho * g.wo, g.k);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut col[((c * k + kh) * k + kw) * q..][..q];
                let (lo, hi) = valid_columns(g, kw);
                for oh in 0..g.ho {
                    let ih = (oh * g.stride + kh) as isize - g.pad as isize;
                    let out = &mut row[oh * g.wo..(oh + 1) * g.wo];
                    if ih < 0 || ih >= g.h as isize {
                        out.fill(T::zero());
                        continue;
                    }
                    let line = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    out[..lo].fill(T::zero());
                    out[hi.max(lo)..].fill(T::zero());
                    if hi <= lo {
                        continue;
                    }
                    if g.stride == 1 {
                        // One contiguous run of the input row: a memcpy instead of a strided gather.
                        out[lo..hi].copy_from_slice(&line[lo + kw - g.pad..hi + kw - g.pad]);
                    } else {
                        for (ow, o) in (lo..hi).zip(&mut out[lo..hi]) {
                            *o = line[ow * g.stride + kw - g.pad];
                        }
                    }
                }
            }
        }
    }
}

/// A stride-1 convolution that keeps the image size (2p = K − 1, the U-Nets' 3×3 layers). Its im2col row
/// (c, kh, kw) is the input plane shifted by a constant offset (kh − p) W + (kw − p), so a whole row is one
/// contiguous run of the plane, apart from the entries that wrapped around a row edge.
fn keeps_size(g: &Geom) -> bool {
    g.stride == 1 && g.wo == g.w && g.ho == g.h
}

/// For [`keeps_size`] geometry and tap (kh, kw): the output run [start, end) (indices oh·W + ow) that one
/// contiguous copy fills, the plane index it starts reading at, and the valid columns [lo, hi) of each row
/// (entries of [start, end) outside them wrapped around a row edge). None when the tap reads no pixel.
fn shifted_run(g: &Geom, kh: usize, kw: usize) -> Option<(usize, usize, usize, (usize, usize))> {
    // output rows whose input row oh + kh − p lies in [0, H)
    let (oh_lo, oh_hi) = (g.pad.saturating_sub(kh), (g.h + g.pad).saturating_sub(kh).min(g.h));
    let (lo, hi) = valid_columns(g, kw);
    if oh_hi <= oh_lo || hi <= lo {
        return None;
    }
    let (start, end) = (oh_lo * g.w + lo, (oh_hi - 1) * g.w + hi);
    // oh_lo + kh ≥ p and lo + kw ≥ p by construction, so this cannot underflow
    let src = (oh_lo + kh - g.pad) * g.w + lo + kw - g.pad;
    Some((start, end, src, (lo, hi)))
}

/// Zeroes the entries of an im2col row that a contiguous shifted copy filled across a row edge.
fn zero_wrapped<T: Real>(g: &Geom, row: &mut [T], start: usize, end: usize, (lo, hi): (usize, usize)) {
    let first = start - start % g.w;
    let last = end.div_ceil(g.w) * g.w;
    // a strided store per wrapped column (at most 2p of them), not two tiny memsets per image row
    for j in (0..lo).chain(hi..g.w) {
        for v in row[first + j..last].iter_mut().step_by(g.w) {
            *v = T::zero();
        }
    }
}

/// im2col for [`keeps_size`] geometry: one copy per row plus the wrapped edges, instead of one per image row.
fn im2col_same<T: Real>(g: &Geom, x: &[T], col: &mut [T]) {
    let (hw, k) = (g.h * g.w, g.k);
    for c in 0..g.c {
        let plane = &x[c * hw..(c + 1) * hw];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut col[((c * k + kh) * k + kw) * hw..][..hw];
                let Some((start, end, src, cols)) = shifted_run(g, kh, kw) else {
                    row.fill(T::zero());
                    continue;
                };
                row[..start].fill(T::zero());
                row[end..].fill(T::zero());
                row[start..end].copy_from_slice(&plane[src..src + (end - start)]);
                zero_wrapped(g, row, start, end, cols);
            }
        }
    }
}

/// The adjoint of [`im2col_same`]: the wrapped entries of each dcol row are zeroed (dcol is scratch), then the
/// row is added onto the plane (zero to begin with) in one contiguous, vectorised run.
fn col2im_same<T: Real>(g: &Geom, dcol: &mut [T], dx: &mut [T]) {
    let (hw, k) = (g.h * g.w, g.k);
    for c in 0..g.c {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut dcol[((c * k + kh) * k + kw) * hw..][..hw];
                let Some((start, end, src, cols)) = shifted_run(g, kh, kw) else { continue };
                zero_wrapped(g, row, start, end, cols);
                for (d, &s) in plane[src..src + (end - start)].iter_mut().zip(&row[start..end]) {
                    *d += s;
                }
            }
        }
    }
}

/// A 1×1, stride-1, unpadded convolution reads its input as the column matrix itself: no copy.
fn is_pointwise(g: &Geom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// Elements of the scratch column matrix one image needs (none for a pointwise convolution).
fn columns_len(g: &Geom) -> usize {
    if is_pointwise(g) {
        0
    } else {
        g.kdim() * g.ho * g.wo
    }
}

/// The column matrix of one image: the image itself for a pointwise convolution, else im2col into `buf`
/// ([`columns_len`] elements of scratch, every one of them written here).
fn columns<'a, T: Real>(g: &Geom, xn: &'a [T], buf: &'a mut [T]) -> &'a [T] {
    if is_pointwise(g) {
        return xn;
    }
    if keeps_size(g) {
        im2col_same(g, xn, buf);
    } else {
        im2col(g, xn, buf);
    }
    buf
}

/// The adjoint of im2col: dx[c, ih, iw] += dcol[row][q] for every (row, q) that read pixel (ih, iw); dx
/// starts at zero (the caller's fresh output).
fn col2im<T: Real>(g: &Geom, dcol: &[T], dx: &mut [T]) {
    let (q, k) = (g.ho * g.wo, g.k);
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..k {
            for kw in 0..k {
                let row = &dcol[((c * k + kh) * k + kw) * q..][..q];
                let (lo, hi) = valid_columns(g, kw);
                for oh in 0..g.ho {
                    let ih = (oh * g.stride + kh) as isize - g.pad as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let line = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    if hi <= lo {
                        continue;
                    }
                    let src = &row[oh * g.wo + lo..oh * g.wo + hi];
                    if g.stride == 1 {
                        // Contiguous on both sides, so the compiler vectorises the add.
                        for (d, &s) in line[lo + kw - g.pad..hi + kw - g.pad].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (ow, &s) in (lo..hi).zip(src) {
                            line[ow * g.stride + kw - g.pad] += s;
                        }
                    }
                }
            }
        }
    }
}

/// y = conv(x, w) + b, shape [N, C_out, H_out, W_out].
pub fn fwd<T: Real>(g: &Geom, x: &[T], w: &[T], b: Option<&[T]>) -> Vec<T> {
    let q = g.ho * g.wo;
    let mut y = vec![T::zero(); g.n * g.co * q];
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(g.co * q)
        .zip(x.par_chunks(g.c * g.h * g.w))
        .for_each(|(yn, xn)| T::with_scratch(columns_len(g), |buf| conv_image(g, xn, w, b, buf, yn)));
    y
}

/// y[n] for one image, its column matrix built in `buf`.
fn conv_image<T: Real>(g: &Geom, xn: &[T], w: &[T], b: Option<&[T]>, buf: &mut [T], yn: &mut [T]) {
    let (q, kd) = (g.ho * g.wo, g.kdim());
    {
        let col = columns(g, xn, buf);
        if let Some(b) = b {
            for (row, &bv) in yn.chunks_mut(q).zip(b) {
                row.fill(bv);
            }
        }
        let beta = if b.is_some() { T::one() } else { T::zero() };
        // y[n] (C_out x Q) = W (C_out x Kd) · col (Kd x Q) [+ bias already in y[n]]
        T::gemm(g.co, kd, q, (w, kd as isize, 1), (col, q as isize, 1), beta, (yn, q as isize, 1));
    }
}

/// dx = conv^T(dy, w), shape [N, C_in, H, W].
pub fn dgrad<T: Real>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let (q, kd) = (g.ho * g.wo, g.kdim());
    let mut dx = vec![T::zero(); g.n * g.c * g.h * g.w];
    if dx.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(g.c * g.h * g.w).zip(dy.par_chunks(g.co * q)).for_each(|(dxn, dyn_)| {
        // dcol (Kd x Q) = W^T (Kd x C_out; W read with swapped strides) · dy[n] (C_out x Q); for a
        // pointwise convolution dcol is dx[n] itself.
        let wt = (w, 1, kd as isize);
        if is_pointwise(g) {
            T::gemm(kd, g.co, q, wt, (dyn_, q as isize, 1), T::zero(), (dxn, q as isize, 1));
            return;
        }
        T::with_scratch(kd * q, |dcol| {
            T::gemm(kd, g.co, q, wt, (dyn_, q as isize, 1), T::zero(), (dcol, q as isize, 1));
            if keeps_size(g) {
                col2im_same(g, dcol, dxn);
            } else {
                col2im(g, dcol, dxn);
            }
        })
    });
    dx
}

/// dW = sum_n dy[n] · im2col(x[n])^T, shape [C_out, C_in, K, K]. The batch is cut into a fixed number of
/// runs (independent of the thread count), each summed into its own buffer in parallel, and the partial
/// sums are added in run order: the result is bit-identical from run to run, which resumable training needs.
pub fn wgrad<T: Real>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    const RUNS: usize = 8;
    let (q, kd) = (g.ho * g.wo, g.kdim());
    let zero = || vec![T::zero(); g.co * kd];
    if g.co * kd == 0 || g.n == 0 {
        return zero();
    }
    let per_run = g.n.div_ceil(RUNS);
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(per_run))
        .into_par_iter()
        .map(|r| {
            let mut dw = zero();
            T::with_scratch(columns_len(g), |buf| {
                for n in r * per_run..((r + 1) * per_run).min(g.n) {
                    let col = columns(g, &x[n * g.c * g.h * g.w..(n + 1) * g.c * g.h * g.w], buf);
                    let dyn_ = &dy[n * g.co * q..(n + 1) * g.co * q];
                    // dW (C_out x Kd) += dy[n] (C_out x Q) · col^T (Q x Kd; col read with swapped strides)
                    let dwv = (&mut dw[..], kd as isize, 1);
                    T::gemm(g.co, q, kd, (dyn_, q as isize, 1), (col, 1, q as isize), T::one(), dwv);
                }
            });
            dw
        })
        .collect();
    let mut dw = zero();
    for p in partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    dw
}
