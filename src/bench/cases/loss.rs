use crate::bench::BenchCase;

pub fn cases() -> Vec<BenchCase> {
    Vec::new()
}
