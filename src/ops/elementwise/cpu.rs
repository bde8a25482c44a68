//! CPU twins of kernels/elementwise.cu.
use super::Unary;
use crate::backend::cpu::Real;

impl Unary {
    pub(crate) fn fwd<T: Real>(self, x: T) -> T {
        let one = T::one();
        match self {
            Unary::Silu => x / (one + (-x).exp_v()),
            Unary::Sigmoid => one / (one + (-x).exp_v()),
            Unary::Exp => x.exp(),
            Unary::Square => x * x,
        }
    }
    /// dx given the input x, the output y and the output gradient dy.
    pub(crate) fn bwd<T: Real>(self, x: T, y: T, dy: T) -> T {
        let one = T::one();
        match self {
            Unary::Silu => {
                let s = one / (one + (-x).exp_v());
                dy * s * (one + x * (one - s))
            }
            Unary::Sigmoid => dy * y * (one - y),
            Unary::Exp => dy * y,
            Unary::Square => T::of(2.0) * x * dy,
        }
    }
}

pub fn unary_fwd<T: Real>(op: Unary, x: &[T]) -> Vec<T> {
    x.iter().map(|&v| op.fwd(v)).collect()
}

pub fn unary_bwd<T: Real>(op: Unary, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    x.iter().zip(y).zip(dy).map(|((&x, &y), &dy)| op.bwd(x, y, dy)).collect()
}

pub fn zip<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> Vec<T> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

pub fn affine<T: Real>(x: &[T], a: f64, b: f64) -> Vec<T> {
    let (a, b) = (T::of(a), T::of(b));
    x.iter().map(|&v| a * v + b).collect()
}

pub fn where_<T: Real>(m: &[T], a: &[T], b: &[T]) -> Vec<T> {
    m.iter().zip(a).zip(b).map(|((&m, &a), &b)| if m != T::zero() { a } else { b }).collect()
}
