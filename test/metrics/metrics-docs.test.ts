// docs/metrics.md and dashboards/dqserve.json stay in step with src/metrics/metrics.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defineMetrics } from '../../src/metrics/metrics.js';
import { REPO_ROOT } from '../helpers/paths.js';

const metrics = defineMetrics({ triton: true });
const defined = metrics.registry.getMetricsAsArray().map((m) => m.name);
const ours = defined.filter((n) => /^(dqserve|nv|http)_/.test(n));

describe('metric documentation', () => {
  it('docs/metrics.md lists exactly the dqserve_* and nv_* metrics defined', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs', 'metrics.md'), 'utf8');
    const rows = new Set([...doc.matchAll(/^\| `([a-z_]+)(?:\{[a-z]+\})?`(?:, `([a-z_]+)(?:\{[a-z]+\})?`)?/gm)].flatMap((m) => [m[1], m[2]]).filter((n): n is string => !!n && /^(dqserve|nv|http)_/.test(n)));
    expect([...rows].sort()).toEqual([...ours].sort());
  });

  it('follows the naming rules: dqserve_ prefix, _total on counters, _seconds on durations', () => {
    for (const m of metrics.registry.getMetricsAsArray()) {
      if (!m.name.startsWith('dqserve_')) continue;
      const type = (m as unknown as { type: string }).type;
      if (type === 'counter') expect(m.name).toMatch(/_total$/);
      if (/duration/.test(m.name)) expect(m.name).toMatch(/_seconds$/);
    }
  });

  it('the Grafana dashboard queries only metrics that exist, and has unique panel ids', () => {
    const dash = JSON.parse(readFileSync(join(REPO_ROOT, 'dashboards', 'dqserve.json'), 'utf8')) as {
      panels: Array<{ id: number; targets?: Array<{ expr: string }> }>;
    };
    const ids = dash.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const exprs = dash.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    expect(exprs.length).toBeGreaterThan(10);
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:dqserve|nv|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1] as string)));
    for (const name of used) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      expect(defined.includes(name) || defined.includes(base), `${name} is not a defined metric`).toBe(true);
    }
    for (const needed of ['dqserve_requests_total', 'dqserve_request_duration_seconds_bucket', 'dqserve_bitflops_total', 'dqserve_bitflops_reference_total', 'dqserve_layer_bits_total', 'dqserve_budget_events_total', 'dqserve_target_knob']) {
      expect(used.has(needed), needed).toBe(true);
    }
  });
});
