//! CPU twin of kernels/gsure_loss.cu (the definition of the fused GSURE loss).
use crate::backend::cpu::Real;
use rayon::prelude::*;

/// The element inputs of one call, all [rows, m] (row-major, m coordinates per example).
pub struct Inputs<'a, T> {
    pub d: &'a [T],
    pub de: &'a [T],
    pub r: &'a [T],
    pub obs: &'a [T],
    pub w2: &'a [T],
    /// ν, or None for a factor 1 in the divergence coefficient.
    pub nu: Option<&'a [T]>,
    pub b: &'a [T],
}

/// loss[row] = (1/m) Σ_i o w2 (c_fid (d − r)² + c_div ν b (de − d)), coef = [(c_fid, c_div)] per row.
pub fn gsure_fwd<T: Real>(x: &Inputs<T>, coef: &[f64], m: usize) -> Vec<T> {
    let inv_m = T::of(1.0 / m as f64);
    (0..coef.len() / 2)
        .into_par_iter()
        .map(|row| {
            let (c_fid, c_div) = (T::of(coef[2 * row]), T::of(coef[2 * row + 1]));
            let mut acc = T::zero();
            for i in row * m..(row + 1) * m {
                let ow = x.obs[i] * x.w2[i];
                let nu = x.nu.map_or(T::one(), |v| v[i]);
                let diff = x.d[i] - x.r[i];
                acc += ow * (c_fid * diff * diff + c_div * nu * x.b[i] * (x.de[i] - x.d[i]));
            }
            acc * inv_m
        })
        .collect()
}

/// (dd, dde) for the upstream per-example gradient g [rows]:
/// dde = g/m · c_div o w2 ν b, dd = g/m · 2 c_fid o w2 (d − r) − dde.
pub fn gsure_bwd<T: Real>(x: &Inputs<T>, coef: &[f64], g: &[T], m: usize) -> (Vec<T>, Vec<T>) {
    let mut dd = vec![T::zero(); x.d.len()];
    let mut dde = vec![T::zero(); x.d.len()];
    dd.par_chunks_mut(m).zip(dde.par_chunks_mut(m)).enumerate().for_each(|(row, (dd, dde))| {
        let gs = g[row] * T::of(1.0 / m as f64);
        let (c_fid2, c_div) = (T::of(2.0 * coef[2 * row]) * gs, T::of(coef[2 * row + 1]) * gs);
        for k in 0..m {
            let i = row * m + k;
            let ow = x.obs[i] * x.w2[i];
            let div = c_div * ow * x.nu.map_or(T::one(), |v| v[i]) * x.b[i];
            dde[k] = div;
            dd[k] = c_fid2 * ow * (x.d[i] - x.r[i]) - div;
        }
    });
    (dd, dde)
}
