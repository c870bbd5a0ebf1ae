// Two small hand-written SVG charts for the report: a histogram and a line chart. No dependencies.
const W = 640;
const H = 360;
const M = { l: 70, r: 20, t: 40, b: 50 };
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (x: number, digits = 3) => (Math.abs(x) >= 1e5 ? x.toExponential(digits - 1) : Number(x.toPrecision(digits)).toString());

function frame(title: string, xLabel: string, yLabel: string, body: string, xTicks: Array<[number, string]>, yTicks: Array<[number, string]>): string {
  const ticks = [
    ...xTicks.map(([x, t]) => `<line x1="${x}" y1="${H - M.b}" x2="${x}" y2="${H - M.b + 5}" stroke="#333"/><text x="${x}" y="${H - M.b + 18}" text-anchor="middle">${esc(t)}</text>`),
    ...yTicks.map(([y, t]) => `<line x1="${M.l - 5}" y1="${y}" x2="${W - M.r}" y2="${y}" stroke="#ddd"/><text x="${M.l - 8}" y="${y + 4}" text-anchor="end">${esc(t)}</text>`),
  ].join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">
<rect width="${W}" height="${H}" fill="#fff"/>
<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>
${ticks}
<line x1="${M.l}" y1="${H - M.b}" x2="${W - M.r}" y2="${H - M.b}" stroke="#333"/><line x1="${M.l}" y1="${M.t}" x2="${M.l}" y2="${H - M.b}" stroke="#333"/>
<text x="${W / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>
<text transform="translate(15 ${H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>
${body}
</svg>
`;
}

/** Histogram of `values` in `bins` equal-width bins. */
export function histogramSvg(values: readonly number[], title: string, xLabel: string, bins = 30): string {
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  if (values.length === 0) return frame(title, xLabel, 'requests', `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`, [], []);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (hi === lo) hi = lo + Math.max(1, Math.abs(lo) * 0.01);
  const counts = new Array<number>(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]!++;
  const top = Math.max(...counts);
  const bw = pw / bins;
  const bars = counts
    .map((c, i) => (c === 0 ? '' : `<rect x="${(M.l + i * bw).toFixed(1)}" y="${(M.t + ph - (c / top) * ph).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${((c / top) * ph).toFixed(1)}" fill="${COLORS[0]}"><title>${num(lo + (i * (hi - lo)) / bins)}–${num(lo + ((i + 1) * (hi - lo)) / bins)}: ${c}</title></rect>`))
    .join('');
  const xTicks = [0, 0.25, 0.5, 0.75, 1].map((f): [number, string] => [M.l + f * pw, num(lo + f * (hi - lo), 5)]);
  const yTicks = [0, 0.5, 1].map((f): [number, string] => [M.t + ph - f * ph, String(Math.round(f * top))]);
  return frame(title, xLabel, 'requests', bars, xTicks, yTicks);
}

/** Lines over a shared x (sorted), e.g. latency percentiles against connections. */
export function lineSvg(xs: readonly number[], series: ReadonlyArray<{ name: string; ys: readonly number[] }>, title: string, xLabel: string, yLabel: string): string {
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const all = series.flatMap((s) => s.ys).filter(Number.isFinite);
  if (xs.length === 0 || all.length === 0) return frame(title, xLabel, yLabel, `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`, [], []);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
  const yTop = Math.max(...all) * 1.1 || 1;
  const px = (x: number) => M.l + ((x - x0) / (x1 - x0)) * pw;
  const py = (y: number) => M.t + ph - (y / yTop) * ph;
  const body = series
    .map((s, k) => {
      const c = COLORS[k % COLORS.length];
      const pts = xs.map((x, i) => `${px(x).toFixed(1)},${py(s.ys[i] ?? 0).toFixed(1)}`);
      return `<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.join(' ')}"/>${pts.map((p) => `<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3" fill="${c}"/>`).join('')}<text x="${W - M.r - 60}" y="${M.t + 14 * (k + 1)}" fill="${c}">${esc(s.name)}</text>`;
    })
    .join('');
  const xTicks = xs.map((x): [number, string] => [px(x), num(x)]);
  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f): [number, string] => [py(f * yTop), num(f * yTop)]);
  return frame(title, xLabel, yLabel, body, xTicks, yTicks);
}
