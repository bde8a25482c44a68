//! CPU twin of kernels/dropout.cu: the same counter-based hash, so both backends drop the same elements.
use super::Mask;
use crate::backend::cpu::Real;
use rayon::prelude::*;

pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 output function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 24 bits of the i-th draw of the stream `key`: uniform(seed, i) = bits24 / 2^24.
pub fn bits24(key: u64, i: u64) -> u32 {
    (mix64(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN))) >> 40) as u32
}

/// y = keep(i) ? x * scale : 0 (forward on x, backward on the output gradient).
pub fn apply<T: Real>(x: &[T], m: Mask) -> Vec<T> {
    let scale = T::of(m.scale);
    const CHUNK: usize = 1 << 14;
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).enumerate().for_each(|(c, (o, xs))| {
        for (j, (o, &v)) in o.iter_mut().zip(xs).enumerate() {
            if bits24(m.key, (c * CHUNK + j) as u64) >= m.threshold {
                *o = v * scale;
            }
        }
    });
    out
}
