// selftest_main.cpp: drives the emulator through the driver API, as cudarc does, on the kernels of
// selftest.cu and checks each against a plain loop or against the failure it must produce.
//   selftest PTX basic      kernels vs loops, launch limits, divergence and deadlock reports (any schedule)
//   selftest PTX mutants    the mutants fail (run under --schedule warp-ahead)
//   selftest PTX race       the race detector reports st_race and the mutant, and not st_no_race
//   selftest PTX graphs     stream capture and replay, and the capture rules a GPU enforces
//   selftest PTX CASE       one kernel expected to crash the process under ASan (dynamic_oob, global_oob)
#include <cuda.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {
int failures = 0;
CUmodule mod;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}
#define CU(x)                                                                          \
  do {                                                                                 \
    CUresult r_ = (x);                                                                 \
    if (r_ != CUDA_SUCCESS) {                                                          \
      std::fprintf(stderr, "%s failed with %d at line %d\n", #x, (int)r_, __LINE__); \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

template <typename T> CUdeviceptr upload(const std::vector<T>& v) {
  CUdeviceptr p;
  CU(cuMemAlloc(&p, v.size() * sizeof(T)));
  CU(cuMemcpyHtoD(p, v.data(), v.size() * sizeof(T)));
  return p;
}
template <typename T> std::vector<T> download(CUdeviceptr p, size_t n) {
  std::vector<T> v(n);
  CU(cuMemcpyDtoH(v.data(), p, n * sizeof(T)));
  return v;
}
CUfunction fn(const char* name) {
  CUfunction f;
  CU(cuModuleGetFunction(&f, mod, name));
  return f;
}
CUresult launch(const char* name, unsigned grid, unsigned block, unsigned smem, std::vector<void*> args) {
  return cuLaunchKernel(fn(name), grid, 1, 1, block, 1, 1, smem, nullptr, args.data(), nullptr);
}

uint16_t bf16_bits(float f) {  // round to nearest even, as __float2bfloat16
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
float bf16_value(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// s1, s2 of st_two_sums for each of 256 threads against the exact sums; returns whether all agree.
bool two_sums_ok(const char* kernel, CUresult* status) {
  std::vector<float> x(256);
  double s1 = 0, s2 = 0;
  for (int i = 0; i < 256; ++i) x[i] = (float)((i * 37) % 17) - 8.f, s1 += x[i], s2 += (double)x[i] * x[i];
  CUdeviceptr dx = upload(x), dout = upload(std::vector<float>(512, 0.f));
  *status = launch(kernel, 1, 256, 0, {&dx, &dout});
  bool ok = *status == CUDA_SUCCESS;
  if (ok) {
    auto out = download<float>(dout, 512);
    for (int i = 0; i < 256; ++i) ok = ok && out[2 * i] == (float)s1 && out[2 * i + 1] == (float)s2;
  }
  cuMemFree(dx);
  cuMemFree(dout);
  return ok;
}

bool cp_async_ok(const char* kernel, CUresult* status) {
  std::vector<float> src(4 * 64);
  for (size_t i = 0; i < src.size(); ++i) src[i] = (float)i;
  CUdeviceptr ds = upload(src), dout = upload(std::vector<float>(src.size(), -1.f));
  *status = launch(kernel, 1, 64, 4 * 64 * sizeof(float), {&ds, &dout});
  bool ok = *status == CUDA_SUCCESS;
  if (ok) {
    auto out = download<float>(dout, src.size());
    for (int t = 0; t < 64; ++t)
      for (int i = 0; i < 4; ++i) ok = ok && out[4 * t + i] == src[4 * ((t + 1) % 64) + i];
  }
  cuMemFree(ds);
  cuMemFree(dout);
  return ok;
}

// st_bulk_* over `tiles` tiles of 256 floats with 64 threads: whether out = 2 · src everywhere.
bool bulk_ok(const char* kernel, CUresult* status, unsigned threads = 64) {
  const int tiles = 6;
  std::vector<float> src(tiles * 256);
  for (size_t i = 0; i < src.size(); ++i) src[i] = (float)(i % 1000) - 300.f;
  CUdeviceptr ds = upload(src), dout = upload(std::vector<float>(src.size(), 0.f));
  int n = tiles;
  *status = launch(kernel, 1, threads, 0, {&ds, &dout, &n});
  bool ok = *status == CUDA_SUCCESS;
  if (ok) {
    auto out = download<float>(dout, src.size());
    for (size_t i = 0; i < src.size(); ++i) ok = ok && out[i] == 2.f * src[i];
  }
  cuMemFree(ds);
  cuMemFree(dout);
  return ok;
}

// The layouts st_wgmma_* write (see selftest.cu), from the PTX ISA's canonical layouts and worked examples.
struct StOperand {
  int shape[2][3], stride[2][3];
  int swizzle_bits;
  unsigned lbo, sbo, mode, step;
};
struct StWgmma {
  StOperand a, b;
  int ksteps;
};
// K-major, 128-byte swizzle: rows of 64 elements (128 B), 8-row atoms of 1 KiB (SBO); a k16 step is 32 B.
StOperand k_sw128(int rows) { return {{{8, rows / 8, 1}, {8, 8, 1}}, {{64, 512, 0}, {1, 8, 0}}, 3, 16, 1024, 1, 32}; }
// MN-major, 64-byte swizzle (the ISA's bf16 example, ((8,4,2),(8,2)):((1,8,256),(32,512)), grown to k = 32):
// atoms of 32 mn x 8 k; LBO = 512 B to the next 32 mn, SBO = 1 KiB to the next 8 k.
StOperand mn_sw64() { return {{{8, 4, 2}, {8, 4, 1}}, {{1, 8, 256}, {32, 512, 0}}, 2, 512, 1024, 2, 2048}; }
// K-major interleave: 8 x 16-byte core matrices; LBO = 128 B to the next 8 k, SBO = 512 B to the next 8 rows.
StOperand k_interleave() { return {{{8, 8, 1}, {8, 4, 1}}, {{8, 256, 0}, {1, 64, 0}}, 0, 128, 512, 0, 256}; }
// MN-major interleave (the ISA's example, ((8,1,2),(8,2)):((1,8,64),(8,128)), grown to n = 64, k = 32):
// SBO = 128 B to the next 8 n, LBO = 1 KiB to the next 8 k.
StOperand mn_interleave() { return {{{8, 8, 1}, {8, 4, 1}}, {{1, 64, 0}, {8, 512, 0}}, 0, 1024, 128, 0, 2048}; }

// One warpgroup's wgmma sequence against the exact product (small integers: every sum is exact).
// `kernel` an st_wgmma_cp_async variant: the operands go through st_wgmma_image, then cp.async (n = 128).
bool wgmma_ok(const char* kernel, int n, const StWgmma& c, CUresult* status, bool via_cp_async = false) {
  const int K = 16 * c.ksteps;
  std::vector<uint16_t> a(64 * K), b(K * n);
  std::vector<double> ref(64 * n, 0.0);
  for (int i = 0; i < 64 * K; ++i) a[i] = bf16_bits((float)((i * 7 + i / K) % 9) - 4.f);
  for (int i = 0; i < K * n; ++i) b[i] = bf16_bits((float)((i * 5 + i / n * 3) % 7) - 3.f);
  for (int m = 0; m < 64; ++m)
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < K; ++k) ref[m * n + j] += (double)bf16_value(a[m * K + k]) * bf16_value(b[k * n + j]);
  CUdeviceptr da = upload(a), db = upload(b), dd = upload(std::vector<float>(64 * n, -1.f));
  StWgmma arg = c;
  if (via_cp_async) {
    CUdeviceptr image = upload(std::vector<unsigned char>(32768, 0));
    CU(launch("st_wgmma_image", 1, 128, 0, {&da, &db, &image, &arg}));
    *status = launch(kernel, 1, 128, 32768 + 1024, {&image, &dd, &arg});
    cuMemFree(image);
  } else {
    *status = launch(kernel, 1, 128, 32768 + 1024, {&da, &db, &dd, &arg});
  }
  bool ok = *status == CUDA_SUCCESS;
  if (ok) {
    auto d = download<float>(dd, 64 * n);
    for (int i = 0; i < 64 * n; ++i) ok = ok && d[i] == (float)ref[i];
  }
  cuMemFree(da);
  cuMemFree(db);
  cuMemFree(dd);
  return ok;
}

// st_tma_*: the box at `coords` of a uint16 tensor whose element at (index...) is `value` of it (nonzero, so
// the zero fill is visible), against the layout computed here: dense, dimension 0 innermost, and with the
// 128-byte swizzle, 16-byte chunk c of the 128-byte row r at chunk c ^ (r % 8) (the box starts 1 KiB-aligned).
struct TmaCase {
  std::vector<cuuint64_t> dims;
  std::vector<cuuint32_t> box;
  std::vector<int> coords;
  CUtensorMapSwizzle swizzle;
};
bool tma_ok(const TmaCase& t) {
  const int rank = (int)t.dims.size();
  std::vector<cuuint64_t> strides;
  uint64_t total = 1;
  for (int d = 0; d < rank; ++d) {
    if (d > 0) strides.push_back(total * 2);
    total *= t.dims[d];
  }
  auto value = [&](const std::vector<int64_t>& idx) {
    uint64_t v = 0;
    for (int d = rank - 1; d >= 0; --d) v = v * 97 + (uint64_t)idx[d];
    return (uint16_t)(v % 60000 + 1);
  };
  std::vector<uint16_t> host(total);
  for (uint64_t e = 0; e < total; ++e) {
    std::vector<int64_t> idx(rank);
    uint64_t rest = e;
    for (int d = 0; d < rank; ++d) idx[d] = (int64_t)(rest % t.dims[d]), rest /= t.dims[d];
    host[e] = value(idx);
  }
  CUdeviceptr src = upload(host);
  alignas(64) CUtensorMap map;
  const std::vector<cuuint32_t> ones(rank, 1);
  if (cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, reinterpret_cast<void*>(src), t.dims.data(),
                             strides.data(), t.box.data(), ones.data(), CU_TENSOR_MAP_INTERLEAVE_NONE, t.swizzle,
                             CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return false;
  uint64_t count = 1;
  for (auto b : t.box) count *= b;
  int bytes = (int)(count * 2);
  std::vector<uint16_t> want(count, 0);
  for (uint64_t e = 0; e < count; ++e) {
    std::vector<int64_t> idx(rank);
    uint64_t rest = e;
    bool in = true;
    for (int d = 0; d < rank; ++d) {
      idx[d] = t.coords[d] + (int64_t)(rest % t.box[d]);
      rest /= t.box[d];
      in = in && idx[d] >= 0 && idx[d] < (int64_t)t.dims[d];
    }
    uint64_t pos = e;
    if (t.swizzle == CU_TENSOR_MAP_SWIZZLE_128B) {  // rows of 64 elements
      const uint64_t r = e / 64, c = e % 64 / 8;
      pos = r * 64 + ((c ^ (r % 8)) * 8) + e % 8;
    }
    want[pos] = in ? value(idx) : 0;
  }
  CUdeviceptr out = upload(std::vector<uint16_t>(count, 0xffff));
  CUresult r;
  if (rank == 2) {
    int x = t.coords[0], y = t.coords[1];
    r = launch("st_tma_2d", 1, 64, bytes + 1024, {&map, &x, &y, &out, &bytes});
  } else {
    int x = t.coords[0], y = t.coords[1], z = t.coords[2];
    r = launch("st_tma_3d", 1, 64, bytes + 1024, {&map, &x, &y, &z, &out, &bytes});
  }
  bool ok = r == CUDA_SUCCESS && download<uint16_t>(out, count) == want;
  cuMemFree(src);
  cuMemFree(out);
  return ok;
}
CUresult tma_encode(uintptr_t offset, cuuint64_t stride, cuuint32_t box0, CUtensorMapSwizzle swizzle) {
  CUdeviceptr p;
  CU(cuMemAlloc(&p, 1 << 16));
  alignas(64) CUtensorMap map;
  const cuuint64_t dims[2] = {64, 64}, strides[1] = {stride};
  const cuuint32_t box[2] = {box0, 8}, ones[2] = {1, 1};
  const CUresult r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, reinterpret_cast<void*>(p + offset),
                                            dims, strides, box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                            CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  cuMemFree(p);
  return r;
}

CUresult run_error_kernel(const char* kernel, unsigned block) {
  CUdeviceptr d = upload(std::vector<float>(block, 0.f));
  CUresult r = launch(kernel, 1, block, 0, {&d});
  cuMemFree(d);
  return r;
}

void basic() {
  CUresult st;
  check(two_sums_ok("st_two_sums", &st), "block_sum twice: both sums exact in every thread");

  {  // shuffles and votes against the PTX rules
    std::vector<int> in(64);
    for (int i = 0; i < 64; ++i) in[i] = i * 3 + (i % 5);
    CUdeviceptr din = upload(in), dout = upload(std::vector<int>(64 * 6, 0));
    CU(launch("st_shuffles", 1, 64, 0, {&din, &dout}));
    auto out = download<int>(dout, 64 * 6);
    bool ok = true;
    for (int t = 0; t < 64; ++t) {
      const int w = t / 32 * 32, l = t % 32;
      unsigned ballot = 0;
      for (int j = 0; j < 32; ++j) ballot |= (unsigned)(in[w + j] & 1) << j;
      const int exp[6] = {in[w + (l ^ 5)], in[w + l / 16 * 16 + 7], in[w + (l % 8 >= 3 ? l - 3 : l)],
                          in[w + (l + 2 < 32 ? l + 2 : l)], (int)ballot, 1};
      for (int k = 0; k < 6; ++k) ok = ok && out[t * 6 + k] == exp[k];
    }
    check(ok, "shfl xor/idx(width 16)/up(width 8)/down, ballot, all/any");
  }

  {  // mma.m16n8k16 against a loop (bf16 products exact; sums of small integers exact in f32)
    std::vector<uint16_t> A(256), B(128);
    std::vector<float> Af(256), Bf(128);
    for (int i = 0; i < 256; ++i) A[i] = bf16_bits((float)((i * 7) % 11 - 5)), Af[i] = bf16_value(A[i]);
    for (int i = 0; i < 128; ++i) B[i] = bf16_bits((float)((i * 5) % 13 - 6) * 0.5f), Bf[i] = bf16_value(B[i]);
    CUdeviceptr dA = upload(A), dB = upload(B), dD = upload(std::vector<float>(128, 0.f));
    CU(launch("st_mma", 1, 32, 0, {&dA, &dB, &dD}));
    auto D = download<float>(dD, 128);
    bool ok = true;
    const float C[4] = {1.f, 2.f, 3.f, 4.f};
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        float s = 0;
        for (int k = 0; k < 16; ++k) s += Af[i * 16 + k] * Bf[j * 16 + k];
        const float c = C[(i >= 8 ? 2 : 0) + (j % 2)];  // each lane's accumulator register index
        ok = ok && D[i * 8 + j] == s + c;
      }
    check(ok, "mma.m16n8k16 bf16: D = A B + C in the fragment layouts");
  }

  {  // mma.m16n8k8 tf32 against a loop: values with 1 to 11 significant bits, so products and sums are exact
    std::vector<float> A(128), B(64);
    for (int i = 0; i < 128; ++i) A[i] = (float)((i * 7) % 11 - 5) * (i % 3 ? 1.f : 1.f + 1.f / 256);
    for (int i = 0; i < 64; ++i) B[i] = (float)((i * 5) % 13 - 6) * 0.5f;
    CUdeviceptr dA = upload(A), dB = upload(B), dD = upload(std::vector<float>(128, 0.f));
    int convert = 1;
    CU(launch("st_mma_tf32", 1, 32, 0, {&dA, &dB, &dD, &convert}));
    auto D = download<float>(dD, 128);
    bool ok = true;
    const float C[4] = {1.f, 2.f, 3.f, 4.f};
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double s = 0;
        for (int k = 0; k < 8; ++k) s += (double)A[i * 8 + k] * B[j * 8 + k];
        ok = ok && D[i * 8 + j] == (float)s + C[(i >= 8 ? 2 : 0) + (j % 2)];
      }
    check(ok, "mma.m16n8k8 tf32: D = A B + C in the fragment layouts");
    // the mutant: an operand with bits below tf32 (1 + 2^-20) passed without cvt.rna
    A[5] = 1.f + 1.f / (1 << 20);
    CUdeviceptr dA2 = upload(A);
    convert = 0;
    check(launch("st_mma_tf32", 1, 32, 0, {&dA2, &dB, &dD, &convert}) == CUDA_ERROR_LAUNCH_FAILED,
          "mma .tf32 with an operand that is not tf32 (no cvt.rna) is reported");
  }

  {  // cvt.rna.tf32.f32: round to nearest on 10 mantissa bits, ties away from zero
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> x = {1.f, 1.f + 1.f / 2048, -(1.f + 1.f / 2048), 1.f + 3.f / 4096, 1.f + 1.f / 4096,
                                  65504.f, inf, -inf, std::numeric_limits<float>::quiet_NaN()};
    const std::vector<float> want = {1.f, 1.f + 1.f / 1024, -(1.f + 1.f / 1024), 1.f + 1.f / 1024, 1.f, 65504.f,
                                     inf, -inf, std::numeric_limits<float>::quiet_NaN()};
    CUdeviceptr dx = upload(x), dout = upload(std::vector<uint32_t>(x.size(), 0));
    int n = (int)x.size();
    CU(launch("st_to_tf32", 1, 32, 0, {&dx, &dout, &n}));
    auto out = download<uint32_t>(dout, x.size());
    bool ok = true;
    for (size_t i = 0; i < x.size(); ++i) {
      uint32_t w;
      memcpy(&w, &want[i], 4);
      ok = ok && (std::isnan(want[i]) ? (out[i] & 0x7fc00000u) == 0x7fc00000u && !(out[i] & 0x1fffu) : out[i] == w);
    }
    check(ok, "to_tf32 (cvt.rna.tf32.f32): nearest, ties away from zero, inf kept, NaN quiet");
  }

  for (int trans = 0; trans < 2; ++trans) {  // ldmatrix x4 against the PTX ISA's mapping
    std::vector<uint16_t> m(256);
    for (int i = 0; i < 256; ++i) m[i] = (uint16_t)(i * 3 + 1);
    CUdeviceptr dm = upload(m), dout = upload(std::vector<uint32_t>(128, 0));
    CU(launch(trans ? "st_ldmatrix_trans" : "st_ldmatrix", 1, 32, 0, {&dm, &dout}));
    auto out = download<uint32_t>(dout, 128);
    bool ok = true;
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) {
        const int g = l / 4, t = l % 4;
        const uint16_t lo = trans ? m[i * 64 + (2 * t) * 8 + g] : m[i * 64 + g * 8 + 2 * t];
        const uint16_t hi = trans ? m[i * 64 + (2 * t + 1) * 8 + g] : m[i * 64 + g * 8 + 2 * t + 1];
        ok = ok && out[l * 4 + i] == ((uint32_t)lo | (uint32_t)hi << 16);
      }
    check(ok, trans ? "ldmatrix.x4.trans" : "ldmatrix.x4");
  }

  check(cp_async_ok("st_cp_async", &st), "cp.async lands at its wait; other threads see it after the barrier");
  check(bulk_ok("st_bulk_pipeline", &st), "cp.async.bulk + mbarrier two-stage pipeline (full/empty barriers by parity)");
  check(bulk_ok("st_bulk_warp_specialised", &st, 96), "cp.async.bulk pipeline with a producer-only warp");
  check(wgmma_ok("st_wgmma_kk", 128, {k_sw128(64), k_sw128(128), 4}, &st),
        "wgmma m64n128k16 x4, A and B K-major with 128-byte swizzle, start advanced 32 B per k16");
  check(wgmma_ok("st_wgmma_mn", 64, {mn_sw64(), mn_sw64(), 2}, &st), "wgmma m64n64k16 x2, A M-major and B N-major, 64-byte swizzle");
  check(wgmma_ok("st_wgmma_kn", 64, {k_interleave(), mn_interleave(), 2}, &st),
        "wgmma m64n64k16 x2, A K-major and B N-major, no swizzle (interleaved core matrices)");
  check(!wgmma_ok("st_wgmma_no_fence", 128, {k_sw128(64), k_sw128(128), 4}, &st) && st == CUDA_ERROR_LAUNCH_FAILED,
        "wgmma.mma_async without a wgmma.fence before it is reported");
  check(wgmma_ok("st_wgmma_cp_async", 128, {k_sw128(64), k_sw128(128), 4}, &st, true),
        "wgmma on tiles landed by cp.async, each thread's copies fenced by fence.proxy.async");
  check(!wgmma_ok("st_wgmma_cp_async_no_proxy_fence", 128, {k_sw128(64), k_sw128(128), 4}, &st, true) &&
            st == CUDA_ERROR_LAUNCH_FAILED,
        "wgmma reading cp.async data without a fence.proxy.async is reported");
  check(tma_ok({{72, 50}, {64, 32}, {0, 0}, CU_TENSOR_MAP_SWIZZLE_128B}), "TMA 2-D box, 128-byte swizzle, in bounds");
  check(tma_ok({{72, 50}, {64, 32}, {16, 30}, CU_TENSOR_MAP_SWIZZLE_128B}),
        "TMA 2-D box past the tensor's last column and row: zeros there");
  check(tma_ok({{72, 50}, {64, 32}, {-8, -4}, CU_TENSOR_MAP_SWIZZLE_128B}), "TMA 2-D box at negative coordinates");
  check(tma_ok({{72, 50}, {40, 8}, {24, 45}, CU_TENSOR_MAP_SWIZZLE_NONE}), "TMA 2-D box without swizzle");
  check(tma_ok({{24, 10, 3}, {16, 4, 2}, {8, 8, 2}, CU_TENSOR_MAP_SWIZZLE_NONE}), "TMA 3-D box, partly outside");
  check(tma_encode(0, 128, 64, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_SUCCESS, "cuTensorMapEncodeTiled accepts a valid map");
  check(tma_encode(0, 128, 64, CU_TENSOR_MAP_SWIZZLE_64B) == CUDA_ERROR_INVALID_VALUE,
        "cuTensorMapEncodeTiled refuses a box wider than its swizzle");
  check(tma_encode(8, 128, 64, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_ERROR_INVALID_VALUE,
        "cuTensorMapEncodeTiled refuses an address that is not 16-byte aligned");
  check(tma_encode(0, 136, 64, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_ERROR_INVALID_VALUE,
        "cuTensorMapEncodeTiled refuses a stride that is not a multiple of 16");
  check(run_error_kernel("st_mbar_deadlock", 64) == CUDA_ERROR_LAUNCH_FAILED,
        "an mbarrier phase nobody completes is reported as a deadlock");

  // Launch limits, as the GPU enforces them.
  {
    CUdeviceptr d = upload(std::vector<float>(1024, 0.f));
    check(launch("st_bounded", 1, 256, 0, {&d}) == CUDA_SUCCESS, "256 threads under __launch_bounds__(256)");
    check(launch("st_bounded", 1, 512, 0, {&d}) == CUDA_ERROR_INVALID_VALUE, "512 threads refused: __launch_bounds__(256)");
    check(launch("st_bounded", 0, 32, 0, {&d}) == CUDA_ERROR_INVALID_VALUE, "a zero grid is refused");
    check(cuLaunchKernel(fn("st_bounded"), 1, 65536, 1, 32, 1, 1, 0, nullptr, std::vector<void*>{&d}.data(), nullptr) ==
              CUDA_ERROR_INVALID_VALUE,
          "grid.y = 65536 is refused");
    CUdeviceptr host_ptr = (CUdeviceptr)&failures;
    check(launch("st_bounded", 1, 32, 0, {&host_ptr}) == CUDA_ERROR_INVALID_VALUE, "a host pointer argument is refused");
    CUdeviceptr src = upload(std::vector<float>(64 * 1024 / 4, 0.f));
    check(launch("st_cp_async", 1, 64, 64 * 1024, {&src, &d}) == CUDA_ERROR_INVALID_VALUE,
          "64 KiB dynamic shared memory refused without cuFuncSetAttribute");
    check(cuFuncSetAttribute(fn("st_cp_async"), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 64 * 1024) ==
              CUDA_SUCCESS, "cuFuncSetAttribute(64 KiB)");
    check(launch("st_cp_async", 1, 64, 64 * 1024, {&src, &d}) == CUDA_SUCCESS, "64 KiB accepted after the attribute");
    check(cuFuncSetAttribute(fn("st_cp_async"), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 230 * 1024) ==
              CUDA_ERROR_INVALID_VALUE, "230 KiB refused: above the 227 KiB a block can have");
    check(cuMemcpyHtoD(d + 4096, &failures, 4) == CUDA_ERROR_INVALID_VALUE, "a copy past the allocation is refused");
    size_t free_b, total;
    CU(cuMemGetInfo(&free_b, &total));
    CUdeviceptr big;
    check(cuMemAlloc(&big, total + 1) == CUDA_ERROR_OUT_OF_MEMORY, "allocating more than the device has: OOM");
    cuMemFree(d);
    cuMemFree(src);
  }

  // What a GPU would leave undefined or hang on: a report and CUDA_ERROR_LAUNCH_FAILED.
  check(run_error_kernel("st_divergent_barrier", 64) == CUDA_ERROR_LAUNCH_FAILED, "divergent __syncthreads reported");
  check(run_error_kernel("st_exited_barrier", 64) == CUDA_ERROR_LAUNCH_FAILED,
        "__syncthreads after some threads exited reported");
  check(run_error_kernel("st_deadlock", 64) == CUDA_ERROR_LAUNCH_FAILED, "deadlock reported with its wait sites");
  check(two_sums_ok("st_two_sums", &st), "the device still works after failed launches");
}

void mutants() {
  CUresult st;
  check(!two_sums_ok("st_two_sums_no_war", &st), "mutant block_sum without its WAR barrier gives wrong sums");
  check(!cp_async_ok("st_cp_async_no_wait", &st), "mutant cp.async without its wait reads data that has not landed");
  check(!bulk_ok("st_bulk_no_full_wait", &st), "mutant bulk-copy consumer without its mbarrier wait reads stale data");
  check(!bulk_ok("st_bulk_no_expect_tx", &st), "mutant producer without expect_tx: the phase completes before its copy");
  check(!bulk_ok("st_bulk_no_empty_wait", &st), "mutant producer without its `empty` wait overwrites a stage in use");
  check(!wgmma_ok("st_wgmma_no_wait", 128, {k_sw128(64), k_sw128(128), 4}, &st),
        "mutant wgmma consumer that reads its accumulators before wgmma.wait_group sees stale registers");
  check(!wgmma_ok("st_wgmma_refill", 128, {k_sw128(64), k_sw128(128), 4}, &st),
        "mutant that refills an operand tile before the wait covering its wgmma gets a corrupted product");
  StOperand swapped = mn_sw64();
  std::swap(swapped.lbo, swapped.sbo);
  check(!wgmma_ok("st_wgmma_mn", 64, {swapped, mn_sw64(), 2}, &st),
        "a descriptor with LBO and SBO swapped (MN-major, swizzled) reads the wrong elements");
  StOperand unswizzled = k_sw128(64);
  unswizzled.mode = 0;
  check(!wgmma_ok("st_wgmma_kk", 128, {unswizzled, k_sw128(128), 4}, &st),
        "a descriptor without the swizzle its tile was written with reads the wrong elements");
}

void race() {
  CUresult st;
  check(run_error_kernel("st_race", 64) == CUDA_ERROR_LAUNCH_FAILED, "race detector: write/read without a barrier");
  check(run_error_kernel("st_no_race", 64) == CUDA_SUCCESS, "race detector: the same with a barrier is clean");
  check(two_sums_ok("st_two_sums", &st), "race detector: block_sum twice is clean");
  check(wgmma_ok("st_wgmma_kk", 128, {k_sw128(64), k_sw128(128), 4}, &st), "race detector: a wgmma sequence is clean");
  check(run_error_kernel("st_mbar_handoff", 64) == CUDA_SUCCESS,
        "race detector: a write handed to another warp through an mbarrier is clean");
  check(run_error_kernel("st_mbar_handoff_no_wait", 64) == CUDA_ERROR_LAUNCH_FAILED,
        "race detector: the same read without the mbarrier wait is reported");
  check(bulk_ok("st_bulk_pipeline", &st), "race detector: the cp.async.bulk pipeline (full/empty mbarriers) is clean");
  check(bulk_ok("st_bulk_warp_specialised", &st, 96), "race detector: the producer-warp bulk pipeline is clean");
  wgmma_ok("st_wgmma_refill", 128, {k_sw128(64), k_sw128(128), 4}, &st);
  check(st == CUDA_ERROR_LAUNCH_FAILED, "race detector: a tile refilled while a wgmma still reads it is reported");
  two_sums_ok("st_two_sums_no_war", &st);
  check(st == CUDA_ERROR_LAUNCH_FAILED, "race detector: block_sum without its WAR barrier is reported");
}

// Stream capture: a captured upload, kernel and download replay with the host data of each launch; the
// calls a capture forbids are refused and invalidate it; a replay over freed memory fails naming its node.
void graphs() {
  const int n = 300;
  CUstream s;
  CU(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  float *in, *out;
  CU(cuMemHostAlloc((void**)&in, n * sizeof(float), 0));
  CU(cuMemHostAlloc((void**)&out, n * sizeof(float), 0));
  CUdeviceptr dx = upload(std::vector<float>(n, 0.f)), dy = upload(std::vector<float>(n, 0.f));
  float a = 2.f;
  int nn = n;
  std::vector<void*> args{&dx, &dy, &a, &nn};
  CUevent done;
  CU(cuEventCreate(&done, 0));

  CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
  CUstreamCaptureStatus status;
  CU(cuStreamIsCapturing(s, &status));
  check(status == CU_STREAM_CAPTURE_STATUS_ACTIVE, "capture: the stream reports an active capture");
  CU(cuMemcpyHtoDAsync(dx, in, n * sizeof(float), s));
  CU(cuLaunchKernel(fn("st_axpy"), (n + 127) / 128, 1, 1, 128, 1, 1, 0, s, args.data(), nullptr));
  a = 100.f;  // the launch keeps the value it was captured with
  CU(cuMemcpyDtoHAsync(out, dy, n * sizeof(float), s));
  CU(cuEventRecord(done, s));
  CUgraph g;
  CU(cuStreamEndCapture(s, &g));
  CUgraphExec exec;
  CU(cuGraphInstantiateWithFlags(&exec, g, 0));
  check(download<float>(dy, n) == std::vector<float>(n, 0.f), "capture: nothing runs until the graph launches");

  bool ok = true;
  for (int replay = 1; replay <= 2; ++replay) {
    for (int i = 0; i < n; ++i) in[i] = (float)(i * replay);
    CU(cuGraphLaunch(exec, s));
    CU(cuStreamSynchronize(s));
    // y accumulates 2·x of each replay: 2·i after the first, 2·i + 4·i after the second
    for (int i = 0; i < n; ++i) ok = ok && out[i] == (replay == 1 ? 2.f * i : 6.f * i);
  }
  check(ok, "graph replay: each launch reads the host buffer as it is then, with the captured arguments");

  CUgraph none;
  check(cuStreamBeginCapture(nullptr, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
        "capture on the legacy stream is refused");
  CUdeviceptr p;
  CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
  check(cuMemAlloc(&p, 256) == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuMemAlloc during a global capture is refused");
  CU(cuStreamIsCapturing(s, &status));
  check(status == CU_STREAM_CAPTURE_STATUS_INVALIDATED, "... and invalidates the capture");
  check(cuStreamEndCapture(s, &none) == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED && none == nullptr,
        "... whose end gives no graph");

  CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
  check(cuMemAlloc(&p, 256) == CUDA_SUCCESS, "cuMemAlloc during a relaxed capture is allowed");
  check(cuStreamSynchronize(s) == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "synchronising the capturing stream is refused");
  check(cuStreamEndCapture(s, &none) == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "... and invalidates the capture");
  cuMemFree(p);

  std::vector<float> pageable(n);
  CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
  check(cuMemcpyHtoDAsync(dx, pageable.data(), n * sizeof(float), s) == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
        "a captured copy from pageable host memory is refused");
  check(cuStreamEndCapture(s, &none) == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "... and invalidates the capture");

  CUevent outside;
  CU(cuEventCreate(&outside, 0));
  CU(cuEventRecord(outside, s));
  CU(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
  check(cuStreamWaitEvent(s, outside, 0) == CUDA_ERROR_STREAM_CAPTURE_ISOLATION,
        "waiting on an event recorded outside the capture is refused");
  check(cuStreamEndCapture(s, &none) == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "... and invalidates the capture");

  cuMemFree(dy);
  check(cuGraphLaunch(exec, s) == CUDA_ERROR_INVALID_VALUE, "a replay whose kernel argument was freed fails");
  CU(cuGraphExecDestroy(exec));
  CU(cuGraphDestroy(g));
  cuMemFree(dx);
  cuMemFreeHost(in);
  cuMemFreeHost(out);
  CU(cuStreamDestroy(s));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: selftest PTX basic|mutants|race|graphs|dynamic_oob|global_oob\n");
    return 2;
  }
  std::ifstream f(argv[1]);
  std::stringstream ptx;
  ptx << f.rdbuf();
  CU(cuInit(0));
  CUdevice dev;
  CUcontext ctx;
  CU(cuDeviceGet(&dev, 0));
  CU(cuDevicePrimaryCtxRetain(&ctx, dev));
  CU(cuCtxSetCurrent(ctx));
  const std::string text = ptx.str();
  CU(cuModuleLoadData(&mod, text.c_str()));
  const std::string what = argv[2];
  if (what == "basic") basic();
  else if (what == "mutants") mutants();
  else if (what == "race") race();
  else if (what == "graphs") graphs();
  else if (what == "dynamic_oob" || what == "global_oob") {
    CUdeviceptr d;
    CU(cuMemAlloc(&d, 64 * sizeof(float)));
    int n = 64;
    CUresult r = launch(what == "dynamic_oob" ? "st_dynamic_oob" : "st_global_oob", 1, 64, 64 * sizeof(float), {&d, &n});
    std::printf("launch returned %d without a sanitizer report\n", (int)r);
    return 0;  // reaching here under --asan is the failure emu/tests/run looks for
  } else {
    std::fprintf(stderr, "unknown case %s\n", what.c_str());
    return 2;
  }
  std::printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
