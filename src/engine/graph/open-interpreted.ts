// Bundle graphs through the interpreter (interpreter.ts) on a given backend.
import { readFile } from 'node:fs/promises';
import { DqError } from '../../errors.js';
import type { OpenGraph } from '../graph-session.js';
import { Interpreter, type Backend } from './interpreter.js';
import { decodeOnnx } from './onnx.js';

export function openInterpreted<T>(backend: () => Backend<T>): OpenGraph {
  return async (path, file) => {
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    return new Interpreter(decodeOnnx(bytes, file), backend(), file);
  };
}
