//! CPU twin of kernels/norm.cu: group normalisation with an optional fused SiLU. x is [N, C, S] with S the
//! flattened spatial size; group g of example n is the contiguous slab of (C / G) * S elements at
//! (n * C + g * C/G) * S. Every (n, g) slab is independent, so the work is split over slabs with rayon.
use crate::backend::cpu::{lane_dot, lane_sum, Real};
use rayon::prelude::*;

/// Shape of a group-norm problem.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub n: usize,
    pub c: usize,
    pub groups: usize,
    pub spatial: usize,
}

impl Dims {
    fn cpg(&self) -> usize {
        self.c / self.groups
    }
    /// Elements of one (n, g) slab.
    fn slab(&self) -> usize {
        self.cpg() * self.spatial
    }
}

fn sigmoid<T: Real>(v: T) -> T {
    T::one() / (T::one() + (-v).exp_v())
}

/// Per (n, g): (mean, rstd), two passes (the mean, then the mean of squared deviations: biased variance, as
/// PyTorch), flattened [N, G, 2].
pub fn stats<T: Real>(x: &[T], d: Dims, eps: f64) -> Vec<T> {
    let mut stats = vec![T::zero(); d.n * d.groups * 2];
    let slab = d.slab();
    if slab == 0 {
        return stats;
    }
    stats.par_chunks_mut(2).zip(x.par_chunks(slab)).for_each(|(st, xs)| {
        let m = T::of(slab as f64);
        let mean = lane_sum(xs, |v| v) / m;
        let var = lane_sum(xs, |v| (v - mean) * (v - mean)) / m;
        st[0] = mean;
        st[1] = T::one() / (var + T::of(eps)).sqrt();
    });
    stats
}

/// The normalisation as an affine map per (n, c): [N, C, 2] = (scale, shift) = (rstd γ[c], β[c] − mean
/// rstd γ[c]), so that pre = x scale + shift. The CUDA convolution's prologue reads these (norm.cu's
/// group_norm_scale_shift computes them on the device).
pub fn scale_shift<T: Real>(stats: &[T], gamma: &[T], beta: &[T], d: Dims) -> Vec<T> {
    let mut affine = vec![T::zero(); d.n * d.c * 2];
    for (nc, a) in affine.chunks_mut(2).enumerate() {
        let (n, c) = (nc / d.c, nc % d.c);
        let ng = n * d.groups + c / d.cpg();
        let scale = stats[2 * ng + 1] * gamma[c];
        a[0] = scale;
        a[1] = beta[c] - stats[2 * ng] * scale;
    }
    affine
}

/// y = act(x scale + shift) per (n, c) from [`scale_shift`]'s map, act SiLU if `silu`.
pub fn apply<T: Real>(x: &[T], affine: &[T], d: Dims, silu: bool) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    if d.spatial == 0 {
        return y;
    }
    let rows = y.par_chunks_mut(d.spatial).zip(x.par_chunks(d.spatial)).zip(affine.par_chunks(2));
    rows.for_each(|((yc, xc), a)| {
        let (scale, shift) = (a[0], a[1]);
        // `silu` is tested outside the loops so that each one vectorises
        if silu {
            for (yv, &xv) in yc.iter_mut().zip(xc) {
                let pre = xv * scale + shift;
                *yv = pre * sigmoid(pre);
            }
        } else {
            for (yv, &xv) in yc.iter_mut().zip(xc) {
                *yv = xv * scale + shift;
            }
        }
    });
    y
}

/// Forward: (y, stats) with stats = [N, G, 2] (mean, rstd) per group, saved for the backward.
pub fn forward<T: Real>(x: &[T], gamma: &[T], beta: &[T], d: Dims, eps: f64, silu: bool) -> (Vec<T>, Vec<T>) {
    let st = stats(x, d, eps);
    let y = apply(x, &scale_shift(&st, gamma, beta, d), d, silu);
    (y, st)
}

/// Backward: (dx, dgamma, dbeta) from the forward's inputs, its saved stats and dy. With
/// dpre = dy * silu'(pre) (or dy) and dx̂ = dpre * gamma[c], per group:
/// dx = rstd * (dx̂ - mean(dx̂) - x̂ * mean(dx̂ * x̂)); dgamma[c] = sum dpre * x̂; dbeta[c] = sum dpre.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    stats: &[T],
    dy: &[T],
    d: Dims,
    silu: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (cpg, slab) = (d.cpg(), d.slab());
    let mut dx = vec![T::zero(); x.len()];
    // per-(n, c) partial sums of dpre * x̂ and dpre, reduced over n afterwards in a fixed order
    let mut part = vec![T::zero(); d.n * d.c * 2];
    if slab == 0 {
        return (dx, vec![T::zero(); d.c], vec![T::zero(); d.c]);
    }
    dx.par_chunks_mut(slab).zip(part.par_chunks_mut(cpg * 2)).enumerate().for_each_init(
        || (vec![T::zero(); slab], vec![T::zero(); slab]),
        |(xhat, dpre), (ng, (dxs, pt))| {
            let g = ng % d.groups;
            let (mean, rstd) = (stats[2 * ng], stats[2 * ng + 1]);
            let xs = &x[ng * slab..(ng + 1) * slab];
            let dys = &dy[ng * slab..(ng + 1) * slab];
            // x̂ and dpre once per element (pre is recomputed from x, as the kernel does), then the sums
            let (mut a, mut b) = (T::zero(), T::zero());
            let rows = xhat.chunks_mut(d.spatial).zip(dpre.chunks_mut(d.spatial));
            for (cl, ((xh, dp), (xc, dyc))) in rows.zip(xs.chunks(d.spatial).zip(dys.chunks(d.spatial))).enumerate() {
                let c = g * cpg + cl;
                for (h, &xv) in xh.iter_mut().zip(xc) {
                    *h = (xv - mean) * rstd;
                }
                if silu {
                    let (ga, be) = (gamma[c], beta[c]);
                    for ((p, &h), &dyv) in dp.iter_mut().zip(xh.iter()).zip(dyc) {
                        let pre = h * ga + be;
                        let s = sigmoid(pre);
                        *p = dyv * (s * (T::one() + pre * (T::one() - s)));
                    }
                } else {
                    dp.copy_from_slice(dyc);
                }
                let (p1, p2) = (lane_dot(dp, xh), lane_sum(dp, |v| v));
                pt[2 * cl] = p1;
                pt[2 * cl + 1] = p2;
                a += gamma[c] * p1;
                b += gamma[c] * p2;
            }
            let m = T::of(slab as f64);
            let (mean_dxh_xh, mean_dxh) = (a / m, b / m);
            let rows = dxs.chunks_mut(d.spatial).zip(xhat.chunks(d.spatial).zip(dpre.chunks(d.spatial)));
            for (cl, (dxc, (xh, dp))) in rows.enumerate() {
                let ga = gamma[g * cpg + cl];
                for ((v, &h), &p) in dxc.iter_mut().zip(xh).zip(dp) {
                    *v = rstd * (p * ga - mean_dxh - h * mean_dxh_xh);
                }
            }
        },
    );
    let mut dgamma = vec![T::zero(); d.c];
    let mut dbeta = vec![T::zero(); d.c];
    for n in 0..d.n {
        for c in 0..d.c {
            dgamma[c] += part[(n * d.c + c) * 2];
            dbeta[c] += part[(n * d.c + c) * 2 + 1];
        }
    }
    (dx, dgamma, dbeta)
}
