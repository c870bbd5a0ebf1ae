// The per-request Bit-FLOPs cap on the wire: query `max_bitflops`, header `x-dqserve-max-bitflops`,
// OIP request parameter `dqserve_max_bitflops`. Several given: the smallest applies (a proxy can only
// tighten a client's cap). Malformed values are 400 DQ_ERR_REQUEST_INVALID_PARAMETER.
import { DqError } from '../errors.js';

export const MAX_BITFLOPS_HEADER = 'x-dqserve-max-bitflops';

const DECIMAL = /^\s*(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$/;

/** One source's value: undefined = not given; a number or a decimal string (e.g. "1.5e9") > 0. */
export function parseMaxBitflops(value: unknown, source: string): number | null {
  if (value === undefined) return null;
  if (Array.isArray(value)) {
    if (value.length !== 1) throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', `${source} given more than once`);
    return parseMaxBitflops(value[0], source);
  }
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && DECIMAL.test(value)) n = Number(value);
  else n = NaN;
  if (!Number.isFinite(n) || n <= 0) {
    throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', `${source} must be a positive number of Bit-FLOPs (got ${JSON.stringify(value)})`);
  }
  return n;
}

/** The smallest of the given caps, or null when none is given. */
export function combineCaps(...caps: Array<number | null>): number | null {
  const given = caps.filter((c): c is number => c !== null);
  return given.length ? Math.min(...given) : null;
}
