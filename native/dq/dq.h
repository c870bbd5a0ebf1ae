// dqserve's native operators: the C ABI that src/engine/graph/native-backend.ts calls through koffi.
// One source (dq.cpp) builds two libraries with the same ABI: libdq-cuda.so (nvcc: device memory, every operator
// a CUDA kernel on one stream) and libdq-host.so (g++: host memory, the same per-element code in loops), so that
// everything but the kernel launches and the CUDA memory calls is tested on machines without a GPU.
//
// Tensors are addresses (uint64_t) in the library's memory: device memory for the CUDA build. Every function
// returns 0, or -1 with the reason in dq_last_error(). Kernels run in order on one stream; dq_download waits
// for them. Data type codes: 0 float32, 1 float64, 2 uint8, 3 int8, 4 int32, 5 int64.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_MAX_RANK 6
/** Raised with every change of a signature below: a library built from older sources is refused at load. */
#define DQ_ABI_VERSION 3

int dq_abi_version(void);
const char *dq_last_error(void);
/**
 * Picks the device and creates the calling thread's stream; the CUDA build fails here on a machine without a
 * usable GPU. With DQ_SYNC=1 in the environment every kernel is waited for, so that a fault names its operator.
 */
int dq_init(int device);
/** What runs the operators ("NVIDIA H200, sm_90", or "host (reference build)"). */
const char *dq_device_name(void);

uint64_t dq_alloc(uint64_t bytes);
int dq_free(uint64_t ptr);
int dq_upload(uint64_t dst, const void *src, uint64_t bytes);
int dq_download(void *dst, uint64_t src, uint64_t bytes);
/** `rows` rows of `width` bytes, `spitch`/`dpitch` bytes apart (Split and Concat along any axis). */
int dq_copy2d(uint64_t dst, uint64_t dpitch, uint64_t src, uint64_t spitch, uint64_t width, uint64_t rows);
int dq_sync(void);

/** y[i] = x[Σ_d idx_d · in_strides[d]] for i over out_dims (in element units); elem = 1, 4 or 8 bytes. */
int dq_transpose(int elem, uint64_t x, uint64_t y, int rank, const int64_t *out_dims, const int64_t *in_strides);
int dq_cast(int from, uint64_t x, int to, uint64_t y, int64_t n);
/** Broadcast binary op (0 add, 1 sub, 2 mul, 3 div, 4 min, 5 max) of one type over out dims; a stride of 0 repeats. */
int dq_binary(int op, int dtype, uint64_t a, uint64_t b, uint64_t y, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb);
/** float32: 0 relu, 1 round half to even, 2 clip to [lo, hi]. */
int dq_unary(int op, uint64_t x, uint64_t y, int64_t n, float lo, float hi);
/** geom: N C H W M KH KW SH SW PT PL OH OW. Float NCHW convolution, products summed in float64, rounded once. */
int dq_conv2d(uint64_t x, uint64_t w, uint64_t bias, uint64_t y, const int32_t *geom);
/** y = clamp(rne(x / scale) + zp, 0, 255). */
int dq_quantize(uint64_t x, uint64_t y, int64_t n, float scale, int zp);
/**
 * Channels-last QLinearConv, uint8 × int8: acc = bias[m] + Σ (x − xz)(w − wz[m]) in int32, then
 * y = clamp(rne(f32(acc) · mult[m]) + yz, 0, 255). w is [M, KH, KW, C] (channels last, as x); wz and mult have M entries.
 * wsum (int32, M entries: Σ of channel m's weights) is given only when every wz is 0: then, where C is a multiple
 * of 16 and M of 16 up to 64, the int8 tensor cores compute it (same result); 0 keeps the direct kernel.
 */
int dq_qlinear_conv(uint64_t x, int xz, uint64_t w, uint64_t wz, uint64_t wsum, uint64_t mult, uint64_t bias, int yz, uint64_t y, const int32_t *geom);
/**
 * QLinearConv of ≤ 2-bit operands by bit planes on the 1-bit tensor cores (AND + popcount): activations x are
 * levels 0 … 2^xbits − 1 (zero point 0, channels last, uint8; higher bits are ignored), weights m = wmin + wstep·k
 * with k in 0 … 2^wbits − 1 (DoReFa's b-bit numerators: wmin = 1 − 2^b, wstep = 2), packed by the caller into wbits planes (src/engine/graph/native-backend.ts's bitPlanes).
 * acc = bias[m] + Σ x·m in int32, y = clamp(rne(f32(acc) · mult[m]) + yz, 0, 255): dq_qlinear_conv with xz = 0
 * and wz = 0, to the bit. M must be a multiple of 8; `scratch` (dq_bitserial_scratch_bytes) and wplanes 128-byte
 * aligned (dq_alloc's are).
 */
int dq_qconv_bitserial(uint64_t x, int xbits, uint64_t wplanes, int wbits, int wmin, int wstep, uint64_t mult, uint64_t bias, int yz, uint64_t y,
                       uint64_t scratch, const int32_t *geom);
uint64_t dq_bitserial_scratch_bytes(const int32_t *geom, int xbits);
/** y = clamp(rne(fma(a, ra, fma(b, rb, fixed))) + zc, 0, 255), broadcast as dq_binary. */
int dq_qlinear_add(uint64_t a, uint64_t b, uint64_t y, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb,
                   float ra, float rb, float fixed, int zc);
/** y[o, k, i] = x[o, idx[k], i]; idx holds count int64 values already checked to lie in [0, len). */
int dq_gather(int elem, uint64_t x, uint64_t idx, uint64_t y, int64_t outer, int64_t len, int64_t count, int64_t inner);
/**
 * Sums over some axes, in float64, stored as dtype (0 or 1). plan: [kept rank, reduced rank, kept dims[6], kept
 * input strides[6], reduced dims[6], reduced input strides[6]]; the output is the kept dims, row-major.
 */
int dq_reduce_sum(int dtype, uint64_t x, uint64_t y, const int64_t *plan);
/** Unpadded average pooling of `planes` float32 H×W planes. */
int dq_avgpool(uint64_t x, uint64_t y, int64_t planes, int h, int w, int kh, int kw, int sh, int sw, int oh, int ow);
/**
 * y = alpha · op(A) op(B) + beta · C in float64 (dtype 0: float32 in and out, rounded once), A is M×K (or K×M with
 * ta), B K×N (or N×K with tb); c_mode 0 no C, 1 C has N entries (one per column), 2 C is M×N, 3 C is one
 * value, 4 C has M entries (one per row).
 */
int dq_gemm(int dtype, uint64_t a, uint64_t b, uint64_t c, uint64_t y, int m, int n, int k, int ta, int tb,
            double alpha, double beta, int c_mode);

#ifdef __cplusplus
}
#endif
