// deploy/ and the Dockerfile, checked without a cluster: every Kubernetes object against the API's JSON schemas
// (kubernetes-models, @kubernetes-models/prometheus-operator), the KServe InferenceService's containers against
// the Container schema (KServe's own CRD schema is not packaged for offline use), the Dockerfile with
// dockerfile-utils; and each manifest against the server itself: probe routes, port, flags, the metric the
// autoscaler reads, the drain deadline and the measured memory peak.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { validate as validateDockerfile } from 'dockerfile-utils';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Service } from 'kubernetes-models/v1';
import { validate as validateContainer } from 'kubernetes-models/_schemas/IoK8sApiCoreV1Container';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { RunningServer } from '../../src/server.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { startTestServer } from '../helpers/server.js';

const BASE = join(REPO_ROOT, 'deploy', 'base');
const read = (path: string): any[] => parseAllDocuments(readFileSync(path, 'utf8')).map((d) => d.toJSON());
const objects = readdirSync(BASE)
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .flatMap((f) => read(join(BASE, f)).map((o) => ({ file: f, o })));
const byKind = (kind: string) => objects.find((x) => x.o.kind === kind)!.o;

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'v1/Service': Service,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

let server: RunningServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => server?.close());

describe('deploy/base (Kustomize)', () => {
  it('lists every manifest in its kustomization, and nothing else', () => {
    const k = read(join(BASE, 'kustomization.yaml'))[0];
    expect([...k.resources].sort()).toEqual([...new Set(objects.map((x) => x.file))].sort());
  });

  it.each(objects.map((x) => [`${x.file}: ${x.o.kind}`, x.o] as const))('%s validates against the Kubernetes schema', (_name, o) => {
    const Model = MODELS[`${o.apiVersion}/${o.kind}`];
    expect(Model, `no schema for ${o.apiVersion} ${o.kind}`).toBeDefined();
    expect(() => new Model!(o).validate()).not.toThrow();
  });

  it('a broken manifest is caught (the validation can fail)', () => {
    const d = structuredClone(byKind('Deployment'));
    d.spec.template.spec.containers[0].ports[0].containerPort = 'http';
    expect(() => new Deployment(d).validate()).toThrow();
  });

  it('probes, port and flags match the server', async () => {
    const c = byKind('Deployment').spec.template.spec.containers[0];
    const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    const config = loadConfig({}, env); // every DQSERVE_* variable is a real setting with a valid value
    expect(c.ports[0].containerPort).toBe(config.port);
    for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
      expect((await fetch(server.url + probe.httpGet.path)).status).toBe(200);
    }
    expect(c.readinessProbe.httpGet.path).toBe('/v2/health/ready');
  });

  it('gives the drain deadline room: termination grace > preStop + --drain-timeout-ms', () => {
    const spec = byKind('Deployment').spec.template.spec;
    const c = spec.containers[0];
    const drainMs = Number(c.env.find((e: { name: string }) => e.name === 'DQSERVE_DRAIN_TIMEOUT_MS').value);
    const preStopS = Number(c.lifecycle.preStop.exec.command[1]);
    expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(preStopS + drainMs / 1000);
  });

  it('runs non-root on a read-only root file system', () => {
    const spec = byKind('Deployment').spec.template.spec;
    expect(spec.securityContext.runAsNonRoot).toBe(true);
    expect(spec.containers[0].securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
  });

  it('sizes memory above the measured peak (bench/results/*-memory.json)', () => {
    const file = readdirSync(join(REPO_ROOT, 'bench', 'results')).filter((f) => f.endsWith('-memory.json')).sort().at(-1)!;
    const rows = JSON.parse(readFileSync(join(REPO_ROOT, 'bench', 'results', file), 'utf8')).rows as { rss_before_mb: number; peak_growth_mb: number }[];
    const peakMb = Math.max(...rows.map((r) => r.rss_before_mb + r.peak_growth_mb));
    const limit = byKind('Deployment').spec.template.spec.containers[0].resources.limits.memory as string;
    expect(limit).toMatch(/^\d+(Mi|Gi)$/);
    const limitMb = parseInt(limit, 10) * (limit.endsWith('Gi') ? 1024 : 1);
    expect(limitMb).toBeGreaterThan(peakMb * 1.2);
  });

  it('autoscales on a metric the server exports, scraped from the port the Service names', async () => {
    const hpa = byKind('HorizontalPodAutoscaler');
    const custom = hpa.spec.metrics.find((m: { type: string }) => m.type === 'Pods').pods.metric.name;
    expect(await (await fetch(`${server.url}/metrics`)).text()).toContain(`# TYPE ${custom} gauge`);
    const svc = byKind('Service');
    expect(byKind('ServiceMonitor').spec.endpoints[0].port).toBe(svc.spec.ports[0].name);
    expect(byKind('Deployment').spec.template.metadata.labels).toMatchObject(svc.spec.selector);
  });

  it('builds with kubectl kustomize where kubectl is installed', (ctx) => {
    let out: string;
    try {
      out = execFileSync('kubectl', ['kustomize', BASE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ctx.skip();
      throw err;
    }
    const kinds = parseAllDocuments(out).map((d) => (d.toJSON() as { kind: string }).kind).sort();
    expect(kinds).toEqual(objects.map((x) => x.o.kind).sort());
  });
});

/**
 * Kustomize's strategic merge as far as deploy/gpu's patch uses it: objects merge deeply, lists of named objects
 * (containers, env) merge by name, any other list is replaced.
 */
function strategicMerge(base: any, patch: any): any {
  if (Array.isArray(patch)) {
    if (!Array.isArray(base) || !patch.every((p) => p && typeof p === 'object' && 'name' in p)) return patch;
    const out = base.map((b: any) => structuredClone(b));
    for (const p of patch) {
      const i = out.findIndex((b: any) => b.name === p.name);
      if (i >= 0) out[i] = strategicMerge(out[i], p);
      else out.push(p);
    }
    return out;
  }
  if (patch && typeof patch === 'object') {
    const out = { ...(base ?? {}) };
    for (const [k, v] of Object.entries(patch)) out[k] = strategicMerge(base?.[k], v);
    return out;
  }
  return patch;
}

describe('deploy/gpu (Kustomize overlay for --device cuda)', () => {
  const GPU = join(REPO_ROOT, 'deploy', 'gpu');
  const k = read(join(GPU, 'kustomization.yaml'))[0];
  const patch = read(join(GPU, 'deployment-gpu.yaml'))[0];
  const merged = strategicMerge(byKind('Deployment'), patch);
  const c = merged.spec.template.spec.containers[0];

  it('patches the base Deployment and its one container, with the CUDA image', () => {
    expect(k.resources).toEqual(['../base']);
    expect(k.patches.map((p: { path: string }) => p.path)).toEqual(['deployment-gpu.yaml']);
    expect(patch.metadata.name).toBe(byKind('Deployment').metadata.name);
    expect(patch.spec.template.spec.containers.map((x: { name: string }) => x.name)).toEqual([byKind('Deployment').spec.template.spec.containers[0].name]);
    expect(k.images[0]).toMatchObject({ name: 'dqserve', newName: 'dqserve-cuda' });
  });

  it("the merged Deployment validates, asks for one GPU, and keeps the base's probes and security", () => {
    expect(() => new Deployment(merged).validate()).not.toThrow();
    expect(c.resources.limits['nvidia.com/gpu']).toBe('1');
    expect(c.resources.requests['nvidia.com/gpu']).toBe('1');
    expect(c.readinessProbe.httpGet.path).toBe('/v2/health/ready');
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(merged.spec.template.spec.tolerations[0].key).toBe('nvidia.com/gpu');
  });

  it('its settings are real ones with valid values, the CUDA engine among them', () => {
    const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    const config = loadConfig({}, env);
    expect(config.device).toBe('cuda');
    expect(env['DQSERVE_DRAIN_TIMEOUT_MS']).toBe('10000'); // the base's env survives the merge
  });
});

describe('deploy/kserve', () => {
  const isvc = read(join(REPO_ROOT, 'deploy', 'kserve', 'inferenceservice.yaml'))[0];

  it('is a v1beta1 InferenceService whose predictor is this image, as KServe names a custom container', () => {
    expect(isvc).toMatchObject({ apiVersion: 'serving.kserve.io/v1beta1', kind: 'InferenceService', metadata: { name: expect.any(String) } });
    expect(isvc.spec.predictor.containers).toHaveLength(1);
    expect(isvc.spec.predictor.containers[0].name).toBe('kserve-container');
  });

  it('its container validates against the Kubernetes Container schema and probes the OIP v2 health routes', () => {
    const c = isvc.spec.predictor.containers[0];
    const ok = validateContainer(c);
    expect(ok, JSON.stringify((validateContainer as unknown as { errors?: unknown }).errors)).toBe(true);
    expect(c.readinessProbe.httpGet.path).toBe('/v2/health/ready');
    expect(c.livenessProbe.httpGet.path).toBe('/v2/health/live');
    expect(c.volumeMounts.map((m: { name: string }) => m.name)).toEqual(isvc.spec.predictor.volumes.map((v: { name: string }) => v.name));
  });
});

describe.each(['Dockerfile', 'Dockerfile.cuda'])('%s', (file) => {
  const text = readFileSync(join(REPO_ROOT, file), 'utf8');
  it('lints clean with dockerfile-utils', () => {
    expect(validateDockerfile(text).map((d) => `${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });
  it('runs as a non-root user with a health check on the readiness route, and ships the page', () => {
    expect(text).toMatch(file === 'Dockerfile' ? /^USER node$/m : /^USER ubuntu$/m);
    expect(text).toMatch(/HEALTHCHECK[\s\S]*\/v2\/health\/ready/);
    expect(text).toMatch(/^COPY ui \.\/ui$/m);
  });
});

describe('Dockerfile.cuda', () => {
  const text = readFileSync(join(REPO_ROOT, 'Dockerfile.cuda'), 'utf8');
  it('builds the CUDA operators with native/dq/build.sh, onto an NVIDIA CUDA base, where the engine looks for them', () => {
    expect(text).toMatch(/^FROM nvidia\/cuda:\S+-devel-\S+ AS native$/m);
    expect(text).toMatch(/^RUN bash build\.sh cuda$/m);
    expect(text).toMatch(/^FROM nvidia\/cuda:\S+-base-\S+$/m);
    expect(text).toMatch(/^COPY --from=native \/native\/build\/libdq-cuda\.so \.\/native\/dq\/build\/libdq-cuda\.so$/m);
    expect(text).toMatch(/DQSERVE_DEVICE=cuda/);
  });
});


