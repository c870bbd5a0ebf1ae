// dqserve's native operators (the ABI is in dq.h). Compiled by nvcc (through dq.cu) every operator is a CUDA
// kernel; compiled by g++ the same per-element lambdas run in loops on the host. Only `each`, memory and errors
// differ between the two: the arithmetic is one text, held to the TypeScript reference backend by the tests.
//
// The arithmetic must equal onnxruntime's CPU kernels (docs/model-bundle.md "Arithmetic"), so: no fused
// multiply-adds except where MLAS has them (build with -fmad=false / -ffp-contract=off), round half to even
// with rintf, float64 sums where the reference sums in float64.
#include "dq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <string>

#ifdef __CUDACC__
#include <cuda_runtime.h>
#include <mma.h>
#define DQ_FN __host__ __device__
#define DQ_LAMBDA [=] __host__ __device__
#else
#define DQ_FN
#define DQ_LAMBDA [=]
#endif

namespace {

thread_local std::string g_error;

int fail(const std::string &why) {
  g_error = why;
  return -1;
}

// Fixed-size index arithmetic, captured by value into kernels.
struct Dims {
  int rank;
  int64_t dims[DQ_MAX_RANK];
  int64_t sa[DQ_MAX_RANK];
  int64_t sb[DQ_MAX_RANK];
};

int dims_of(Dims &d, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb, int64_t &n) {
  if (rank < 0 || rank > DQ_MAX_RANK) return fail("rank " + std::to_string(rank) + " is above " + std::to_string(DQ_MAX_RANK));
  d.rank = rank;
  n = 1;
  for (int i = 0; i < rank; i++) {
    d.dims[i] = dims[i];
    d.sa[i] = sa ? sa[i] : 0;
    d.sb[i] = sb ? sb[i] : 0;
    n *= dims[i];
  }
  return 0;
}

// Offsets into a and b of output element i (row-major over d.dims).
DQ_FN inline void offsets(const Dims &d, int64_t i, int64_t &ia, int64_t &ib) {
  ia = 0;
  ib = 0;
  for (int k = d.rank - 1; k >= 0; k--) {
    const int64_t c = i % d.dims[k];
    i /= d.dims[k];
    ia += c * d.sa[k];
    ib += c * d.sb[k];
  }
}

DQ_FN inline int clamp_u8(float v) { return v < 0.f ? 0 : (v > 255.f ? 255 : (int)v); }

#ifdef __CUDACC__

// One stream per thread: each engine worker's tensors stay on its own thread, so its waits never queue behind
// another worker's kernels. The device's name is set once.
thread_local cudaStream_t g_stream = nullptr;
std::string g_device = "no device";
std::once_flag g_device_once;
// cudaMallocAsync where the device has memory pools (keeping freed memory in the pool), else cudaMalloc
bool g_pools = false;
// DQ_SYNC=1: wait after every kernel, so that a fault is reported by the operator that caused it
bool g_sync_each = false;

int check(cudaError_t e, const char *what) {
  return e == cudaSuccess ? 0 : fail(std::string(what) + ": " + cudaGetErrorString(e));
}

template <class F>
__global__ void each_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) f(i);
}

// After a launch: its own error, and with DQ_SYNC=1 the kernel's.
int launched() {
  if (check(cudaGetLastError(), "kernel launch")) return -1;
  return g_sync_each ? check(cudaStreamSynchronize(g_stream), "kernel") : 0;
}

// f(i) for i in [0, n), on the stream.
template <class F>
int each(int64_t n, F f) {
  if (n <= 0) return 0;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  each_kernel<<<(unsigned)(blocks < 1048576 ? blocks : 1048576), threads, 0, g_stream>>>(n, f);
  return launched();
}

#else

std::string g_device = "host (reference build)";

template <class F>
int each(int64_t n, F f) {
  for (int64_t i = 0; i < n; i++) f(i);
  return 0;
}

#endif

template <class T>
T *at(uint64_t p) {
  return reinterpret_cast<T *>(static_cast<uintptr_t>(p));
}

}  // namespace

// The definitions take C linkage from their declarations in dq.h.

int dq_abi_version(void) { return DQ_ABI_VERSION; }

const char *dq_last_error(void) { return g_error.c_str(); }

const char *dq_device_name(void) { return g_device.c_str(); }

#ifdef __CUDACC__

int dq_init(int device) {
  int count = 0;
  if (check(cudaGetDeviceCount(&count), "CUDA")) return -1;
  if (device < 0 || device >= count) return fail("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " found)");
  if (check(cudaSetDevice(device), "cudaSetDevice")) return -1;
  int rc = 0;
  std::call_once(g_device_once, [&] {
    cudaDeviceProp prop;
    if ((rc = check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"))) return;
    g_device = std::string(prop.name) + ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
    int pools = 0;
    cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
    g_pools = pools != 0;
    if (g_pools) {
      // the default pool returns freed memory to the system at every synchronisation; every run would re-map it
      cudaMemPool_t pool;
      uint64_t keep = UINT64_MAX;
      if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    const char *sync = getenv("DQ_SYNC");
    g_sync_each = sync && strcmp(sync, "1") == 0;
  });
  if (rc) return -1;
  if (!g_stream && check(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking), "cudaStreamCreate")) return -1;
  return 0;
}

uint64_t dq_alloc(uint64_t bytes) {
  void *p = nullptr;
  const cudaError_t e = g_pools ? cudaMallocAsync(&p, bytes ? bytes : 1, g_stream) : cudaMalloc(&p, bytes ? bytes : 1);
  if (check(e, "cudaMalloc")) return 0;
  return (uint64_t)(uintptr_t)p;
}

int dq_free(uint64_t ptr) {
  if (!ptr) return 0;
  if (g_pools) return check(cudaFreeAsync(at<void>(ptr), g_stream), "cudaFreeAsync");
  // cudaFree waits for the device: nothing queued can still read the buffer
  return check(cudaFree(at<void>(ptr)), "cudaFree");
}

int dq_upload(uint64_t dst, const void *src, uint64_t bytes) {
  // synchronous: the host buffer belongs to JavaScript and may move or die after the call
  if (!bytes) return 0;
  if (check(cudaMemcpyAsync(at<void>(dst), src, bytes, cudaMemcpyHostToDevice, g_stream), "upload")) return -1;
  return check(cudaStreamSynchronize(g_stream), "upload");
}

int dq_download(void *dst, uint64_t src, uint64_t bytes) {
  if (bytes && check(cudaMemcpyAsync(dst, at<void>(src), bytes, cudaMemcpyDeviceToHost, g_stream), "download")) return -1;
  return check(cudaStreamSynchronize(g_stream), "download");
}

int dq_copy2d(uint64_t dst, uint64_t dpitch, uint64_t src, uint64_t spitch, uint64_t width, uint64_t rows) {
  if (!width || !rows) return 0;
  // one row: a plain copy, whose size has no pitch limit
  if (rows == 1) return check(cudaMemcpyAsync(at<void>(dst), at<void>(src), width, cudaMemcpyDeviceToDevice, g_stream), "copy");
  return check(cudaMemcpy2DAsync(at<void>(dst), dpitch, at<void>(src), spitch, width, rows, cudaMemcpyDeviceToDevice, g_stream), "copy");
}

int dq_sync(void) { return check(cudaStreamSynchronize(g_stream), "sync"); }

#else

int dq_init(int) { return 0; }

uint64_t dq_alloc(uint64_t bytes) {
  // 256-byte aligned, as cudaMalloc's (the bit-serial planes and the tensor-core tiles need alignment)
  void *p = aligned_alloc(256, bytes ? (bytes + 255) / 256 * 256 : 256);
  if (!p) fail("out of host memory");
  return (uint64_t)(uintptr_t)p;
}

int dq_free(uint64_t ptr) {
  free(at<void>(ptr));
  return 0;
}

int dq_upload(uint64_t dst, const void *src, uint64_t bytes) {
  if (bytes) memcpy(at<void>(dst), src, bytes);
  return 0;
}

int dq_download(void *dst, uint64_t src, uint64_t bytes) {
  if (bytes) memcpy(dst, at<void>(src), bytes);
  return 0;
}

int dq_copy2d(uint64_t dst, uint64_t dpitch, uint64_t src, uint64_t spitch, uint64_t width, uint64_t rows) {
  for (uint64_t r = 0; r < rows; r++) memcpy(at<char>(dst) + r * dpitch, at<char>(src) + r * spitch, width);
  return 0;
}

int dq_sync(void) { return 0; }

#endif

int dq_transpose(int elem, uint64_t x, uint64_t y, int rank, const int64_t *out_dims, const int64_t *in_strides) {
  Dims d;
  int64_t n;
  if (dims_of(d, rank, out_dims, in_strides, nullptr, n)) return -1;
  switch (elem) {
    case 1: { const uint8_t *X = at<uint8_t>(x); uint8_t *Y = at<uint8_t>(y);
      return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = X[a]; }); }
    case 4: { const uint32_t *X = at<uint32_t>(x); uint32_t *Y = at<uint32_t>(y);
      return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = X[a]; }); }
    case 8: { const uint64_t *X = at<uint64_t>(x); uint64_t *Y = at<uint64_t>(y);
      return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = X[a]; }); }
  }
  return fail("transpose of " + std::to_string(elem) + "-byte elements");
}

namespace {

template <class From>
int cast_from(const From *X, int to, uint64_t y, int64_t n) {
  switch (to) {
    case 0: { float *Y = at<float>(y); return each(n, DQ_LAMBDA(int64_t i) { Y[i] = (float)X[i]; }); }
    case 1: { double *Y = at<double>(y); return each(n, DQ_LAMBDA(int64_t i) { Y[i] = (double)X[i]; }); }
  }
  return fail("cast to type " + std::to_string(to));
}

template <class T>
int binary(int op, const T *A, const T *B, T *Y, const Dims &d, int64_t n) {
  switch (op) {
    case 0: return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = (T)(A[a] + B[b]); });
    case 1: return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = (T)(A[a] - B[b]); });
    case 2: return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = (T)(A[a] * B[b]); });
    case 3: return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = (T)(A[a] / B[b]); });
    case 4: return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = A[a] < B[b] ? A[a] : B[b]; });
    case 5: return each(n, DQ_LAMBDA(int64_t i) { int64_t a, b; offsets(d, i, a, b); Y[i] = A[a] > B[b] ? A[a] : B[b]; });
  }
  return fail("binary op " + std::to_string(op));
}

}  // namespace

int dq_cast(int from, uint64_t x, int to, uint64_t y, int64_t n) {
  switch (from) {
    case 0: return cast_from(at<const float>(x), to, y, n);
    case 1: return cast_from(at<const double>(x), to, y, n);
    case 2: return cast_from(at<const uint8_t>(x), to, y, n);
    case 3: return cast_from(at<const int8_t>(x), to, y, n);
    case 4: return cast_from(at<const int32_t>(x), to, y, n);
    case 5: return cast_from(at<const int64_t>(x), to, y, n);
  }
  return fail("cast from type " + std::to_string(from));
}

int dq_binary(int op, int dtype, uint64_t a, uint64_t b, uint64_t y, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb) {
  Dims d;
  int64_t n;
  if (dims_of(d, rank, dims, sa, sb, n)) return -1;
  switch (dtype) {
    case 0: return binary(op, at<const float>(a), at<const float>(b), at<float>(y), d, n);
    case 1: return binary(op, at<const double>(a), at<const double>(b), at<double>(y), d, n);
    case 2:
      if (op < 4) return fail("uint8 arithmetic other than Min and Max");
      return binary(op, at<const uint8_t>(a), at<const uint8_t>(b), at<uint8_t>(y), d, n);
  }
  return fail("binary op on type " + std::to_string(dtype));
}

int dq_unary(int op, uint64_t x, uint64_t y, int64_t n, float lo, float hi) {
  const float *X = at<const float>(x);
  float *Y = at<float>(y);
  switch (op) {
    case 0: return each(n, DQ_LAMBDA(int64_t i) { Y[i] = X[i] > 0.f ? X[i] : 0.f; });
    case 1: return each(n, DQ_LAMBDA(int64_t i) { Y[i] = rintf(X[i]); });
    case 2: return each(n, DQ_LAMBDA(int64_t i) { const float v = X[i] < lo ? lo : X[i]; Y[i] = v > hi ? hi : v; });
  }
  return fail("unary op " + std::to_string(op));
}

namespace {
struct Geom {
  int N, C, H, W, M, KH, KW, SH, SW, PT, PL, OH, OW;
};
Geom geom_of(const int32_t *g) { return Geom{g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12]}; }

// The part of the kernel that output (oy, ox) lays on the unpadded input: rows [ky0, ky1), columns [kx0, kx1)
// (padding adds nothing to either convolution), and the input row and column of kernel position (0, 0).
struct Window {
  int ky0, ky1, kx0, kx1, iy0, ix0;
};
DQ_FN inline Window window_of(const Geom &g, int oy, int ox) {
  const int iy0 = oy * g.SH - g.PT, ix0 = ox * g.SW - g.PL;
  return Window{iy0 < 0 ? -iy0 : 0, g.H - iy0 < g.KH ? g.H - iy0 : g.KH, ix0 < 0 ? -ix0 : 0, g.W - ix0 < g.KW ? g.W - ix0 : g.KW, iy0, ix0};
}
}  // namespace

int dq_conv2d(uint64_t x, uint64_t w, uint64_t bias, uint64_t y, const int32_t *geom) {
  const Geom g = geom_of(geom);
  const float *X = at<const float>(x), *Wt = at<const float>(w), *B = bias ? at<const float>(bias) : nullptr;
  float *Y = at<float>(y);
  const int64_t n = (int64_t)g.N * g.M * g.OH * g.OW;
  // NCHW out; order of the sum as the reference: bias, then channels, rows, columns
  return each(n, DQ_LAMBDA(int64_t i) {
    const int ox = (int)(i % g.OW), oy = (int)(i / g.OW % g.OH), m = (int)(i / ((int64_t)g.OW * g.OH) % g.M);
    const int64_t b = i / ((int64_t)g.OW * g.OH * g.M);
    const Window w = window_of(g, oy, ox);
    double s = B ? (double)B[m] : 0.0;
    for (int c = 0; c < g.C; c++)
      for (int ky = w.ky0; ky < w.ky1; ky++)
        for (int kx = w.kx0; kx < w.kx1; kx++)
          s += (double)X[((b * g.C + c) * g.H + w.iy0 + ky) * g.W + w.ix0 + kx] * (double)Wt[((m * g.C + c) * g.KH + ky) * g.KW + kx];
    Y[i] = (float)s;
  });
}

int dq_quantize(uint64_t x, uint64_t y, int64_t n, float scale, int zp) {
  const float *X = at<const float>(x);
  uint8_t *Y = at<uint8_t>(y);
  return each(n, DQ_LAMBDA(int64_t i) { Y[i] = (uint8_t)clamp_u8(rintf(X[i] / scale) + (float)zp); });
}

namespace {
// QLinearConv as an implicit GEMM on int8 tensor cores: rows are output pixels (N·OH·OW), columns output
// channels, depth KH·KW·C taken 16 channels (one kernel position) at a time. The tensor cores multiply int8 by
// int8, so activations travel as x − 128 and the zero point comes back in the epilogue:
//   Σ (x − xz)·w = Σ (x − 128)·w + (128 − xz)·Σ w      (weights symmetric: wz = 0)
// with padding loaded as xz − 128, which the right side turns into 0, as the direct kernel's skip does. All of
// it is exact int32, so the result equals the direct kernel's to the bit. The loads and the epilogue are shared
// with the host build, which runs the same tiles with a plain multiply in place of the tensor cores (so the
// tests check the indexing here); only the 16×16×16 multiply is the device's own (WMMA).
constexpr int TC_ROWS = 64;     // output pixels per block: 4 warps × 16 rows
constexpr int TC_THREADS = 128; // the first 64 load a pixel's 16 values each, the rest a channel's 16 weights
constexpr int TC_DEPTH = 16;
constexpr int TC_MAX_M = 64;    // output channels per block: ResNet-20's widest layer

// WMMA loads and stores want 256-bit aligned tiles; every member starts at a multiple of 32 bytes
struct alignas(32) TcTiles {
  int8_t a[TC_ROWS * TC_DEPTH];   // row-major: pixel r's 16 values of x − 128
  int8_t b[TC_MAX_M * TC_DEPTH];  // column-major: channel m's 16 weights
  int32_t c[TC_ROWS * TC_MAX_M];  // row-major sums, for the epilogue
};

// (the depth bound keeps the host build's int32 sums defined: |x − 128|·|w| ≤ 2^14 per term)
bool tc_applies(const Geom &g) { return g.C % TC_DEPTH == 0 && g.M > 0 && g.M % 16 == 0 && g.M <= TC_MAX_M && (int64_t)g.KH * g.KW * g.C <= 65536; }

// 16 bytes from src to dst, XOR `flip` in every byte (0x80 turns uint8 x into int8 x − 128; 0 copies). Both
// addresses are 16-byte aligned (tc_applies and dq_qlinear_conv see to it): one 128-bit load and store on the GPU.
DQ_FN inline void copy16(int8_t *dst, const void *src, uint32_t flip) {
#ifdef __CUDACC__
  uint4 v = *reinterpret_cast<const uint4 *>(src);
  v.x ^= flip, v.y ^= flip, v.z ^= flip, v.w ^= flip;
  *reinterpret_cast<uint4 *>(dst) = v;
#else
  const uint8_t *s8 = static_cast<const uint8_t *>(src);
  for (int k = 0; k < TC_DEPTH; k++) dst[k] = (int8_t)(s8[k] ^ (uint8_t)flip);
#endif
}

// Thread `tid` of the block at pixel row0 loads its part of depth step s into the tiles.
DQ_FN inline void tc_load(const Geom &g, const uint8_t *X, int xz, const int8_t *Wt, int64_t row0, int s, int tid, TcTiles &t) {
  const int64_t depth = (int64_t)g.KH * g.KW * g.C;
  if (tid < TC_ROWS) {
    int8_t *a = t.a + tid * TC_DEPTH;
    const int64_t p = row0 + tid;
    if (p >= (int64_t)g.N * g.OH * g.OW) {
      for (int k = 0; k < TC_DEPTH; k++) a[k] = 0; // no such pixel: its row is computed and dropped
      return;
    }
    const int pos = s * TC_DEPTH / g.C, c0 = s * TC_DEPTH % g.C;
    const int ox = (int)(p % g.OW), oy = (int)(p / g.OW % g.OH);
    const int64_t b = p / ((int64_t)g.OW * g.OH);
    const int iy = oy * g.SH - g.PT + pos / g.KW, ix = ox * g.SW - g.PL + pos % g.KW;
    if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) {
      for (int k = 0; k < TC_DEPTH; k++) a[k] = (int8_t)(xz - 128);
      return;
    }
    copy16(a, X + ((b * g.H + iy) * g.W + ix) * g.C + c0, 0x80808080u);
  } else if (tid - TC_ROWS < g.M) {
    const int m = tid - TC_ROWS;
    // [M, KH, KW, C]: step s is 16 consecutive weights
    copy16(t.b + m * TC_DEPTH, Wt + m * depth + (int64_t)s * TC_DEPTH, 0);
  }
}

// Output e of the block (pixel e / M, channel e % M) from its sum, requantised as the direct kernel does.
DQ_FN inline void tc_write(const Geom &g, const TcTiles &t, int64_t row0, int e, int xz, const int32_t *WS, const float *MU, const int32_t *B, int yz, uint8_t *Y) {
  const int r = e / g.M, m = e % g.M;
  const int64_t p = row0 + r;
  if (p >= (int64_t)g.N * g.OH * g.OW) return;
  const int32_t acc = (B ? B[m] : 0) + t.c[r * g.M + m] + (128 - xz) * WS[m];
  Y[p * g.M + m] = (uint8_t)clamp_u8(rintf((float)acc * MU[m]) + (float)yz);
}

#ifdef __CUDACC__

__global__ void __launch_bounds__(TC_THREADS) qconv_tc_kernel(Geom g, const uint8_t *X, int xz, const int8_t *Wt, const int32_t *WS, const float *MU,
                                                               const int32_t *B, int yz, uint8_t *Y) {
  namespace wmma = nvcuda::wmma;
  __shared__ TcTiles t;
  const int tid = threadIdx.x, warp = tid / 32, blocks = g.M / 16;
  const int64_t row0 = (int64_t)blockIdx.x * TC_ROWS;
  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc[TC_MAX_M / 16];
#pragma unroll
  for (int j = 0; j < TC_MAX_M / 16; j++) wmma::fill_fragment(acc[j], 0);
  const int steps = g.KH * g.KW * g.C / TC_DEPTH;
  for (int s = 0; s < steps; s++) {
    tc_load(g, X, xz, Wt, row0, s, tid, t);
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, t.a + warp * 16 * TC_DEPTH, TC_DEPTH);
#pragma unroll
    for (int j = 0; j < TC_MAX_M / 16; j++) {
      if (j >= blocks) break;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb;
      wmma::load_matrix_sync(fb, t.b + j * 16 * TC_DEPTH, TC_DEPTH);
      wmma::mma_sync(acc[j], fa, fb, acc[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < TC_MAX_M / 16; j++) {
    if (j >= blocks) break;
    wmma::store_matrix_sync(t.c + warp * 16 * g.M + j * 16, acc[j], g.M, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = tid; e < TC_ROWS * g.M; e += TC_THREADS) tc_write(g, t, row0, e, xz, WS, MU, B, yz, Y);
}

int qconv_tc(const Geom &g, const uint8_t *X, int xz, const int8_t *Wt, const int32_t *WS, const float *MU, const int32_t *B, int yz, uint8_t *Y) {
  const int64_t blocks = ((int64_t)g.N * g.OH * g.OW + TC_ROWS - 1) / TC_ROWS;
  if (blocks == 0) return 0; // an empty grid is a launch error
  if (blocks > 0x7fffffff) return fail("QLinearConv: too many pixels for one launch");
  qconv_tc_kernel<<<(unsigned)blocks, TC_THREADS, 0, g_stream>>>(g, X, xz, Wt, WS, MU, B, yz, Y);
  return launched();
}

#else

int qconv_tc(const Geom &g, const uint8_t *X, int xz, const int8_t *Wt, const int32_t *WS, const float *MU, const int32_t *B, int yz, uint8_t *Y) {
  TcTiles t;
  const int64_t pixels = (int64_t)g.N * g.OH * g.OW;
  for (int64_t row0 = 0; row0 < pixels; row0 += TC_ROWS) {
    for (int e = 0; e < TC_ROWS * g.M; e++) t.c[e] = 0;
    for (int s = 0; s < g.KH * g.KW * g.C / TC_DEPTH; s++) {
      for (int tid = 0; tid < TC_THREADS; tid++) tc_load(g, X, xz, Wt, row0, s, tid, t);
      // what the four warps' mma_sync compute: c += a · b over the 16 values of the step
      for (int r = 0; r < TC_ROWS; r++)
        for (int m = 0; m < g.M; m++) {
          int32_t sum = 0;
          for (int k = 0; k < TC_DEPTH; k++) sum += (int32_t)t.a[r * TC_DEPTH + k] * (int32_t)t.b[m * TC_DEPTH + k];
          t.c[r * g.M + m] += sum;
        }
    }
    for (int e = 0; e < TC_ROWS * g.M; e++) tc_write(g, t, row0, e, xz, WS, MU, B, yz, Y);
  }
  return 0;
}

#endif

// DQ_CONV=direct keeps every QLinearConv on the direct kernel (for comparisons and as a way out).
bool conv_direct_only() {
  static const bool direct = [] {
    const char *v = getenv("DQ_CONV");
    return v && strcmp(v, "direct") == 0;
  }();
  return direct;
}
}  // namespace

int dq_qlinear_conv(uint64_t x, int xz, uint64_t w, uint64_t wz, uint64_t wsum, uint64_t mult, uint64_t bias, int yz, uint64_t y, const int32_t *geom) {
  const Geom g = geom_of(geom);
  // the tiles load 16 bytes at a time: C % 16 == 0 keeps every pixel's and weight row's offset aligned, and the
  // tensors' own addresses must be (dq_alloc's are; a view at an odd offset takes the direct kernel)
  if (wsum && tc_applies(g) && (x | w) % 16 == 0 && !conv_direct_only()) {
    return qconv_tc(g, at<const uint8_t>(x), xz, at<const int8_t>(w), at<const int32_t>(wsum), at<const float>(mult), bias ? at<const int32_t>(bias) : nullptr, yz, at<uint8_t>(y));
  }

  const uint8_t *X = at<const uint8_t>(x);
  const int8_t *Wt = at<const int8_t>(w), *WZ = at<const int8_t>(wz);
  const float *MU = at<const float>(mult);
  const int32_t *B = bias ? at<const int32_t>(bias) : nullptr;
  uint8_t *Y = at<uint8_t>(y);
  const int64_t n = (int64_t)g.N * g.OH * g.OW * g.M;
  // NHWC out: one thread per output value (a direct convolution, for any zero points and channel counts)
  return each(n, DQ_LAMBDA(int64_t i) {
    const int m = (int)(i % g.M), ox = (int)(i / g.M % g.OW), oy = (int)(i / ((int64_t)g.M * g.OW) % g.OH);
    const int64_t b = i / ((int64_t)g.M * g.OW * g.OH);
    const Window w = window_of(g, oy, ox);
    const int wzm = WZ[m];
    int32_t acc = B ? B[m] : 0;
    for (int ky = w.ky0; ky < w.ky1; ky++)
      for (int kx = w.kx0; kx < w.kx1; kx++) {
        const uint8_t *xr = X + ((b * g.H + w.iy0 + ky) * g.W + w.ix0 + kx) * g.C;
        const int8_t *wr = Wt + (((int64_t)m * g.KH + ky) * g.KW + kx) * g.C;
        for (int c = 0; c < g.C; c++) acc += ((int32_t)xr[c] - xz) * ((int32_t)wr[c] - wzm);
      }
    Y[i] = (uint8_t)clamp_u8(rintf((float)acc * MU[m]) + (float)yz);
  });
}

namespace {
// QLinearConv of ≤ 2-bit operands by bit planes (dq_qconv_bitserial): with activations x = Σ_i 2^i x_i (levels,
// zero point 0) and weights m = wmin + wstep·Σ_j 2^j k_j (DoReFa's b-bit numerators: wmin = 1 − 2^b, wstep = 2),
//   Σ x·m = wstep·Σ_i Σ_j 2^(i+j) popc(x_i AND k_j) + wmin·Σ x
// over the window's KH·KW·C values, each popcount over bit rows: Hopper's 1-bit tensor cores compute 8×8 tiles of
// them 128 bits deep (bmma, AND + POPC). Depth is laid out as the int8 kernels read it ([KH, KW, C]), padded with
// zero bits to a multiple of 128; padding pixels are 0 (zero point 0), so they need no correction. Rows are packed
// in 8 × 128-bit units, one tile of the multiply each (BsLayout), so that every tile starts 128 bytes aligned.
constexpr int BS_TILE = 8;     // pixels and channels per tile
constexpr int BS_STEP = 128;   // depth bits per tile
struct BsLayout {
  int64_t pixels, tiles;       // output pixels, and tiles of 8 of them
  int steps;                   // 128-bit depth steps
  int64_t depth;               // KH·KW·C
};
BsLayout bs_layout(const Geom &g) {
  const int64_t pixels = (int64_t)g.N * g.OH * g.OW, depth = (int64_t)g.KH * g.KW * g.C;
  return BsLayout{pixels, (pixels + BS_TILE - 1) / BS_TILE, (int)((depth + BS_STEP - 1) / BS_STEP), depth};
}
// 32-bit words of one plane's rows: tiles × steps × 8 rows × 4 words
DQ_FN inline int64_t bs_words(int64_t tiles, int steps) { return tiles * steps * BS_TILE * 4; }
// Index of word q (of 4) in row r's 128-bit part for step s, tile t, plane i
DQ_FN inline int64_t bs_word(int64_t tiles, int steps, int i, int64_t t, int s, int r, int q) {
  return ((((int64_t)i * tiles + t) * steps + s) * BS_TILE + r) * 4 + q;
}

// Word k (depth bits 32k … 32k+31) of bit plane i of output pixel p's window.
DQ_FN inline uint32_t bs_pack_word(const Geom &g, const uint8_t *X, int64_t depth, int64_t p, int i, int64_t k) {
  if (p >= (int64_t)g.N * g.OH * g.OW) return 0;
  const int ox = (int)(p % g.OW), oy = (int)(p / g.OW % g.OH);
  const int64_t b = p / ((int64_t)g.OW * g.OH);
  uint32_t word = 0;
  for (int bit = 0; bit < 32; bit++) {
    const int64_t d = k * 32 + bit;
    if (d >= depth) break;
    const int pos = (int)(d / g.C), c = (int)(d % g.C);
    const int iy = oy * g.SH - g.PT + pos / g.KW, ix = ox * g.SW - g.PL + pos % g.KW;
    if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
    word |= (uint32_t)((X[((b * g.H + iy) * g.W + ix) * g.C + c] >> i) & 1) << bit;
  }
  return word;
}

// Σ x over output pixel p's window (the wmin correction).
DQ_FN inline int32_t bs_window_sum(const Geom &g, const uint8_t *X, int64_t p) {
  const int ox = (int)(p % g.OW), oy = (int)(p / g.OW % g.OH);
  const int64_t b = p / ((int64_t)g.OW * g.OH);
  int32_t sum = 0;
  for (int ky = 0; ky < g.KH; ky++)
    for (int kx = 0; kx < g.KW; kx++) {
      const int iy = oy * g.SH - g.PT + ky, ix = ox * g.SW - g.PL + kx;
      if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
      const uint8_t *xr = X + ((b * g.H + iy) * g.W + ix) * g.C;
      for (int c = 0; c < g.C; c++) sum += xr[c];
    }
  return sum;
}

// Output (p, m) from its plane-combined popcount sum, requantised as dq_qlinear_conv does.
DQ_FN inline void bs_write(const Geom &g, int64_t p, int m, int32_t dot, int32_t xsum, int wmin, int wstep, const float *MU, const int32_t *B, int yz,
                           uint8_t *Y) {
  const int32_t acc = (B ? B[m] : 0) + wstep * dot + wmin * xsum;
  Y[p * g.M + m] = (uint8_t)clamp_u8(rintf((float)acc * MU[m]) + (float)yz);
}

#ifdef __CUDACC__
// One warp per 8×8 output tile: for every pair of planes, the 1-bit tensor cores' AND + POPC over the depth steps,
// shifted by the planes' weight and summed.
constexpr int BS_WARPS = 4;
__global__ void __launch_bounds__(BS_WARPS * 32) bs_gemm_kernel(Geom g, BsLayout L, const uint32_t *XP, int xbits, const uint32_t *WP, int wbits,
                                                                const int32_t *XS, int wmin, int wstep, const float *MU, const int32_t *B, int yz, uint8_t *Y) {
  namespace wmma = nvcuda::wmma;
  namespace wx = nvcuda::wmma::experimental;
  __shared__ int32_t out[BS_WARPS][BS_TILE * BS_TILE];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tile = (int64_t)blockIdx.x * BS_WARPS + warp, ctiles = g.M / BS_TILE;
  if (tile >= L.tiles * ctiles) return; // a whole warp leaves together
  const int64_t t = tile / ctiles;
  const int u = (int)(tile % ctiles);
  wmma::fragment<wmma::accumulator, 8, 8, 128, int> total, part;
  wmma::fill_fragment(total, 0);
  for (int i = 0; i < xbits; i++)
    for (int j = 0; j < wbits; j++) {
      wmma::fill_fragment(part, 0);
      for (int s = 0; s < L.steps; s++) {
        wmma::fragment<wmma::matrix_a, 8, 8, 128, wx::precision::b1, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 8, 8, 128, wx::precision::b1, wmma::col_major> b;
        wmma::load_matrix_sync(a, XP + bs_word(L.tiles, L.steps, i, t, s, 0, 0), BS_STEP);
        wmma::load_matrix_sync(b, WP + bs_word(ctiles, L.steps, j, u, s, 0, 0), BS_STEP);
        wmma::bmma_sync(part, a, b, part, wx::bmmaBitOpAND, wx::bmmaAccumulateOpPOPC);
      }
      for (int e = 0; e < part.num_elements; e++) total.x[e] += part.x[e] << (i + j);
    }
  wmma::store_matrix_sync(out[warp], total, BS_TILE, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < BS_TILE * BS_TILE; e += 32) {
    const int64_t p = t * BS_TILE + e / BS_TILE;
    if (p < L.pixels) bs_write(g, p, u * BS_TILE + e % BS_TILE, out[warp][e], XS[p], wmin, wstep, MU, B, yz, Y);
  }
}

int bs_gemm(const Geom &g, const BsLayout &L, const uint32_t *XP, int xbits, const uint32_t *WP, int wbits, const int32_t *XS, int wmin, int wstep,
            const float *MU, const int32_t *B, int yz, uint8_t *Y) {
  const int64_t blocks = (L.tiles * (g.M / BS_TILE) + BS_WARPS - 1) / BS_WARPS;
  if (blocks == 0) return 0;
  if (blocks > 0x7fffffff) return fail("bit-serial QLinearConv: too many pixels for one launch");
  bs_gemm_kernel<<<(unsigned)blocks, BS_WARPS * 32, 0, g_stream>>>(g, L, XP, xbits, WP, wbits, XS, wmin, wstep, MU, B, yz, Y);
  return launched();
}
#else
// What the tensor cores compute, tile by tile: popcounts of ANDed 32-bit words.
int bs_gemm(const Geom &g, const BsLayout &L, const uint32_t *XP, int xbits, const uint32_t *WP, int wbits, const int32_t *XS, int wmin, int wstep,
            const float *MU, const int32_t *B, int yz, uint8_t *Y) {
  const int64_t ctiles = g.M / BS_TILE;
  for (int64_t p = 0; p < L.pixels; p++)
    for (int m = 0; m < g.M; m++) {
      int32_t dot = 0;
      for (int i = 0; i < xbits; i++)
        for (int j = 0; j < wbits; j++) {
          int32_t part = 0;
          for (int s = 0; s < L.steps; s++)
            for (int q = 0; q < 4; q++)
              part += __builtin_popcount(XP[bs_word(L.tiles, L.steps, i, p / BS_TILE, s, (int)(p % BS_TILE), q)] &
                                         WP[bs_word(ctiles, L.steps, j, m / BS_TILE, s, m % BS_TILE, q)]);
          dot += part << (i + j);
        }
      bs_write(g, p, m, dot, XS[p], wmin, wstep, MU, B, yz, Y);
    }
  return 0;
}
#endif
}  // namespace

uint64_t dq_bitserial_scratch_bytes(const int32_t *geom, int xbits) {
  const BsLayout L = bs_layout(geom_of(geom));
  return (uint64_t)(bs_words(L.tiles, L.steps) * xbits * 4 + L.tiles * BS_TILE * 4);
}

int dq_qconv_bitserial(uint64_t x, int xbits, uint64_t wplanes, int wbits, int wmin, int wstep, uint64_t mult, uint64_t bias, int yz, uint64_t y,
                       uint64_t scratch, const int32_t *geom) {
  const Geom g = geom_of(geom);
  if (xbits < 1 || xbits > 2 || wbits < 1 || wbits > 2) return fail("bit-serial QLinearConv takes 1 or 2 bits per operand");
  if (g.M <= 0 || g.M % BS_TILE != 0) return fail("bit-serial QLinearConv needs a multiple of 8 output channels");
  if (scratch % 128 != 0 || wplanes % 128 != 0) return fail("bit-serial QLinearConv needs 128-byte aligned planes");
  const BsLayout L = bs_layout(g);
  const uint8_t *X = at<const uint8_t>(x);
  uint32_t *XP = at<uint32_t>(scratch);
  int32_t *XS = at<int32_t>(scratch + (uint64_t)bs_words(L.tiles, L.steps) * xbits * 4);
  const int64_t rowWords = (int64_t)L.steps * 4, planeWords = bs_words(L.tiles, L.steps);
  // word w: plane, pixel (padded to the tile) and word of its row
  if (each(planeWords * xbits, DQ_LAMBDA(int64_t w) {
        const int i = (int)(w / planeWords);
        const int64_t p = w % planeWords / rowWords, k = w % rowWords;
        XP[bs_word(L.tiles, L.steps, i, p / BS_TILE, (int)(k / 4), (int)(p % BS_TILE), (int)(k % 4))] = bs_pack_word(g, X, L.depth, p, i, k);
      }) != 0)
    return -1;
  if (each(L.pixels, DQ_LAMBDA(int64_t p) { XS[p] = bs_window_sum(g, X, p); }) != 0) return -1;
  return bs_gemm(g, L, XP, xbits, at<const uint32_t>(wplanes), wbits, XS, wmin, wstep, at<const float>(mult), bias ? at<const int32_t>(bias) : nullptr, yz, at<uint8_t>(y));
}

int dq_qlinear_add(uint64_t a, uint64_t b, uint64_t y, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb,
                   float ra, float rb, float fixed, int zc) {
  Dims d;
  int64_t n;
  if (dims_of(d, rank, dims, sa, sb, n)) return -1;
  const uint8_t *A = at<const uint8_t>(a), *B = at<const uint8_t>(b);
  uint8_t *Y = at<uint8_t>(y);
  // MLAS's AVX2 QLinearAdd: two fused multiply-adds, one rounding
  return each(n, DQ_LAMBDA(int64_t i) {
    int64_t ia, ib;
    offsets(d, i, ia, ib);
    Y[i] = (uint8_t)clamp_u8(rintf(fmaf((float)A[ia], ra, fmaf((float)B[ib], rb, fixed))) + (float)zc);
  });
}

int dq_gather(int elem, uint64_t x, uint64_t idx, uint64_t y, int64_t outer, int64_t len, int64_t count, int64_t inner) {
  const int64_t *I = at<const int64_t>(idx);
  const int64_t n = outer * count * inner * elem;
  const uint8_t *X = at<const uint8_t>(x);
  uint8_t *Y = at<uint8_t>(y);
  const int64_t row = inner * elem;
  // byte by byte: the rows gathered here are a few kilobytes, and one kernel serves every element size
  return each(n, DQ_LAMBDA(int64_t i) {
    const int64_t within = i % row, k = i / row % count, o = i / (row * count);
    Y[i] = X[(o * len + I[k]) * row + within];
  });
}

namespace {
template <class T>
int reduce_sum(const T *X, T *Y, const Dims &kept, const Dims &red, int64_t n, int64_t r) {
  return each(n, DQ_LAMBDA(int64_t i) {
    int64_t base, unused;
    offsets(kept, i, base, unused);
    double s = 0;
    for (int64_t j = 0; j < r; j++) { int64_t off; offsets(red, j, off, unused); s += (double)X[base + off]; }
    Y[i] = (T)s;
  });
}
}  // namespace

int dq_reduce_sum(int dtype, uint64_t x, uint64_t y, const int64_t *plan) {
  const int kr = (int)plan[0], rr = (int)plan[1];
  if (kr > DQ_MAX_RANK || rr > DQ_MAX_RANK || kr < 0 || rr < 0) return fail("reduce rank");
  Dims kept, red;
  int64_t n, r;
  if (dims_of(kept, kr, plan + 2, plan + 2 + DQ_MAX_RANK, nullptr, n)) return -1;
  if (dims_of(red, rr, plan + 2 + 2 * DQ_MAX_RANK, plan + 2 + 3 * DQ_MAX_RANK, nullptr, r)) return -1;
  if (dtype == 0) return reduce_sum(at<const float>(x), at<float>(y), kept, red, n, r);
  if (dtype == 1) return reduce_sum(at<const double>(x), at<double>(y), kept, red, n, r);
  return fail("ReduceSum on type " + std::to_string(dtype));
}

int dq_avgpool(uint64_t x, uint64_t y, int64_t planes, int h, int w, int kh, int kw, int sh, int sw, int oh, int ow) {
  const float *X = at<const float>(x);
  float *Y = at<float>(y);
  return each(planes * oh * ow, DQ_LAMBDA(int64_t i) {
    const int ox = (int)(i % ow), oy = (int)(i / ow % oh);
    const int64_t p = i / ((int64_t)ow * oh);
    double s = 0;
    for (int dy = 0; dy < kh; dy++)
      for (int dx = 0; dx < kw; dx++) s += (double)X[(p * h + oy * sh + dy) * w + ox * sw + dx];
    Y[i] = (float)s / (float)(kh * kw);
  });
}

int dq_gemm(int dtype, uint64_t a, uint64_t b, uint64_t c, uint64_t y, int m, int n, int k, int ta, int tb,
            double alpha, double beta, int c_mode) {
  if (dtype != 0 && dtype != 1) return fail("Gemm on type " + std::to_string(dtype));
  const bool f64 = dtype == 1;
  const void *A = at<const void>(a), *B = at<const void>(b), *C = c ? at<const void>(c) : nullptr;
  void *Y = at<void>(y);
  return each((int64_t)m * n, DQ_LAMBDA(int64_t i) {
    const int row = (int)(i / n), col = (int)(i % n);
    double s = 0;
    for (int j = 0; j < k; j++) {
      const int64_t ia = ta ? (int64_t)j * m + row : (int64_t)row * k + j;
      const int64_t ib = tb ? (int64_t)col * k + j : (int64_t)j * n + col;
      s += f64 ? ((const double *)A)[ia] * ((const double *)B)[ib] : (double)((const float *)A)[ia] * (double)((const float *)B)[ib];
    }
    double v = alpha * s;
    if (C && c_mode) {
      const int64_t ic = c_mode == 1 ? col : c_mode == 2 ? i : c_mode == 3 ? 0 : row;
      v += beta * (f64 ? ((const double *)C)[ic] : (double)((const float *)C)[ic]);
    }
    if (f64) ((double *)Y)[i] = v;
    else ((float *)Y)[i] = (float)v;
  });
}

