//! Benchmark cases at U-Net-realistic shapes (batch 128, 64-512 channels, 32x32 down to 4x4, attention at
//! 16x16 with 256 channels), one file per op family.
use super::BenchCase;

mod attention;
mod conv;
mod elementwise;
mod fft;
mod gsure;
mod kernels;
mod layout;
mod loss;
mod matmul;
mod misc;
mod norm;

pub fn all() -> Vec<BenchCase> {
    let mut v = Vec::new();
    v.extend(conv::cases());
    v.extend(attention::cases());
    v.extend(matmul::cases());
    v.extend(norm::cases());
    v.extend(elementwise::cases());
    v.extend(layout::cases());
    v.extend(loss::cases());
    v.extend(gsure::cases());
    v.extend(misc::cases());
    v.extend(fft::cases());
    v
}
