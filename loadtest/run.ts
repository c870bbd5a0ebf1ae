// npm run loadtest -- [options]: load a dqserve server with real images, measure latency, throughput,
// goodput and Bit-FLOPs per request, compare with /metrics, check a budget file, write a report.
// Exit status: 0 budget met (or no budget; with --search: at some load), 1 budget missed, 2 usage, budget-file or set-up error.
import { cpus, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { checkBudget, fmt, goodputLimits, readBudget, BudgetFileError, type Budget, type Check } from './budget.js';
import { bodySequence, loadPayloads, type Protocol } from './payloads.js';
import { failureTable, pct, writeReport, type Report, type StepReport } from './report.js';
import { scrapeSettled, serverDelta } from './server-metrics.js';
import { REPO_ROOT, spawnServer, type ServerProcess } from './server-process.js';
import { runConnectionsStep, type StepOptions } from './fixed-connections.js';
import { runRateStep } from './fixed-rate.js';
import { stability } from './recorder.js';

const DATA = resolve(REPO_ROOT, '..', 'shared', 'data');
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

function bounded(name: string, min: number, max: number, integer: boolean) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new InvalidArgumentError(`${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}]`);
    }
    return n;
  };
}

function list(name: string, min: number, max: number, integer: boolean) {
  const parse = bounded(name, min, max, integer);
  return (v: string): number[] => {
    const values = v.split(',').map((s) => parse(s));
    if (values.length > 16) throw new InvalidArgumentError(`at most 16 ${name} values`);
    return [...new Set(values)].sort((a, b) => a - b);
  };
}

/** Sockets the open-loop generator may open when --connections is not given with --rate. */
const RATE_MAX_CONNECTIONS = 128;
/** Generator lag (p99, ms) above which a step's latencies are flagged as partly the client's own. */
const GENERATOR_LAG_WARN_MS = 5;

export interface Options {
  url?: string;
  allowRemote: boolean;
  serverArgs: string;
  connections: number[];
  rate?: number[];
  duration: number;
  warmup: number;
  maxRequests: number;
  timeout: number;
  path: string;
  protocol: Protocol;
  model: string;
  payloads: string[];
  data: string;
  testSetLimit: number;
  photos: boolean;
  multipartRatio: number;
  binaryRatio: number;
  search: boolean;
  budget?: string;
  out?: string;
  progress: boolean;
  stabilityPercentage: number;
  failUnstable: boolean;
}

export function program(): Command {
  return new Command('loadtest')
    .description('load a dqserve server with real images and check latency, throughput and Bit-FLOPs against a budget')
    .option('--url <url>', 'target this server instead of starting one (loopback only unless --allow-remote)')
    .option('--allow-remote', 'allow a --url host other than 127.0.0.1/localhost/[::1]', false)
    .option('--server-args <flags>', 'flags for the server loadtest starts, space-separated (e.g. "--model resnet20_dq --max-batch-size 32")', '')
    .addOption(new Option('-c, --connections <list>', `concurrent connections; a comma-separated list runs one step per value (a sweep); with --rate, one value: the most sockets the generator opens, ${RATE_MAX_CONNECTIONS} unless given`).argParser(list('connections', 1, 1024, true)).default([8], '8'))
    .addOption(new Option('-r, --rate <list>', 'open loop: requests per second sent on schedule, latency from each intended send time; a comma-separated list runs a rate sweep').argParser(list('rate', 0.1, 100_000, false)))
    .addOption(new Option('-d, --duration <s>', 'seconds per step').argParser(bounded('duration', 1, 3600, false)).default(10))
    .addOption(new Option('--warmup <s>', 'seconds of unrecorded load before the first step (0: none)').argParser(bounded('warmup', 0, 600, false)).default(1))
    .addOption(new Option('--max-requests <n>', 'stop a step after this many requests').argParser(bounded('max-requests', 1, 10_000_000, true)).default(1_000_000))
    .addOption(new Option('--timeout <s>', 'per-request timeout').argParser(bounded('timeout', 1, 600, false)).default(10))
    .addOption(new Option('--protocol <name>', 'v1: images POSTed to /v1/classify; oip: Open Inference Protocol infer requests to /v2/models/<--model>/infer').choices(['v1', 'oip']).default('v1'))
    .option('--model <name>', 'the model OIP requests name', 'resnet20_dq')
    .option('--path <path>', 'request path and query (default /v1/classify, or the OIP infer path of --model)')
    .option('--payloads <folder...>', 'folders of images to send instead of the defaults (CIFAR-10 test JPEGs + ../shared/data/photos)')
    .option('--data <dir>', 'folder with the default test split (test.tar.gz, test/)', join(DATA, 'cifar10'))
    .addOption(new Option('--test-set-limit <n>', 'use the first n test images').argParser(bounded('test-set-limit', 1, 1_000_000, true)).default(2000))
    .option('--no-photos', `leave out ${join(DATA, 'photos')}`)
    .addOption(new Option('--multipart-ratio <r>', 'v1: share of requests sent as multipart/form-data (the rest raw)').argParser(bounded('multipart-ratio', 0, 1, false)).default(0))
    .addOption(new Option('--binary-ratio <r>', 'oip: share of requests sent with the binary tensor extension (the rest JSON, base64)').argParser(bounded('binary-ratio', 0, 1, false)).default(0))
    .option('--search', 'binary search between the two --connections (or --rate) values for the highest load that meets the budget', false)
    .option('--budget <file>', 'budget JSON (docs/loadtest.md); exit 1 when missed')
    .option('--out <dir>', 'report folder (default loadtest/results/<date>)')
    .addOption(new Option('--stability-percentage <p>', 'a step is stable when its last three windows\' throughput and mean latency are within ±p% of their mean').argParser(bounded('stability-percentage', 0, 1000, false)).default(10))
    .option('--no-progress', 'no once-a-second progress lines on stderr (step summaries and warnings stay)')
    .option('--fail-unstable', 'an unstable step misses the budget (otherwise it only warns)', false);
}

function checkUrl(url: string, allowRemote: boolean): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`--url ${url}: not a URL`);
  }
  if (u.protocol !== 'http:') throw new UsageError(`--url ${url}: only http:// is supported`);
  if (!allowRemote && !LOOPBACK.test(u.hostname)) throw new UsageError(`--url ${url}: ${u.hostname} is not loopback; pass --allow-remote to load another host`);
  return u.origin;
}

class UsageError extends Error {}

/** --fail-unstable: an unstable step misses the budget (a step too short to judge, under four seconds, passes). */
export function stabilityCheck(s: ReturnType<typeof stability>): Check {
  const ok = s.stable !== false;
  const dev = s.maxDeviation;
  return {
    name: 'stability', limit: `± ${fmt(100 * s.tolerance)}%`, measured: dev === null ? null : 100 * dev, bound: 100 * s.tolerance, kind: 'max', unit: '%', ok,
    by: ok ? '' : dev === null ? 'a window without a successful answer' : `${fmt(100 * (dev - s.tolerance))} points over`,
  };
}

/**
 * The highest n in [lo, hi] with meets(n), assuming meeting the budget is monotone in load (perf_analyzer's
 * --binary-search assumes the same). lo first (if it misses, nothing will), then hi, then bisection until the
 * bracket is at most `gap` wide: on integers (connections, gap 1: at most 2 + ⌈log2(hi − lo)⌉ steps, 12 for
 * 1…1024), or on 0.1 steps (rates, gap (hi − lo)/32: at most 7 steps).
 */
export async function binarySearch(lo: number, hi: number, meets: (n: number) => Promise<boolean>, gap = 1, integer = true): Promise<number | null> {
  if (!(await meets(lo))) return null;
  if (hi === lo || (await meets(hi))) return hi;
  let good = lo;
  let bad = hi;
  // Rounding rates to 0.1 can leave the bracket up to 0.1 wider than exact halving would.
  while (bad - good > gap + (integer ? 0 : 0.1)) {
    const mid = integer ? Math.floor((good + bad) / 2) : Math.round(((good + bad) / 2) * 10) / 10;
    if (mid <= good || mid >= bad) break; // the bracket cannot be split at this resolution
    if (await meets(mid)) good = mid;
    else bad = mid;
  }
  return good;
}

export async function main(argv: readonly string[]): Promise<number> {
  const cmd = program().exitOverride();
  try {
    cmd.parse(argv as string[], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
  const o = cmd.opts<Options>();
  const log = (s: string) => process.stderr.write(`[loadtest] ${s}\n`);
  const progress = (s: string) => o.progress && log(s); // only the once-a-second ticker is optional
  let budget: Budget | null = null;
  let server: ServerProcess | null = null;
  try {
    // The load axis: connections (closed loop) or request rates (open loop, the connections a cap).
    const openLoop = o.rate !== undefined;
    if (openLoop && o.connections.length !== 1) throw new UsageError('with --rate, --connections takes one value: the most sockets the generator opens');
    const maxConnections = openLoop && cmd.getOptionValueSource('connections') === 'default' ? RATE_MAX_CONNECTIONS : (o.connections[0] as number);
    const loads = o.rate ?? o.connections;
    const label = (n: number) => (openLoop ? `${n} req/s` : `${n} connections`);
    if (o.search && (o.budget === undefined || loads.length !== 2)) throw new UsageError(`--search needs --budget and ${openLoop ? '--rate' : '--connections'} <lowest>,<highest>`);
    if (o.protocol === 'v1' && cmd.getOptionValueSource('binaryRatio') === 'cli') throw new UsageError('--binary-ratio is for --protocol oip (v1 takes --multipart-ratio)');
    if (o.protocol === 'oip' && cmd.getOptionValueSource('multipartRatio') === 'cli') throw new UsageError('--multipart-ratio is for --protocol v1 (oip takes --binary-ratio)');
    if (o.protocol === 'v1' && cmd.getOptionValueSource('model') === 'cli') throw new UsageError('--model names the model of --protocol oip requests (v1: give --path /v1/classify?model=...)');
    if (o.path !== undefined && cmd.getOptionValueSource('model') === 'cli') throw new UsageError('give --model or --path, not both (--path is the whole request path)');
    const path = o.path ?? (o.protocol === 'oip' ? `/v2/models/${encodeURIComponent(o.model)}/infer` : '/v1/classify');
    const altRatio = o.protocol === 'oip' ? o.binaryRatio : o.multipartRatio;
    budget = o.budget === undefined ? null : readBudget(o.budget);
    const target = o.url === undefined ? null : checkUrl(o.url, o.allowRemote);
    const payloads = await loadPayloads(
      o.payloads
        ? { testSetDir: null, testSetLimit: 0, optionalFolders: [], folders: o.payloads }
        : { testSetDir: o.data, testSetLimit: o.testSetLimit, optionalFolders: o.photos ? [join(DATA, 'photos')] : [], folders: [] },
    );
    const sources = o.payloads ?? [`${o.data} (first ${o.testSetLimit})`, ...(o.photos ? [join(DATA, 'photos')] : [])];
    log(`${payloads.length} payloads`);
    const serverArgs = o.serverArgs.split(/\s+/).filter(Boolean);
    let url: string;
    if (target !== null) url = target;
    else {
      log(`starting dqserve ${serverArgs.join(' ')}`);
      server = await spawnServer(serverArgs, { entry: 'source' });
      url = server.url;
      log(`server ready at ${url}`);
    }
    if (o.protocol === 'oip' && o.path === undefined) {
      // A model the server does not serve would only fill the report with 404s: say so before any load.
      const modelPath = `/v2/models/${encodeURIComponent(o.model)}`;
      const res = await fetch(`${url}${modelPath}`, { signal: AbortSignal.timeout(o.timeout * 1000) });
      await res.arrayBuffer(); // read to the end: the socket goes back to the pool
      if (res.status === 404) throw new UsageError(`--model ${o.model}: the server does not serve it (GET ${modelPath}: 404)`);
    }
    const limits = budget ? goodputLimits(budget) : { maxLatencyMs: null, maxBitflops: null };
    const body = bodySequence(payloads, altRatio, o.protocol);
    const common = { url, path, maxRequests: o.maxRequests, timeoutS: o.timeout, body, goodput: limits };
    const run = (load: number, durationS: number, onProgress?: StepOptions['onProgress']) =>
      openLoop ? runRateStep({ ...common, durationS, onProgress, rateRps: load, maxConnections }) : runConnectionsStep({ ...common, durationS, onProgress, connections: load });
    if (o.warmup > 0) {
      log(`warm-up ${o.warmup} s`);
      await run(loads[0] as number, o.warmup);
    }
    const steps: StepReport[] = [];
    const samples: number[] = [];
    const step = async (load: number): Promise<StepReport> => {
      const before = await scrapeSettled(url, o.timeout * 1000);
      const client = await run(load, o.duration, (p) =>
        progress(`${label(load)}: ${p.elapsedS.toFixed(0)}/${o.duration} s, ${p.responses} responses (${(p.ok / p.elapsedS).toFixed(1)} ok/s), ${p.failed} failed`),
      );
      const after = await scrapeSettled(url, o.timeout * 1000);
      const { bitflopsSamples, ...clientFigures } = client;
      for (const v of bitflopsSamples) if (samples.length < 200_000) samples.push(v);
      const checks = budget
        ? checkBudget(budget, { latencyMs: client.requests > 0 ? client.latencyMs : { p50: null, p95: null, p99: null }, throughputRps: client.throughputRps, errorRate: client.errorRate, meanBitflops: client.bitflops.mean, savings: client.savings, goodputRps: client.goodputRps })
        : [];
      const stable = stability(client.windows, client.fullWindows, o.stabilityPercentage / 100);
      if (budget && o.failUnstable) checks.push(stabilityCheck(stable));
      const s: StepReport = { load, client: clientFigures, server: before && after ? serverDelta(before, after) : null, stability: stable, checks, met: checks.every((c) => c.ok) };
      steps.push(s);
      log(
        `${label(load)}: ${client.throughputRps.toFixed(1)} req/s, goodput ${client.goodputRps.toFixed(1)}/s, p50 ${client.latencyMs.p50.toFixed(1)} ms, p95 ${client.latencyMs.p95.toFixed(1)} ms, p99 ${client.latencyMs.p99.toFixed(1)} ms, errors ${client.failed}/${client.requests}${budget ? `: budget ${s.met ? 'met' : 'missed'}` : ''}`,
      );
      if (client.generator && client.generator.lagP99Ms > GENERATOR_LAG_WARN_MS) log(`warning: the load generator sent requests up to ${client.generator.lagMaxMs.toFixed(0)} ms late (p99 ${client.generator.lagP99Ms.toFixed(1)} ms); latencies include that lag`);
      if (stable.stable === false) {
        const w = `${client.windowS.toFixed(1)} s windows`;
        log(`warning: not stable: ${stable.maxDeviation === null ? `one of the last three ${w} had no successful answer` : `the last three ${w} vary by ${(100 * stable.maxDeviation).toFixed(0)}% (throughput or mean latency)`}`);
      }
      if (s.server === null) log('warning: /metrics could not be scraped; no server-side figures');
      return s;
    };
    const [lo, hi] = [loads[0] as number, loads[loads.length - 1] as number];
    // Rates are searched to 1/32 of the range (at most 7 steps), connections to one.
    if (o.search) await binarySearch(lo, hi, async (n) => (await step(n)).met, openLoop ? (hi - lo) / 32 : 1, !openLoop);
    else for (const load of loads) await step(load);
    steps.sort((a, b) => a.load - b.load);
    // A sweep passes when every step met the budget; a search when some load did.
    const met = o.search ? steps.some((s) => s.met) : steps.every((s) => s.met);
    const passing = steps.filter((s) => s.met).map((s) => s.load);
    const report: Report = {
      tool: 'dqserve loadtest',
      date: new Date().toISOString(),
      machine: { host: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
      target: { url, startedByLoadtest: server !== null, serverArgs },
      load: {
        mode: openLoop ? 'request-rate' : 'concurrency',
        search: o.search,
        maxConnections: openLoop ? maxConnections : null,
        path,
        bodies: o.protocol === 'oip' ? `OIP infer, JSON with base64 BYTES; ${pct(o.binaryRatio)} binary tensor extension` : `images as raw bodies; ${pct(o.multipartRatio)} multipart/form-data`,
        durationS: o.duration,
        maxRequests: o.maxRequests,
        warmupS: o.warmup,
      },
      payloads: { count: payloads.length, bytes: payloads.reduce((a, p) => a + p.bytes.length, 0), sources },
      budget,
      goodputLimits: limits,
      steps,
      met,
      bestLoad: budget && passing.length ? Math.max(...passing) : null,
    };
    const out = resolve(o.out ?? join(REPO_ROOT, 'loadtest', 'results', report.date.replace(/[:.]/g, '-')));
    const files = await writeReport(out, report, samples);
    process.stderr.write(`[loadtest] report: ${files.join(', ')}\n`);
    if (o.search && budget !== null) process.stderr.write(`[loadtest] highest load that met the budget: ${report.bestLoad === null ? 'none' : label(report.bestLoad)}\n`);
    if (budget === null) return 0;
    if (met) {
      process.stderr.write('[loadtest] budget met\n');
      return 0;
    }
    // A failed search missed already at its lowest load: that step explains why.
    for (const s of o.search ? steps.slice(0, 1) : steps.filter((x) => !x.met)) process.stderr.write(`\nbudget missed at ${label(s.load)}:\n${failureTable(s.checks)}\n`);
    return 1;
  } catch (err) {
    if (err instanceof BudgetFileError || err instanceof UsageError) {
      process.stderr.write(`loadtest: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`loadtest: ${(err as Error).stack ?? String(err)}\n`);
    return 2;
  } finally {
    await server?.stop();
  }
}

// Entry point when run as a script (npm run loadtest); importing the module runs nothing.
if (process.argv[1] && resolve(process.argv[1]) === resolve(REPO_ROOT, 'loadtest', 'run.ts')) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(2);
    },
  );
}
