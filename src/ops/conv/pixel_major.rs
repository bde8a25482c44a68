//! The weight gradient's column matrix with the pixels as rows (im2row), for the CPU twin.
//!
//! dW = dy · colᵀ sums over pixels, and in NCHW the pixels are the contiguous axis of both operands. A GEMM
//! that packs its operands (matrixmultiply) copies a matrix whose reduction axis is contiguous one scalar at
//! a time (measured: the packing took as long as the multiply in the weight gradient). Built with the pixels
//! as rows and the taps ordered (kh, kw, c), the matrix is row-major in the GEMM's sense and packs with
//! contiguous copies; each of its rows is K² runs of C contiguous values of the input in channels-last
//! order, so the input is transposed once (C·H·W values, K² times fewer than the matrix) instead.
use super::Geom;
use crate::backend::cpu::Real;

/// Row q = oh·W_out + ow of the pixel-major column matrix of one image, from its channels-last input
/// `xt` [H·W, C]: rows[q][(kh·K + kw)·C + c] = x[c, oh·s − p + kh, ow·s − p + kw], zero outside the image.
/// Row q starts at q·ld.
pub fn im2row<T: Real>(g: &Geom, xt: &[T], rows: &mut [T], ld: usize) {
    let (c, k) = (g.c, g.k);
    for oh in 0..g.ho {
        for ow in 0..g.wo {
            let row = &mut rows[(oh * g.wo + ow) * ld..][..k * k * c];
            for kh in 0..k {
                let ih = (oh * g.stride + kh).wrapping_sub(g.pad);
                for kw in 0..k {
                    let iw = (ow * g.stride + kw).wrapping_sub(g.pad);
                    let tap = &mut row[(kh * k + kw) * c..][..c];
                    // ih and iw wrapped around to huge values where they were negative
                    if ih < g.h && iw < g.w {
                        tap.copy_from_slice(&xt[(ih * g.w + iw) * c..][..c]);
                    } else {
                        tap.fill(T::zero());
                    }
                }
            }
        }
    }
}

/// The pixel-major column matrix [nb·Q, K²·C] of the `nb` images in `xs` (NCHW), image j in rows
/// j·Q..(j+1)·Q. `xt` is scratch of C·H·W values (unused when the convolution is pointwise: its matrix is
/// the channels-last input itself).
pub fn columns<T: Real>(g: &Geom, xs: &[T], nb: usize, xt: &mut [T], out: &mut [T]) {
    let (hw, q, kd) = (g.h * g.w, g.ho * g.wo, g.kdim());
    for (j, xn) in xs.chunks(g.c * hw).take(nb).enumerate() {
        let dst = &mut out[j * q * kd..(j + 1) * q * kd];
        if super::cpu::is_pointwise(g) {
            T::transpose(xn, g.c, hw, dst);
        } else {
            T::transpose(xn, g.c, hw, xt);
            im2row(g, xt, dst, kd);
        }
    }
}

/// dW [C_out, C, K, K] from the weight gradient computed with taps ordered (kh, kw, c): dwt[o][(kh·K + kw)·C
/// + c] = dw[o][(c·K + kh)·K + kw].
pub fn taps_to_nchw<T: Real>(g: &Geom, dwt: &[T]) -> Vec<T> {
    let (k2, kd) = (g.k * g.k, g.kdim());
    let mut dw = vec![T::zero(); g.co * kd];
    // per output channel, src is [K², C] and dst [C, K²]
    for (src, dst) in dwt.chunks(kd).zip(dw.chunks_mut(kd)) {
        T::transpose(src, k2, g.c, dst);
    }
    dw
}
