// The native operators (native/dq/dq.h) loaded through koffi: libdq-cuda.so (the GPU) or libdq-host.so (the same
// code on host memory, for tests). Built by `npm run build:cuda` / `npm run build:native`; never at install time,
// so machines without CUDA install and test everything else.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { DqError } from '../../errors.js';

export type NativeKind = 'cuda' | 'host';

/** Device addresses travel as numbers (koffi gives a uint64 below 2^53 as a number). */
export type Address = number;

export interface NativeLib {
  readonly kind: NativeKind;
  /** What runs the operators, e.g. "NVIDIA H200, sm_90". */
  readonly device: string;
  alloc(bytes: number): Address;
  free(ptr: Address): void;
  upload(dst: Address, src: ArrayBufferView): void;
  download(dst: ArrayBufferView, src: Address): void;
  copy2d(dst: Address, dpitch: number, src: Address, spitch: number, width: number, rows: number): void;
  sync(): void;
  transpose(elem: number, x: Address, y: Address, dims: BigInt64Array, strides: BigInt64Array): void;
  cast(from: number, x: Address, to: number, y: Address, n: number): void;
  binary(op: number, dtype: number, a: Address, b: Address, y: Address, dims: BigInt64Array, sa: BigInt64Array, sb: BigInt64Array): void;
  unary(op: number, x: Address, y: Address, n: number, lo: number, hi: number): void;
  conv2d(x: Address, w: Address, bias: Address, y: Address, geom: Int32Array): void;
  quantize(x: Address, y: Address, n: number, scale: number, zp: number): void;
  /** `wsum` (weightSums) only where every weight zero point is 0, else 0: then dq.cpp may use the tensor cores. */
  qlinearConv(x: Address, xz: number, w: Address, wz: Address, wsum: Address, mult: Address, bias: Address, yz: number, y: Address, geom: Int32Array): void;
  /**
   * QLinearConv of ≤ 2-bit operands on the 1-bit tensor cores (dq.h's dq_qconv_bitserial): x levels below 2^xbits,
   * zero point 0; weights as bitPlanes packs them. Not yet chosen by the engine (no bundle has ≤ 2-bit layers):
   * bench/gpu/kernels.ts times it against the int8 kernels.
   */
  qconvBitserial(x: Address, xbits: number, wplanes: Address, wbits: number, wmin: number, wstep: number, mult: Address, bias: Address, yz: number, y: Address, scratch: Address, geom: Int32Array): void;
  bitserialScratchBytes(geom: Int32Array, xbits: number): number;
  qlinearAdd(a: Address, b: Address, y: Address, dims: BigInt64Array, sa: BigInt64Array, sb: BigInt64Array, ra: number, rb: number, fixed: number, zc: number): void;
  gather(elem: number, x: Address, idx: Address, y: Address, outer: number, len: number, count: number, inner: number): void;
  reduceSum(dtype: number, x: Address, y: Address, plan: BigInt64Array): void;
  avgpool(x: Address, y: Address, planes: number, h: number, w: number, kh: number, kw: number, sh: number, sw: number, oh: number, ow: number): void;
  gemm(dtype: number, a: Address, b: Address, c: Address, y: Address, m: number, n: number, k: number, ta: number, tb: number, alpha: number, beta: number, cMode: number): void;
}

/** A fresh buffer in `lib`'s memory holding `data` (the benchmarks' operands). */
export function uploaded(lib: NativeLib, data: ArrayBufferView): Address {
  const p = lib.alloc(data.byteLength);
  lib.upload(p, data);
  return p;
}

/** native/dq/build beside src/ or dist/ (both are two folders below the repository root), or $DQ_NATIVE_DIR. */
export function nativeDir(): string {
  return process.env['DQ_NATIVE_DIR'] ?? resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'dq', 'build');
}

const loaded = new Map<NativeKind, NativeLib>();

/** native/dq/dq.h's DQ_ABI_VERSION (test/engine/graph/native-lib.test.ts keeps the two equal). */
export const ABI_VERSION = 3;

/** cudaGetErrorString's texts for the errors after which the CUDA context cannot be used again. */
export const STICKY = /illegal memory access|illegal instruction|misaligned address|unspecified launch failure|device-side assert|uncorrectable ECC|invalid program counter|hardware stack error/;

/**
 * The check every operator's return code goes through. After a fault in a kernel CUDA refuses every later call
 * of the process ("sticky" errors): that is DQ_ERR_ENGINE_LOST (the server's liveness fails, so that an
 * orchestrator restarts it), and the first cause is kept and repeated, so that logs name it rather than the many
 * failures it brings.
 */
export function checker(lastError: () => string): (what: string, rc: number) => void {
  let lost: string | null = null;
  return (what, rc) => {
    if (lost) throw new DqError('DQ_ERR_ENGINE_LOST', lost);
    if (rc === 0) return;
    const why = `${what}: ${lastError()}`;
    if (STICKY.test(why)) {
      lost = why;
      throw new DqError('DQ_ERR_ENGINE_LOST', why);
    }
    throw new DqError('DQ_ERR_ENGINE_FAILED', why);
  };
}

/** Loads and initialises the library once per thread; a machine that cannot run it gets one clear line. */
export function loadNative(kind: NativeKind, device = 0): NativeLib {
  const cached = loaded.get(kind);
  if (cached) return cached;
  const file = join(nativeDir(), `libdq-${kind}.so`);
  const why = kind === 'cuda' ? 'the CUDA engine needs an NVIDIA GPU with its driver and' : 'the host build of the native operators needs';
  if (!existsSync(file)) {
    throw new DqError('DQ_ERR_CONFIG_INVALID', `${why} ${file}: build it with \`npm run build:${kind === 'cuda' ? 'cuda' : 'native'}\`${kind === 'cuda' ? ' where CUDA (nvcc) is installed' : ''}`);
  }
  let lib: koffi.IKoffiLib;
  try {
    lib = koffi.load(file);
  } catch (err) {
    throw new DqError('DQ_ERR_CONFIG_INVALID', `cannot load ${file}: ${(err as Error).message}`, { cause: err });
  }
  const f = (proto: string) => lib.func(proto);
  // dq.h's DQ_ABI_VERSION: a library built from other sources would take shifted arguments without a word
  const abi = (() => {
    try {
      return (f('int dq_abi_version(void)') as () => number)();
    } catch {
      return 1; // before the version existed
    }
  })();
  if (abi !== ABI_VERSION) {
    throw new DqError('DQ_ERR_CONFIG_INVALID', `${file} was built from another version of native/dq (ABI ${abi}, this server needs ${ABI_VERSION}): rebuild it with \`npm run build:${kind === 'cuda' ? 'cuda' : 'native'}\``);
  }
  const lastError = f('const char *dq_last_error(void)') as () => string;
  const check = checker(lastError);
  // every operator returns 0, or -1 with dq_last_error()
  const call = (what: string, proto: string) => {
    const fn = f(proto) as (...args: unknown[]) => number;
    return (...args: unknown[]): void => check(what, fn(...args));
  };
  const init = f('int dq_init(int device)') as (d: number) => number;
  if (init(device) !== 0) {
    throw new DqError('DQ_ERR_CONFIG_INVALID', kind === 'cuda' ? `CUDA is not usable here (${lastError()}): --device cuda needs an NVIDIA GPU and its driver` : lastError());
  }
  const alloc = f('uint64_t dq_alloc(uint64_t bytes)') as (n: number) => number | bigint;
  const upload = call('upload', 'int dq_upload(uint64_t dst, const void *src, uint64_t bytes)');
  const download = call('download', 'int dq_download(_Out_ void *dst, uint64_t src, uint64_t bytes)');
  const transpose = call('Transpose', 'int dq_transpose(int elem, uint64_t x, uint64_t y, int rank, const int64_t *dims, const int64_t *strides)');
  const binary = call('elementwise', 'int dq_binary(int op, int dtype, uint64_t a, uint64_t b, uint64_t y, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb)');
  const scratchBytes = f('uint64_t dq_bitserial_scratch_bytes(const int32_t *geom, int xbits)') as (g: Int32Array, b: number) => number | bigint;
  const qlinearAdd = call('QLinearAdd', 'int dq_qlinear_add(uint64_t a, uint64_t b, uint64_t y, int rank, const int64_t *dims, const int64_t *sa, const int64_t *sb, float ra, float rb, float fixed, int zc)');
  const native: NativeLib = {
    kind,
    device: (f('const char *dq_device_name(void)') as () => string)(),
    alloc(bytes) {
      const p = Number(alloc(bytes));
      if (p === 0) throw new DqError('DQ_ERR_ENGINE_FAILED', `cannot allocate ${bytes} bytes: ${lastError()}`);
      return p;
    },
    free: call('free', 'int dq_free(uint64_t ptr)'),
    upload: (dst, src) => upload(dst, src, src.byteLength),
    download: (dst, src) => download(dst, src, dst.byteLength),
    copy2d: call('copy', 'int dq_copy2d(uint64_t dst, uint64_t dpitch, uint64_t src, uint64_t spitch, uint64_t width, uint64_t rows)'),
    sync: call('sync', 'int dq_sync(void)'),
    transpose: (elem, x, y, dims, strides) => transpose(elem, x, y, dims.length, dims, strides),
    cast: call('Cast', 'int dq_cast(int from, uint64_t x, int to, uint64_t y, int64_t n)'),
    binary: (op, dtype, a, b, y, dims, sa, sb) => binary(op, dtype, a, b, y, dims.length, dims, sa, sb),
    unary: call('elementwise', 'int dq_unary(int op, uint64_t x, uint64_t y, int64_t n, float lo, float hi)'),
    conv2d: call('Conv', 'int dq_conv2d(uint64_t x, uint64_t w, uint64_t bias, uint64_t y, const int32_t *geom)'),
    quantize: call('QuantizeLinear', 'int dq_quantize(uint64_t x, uint64_t y, int64_t n, float scale, int zp)'),
    qlinearConv: call('QLinearConv', 'int dq_qlinear_conv(uint64_t x, int xz, uint64_t w, uint64_t wz, uint64_t wsum, uint64_t mult, uint64_t bias, int yz, uint64_t y, const int32_t *geom)'),
    qconvBitserial: call(
      'QLinearConv (bit-serial)',
      'int dq_qconv_bitserial(uint64_t x, int xbits, uint64_t wplanes, int wbits, int wmin, int wstep, uint64_t mult, uint64_t bias, int yz, uint64_t y, uint64_t scratch, const int32_t *geom)',
    ),
    bitserialScratchBytes: (geom, xbits) => Number(scratchBytes(geom, xbits)),
    qlinearAdd: (a, b, y, dims, sa, sb, ra, rb, fixed, zc) => qlinearAdd(a, b, y, dims.length, dims, sa, sb, ra, rb, fixed, zc),
    gather: call('Gather', 'int dq_gather(int elem, uint64_t x, uint64_t idx, uint64_t y, int64_t outer, int64_t len, int64_t count, int64_t inner)'),
    reduceSum: call('ReduceSum', 'int dq_reduce_sum(int dtype, uint64_t x, uint64_t y, const int64_t *plan)'),
    avgpool: call('AveragePool', 'int dq_avgpool(uint64_t x, uint64_t y, int64_t planes, int h, int w, int kh, int kw, int sh, int sw, int oh, int ow)'),
    gemm: call('Gemm', 'int dq_gemm(int dtype, uint64_t a, uint64_t b, uint64_t c, uint64_t y, int m, int n, int k, int ta, int tb, double alpha, double beta, int c_mode)'),
  };
  loaded.set(kind, native);
  return native;
}
