// The page's logic, on the public API only: GET /v2/models/stats (which models), GET /v2/models/{m} (their
// candidates and costs), POST /v1/classify (answers), GET /metrics (the live view). No build step: plain ES2020.
/* global uPlot */

const $ = (id) => document.getElementById(id);
const G = (x) => `${(x / 1e9).toFixed(3)} G`;

const state = { models: {}, model: null, twin: null, blob: null, seq: 0 };

// ---- models ------------------------------------------------------------------------------------------------
async function getJson(url, init) {
  const res = await fetch(url, init);
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error ? `${body.error}${body.code ? ` (${body.code})` : ''}` : `HTTP ${res.status}`);
  return body;
}

async function loadModels() {
  const stats = await getJson('/v2/models/stats');
  const names = [...new Set(stats.model_stats.map((s) => s.name))];
  for (const name of names) state.models[name] = (await getJson(`/v2/models/${encodeURIComponent(name)}`)).parameters;
  const byKind = (k) => names.filter((n) => state.models[n].kind === k);
  fill($('model'), [...byKind('dynamic'), ...byKind('static')]);
  fill($('twin'), byKind('static'));
  $('compare').disabled = byKind('static').length === 0;
  $('compare').checked = byKind('static').length > 0 && byKind('dynamic').length > 0;
  selectModel();
}

function fill(select, names) {
  select.replaceChildren(...names.map((n) => new Option(n, n)));
}

function selectModel() {
  state.model = $('model').value;
  state.twin = $('twin').value || null;
  const p = state.models[state.model];
  const cap = $('cap');
  cap.min = String(p.bitflops.min);
  cap.max = String(p.bitflops.max);
  cap.step = String(Math.max(1, Math.round((p.bitflops.max - p.bitflops.min) / 200)));
  cap.value = String(p.bitflops.max);
  $('cap-value').textContent = G(p.bitflops.max);
  // the knob steers a controller; a gated model whose first pass has fixed bits has none
  $('knob').disabled = p.kind !== 'dynamic' || !p.controller;
  $('knob-note').textContent = $('knob').disabled && p.kind === 'dynamic'
    ? `(no controller: pass 1 runs at ${p.policy?.first_bits} bits)` : '(> 0 cheaper, < 0 costlier)';
  if (state.blob) classify();
}

// ---- input: drop, pick, paste, camera ---------------------------------------------------------------------
function useBlob(blob) {
  if (!blob) return;
  state.blob = blob;
  const img = $('preview');
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
  classify();
}

function wireInputs() {
  const drop = $('drop');
  drop.addEventListener('click', () => $('file').click());
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      $('file').click();
    }
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    useBlob(e.dataTransfer.files[0]);
  });
  $('file').addEventListener('change', (e) => useBlob(e.target.files[0]));
  document.addEventListener('paste', (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith('image/'));
    if (item) useBlob(item.getAsFile());
  });
  if (navigator.mediaDevices?.getUserMedia) {
    $('camera').hidden = false;
    $('camera').addEventListener('click', async () => {
      try {
        const video = $('video');
        video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
        video.hidden = false;
        await video.play();
        $('snap').hidden = false;
      } catch (err) {
        showError(`camera: ${err.message}`);
      }
    });
    $('snap').addEventListener('click', () => {
      const video = $('video');
      const canvas = document.createElement('canvas');
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext('2d').drawImage(video, 0, 0);
      canvas.toBlob((b) => useBlob(b), 'image/png');
    });
  }
  $('model').addEventListener('change', selectModel);
  $('twin').addEventListener('change', selectModel);
  $('compare').addEventListener('change', () => state.blob && classify());
  $('cap-on').addEventListener('change', () => {
    $('cap').disabled = !$('cap-on').checked;
    if (state.blob) classify();
  });
  let timer;
  const rerun = () => {
    $('cap-value').textContent = G(Number($('cap').value));
    $('knob-value').textContent = $('knob').value;
    clearTimeout(timer);
    timer = setTimeout(() => state.blob && classify(), 150);
  };
  $('cap').addEventListener('input', rerun);
  $('knob').addEventListener('input', rerun);
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

// ---- classify ----------------------------------------------------------------------------------------------
function post(model, query) {
  const q = new URLSearchParams({ model, top_k: '5', ...query });
  // the server judges the bytes, not the file name: anything not labelled image/* goes as octet-stream
  const type = state.blob.type.startsWith('image/') ? state.blob.type : 'application/octet-stream';
  return getJson(`/v1/classify?${q}`, { method: 'POST', headers: { 'content-type': type }, body: state.blob });
}

async function classify() {
  const seq = ++state.seq; // answers to superseded requests (a moving slider) are dropped
  const query = {};
  if ($('cap-on').checked) query.max_bitflops = $('cap').value;
  if (!$('knob').disabled && Number($('knob').value) !== 0) query.knob = $('knob').value;
  const compare = $('compare').checked && state.twin && state.twin !== state.model;
  try {
    const [answer, twin] = await Promise.all([post(state.model, query), compare ? post(state.twin, {}) : null]);
    if (seq !== state.seq) return;
    showError('');
    render(answer, twin);
  } catch (err) {
    if (seq === state.seq) showError(err.message);
  }
}

function topk(tbody, entries) {
  tbody.replaceChildren(
    ...entries.map((e) => {
      const tr = document.createElement('tr');
      const bar = document.createElement('span');
      bar.className = 'topk-bar';
      bar.style.width = `${Math.round(e.score * 120)}px`;
      tr.append(cell(e.label), cell(`${(e.score * 100).toFixed(1)}%`), cell(bar));
      return tr;
    }),
  );
}

function cell(content) {
  const td = document.createElement('td');
  td.append(content);
  return td;
}

function bars(container, rows) {
  const max = Math.max(...rows.map((r) => r.value), 1e-9);
  container.replaceChildren(
    ...rows.map((r) => {
      const div = document.createElement('div');
      div.className = 'bar';
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = r.name;
      const track = document.createElement('span');
      track.className = 'track';
      const fill = document.createElement('span');
      fill.className = `fill ${r.cls ?? ''}`;
      fill.style.display = 'block';
      fill.style.width = `${(100 * r.value) / max}%`;
      track.append(fill);
      const value = document.createElement('span');
      value.className = 'value';
      value.dataset.value = String(r.value);
      value.textContent = r.text;
      div.append(name, track, value);
      return div;
    }),
  );
}

let bitsPlot;
function render(a, twin) {
  $('result').hidden = false;
  $('dyn-title').textContent = `${a.model} v${a.version}`;
  $('label').textContent = a.label;
  $('score').textContent = `${(a.score * 100).toFixed(1)}%`;
  topk($('topk').tBodies[0], a.top_k);
  const gate = state.models[a.model].policy;
  $('passes').hidden = !gate;
  if (gate) {
    $('passes').textContent = a.passes === 2
      ? `two passes: pass 1 was under ${gate.threshold} confident, so the dynamic layers ran again at ${gate.second_bits} bits (both paid for)`
      : `one pass: pass 1 was at least ${gate.threshold} confident`;
  }
  $('twin-card').hidden = !twin;
  if (twin) {
    $('twin-title').textContent = `${twin.model} v${twin.version} (static, ${G(twin.bitflops)})`;
    $('twin-label').textContent = twin.label;
    $('twin-score').textContent = `${(twin.score * 100).toFixed(1)}%`;
    topk($('twin-topk').tBodies[0], twin.top_k);
  }

  const layers = Object.keys(a.bits);
  const bits = layers.map((l) => a.bits[l]);
  $('bits-table').tBodies[0].replaceChildren(...layers.map((l) => {
    const tr = document.createElement('tr');
    tr.append(cell(l), cell(String(a.bits[l])));
    return tr;
  }));
  const cands = state.models[a.model].candidates;
  bitsPlot = barChart($('bits-chart'), bitsPlot, layers, [
    { label: 'bits', values: bits, fill: '#2f6fbf' },
    ...(twin ? [{ label: `${twin.model} bits`, values: layers.map((l) => twin.bits[l] ?? null), fill: '#999' }] : []),
  ], [0, Math.max(...cands) + 1], cands);

  const p = state.models[a.model];
  bars($('cost'), [
    { name: 'this image', value: a.bitflops, text: `${G(a.bitflops)} (${(a.savings * 100).toFixed(1)}% saved)` },
    { name: `reference (${p.bits_reference} bits)`, value: a.bitflops_reference, text: G(a.bitflops_reference), cls: 'ref' },
    ...(twin ? [{ name: `static twin`, value: twin.bitflops, text: G(twin.bitflops), cls: 'ref' }] : []),
    { name: 'full precision', value: p.bitflops_full_precision, text: G(p.bitflops_full_precision), cls: 'fp' },
  ]);
  $('cost').dataset.bitflops = String(a.bitflops);
  bars($('timing'), ['preprocess', 'queue', 'controller', 'layers', 'total'].map((k) => ({ name: k, value: a.timing[k], text: a.timing[k].toFixed(2) })));
}

/**
 * A uPlot bar chart over named categories, its y axis ticked at `yTicks` (the candidate bit-widths); rebuilt
 * when its categories change, else updated in place.
 */
function barChart(el, plot, names, series, range, yTicks) {
  const data = [names.map((_, i) => i), ...series.map((s) => s.values)];
  if (plot && plot.series.length === series.length + 1 && plot.data[0].length === names.length) {
    plot.setData(data);
    return plot;
  }
  plot?.destroy();
  const short = (n) => n.replace(/^layer/, '').replace(/\.conv/, '.');
  return new uPlot({
    width: chartWidth(el),
    height: 220,
    scales: { x: { time: false, range: [-0.6, names.length - 0.4] }, y: { range } },
    axes: [
      { values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) && names[t] ? short(names[t]) : '')), space: 28, rotate: -45, size: 60 },
      { label: 'bits (ticks: the candidates)', splits: () => yTicks },
    ],
    series: [{ label: 'layer' }, ...series.map((s, i) => ({
      label: s.label,
      fill: s.fill,
      stroke: s.fill,
      paths: uPlot.paths.bars({ size: [series.length > 1 ? 0.4 : 0.7], align: series.length > 1 ? (i === 0 ? -1 : 1) : 0 }),
      points: { show: false },
    }))],
    legend: { show: series.length > 1, live: false },
  }, data, el);
}

// ---- live view from /metrics ---------------------------------------------------------------------------------
/** Prometheus text -> [{name, labels, value}] (samples only; comments skipped). */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const kv of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const sum = (samples, name, pred = () => true) => samples.filter((s) => s.name === name && pred(s.labels)).reduce((a, s) => a + s.value, 0);

/** Quantile of a cumulative histogram's bucket deltas: the upper bound of the bucket holding it. */
function quantile(buckets, q) {
  const total = buckets.at(-1)?.count ?? 0;
  if (total <= 0) return null;
  const hit = buckets.find((b) => b.count >= q * total);
  return hit && Number.isFinite(hit.le) ? hit.le : null;
}

const live = { prev: null, t: [], rps: [], p50: [], p99: [], saved: [], plot: null, savedPlot: null, bitsPlot: null };

async function pollMetrics() {
  let samples;
  try {
    samples = parseMetrics(await (await fetch('/metrics')).text());
  } catch {
    return;
  }
  const now = Date.now() / 1000;
  const les = new Map();
  for (const s of samples.filter((x) => x.name === 'dqserve_request_duration_seconds_bucket')) {
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    les.set(le, (les.get(le) ?? 0) + s.value);
  }
  const cur = {
    t: now,
    requests: sum(samples, 'dqserve_requests_total'),
    bitflops: sum(samples, 'dqserve_bitflops_total'),
    reference: sum(samples, 'dqserve_bitflops_reference_total'),
    buckets: [...les].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count })),
  };
  const prev = live.prev;
  live.prev = cur;
  $('live-queue').textContent = String(sum(samples, 'dqserve_pending_requests'));
  const target = samples.find((s) => s.name === 'dqserve_target_bitflops');
  const knob = samples.find((s) => s.name === 'dqserve_target_knob');
  $('live-budget').textContent = target ? `target ${G(target.value)}, λ ${knob ? knob.value.toFixed(2) : '–'}` : 'no target';
  const savings = cur.reference > 0 ? 1 - cur.bitflops / cur.reference : null;
  $('live-savings').textContent = savings === null ? '–' : `${(savings * 100).toFixed(1)}% overall`;
  renderLiveBits(samples);
  if (!prev) return;
  const dt = cur.t - prev.t;
  const rps = (cur.requests - prev.requests) / dt;
  const delta = cur.buckets.map((b, i) => ({ le: b.le, count: b.count - (prev.buckets[i]?.count ?? 0) }));
  const p50 = quantile(delta, 0.5);
  const p99 = quantile(delta, 0.99);
  $('live-rps').textContent = rps.toFixed(1);
  $('live-lat').textContent = p50 === null ? 'no requests' : `≤ ${(p50 * 1000).toFixed(0)} / ≤ ${(p99 * 1000).toFixed(0)}`;
  const dRef = cur.reference - prev.reference;
  const saved = dRef > 0 ? 100 * (1 - (cur.bitflops - prev.bitflops) / dRef) : null;
  for (const [k, v] of [['t', cur.t], ['rps', rps], ['p50', p50 === null ? null : p50 * 1000], ['p99', p99 === null ? null : p99 * 1000], ['saved', saved]]) {
    live[k].push(v);
    if (live[k].length > 150) live[k].shift();
  }
  $('live-samples').textContent = String(live.t.length);
  live.savedPlot = timeChart($('live-saved'), live.savedPlot, [live.t, live.saved], 160,
    [{ label: 'Bit-FLOPs saved vs the reference (%)', stroke: '#6a4fb0', width: 2 }], [{ label: '% saved' }]);
  live.plot = timeChart($('live-chart'), live.plot, [live.t, live.rps, live.p50, live.p99], 220,
    [{ label: 'requests/s', stroke: '#2f6fbf', width: 2 }, { label: 'p50 ms', stroke: '#2a8a2a', scale: 'ms' }, { label: 'p99 ms', stroke: '#b03030', scale: 'ms' }],
    [{ label: 'requests/s' }, { scale: 'ms', side: 1, label: 'ms', grid: { show: false } }]);
}

/** A uPlot line chart over the last minutes of `data[0]` (seconds): created once, then updated in place. */
function timeChart(el, plot, data, height, series, axes) {
  if (plot) {
    plot.setData(data);
    return plot;
  }
  return new uPlot({
    width: chartWidth(el),
    height,
    scales: { x: { range: (_u, min, max) => (max - min < 60 ? [max - 60, max] : [min, max]) } },
    series: [{}, ...series],
    axes: [{}, ...axes],
    legend: { live: false },
  }, data, el);
}

const chartWidth = (el) => Math.min(940, el.clientWidth || 900);

function renderLiveBits(samples) {
  if (!state.model || state.models[state.model].kind !== 'dynamic') return;
  const layers = state.models[state.model].dynamic_layers;
  const rows = samples.filter((s) => s.name === 'dqserve_layer_bits_total' && s.labels.model === state.model);
  const mean = layers.map((l) => {
    const r = rows.filter((s) => s.labels.layer === l);
    const n = r.reduce((a, s) => a + s.value, 0);
    return n > 0 ? r.reduce((a, s) => a + s.value * Number(s.labels.bits), 0) / n : null;
  });
  const cands = state.models[state.model].candidates;
  live.bitsPlot = barChart($('live-bits'), live.bitsPlot, layers, [{ label: 'mean bits', values: mean, fill: '#6a4fb0' }], [0, Math.max(...cands) + 1], cands);
}

// ---- start -------------------------------------------------------------------------------------------------
window.addEventListener('DOMContentLoaded', async () => {
  wireInputs();
  try {
    await loadModels();
  } catch (err) {
    showError(`could not list the models: ${err.message}`);
  }
  await pollMetrics();
  setInterval(pollMetrics, 2000);
});
