//! gsure: a GPU compute engine for training diffusion models from corrupted data.
//!
//! The engine is a small tensor library with two backends: a plain, readable CPU reference (f32 and f64)
//! and a CUDA backend (f32 and bf16) whose kernels live in `kernels/*.cu`. Every op has a forward and a
//! backward on both, a finite-difference gradient check on the CPU and a CPU/CUDA parity test.
pub mod autograd;
pub mod backend;
pub mod bench;
pub mod corruption;
pub mod data;
pub mod diffusion;
pub mod eval;
pub mod io;
pub mod nn;
pub mod nvtx;
pub mod objectives;
pub mod ops;
pub mod tensor;
pub mod testing;
pub mod train;

pub use autograd::{backward, no_grad, Grads, ParamStore};
pub use backend::Device;
pub use tensor::{DType, Shape, Tensor};
