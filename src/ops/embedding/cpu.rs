//! CPU twin of kernels/embedding.cu. The phase t * freq is formed in f64 whatever the storage type (DDIM
//! timesteps reach ~1000 rad, where f32 phase rounding would show), as the kernel does.
use super::Layout;
use crate::backend::cpu::Real;

fn f64_of<T: Real>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

/// out [n, dim] for t [n].
pub fn fwd<T: Real>(t: &[T], l: Layout) -> Vec<T> {
    let freqs = l.freqs();
    let mut out = vec![T::zero(); t.len() * l.dim];
    for (row, &tv) in out.chunks_mut(l.dim).zip(t) {
        for (k, &f) in freqs.iter().enumerate() {
            let phase = f64_of(tv) * f;
            let (s, c) = (T::of(phase.sin()), T::of(phase.cos()));
            let (first, second) = if l.cos_first { (c, s) } else { (s, c) };
            row[k] = first;
            row[l.half + k] = second;
        }
    }
    out
}

/// dt [n] from the output gradient g [n, dim].
pub fn bwd<T: Real>(t: &[T], g: &[T], l: Layout) -> Vec<T> {
    let freqs = l.freqs();
    t.iter()
        .zip(g.chunks(l.dim))
        .map(|(&tv, gr)| {
            let mut acc = 0.0;
            for (k, &f) in freqs.iter().enumerate() {
                let phase = f64_of(tv) * f;
                // d/dt sin(t f) = f cos(t f); d/dt cos(t f) = -f sin(t f)
                let (ds, dc) = (f * phase.cos(), -f * phase.sin());
                let (d_first, d_second) = if l.cos_first { (dc, ds) } else { (ds, dc) };
                acc += f64_of(gr[k]) * d_first + f64_of(gr[l.half + k]) * d_second;
            }
            T::of(acc)
        })
        .collect()
}
