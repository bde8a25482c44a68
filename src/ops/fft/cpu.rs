//! CPU reference of the centred unitary 2-D DFT: a mixed-radix (4, 2, 3, 5) Stockham FFT over the rows,
//! then over the columns, with the centring (ifftshift before, fftshift after) done as index maps on load and
//! store. Sizes must factor into 2, 3 and 5 (the op refuses others before getting here; see `radices`).
//!
//! The same stage decomposition, butterflies and index maps are used by kernels/fft.cu, so the tests of
//! this file (against a naive f64 DFT) also vouch for the formulas the kernels mirror.
use crate::backend::cpu::Real;
use rayon::prelude::*;

/// A complex number as (re, im).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct C<T> {
    pub re: T,
    pub im: T,
}

impl<T: Real> C<T> {
    fn new(re: T, im: T) -> Self {
        C { re, im }
    }
    fn add(self, o: Self) -> Self {
        C::new(self.re + o.re, self.im + o.im)
    }
    fn sub(self, o: Self) -> Self {
        C::new(self.re - o.re, self.im - o.im)
    }
    fn mul(self, o: Self) -> Self {
        C::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    fn scale(self, s: T) -> Self {
        C::new(self.re * s, self.im * s)
    }
    /// self * (sigma * i) for sigma = ±1: (x + iy)(σi) = σ(-y + ix).
    fn mul_si(self, sigma: T) -> Self {
        C::new(-self.im * sigma, self.re * sigma)
    }
}

/// The radices of the Stockham stages for a length `n`, in the order the stages run: 4 while 4 divides what
/// is left, then 2, 3, 5. None when `n` has another prime factor (or is 0). Length 1 has no stage.
/// kernels/fft.cu picks the radix of each stage by the same rule.
pub fn radices(n: usize) -> Option<Vec<usize>> {
    if n == 0 {
        return None;
    }
    let mut rem = n;
    let mut out = Vec::new();
    while rem > 1 {
        let p = if rem % 4 == 0 {
            4
        } else if rem % 2 == 0 {
            2
        } else if rem % 3 == 0 {
            3
        } else if rem % 5 == 0 {
            5
        } else {
            return None;
        };
        out.push(p);
        rem /= p;
    }
    Some(out)
}

/// One Stockham stage: radix `p`, `l_prev` = product of the radices before it.
struct Stage<T> {
    p: usize,
    l_prev: usize,
    /// twiddles[k1 * p + q] = exp(sigma 2πi q k1 / (l_prev p)), computed in f64.
    twiddles: Vec<C<T>>,
}

/// A length-`n` transform in one direction (sigma = -1 forward, +1 inverse), unscaled.
pub struct Plan<T> {
    n: usize,
    sigma: T,
    stages: Vec<Stage<T>>,
}

impl<T: Real> Plan<T> {
    /// Panics on unsupported sizes; the op validates them first.
    pub fn new(n: usize, inverse: bool) -> Plan<T> {
        let sigma = if inverse { 1.0 } else { -1.0 };
        let mut stages = Vec::new();
        let mut l_prev = 1;
        for p in radices(n).expect("fft: unsupported size reached the CPU plan") {
            let l = l_prev * p;
            let mut twiddles = Vec::with_capacity(l);
            for k1 in 0..l_prev {
                for q in 0..p {
                    let a = sigma * 2.0 * std::f64::consts::PI * ((q * k1) as f64) / (l as f64);
                    twiddles.push(C::new(T::of(a.cos()), T::of(a.sin())));
                }
            }
            stages.push(Stage { p, l_prev, twiddles });
            l_prev = l;
        }
        Plan { n, sigma: T::of(sigma), stages }
    }

    /// Unscaled DFT of `data` in place (out[k] = Σ_j in[j] exp(sigma 2πi jk/n)); `tmp` is scratch of length n.
    ///
    /// Stockham decimation in time: before a stage of radix p, the data holds r_prev = n / l_prev interleaved
    /// subsequences (subsequence j = elements j, j + r_prev, ...), each already transformed to length l_prev,
    /// with A[j, k] at index j + r_prev k. The stage merges subsequences j + r q (q < p, r = r_prev / p):
    ///   B[j, k1 + l_prev s] = Σ_q w_p^{qs} (w_L^{q k1} A[j + r q, k1]),  L = l_prev p,
    /// and stores B[j, k] at j + r k. After the last stage r = 1 and index k holds frequency k.
    pub fn run(&self, data: &mut [C<T>], tmp: &mut [C<T>]) {
        let n = self.n;
        let (mut src, mut dst) = (data, tmp);
        let mut in_data = true;
        for st in &self.stages {
            let (p, l_prev) = (st.p, st.l_prev);
            let r = n / (l_prev * p);
            for k1 in 0..l_prev {
                for j in 0..r {
                    let mut a = [C::default(); 5];
                    for (q, aq) in a.iter_mut().enumerate().take(p) {
                        *aq = src[j + r * q + r * p * k1].mul(st.twiddles[k1 * p + q]);
                    }
                    butterfly(p, &mut a, self.sigma);
                    for (s, bs) in a.iter().enumerate().take(p) {
                        dst[j + r * k1 + r * l_prev * s] = *bs;
                    }
                }
            }
            std::mem::swap(&mut src, &mut dst);
            in_data = !in_data;
        }
        if !in_data {
            // The result is in `tmp` (now `src`); `dst` is the caller's `data`.
            dst.copy_from_slice(src);
        }
    }
}

/// The p-point DFT b_s = Σ_q a_q exp(sigma 2πi qs/p) in place, p in {2, 3, 4, 5}. Written out (not as a
/// p×p product) because kernels/fft.cu uses exactly these formulas.
pub fn butterfly<T: Real>(p: usize, a: &mut [C<T>; 5], sigma: T) {
    match p {
        2 => {
            let (a0, a1) = (a[0], a[1]);
            a[0] = a0.add(a1);
            a[1] = a0.sub(a1);
        }
        3 => {
            // w = exp(σ 2πi/3) = -1/2 + σ i √3/2.
            let (a0, t, d) = (a[0], a[1].add(a[2]), a[1].sub(a[2]));
            let m = a0.sub(t.scale(T::of(0.5)));
            let rot = d.mul_si(sigma).scale(T::of(3f64.sqrt() / 2.0));
            a[0] = a0.add(t);
            a[1] = m.add(rot);
            a[2] = m.sub(rot);
        }
        4 => {
            // w = σi: b1 = (a0 - a2) + σi(a1 - a3), b2 = (a0 + a2) - (a1 + a3), b3 = (a0 - a2) - σi(a1 - a3).
            let (s02, d02, s13, d13) = (a[0].add(a[2]), a[0].sub(a[2]), a[1].add(a[3]), a[1].sub(a[3]).mul_si(sigma));
            a[0] = s02.add(s13);
            a[1] = d02.add(d13);
            a[2] = s02.sub(s13);
            a[3] = d02.sub(d13);
        }
        5 => {
            // With c_k = cos(2πk/5), s_k = sin(2πk/5), t1 = a1 + a4, t2 = a2 + a3, d1 = a1 - a4, d2 = a2 - a3:
            // b1,4 = a0 + c1 t1 + c2 t2 ± σi (s1 d1 + s2 d2), b2,3 = a0 + c2 t1 + c1 t2 ± σi (s2 d1 - s1 d2).
            let tau = 2.0 * std::f64::consts::PI / 5.0;
            let (c1, c2, s1, s2) =
                (T::of(tau.cos()), T::of((2.0 * tau).cos()), T::of(tau.sin()), T::of((2.0 * tau).sin()));
            let a0 = a[0];
            let (t1, t2, d1, d2) = (a[1].add(a[4]), a[2].add(a[3]), a[1].sub(a[4]), a[2].sub(a[3]));
            let m1 = a0.add(t1.scale(c1)).add(t2.scale(c2));
            let m2 = a0.add(t1.scale(c2)).add(t2.scale(c1));
            let r1 = d1.scale(s1).add(d2.scale(s2)).mul_si(sigma);
            let r2 = d1.scale(s2).sub(d2.scale(s1)).mul_si(sigma);
            a[0] = a0.add(t1).add(t2);
            a[1] = m1.add(r1);
            a[4] = m1.sub(r1);
            a[2] = m2.add(r2);
            a[3] = m2.sub(r2);
        }
        _ => unreachable!("radix {p}"),
    }
}

/// fftshift / ifftshift as index maps for a length `n`, c = floor(n/2): ifftshift moves index c to 0, so the
/// FFT input index i reads original index (i + c) mod n; fftshift moves index 0 to c, so FFT output index u
/// lands at (u + c) mod n. Valid for odd n (where the two shifts differ).
#[inline]
pub fn shifted(i: usize, n: usize) -> usize {
    (i + n / 2) % n
}

/// The centred unitary 2-D DFT of a batch of complex images stored as [N, 2, H, W] (channel 0 real,
/// channel 1 imaginary), with an optional real mask [N, 1, H, W]:
/// forward (`inverse` false): y = M ⊙ F x, the mask applied to the output;
/// adjoint (`inverse` true): x = Fᴴ (M ⊙ y), the mask applied to the input.
/// F = fftshift ∘ FFT ∘ ifftshift / √(HW); Fᴴ the same with the conjugate kernel.
pub fn masked_fft2c<T: Real>(x: &[T], mask: Option<&[T]>, n: usize, h: usize, w: usize, inverse: bool) -> Vec<T> {
    let hw = h * w;
    assert_eq!(x.len(), n * 2 * hw);
    let (row_plan, col_plan) = (Plan::<T>::new(w, inverse), Plan::<T>::new(h, inverse));
    let scale = T::of(1.0 / (hw as f64).sqrt());
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(2 * hw).enumerate().for_each(|(b, o)| {
        let xb = &x[b * 2 * hw..(b + 1) * 2 * hw];
        let mb = mask.map(|m| &m[b * hw..(b + 1) * hw]);
        // Load with ifftshift in both axes: a[i][j] = x[shift(i)][shift(j)] (times the mask for the adjoint).
        let mut a = vec![C::default(); hw];
        for i in 0..h {
            let si = shifted(i, h);
            for j in 0..w {
                let src = si * w + shifted(j, w);
                let m = match (inverse, mb) {
                    (true, Some(m)) => m[src],
                    _ => T::one(),
                };
                a[i * w + j] = C::new(xb[src] * m, xb[hw + src] * m);
            }
        }
        let mut tmp = vec![C::default(); w.max(h)];
        for row in a.chunks_mut(w) {
            row_plan.run(row, &mut tmp[..w]);
        }
        let mut col = vec![C::default(); h];
        for j in 0..w {
            for i in 0..h {
                col[i] = a[i * w + j];
            }
            col_plan.run(&mut col, &mut tmp[..h]);
            for i in 0..h {
                a[i * w + j] = col[i];
            }
        }
        // Store with fftshift: FFT index (u, v) lands at (shift(u), shift(v)); the forward masks it there.
        for u in 0..h {
            let du = shifted(u, h);
            for v in 0..w {
                let dst = du * w + shifted(v, w);
                let m = match (inverse, mb) {
                    (false, Some(m)) => m[dst],
                    _ => T::one(),
                };
                let val = a[u * w + v].scale(scale * m);
                o[dst] = val.re;
                o[hw + dst] = val.im;
            }
        }
    });
    out
}

/// Naive O(n²) centred DFT along one axis in f64, straight from the definition
/// Y[k] = Σ_j x[j] exp(σ 2πi (k - c)(j - c)/n), c = floor(n/2): the tests' ground truth.
pub fn naive_centred_dft(x: &[(f64, f64)], inverse: bool) -> Vec<(f64, f64)> {
    let n = x.len();
    let c = (n / 2) as i64;
    let sigma = if inverse { 1.0 } else { -1.0 };
    (0..n as i64)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (j, &(xr, xi)) in x.iter().enumerate() {
                // The phase is reduced modulo n in integers so large n stay exact.
                let e = ((k - c) * (j as i64 - c)).rem_euclid(n as i64);
                let a = sigma * 2.0 * std::f64::consts::PI * e as f64 / n as f64;
                let (s, co) = a.sin_cos();
                re += xr * co - xi * s;
                im += xr * s + xi * co;
            }
            (re, im)
        })
        .collect()
}
