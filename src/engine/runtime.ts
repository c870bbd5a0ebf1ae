// Which graph runtime runs a bundle: onnxruntime-node on the CPU (--device cpu), or the graph interpreter on the
// native operators (--device cuda: libdq-cuda.so; the host build serves tests). Plain data, so that it crosses into
// the engine's worker threads. Each runtime's package is imported only when chosen: a GPU machine runs without
// onnxruntime-node, a CPU one without koffi's library ever loaded.
import type { OpenGraph } from './graph-session.js';
import type { NativeKind } from './graph/native-lib.js';

export type Runtime =
  | { readonly kind: 'onnxruntime'; readonly intraOpNumThreads: number; readonly interOpNumThreads: number }
  | { readonly kind: 'native'; readonly library: NativeKind; readonly device: number };

export async function openRuntime(runtime: Runtime): Promise<OpenGraph> {
  if (runtime.kind === 'onnxruntime') return (await import('./ort-session.js')).openOrt(runtime);
  const [{ loadNative }, { nativeBackend }, { openInterpreted }] = await Promise.all([
    import('./graph/native-lib.js'), import('./graph/native-backend.js'), import('./graph/open-interpreted.js'),
  ]);
  const lib = loadNative(runtime.library, runtime.device);
  return openInterpreted(() => nativeBackend(lib));
}
