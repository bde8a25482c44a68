use anyhow::{bail, Result};
use std::fmt;

/// Dimensions of a contiguous row-major tensor (images are NCHW).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Size of dimension `d`; panics only on a programming error inside the engine.
    pub fn dim(&self, d: usize) -> usize {
        self.0[d]
    }
    /// The four dimensions of an NCHW tensor, or an error naming the op.
    pub fn nchw(&self, op: &str) -> Result<(usize, usize, usize, usize)> {
        match self.0.as_slice() {
            &[n, c, h, w] => Ok((n, c, h, w)),
            _ => bail!("{op}: expected an NCHW tensor of rank 4, got shape {self}"),
        }
    }
    /// The two dimensions of a matrix, or an error naming the op.
    pub fn matrix(&self, op: &str) -> Result<(usize, usize)> {
        match self.0.as_slice() {
            &[r, c] => Ok((r, c)),
            _ => bail!("{op}: expected a matrix (rank 2), got shape {self}"),
        }
    }
    /// Splits the shape around axis `axis` into (outer, size of axis, inner) element counts.
    pub fn split_at_axis(&self, axis: usize) -> (usize, usize, usize) {
        let outer = self.0[..axis].iter().product();
        let inner = self.0[axis + 1..].iter().product();
        (outer, self.0[axis], inner)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}
