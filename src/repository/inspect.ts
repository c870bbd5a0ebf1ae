// `dqserve inspect`: a human (or JSON) summary of one bundle, with Bit-FLOPs recomputed from the layers.
import { bitflops, referenceBitflops, uniformPlan } from '../cost/bitflops.js';
import { loadBundle } from './bundle.js';

export async function inspectBundle(dir: string, options: { json: boolean; verifyChecksums: boolean }): Promise<string> {
  const { manifest: m } = await loadBundle(dir, { verifyChecksums: options.verifyChecksums });
  const dynamic = m.layers.filter((l) => l.kind === 'dynamic');
  const perBits = Object.fromEntries(m.bits.candidates.map((b) => [b, bitflops(m.layers, uniformPlan(m.layers, b))]));
  const summary = {
    name: m.name,
    version: m.version,
    kind: m.kind,
    created: m.created,
    classes: m.classes,
    input: m.input,
    bits: m.bits,
    policy: m.policy ?? null,
    layers: m.layers.map((l) => ({ name: l.name, kind: l.kind, op: l.op, bits: l.bits, macs: l.macs, in_shape: l.in_shape, out_shape: l.out_shape })),
    macs_total: m.layers.reduce((s, l) => s + l.macs, 0),
    dynamic_layers: dynamic.length,
    bitflops: { manifest: m.bitflops, recomputed_reference: referenceBitflops(m.layers, m.bits.reference), uniform: perBits },
    metrics: m.metrics ?? {},
    calibration: m.calibration ?? [],
    checksums: options.verifyChecksums ? 'verified' : 'not checked',
  };
  if (options.json) return JSON.stringify(summary, null, 2);

  const lines: string[] = [];
  lines.push(`${m.name} v${m.version} (${m.kind}), ${m.classes.length} classes, input ${m.input.size.join('x')}, checksums ${summary.checksums}`);
  lines.push(`bits: candidates [${m.bits.candidates.join(', ')}], reference ${m.bits.reference}, fixed ${m.bits.fixed ?? '-'}, first/last ${m.bits.first_last ?? '-'}`);
  if (m.policy) {
    const first = m.policy.first_bits === null ? "the controller's plan" : `every dynamic layer at ${m.policy.first_bits} bits`;
    lines.push(`policy: gated, pass 1 ${first}; under top-1 confidence ${m.policy.threshold}, pass 2 at ${m.policy.second_bits} bits`);
  }
  lines.push('');
  lines.push(pad('layer', 28) + pad('kind', 11) + pad('op', 8) + pad('bits', 6) + padL('MACs', 14));
  for (const l of m.layers) lines.push(pad(l.name, 28) + pad(l.kind, 11) + pad(l.op, 8) + pad(l.bits === null ? (l.kind === 'dynamic' ? 'dyn' : '32') : String(l.bits), 6) + padL(l.macs.toLocaleString('en-US'), 14));
  lines.push(pad('total', 53) + padL(summary.macs_total.toLocaleString('en-US'), 14));
  lines.push('');
  lines.push(`Bit-FLOPs: reference ${fmt(m.bitflops.reference)} (recomputed ${fmt(summary.bitflops.recomputed_reference)}), fixed part ${fmt(m.bitflops.fixed)}, min ${fmt(m.bitflops.min)}, max ${fmt(m.bitflops.max)}`);
  for (const [b, v] of Object.entries(perBits)) lines.push(`  all dynamic layers at ${b} bits: ${fmt(v)}`);
  const met = m.metrics as Record<string, unknown> | undefined;
  if (met && Object.keys(met).length) lines.push(`metrics: ${JSON.stringify(met)}`);
  if (m.calibration?.length) {
    lines.push('');
    lines.push(pad('knob', 10) + padL('accuracy', 10) + padL('mean Bit-FLOPs', 18) + padL('mean bits', 11));
    for (const c of m.calibration) lines.push(pad(String(c.knob), 10) + padL(c.accuracy.toFixed(4), 10) + padL(fmt(c.mean_bitflops), 18) + padL(c.mean_bits.toFixed(3), 11));
  }
  return lines.join('\n');
}

const pad = (s: string, n: number) => (s.length >= n ? s + ' ' : s + ' '.repeat(n - s.length));
const padL = (s: string, n: number) => (s.length >= n ? ' ' + s : ' '.repeat(n - s.length) + s);
const fmt = (x: number) => x.toExponential(4);
