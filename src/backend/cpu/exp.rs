//! An f32 exp that the compiler can vectorise. `f32::exp` is a call into libm, which keeps every loop
//! around it scalar; the SiLU inside group norm and the softmax in attention spent most of their CPU
//! time in it. This one is plain arithmetic (no calls, no branches), so a loop over a slice becomes SIMD.
//!
//! exp(x) = 2^n · e^r with n = round(x · log2 e) and r = x − n ln 2 (ln 2 split in two so that n ln 2 is
//! exact to f32 precision), |r| ≤ ln 2 / 2; e^r is the classic degree-7 minimax polynomial for expf in the
//! form 1 + r + r²·p(r) (Cephes' coefficients), and 2^n is built from its exponent bits.
//! Accuracy: within 2 ulp of the correctly rounded result on [−87, 88] (checked by the test below).
//! Outside it the argument is clamped, so it returns e^−87 ≈ 1.6e−38 instead of smaller values, or
//! e^88 ≈ 1.7e38 instead of larger ones, and never a denormal or an infinity; NaN stays NaN.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, with LN2_HI exact in 9 bits so that n · LN2_HI is exact for |n| ≤ 2^15.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 · 2^23 rounds an f32 of magnitude below 2^22 to the nearest integer
/// (SSE2 has no vector round instruction, and `f32::round` would be another libm call).
const ROUND: f32 = 12_582_912.0;
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// e^x for f32, vectorisable; see the module note for accuracy and range.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND; // = 1.5 · 2^23 + n exactly: n sits in the low mantissa bits
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = P.iter().fold(0.0f32, |acc, &c| acc * r + c);
    let e_r = (p * (r * r) + r) + 1.0;
    // n ∈ [−126, 127] after the clamp, so the biased exponent n + 127 is a normal one. n is read from the
    // bits of `shifted` rather than by a float-to-int cast, whose saturating semantics do not vectorise.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * two_n
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_two_ulp_of_libm_over_the_range() {
        let mut worst = (0, 0.0f32);
        let n = 2_000_000;
        for i in 0..=n {
            let x = -87.0 + 175.0 * i as f32 / n as f32;
            let want = (x as f64).exp() as f32; // correctly rounded to f32 (bar double rounding)
            let u = ulps(exp_f32(x), want);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2, "exp_f32 is {} ulp off at x = {}", worst.0, worst.1);
    }

    #[test]
    fn edge_values() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 1e-37);
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= f32::EPSILON * 3.0);
    }
}
