//! CPU twin of kernels/conv.cu: im2col per image + GEMM (matrixmultiply), parallel over the batch.
//!
//! Per image n, with col = im2col(x[n]) of shape [C_in*K*K, H_out*W_out] (row r = (c, kh, kw), column
//! q = (oh, ow), zero where the window reads padding):
//!   forward  y[n]  = W · col + b            (W viewed as [C_out, C_in*K*K])
//!   dgrad    dx[n] = col2im(W^T · dy[n])    (col2im sums every column entry back onto its input pixel)
//!   wgrad    dW    = sum_n dy[n] · col^T
use super::{pixel_major, Epilogue, Geom};
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

/// col[(c*K + kh)*K + kw][oh*W_out + ow] = x[c, oh*s - p + kh, ow*s - p + kw] (0 outside the image), row r
/// of `col` starting at r·ld.
fn im2col<T: Real>(g: &Geom, x: &[T], col: &mut [T], ld: usize) {
    let (q, k) = (g.ho * g.wo, g.k);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut col[((c * k + kh) * k + kw) * ld..][..q];
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
fn im2col_same<T: Real>(g: &Geom, x: &[T], col: &mut [T], ld: usize) {
    let (hw, k) = (g.h * g.w, g.k);
    for c in 0..g.c {
        let plane = &x[c * hw..(c + 1) * hw];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut col[((c * k + kh) * k + kw) * ld..][..hw];
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
fn col2im_same<T: Real>(g: &Geom, dcol: &mut [T], ld: usize, dx: &mut [T]) {
    let (hw, k) = (g.h * g.w, g.k);
    for c in 0..g.c {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut dcol[((c * k + kh) * k + kw) * ld..][..hw];
                let Some((start, end, src, cols)) = shifted_run(g, kh, kw) else { continue };
                zero_wrapped(g, row, start, end, cols);
                for (d, &s) in plane[src..src + (end - start)].iter_mut().zip(&row[start..end]) {
                    *d += s;
                }
            }
        }
    }
}

/// The adjoint of im2col: dx[c, ih, iw] += dcol[row][q] for every (row, q) that read pixel (ih, iw), row r of
/// `dcol` starting at r·ld; dx starts at zero (the caller's fresh output).
fn col2im<T: Real>(g: &Geom, dcol: &[T], ld: usize, dx: &mut [T]) {
    let (q, k) = (g.ho * g.wo, g.k);
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..k {
            for kw in 0..k {
                let row = &dcol[((c * k + kh) * k + kw) * ld..][..q];
                let (lo, hi) = valid_columns(g, kw);
                if hi <= lo {
                    continue;
                }
                for oh in 0..g.ho {
                    let ih = (oh * g.stride + kh) as isize - g.pad as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let line = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
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

/// A 1×1, stride-1, unpadded convolution reads its input as the column matrix itself: no copy.
pub(super) fn is_pointwise(g: &Geom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// The columns one GEMM should have at least. Below this the GEMM spends as long packing the weights (once
/// per call) and reading and writing its output tile (once per depth block) as multiplying: at `tiny`'s
/// 8×8 level, one image per call made packing 14 % of the whole training step.
const GEMM_COLUMNS: usize = 256;

/// How many images share one GEMM, their column matrices side by side: image j's columns are q..q+Q of a
/// [rows, nb·Q] matrix. Large images (Q ≥ [`GEMM_COLUMNS`]) go one at a time, as they always did.
fn images_per_gemm(g: &Geom, at_most: usize) -> usize {
    (GEMM_COLUMNS / (g.ho * g.wo).max(1)).clamp(1, at_most.max(1))
}

/// `nb` images of `rows` × `q` values each ([nb, rows, q], as the tensors store them) as one [rows, nb·q]
/// matrix, image j in columns j·q..(j+1)·q.
fn side_by_side<T: Real>(images: &[T], rows: usize, q: usize, nb: usize, out: &mut [T]) {
    for (j, image) in images.chunks(rows * q).take(nb).enumerate() {
        for (r, src) in image.chunks(q).enumerate() {
            out[r * nb * q + j * q..][..q].copy_from_slice(src);
        }
    }
}

/// The inverse of [`side_by_side`]: a [rows, nb·q] matrix back to `nb` images [nb, rows, q].
fn stacked<T: Real>(matrix: &[T], rows: usize, q: usize, nb: usize, images: &mut [T]) {
    for (j, image) in images.chunks_mut(rows * q).take(nb).enumerate() {
        for (r, dst) in image.chunks_mut(q).enumerate() {
            dst.copy_from_slice(&matrix[r * nb * q + j * q..][..q]);
        }
    }
}

/// The column matrix [Kd, nb·Q] of the `nb` images in `xs`: the images themselves for one pointwise image,
/// else built in `buf` (Kd·nb·Q elements of scratch, every one of them written here).
fn columns<'a, T: Real>(g: &Geom, xs: &'a [T], nb: usize, buf: &'a mut [T]) -> &'a [T] {
    let (q, image) = (g.ho * g.wo, g.c * g.h * g.w);
    if is_pointwise(g) {
        if nb == 1 {
            return &xs[..image];
        }
        side_by_side(xs, g.c, q, nb, buf);
        return buf;
    }
    for (j, xn) in xs.chunks(image).take(nb).enumerate() {
        let col = &mut buf[j * q..];
        if keeps_size(g) {
            im2col_same(g, xn, col, nb * q);
        } else {
            im2col(g, xn, col, nb * q);
        }
    }
    buf
}

/// Scratch elements [`columns`] needs for `nb` images.
fn columns_len(g: &Geom, nb: usize) -> usize {
    if is_pointwise(g) && nb == 1 {
        0
    } else {
        g.kdim() * nb * g.ho * g.wo
    }
}

/// Images per parallel task for the forward and input-gradient GEMMs: enough columns per GEMM, but never
/// fewer tasks than threads when the batch allows it. (Their results do not depend on it: each output sums
/// over the same depth in the same order however many images share a call.)
fn images_per_task(g: &Geom) -> usize {
    images_per_gemm(g, g.n.div_ceil(rayon::current_num_threads()))
}

/// y = conv(x, w) passed through the epilogue `e` ([`super::Epilogue`]), shape [N, C_out, H_out, W_out].
pub fn fwd<T: Real>(g: &Geom, x: &[T], w: &[T], e: &Epilogue<&[T]>) -> Vec<T> {
    let (q, kd, image) = (g.ho * g.wo, g.kdim(), g.c * g.h * g.w);
    let mut y = vec![T::zero(); g.n * g.co * q];
    if y.is_empty() {
        return y;
    }
    // W^T [Kd, C_out], once per call: the GEMM packs its left operand with a contiguous copy per depth step
    // when the operand's rows are adjacent in memory, one scalar at a time otherwise, in every parallel task
    let mut wt = vec![T::zero(); g.co * kd];
    T::transpose(w, g.co, kd, &mut wt);
    let wt = (&wt[..], 1, g.co as isize);
    let nb = images_per_task(g);
    let tasks = y.par_chunks_mut(nb * g.co * q).zip(x.par_chunks(nb * image));
    tasks.enumerate().for_each(|(task, (ys, xs))| {
        // row r of y is (image, channel) = divmod(r, C_out); this task's rows start at its first image's
        let first_row = task * nb * g.co;
        let nb = xs.len() / image; // the last task may have fewer images
        let staged = if nb == 1 { 0 } else { g.co * nb * q };
        T::with_scratch(columns_len(g, nb) + staged, |buf| {
            let (cols, out) = buf.split_at_mut(columns_len(g, nb));
            let col = columns(g, xs, nb, cols);
            // Y (C_out x nb·Q) = W (C_out x Kd) · col (Kd x nb·Q); one image writes straight into y
            let ld = (nb * q) as isize;
            if nb == 1 {
                T::gemm(g.co, kd, q, wt, (col, ld, 1), T::zero(), (&mut ys[..], ld, 1));
            } else {
                T::gemm(g.co, kd, nb * q, wt, (col, ld, 1), T::zero(), (&mut out[..], ld, 1));
                stacked(out, g.co, q, nb, ys);
            }
        });
        // the epilogue, one row of Q outputs at a time
        for (r, row) in (first_row..).zip(ys.chunks_mut(q)) {
            if let Some(b) = e.bias {
                row.iter_mut().for_each(|v| *v += b[r % g.co]);
            }
            if let Some(pi) = e.per_image {
                row.iter_mut().for_each(|v| *v += pi[r]);
            }
            if let Some(res) = e.residual {
                row.iter_mut().zip(&res[r * q..(r + 1) * q]).for_each(|(v, &s)| *v += s);
            }
            if e.scale != 1.0 {
                let s = T::of(e.scale);
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
    });
    y
}

/// dx = conv^T(dy, w), shape [N, C_in, H, W].
pub fn dgrad<T: Real>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let (q, kd, image) = (g.ho * g.wo, g.kdim(), g.c * g.h * g.w);
    let mut dx = vec![T::zero(); g.n * image];
    if dx.is_empty() {
        return dx;
    }
    let nb = images_per_task(g);
    dx.par_chunks_mut(nb * image).zip(dy.par_chunks(nb * g.co * q)).for_each(|(dxs, dys)| {
        let nb = dxs.len() / image;
        // dcol (Kd x nb·Q) = W^T (Kd x C_out; W read with swapped strides) · dy (C_out x nb·Q); for one
        // pointwise image dcol is dx[n] itself.
        let wt = (w, 1, kd as isize);
        let ld = (nb * q) as isize;
        if is_pointwise(g) && nb == 1 {
            T::gemm(kd, g.co, q, wt, (dys, ld, 1), T::zero(), (dxs, ld, 1));
            return;
        }
        let staged = if nb == 1 { 0 } else { g.co * nb * q };
        T::with_scratch(kd * nb * q + staged, |buf| {
            let (dcol, dyb) = buf.split_at_mut(kd * nb * q);
            let dyb = if nb == 1 {
                dys
            } else {
                side_by_side(dys, g.co, q, nb, dyb);
                &*dyb
            };
            T::gemm(kd, g.co, nb * q, wt, (dyb, ld, 1), T::zero(), (&mut dcol[..], ld, 1));
            if is_pointwise(g) {
                stacked(dcol, g.c, q, nb, dxs);
                return;
            }
            for (j, dxn) in dxs.chunks_mut(image).enumerate() {
                if keeps_size(g) {
                    col2im_same(g, &mut dcol[j * q..], nb * q, dxn);
                } else {
                    col2im(g, &dcol[j * q..], nb * q, dxn);
                }
            }
        })
    });
    dx
}

/// dW = sum_n dy[n] · im2col(x[n])^T, shape [C_out, C_in, K, K]. The batch is cut into runs of a length set
/// by the shape alone (never by the thread count), each summed into its own buffer in parallel, images
/// side by side in groups of [`images_per_gemm`], and the partial sums are added in run order: the result
/// is bit-identical from run to run and machine to machine, which resumable training needs.
///
/// The column matrix is built pixel-major with the taps ordered (kh, kw, c) ([`pixel_major`]): the GEMM
/// then packs it with contiguous copies. The products and their order are those of dy · im2col^T; only
/// the columns of the result are permuted, and put back in NCHW order once at the end.
pub fn wgrad<T: Real>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    const RUNS: usize = 8;
    let (q, kd, image) = (g.ho * g.wo, g.kdim(), g.c * g.h * g.w);
    let zero = || vec![T::zero(); g.co * kd];
    if g.co * kd == 0 || g.n == 0 {
        return zero();
    }
    let nb = images_per_gemm(g, g.n);
    let per_run = g.n.div_ceil(RUNS).max(nb);
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(per_run))
        .into_par_iter()
        .map(|r| {
            let mut dwt = zero();
            let images = r * per_run..((r + 1) * per_run).min(g.n);
            for first in images.clone().step_by(nb) {
                let nb = nb.min(images.end - first);
                let staged = if nb == 1 { 0 } else { g.co * nb * q };
                T::with_scratch(kd * nb * q + image + staged, |buf| {
                    let (rows, rest) = buf.split_at_mut(kd * nb * q);
                    let (xt, dyb) = rest.split_at_mut(image);
                    pixel_major::columns(g, &x[first * image..(first + nb) * image], nb, xt, rows);
                    let dys = &dy[first * g.co * q..(first + nb) * g.co * q];
                    let dyb = if nb == 1 {
                        dys
                    } else {
                        side_by_side(dys, g.co, q, nb, dyb);
                        &*dyb
                    };
                    // dWt (C_out x Kd) += dy (C_out x nb·Q) · rows (nb·Q x Kd). dy packs one scalar at a
                    // time (its depth is contiguous) but is C_out wide against the rows' Kd; transposing it
                    // too measured no faster.
                    let (ld, kd_) = ((nb * q) as isize, kd as isize);
                    T::gemm(g.co, nb * q, kd, (dyb, ld, 1), (rows, kd_, 1), T::one(), (&mut dwt[..], kd_, 1));
                });
            }
            dwt
        })
        .collect();
    let mut dwt = zero();
    for p in partials {
        for (a, b) in dwt.iter_mut().zip(p) {
            *a += b;
        }
    }
    pixel_major::taps_to_nchw(g, &dwt)
}
