// Bit-FLOPs as pure functions of the manifest's per-layer MACs and a bit plan (docs/bitflops.md):
//   BitFLOPs = Σ over conv/linear layers  MACs(layer) × b_w × b_a, with b_w = b_a = b for quantized layers.
// Full-precision layers (`fp`, `controller`) count at their `bits` or 32 × 32 when bits is null;
// `fixed` layers at their fixed bits; `dynamic` layers at the bits the plan gives them.

export interface CostLayer {
  readonly name: string;
  readonly kind: 'fp' | 'fixed' | 'dynamic' | 'controller';
  readonly bits: number | null;
  readonly macs: number;
}

/** Bits per dynamic layer, by layer name. */
export type BitPlan = Readonly<Record<string, number>>;

const FULL_PRECISION_BITS = 32;

export function layerBits(layer: CostLayer, plan: BitPlan): number {
  if (layer.kind === 'dynamic') {
    const b = plan[layer.name];
    if (b === undefined) throw new RangeError(`bit plan has no entry for dynamic layer ${layer.name}`);
    return b;
  }
  if (layer.bits !== null) return layer.bits;
  if (layer.kind === 'fixed') throw new RangeError(`fixed layer ${layer.name} has no bits`);
  return FULL_PRECISION_BITS;
}

export function bitflops(layers: readonly CostLayer[], plan: BitPlan): number {
  let total = 0;
  for (const layer of layers) {
    const b = layerBits(layer, plan);
    total += layer.macs * b * b;
  }
  return total;
}

/** Every dynamic layer at `referenceBits`, everything else as in `bitflops`. */
export function referenceBitflops(layers: readonly CostLayer[], referenceBits: number): number {
  return bitflops(layers, uniformPlan(layers, referenceBits));
}

/** The dynamic layers alone, each at `b`: what a gated second pass at `b` adds to a request (docs/bitflops.md). */
export function secondPassBitflops(layers: readonly CostLayer[], b: number): number {
  let total = 0;
  for (const layer of layers) if (layer.kind === 'dynamic') total += layer.macs * b * b;
  return total;
}

/** Every layer at full precision (32 × 32): what the network costs unquantized. */
export function fullPrecisionBitflops(layers: readonly CostLayer[]): number {
  let total = 0;
  for (const layer of layers) total += layer.macs * FULL_PRECISION_BITS * FULL_PRECISION_BITS;
  return total;
}

export function uniformPlan(layers: readonly CostLayer[], b: number): BitPlan {
  const plan: Record<string, number> = {};
  for (const layer of layers) if (layer.kind === 'dynamic') plan[layer.name] = b;
  return plan;
}

export function savings(bitflopsValue: number, reference: number): number {
  return reference > 0 ? 1 - bitflopsValue / reference : 0;
}

/** Unweighted mean over the dynamic layers (one vote per layer, as `calibration[].mean_bits`). */
export function meanBits(bits: readonly number[]): number {
  if (bits.length === 0) return 0;
  let s = 0;
  for (const b of bits) s += b;
  return s / bits.length;
}

/**
 * The same sums precomputed for one bundle, for the hot path: dynamic layers in a fixed order
 * (the controller's axis L), plans as arrays in that order.
 */
export interface CostModel {
  readonly dynamicLayers: readonly string[];
  readonly fixed: number;
  readonly reference: number;
  /** The dynamic layers alone at `bits`. */
  dynamic(bits: readonly number[]): number;
  /** Dynamic layer `i` (in that order) alone at `b` bits. */
  layer(i: number, b: number): number;
  /** One request: the fixed part once, the dynamic layers once per pass (`second` = a gated pass 2's bits). */
  bitflops(bits: readonly number[], second?: readonly number[] | null): number;
}

export function costModel(layers: readonly CostLayer[], dynamicOrder: readonly string[], referenceBits: number): CostModel {
  const macsByName = new Map(layers.filter((l) => l.kind === 'dynamic').map((l) => [l.name, l.macs]));
  const macs = dynamicOrder.map((name) => {
    const m = macsByName.get(name);
    if (m === undefined) throw new RangeError(`dynamic layer ${name} is not in the layer list`);
    return m;
  });
  if (macsByName.size !== dynamicOrder.length) throw new RangeError('dynamic layer order does not cover every dynamic layer');
  let fixed = 0;
  for (const layer of layers) {
    if (layer.kind === 'dynamic') continue;
    const b = layerBits(layer, {});
    fixed += layer.macs * b * b;
  }
  const layer = (i: number, b: number): number => (macs[i] ?? 0) * b * b;
  const dynamic = (bits: readonly number[]): number => {
    let total = 0;
    for (let i = 0; i < macs.length; i++) total += layer(i, bits[i] ?? 0);
    return total;
  };
  const of = (bits: readonly number[], second?: readonly number[] | null): number => fixed + dynamic(bits) + (second ? dynamic(second) : 0);
  return { dynamicLayers: [...dynamicOrder], fixed, reference: of(dynamicOrder.map(() => referenceBits)), dynamic, layer, bitflops: of };
}
