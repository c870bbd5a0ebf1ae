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

// f(i) for i in [0, n), on the stream.
template <class F>
int each(int64_t n, F f) {
  if (n <= 0) return 0;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  each_kernel<<<(unsigned)(blocks < 1048576 ? blocks : 1048576), threads, 0, g_stream>>>(n, f);
  if (check(cudaGetLastError(), "kernel launch")) return -1;
  return g_sync_each ? check(cudaStreamSynchronize(g_stream), "kernel") : 0;
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
  void *p = malloc(bytes ? bytes : 1);
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

int dq_qlinear_conv(uint64_t x, int xz, uint64_t w, uint64_t wz, uint64_t mult, uint64_t bias, int yz, uint64_t y, const int32_t *geom) {
  const Geom g = geom_of(geom);
  const uint8_t *X = at<const uint8_t>(x);
  const int8_t *Wt = at<const int8_t>(w), *WZ = at<const int8_t>(wz);
  const float *MU = at<const float>(mult);
  const int32_t *B = bias ? at<const int32_t>(bias) : nullptr;
  uint8_t *Y = at<uint8_t>(y);
  const int64_t n = (int64_t)g.N * g.OH * g.OW * g.M;
  // NHWC out: one thread per output value (a direct convolution; the tensor-core kernels come next)
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

