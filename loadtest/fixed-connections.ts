// A closed-loop step: a fixed number of connections kept busy for a bounded time (and request count),
// driven through autocannon's API. Each connection sends its next request when the last one is answered,
// so a slow server is offered less load: latency here is service time under that concurrency.
import autocannon from 'autocannon';
import type { Body } from './payloads.js';
import { parseCost, reportProgress, StepRecorder, type Cost, type GoodputLimits, type Progress, type StepResult } from './recorder.js';

export interface StepOptions {
  readonly url: string;
  readonly path: string;
  readonly durationS: number;
  /** Stop after this many responses even if the duration has not passed. */
  readonly maxRequests: number;
  /** Per-request timeout (s). */
  readonly timeoutS: number;
  readonly body: (i: number) => Body;
  /** Per-request limits that make a response count towards goodput (null: no limit). */
  readonly goodput: GoodputLimits;
  /** Called about once a second while the step runs. */
  readonly onProgress?: Progress;
}

export function runConnectionsStep(o: StepOptions & { readonly connections: number }): Promise<StepResult> {
  const rec = new StepRecorder(o.goodput, o.durationS, o.timeoutS * 1000);
  let next = 0;
  // onResponse (body) runs synchronously just before the 'response' event (latency) of the same request,
  // on the same client: this slot carries the parsed body from one to the other.
  let parsed: Cost | null = null;

  return new Promise((resolve, reject) => {
    let stopped = false;
    const instance = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: o.durationS,
        timeout: o.timeoutS,
        requests: [
          {
            method: 'POST',
            path: o.path,
            setupRequest: (req) => {
              const b = o.body(next++);
              return { ...req, headers: { ...req.headers, ...b.headers }, body: b.body };
            },
            onResponse: (status, body) => {
              parsed = parseCost(status, body);
            },
          },
        ],
      },
      (err) => {
        clearInterval(progress);
        clearTimeout(watchdog);
        if (err) return reject(err as Error);
        resolve(rec.result({ connections: o.connections, offeredRps: null }, null));
      },
    );
    const stop = () => {
      if (!stopped) {
        stopped = true;
        instance.stop();
      }
    };
    instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
      const cost = parsed;
      parsed = null;
      rec.response(status, cost, responseTime);
      if (rec.settled >= o.maxRequests) stop();
    });
    // Socket errors and timeouts: autocannon reports a timeout as a reqError with this message.
    instance.on('reqError', (err: Error) => {
      rec.failure(err.message === 'request timed out');
      if (rec.settled >= o.maxRequests) stop();
    });
    const progress = reportProgress(rec, o.onProgress);
    // Belt and braces: autocannon stops at the duration; this bounds a step whose sockets hang.
    const watchdog = setTimeout(stop, (o.durationS + o.timeoutS + 5) * 1000);
  });
}
