use std::fmt;

/// Element type of a tensor. The CPU holds f32 and f64 (f64 for gradient checks); CUDA holds f32 and bf16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    BF16,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::BF16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
        }
    }
    /// Relative tolerance the parity tests use for results computed in this precision.
    pub fn tolerance(self) -> f64 {
        match self {
            DType::F64 => 1e-10,
            DType::F32 => 1e-4,
            DType::BF16 => 2e-2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
