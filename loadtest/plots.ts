// The report's two charts, as SVG through Vega-Lite (rendered headless by Vega: no browser, no canvas).
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

async function svg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return `${await view.toSVG()}\n`;
  } finally {
    view.finalize();
  }
}

const base = { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', width: 560, height: 280, background: '#fff' } as const;

/** Latency percentiles (ms) against the load of each step. */
export function latencyVsLoadSvg(loads: readonly number[], series: Record<string, readonly number[]>, loadLabel: string): Promise<string> {
  const values = Object.entries(series).flatMap(([percentile, ys]) => loads.map((load, i) => ({ load, percentile, ms: ys[i] })));
  return svg({
    ...base,
    title: 'Latency percentiles vs load',
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'load', type: 'quantitative', title: loadLabel, scale: { zero: false } },
      y: { field: 'ms', type: 'quantitative', title: 'latency (ms)' },
      color: { field: 'percentile', type: 'nominal', sort: ['p50', 'p90', 'p95', 'p99'] },
    },
  });
}

/** Histogram of Bit-FLOPs per request. */
export function bitflopsHistogramSvg(values: readonly number[]): Promise<string> {
  return svg({
    ...base,
    title: values.length ? 'Bit-FLOPs per request (all steps)' : 'Bit-FLOPs per request: no successful requests',
    data: { values: values.map((bitflops) => ({ bitflops })) },
    mark: 'bar',
    encoding: {
      x: { field: 'bitflops', type: 'quantitative', bin: { maxbins: 30 }, title: 'Bit-FLOPs', axis: { format: '.3s' } },
      y: { aggregate: 'count', type: 'quantitative', title: 'requests' },
    },
  });
}
