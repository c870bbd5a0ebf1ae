// Which graph runtime runs a bundle: onnxruntime-node on the CPU (--device cpu), or the graph interpreter on the
// native operators (--device cuda: libdq-cuda.so; the host build serves tests). Plain data, so that it crosses into
// the engine's worker threads.
import type { OpenGraph } from './graph-session.js';
import { openInterpreted } from './graph/open-interpreted.js';
import { nativeBackend } from './graph/native-backend.js';
import { loadNative, type NativeKind } from './graph/native-lib.js';
import { openOrt } from './ort-session.js';

export type Runtime =
  | { readonly kind: 'onnxruntime'; readonly intraOpNumThreads: number; readonly interOpNumThreads: number }
  | { readonly kind: 'native'; readonly library: NativeKind; readonly device: number };

export function openRuntime(runtime: Runtime): OpenGraph {
  if (runtime.kind === 'onnxruntime') return openOrt(runtime);
  const lib = loadNative(runtime.library, runtime.device);
  return openInterpreted(() => nativeBackend(lib));
}
