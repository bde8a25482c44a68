// gemm.cuh: the parameters every GEMM kernel (matmul.cu, matmul_wgmma.cu) takes, mirrored by
// `GemmParams` in src/ops/matmul/cuda.rs.
#pragma once
#include <stdint.h>

struct GemmParams {
  const void* a;
  const void* b;
  void* c;
  int32_t m, n, k;
};
