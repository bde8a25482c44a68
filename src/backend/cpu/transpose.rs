//! Matrix transposes for the CPU twin: dst[c·rows + r] = src[r·cols + c], a [rows, cols] matrix into
//! [cols, rows]. The convolution's weight gradient transposes its input to channels-last with it
//! (`ops/conv/pixel_major.rs`), so it has to cost less than the strided packing it replaces.
//!
//! Measured on the development VM (AMD EPYC, 64 × 1024 f32): a scalar loop over 16 × 16 tiles 0.50 ns a
//! value; 4 × 4 SSE tiles in blocks of 8 rows × 64 columns 0.13 ns. The compiler does not find the
//! shuffles by itself (a portable 4 × 4 array form measured 0.58 ns), hence the intrinsics; f64 (the
//! gradient checks' type) keeps the scalar loop.

/// A block of 8 source rows × 64 source columns (2 KiB of f32): 8 read streams, and the 64 destination
/// runs of 8 values it writes stay in L1 until they are complete.
const BLOCK_ROWS: usize = 8;
const BLOCK_COLS: usize = 64;

/// The portable transpose, block by block.
pub fn tiled<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    for r0 in (0..rows).step_by(BLOCK_ROWS) {
        for c0 in (0..cols).step_by(BLOCK_COLS) {
            for r in r0..(r0 + BLOCK_ROWS).min(rows) {
                for c in c0..(c0 + BLOCK_COLS).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// The f32 transpose: 4 × 4 tiles through SSE registers (part of every x86-64 CPU), scalar edges.
#[cfg(target_arch = "x86_64")]
pub fn f32(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    let (r4, c4) = (rows / 4 * 4, cols / 4 * 4);
    for r0 in (0..r4).step_by(BLOCK_ROWS) {
        for c0 in (0..c4).step_by(BLOCK_COLS) {
            for r in (r0..(r0 + BLOCK_ROWS).min(r4)).step_by(4) {
                for c in (c0..(c0 + BLOCK_COLS).min(c4)).step_by(4) {
                    // SAFETY: r + 3 < rows and c + 3 < cols, so the tile's four loads lie inside
                    // src[..rows·cols] and its four stores inside dst[..rows·cols] (both checked above).
                    unsafe { tile4(src.as_ptr().add(r * cols + c), cols, dst.as_mut_ptr().add(c * rows + r), rows) }
                }
            }
        }
    }
    // the last cols % 4 columns of every row, then the last rows % 4 rows' other columns
    for r in 0..rows {
        for c in c4..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    for r in r4..rows {
        for c in 0..c4 {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn f32(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    tiled(src, rows, cols, dst)
}

/// One 4 × 4 tile: rows s, s + ls, s + 2ls, s + 3ls (4 values each) to the columns of d (row stride ld).
///
/// # Safety
/// The 4 × 4 values read from `s` and written to `d` at those strides must lie inside their allocations.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile4(s: *const f32, ls: usize, d: *mut f32, ld: usize) {
    use std::arch::x86_64::*;
    let (a, b) = (_mm_loadu_ps(s), _mm_loadu_ps(s.add(ls)));
    let (c, e) = (_mm_loadu_ps(s.add(2 * ls)), _mm_loadu_ps(s.add(3 * ls)));
    // interleave pairs of rows: lo = (a0 b0 a1 b1), hi = (a2 b2 a3 b3); then pair the halves
    let (ab_lo, ab_hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
    let (ce_lo, ce_hi) = (_mm_unpacklo_ps(c, e), _mm_unpackhi_ps(c, e));
    _mm_storeu_ps(d, _mm_movelh_ps(ab_lo, ce_lo)); // a0 b0 c0 e0
    _mm_storeu_ps(d.add(ld), _mm_movehl_ps(ce_lo, ab_lo)); // a1 b1 c1 e1
    _mm_storeu_ps(d.add(2 * ld), _mm_movelh_ps(ab_hi, ce_hi)); // a2 b2 c2 e2
    _mm_storeu_ps(d.add(3 * ld), _mm_movehl_ps(ce_hi, ab_hi)); // a3 b3 c3 e3
}

#[cfg(test)]
mod tests {
    #[test]
    fn f32_tiles_and_edges_match_the_plain_loop() {
        for (rows, cols) in [(1, 1), (3, 5), (4, 4), (8, 64), (9, 67), (64, 1024), (130, 7), (5, 130)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let (mut want, mut got) = (vec![-1.0; rows * cols], vec![-1.0; rows * cols]);
            for r in 0..rows {
                for c in 0..cols {
                    want[c * rows + r] = src[r * cols + c];
                }
            }
            super::f32(&src, rows, cols, &mut got);
            assert_eq!(got, want, "{rows}x{cols}");
            super::tiled(&src, rows, cols, &mut got);
            assert_eq!(got, want, "{rows}x{cols} tiled");
        }
    }
}
