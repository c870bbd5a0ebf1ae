// An open-loop step: requests sent at a fixed rate whatever the server does, request i at its intended time
// t0 + i/rate, and its latency measured from that intended time. A server that stalls keeps receiving
// (and the wait piles up in the latencies) instead of silently being sent less: no coordinated omission.
//
// Not autocannon's overallRate: its clients send up to `rate` requests per one-second slot as fast as the
// server answers and time each from its actual send, and its correction (autocannon 9,
// recordValueWithExpectedInterval(latency, ceil(1/rate))) assumes a 1 ms interval whatever the rate.
import { Agent, request } from 'node:http';
import type { StepOptions } from './fixed-connections.js';
import { microsecondHistogram, parseCost, reportProgress, StepRecorder, type StepResult } from './recorder.js';

export interface RateStepOptions extends StepOptions {
  readonly rateRps: number;
  /** Sockets the generator may open; requests beyond wait on the client (and that wait counts as latency). */
  readonly maxConnections: number;
}

export function runRateStep(o: RateStepOptions): Promise<StepResult> {
  if (!(o.rateRps > 0)) throw new RangeError(`rate must be positive, got ${o.rateRps}`);
  // At least one request; the epsilon keeps 0.29 req/s × 100 s at 29.
  const total = Math.min(o.maxRequests, Math.max(1, Math.floor(o.rateRps * o.durationS + 1e-9)));
  const intervalMs = 1000 / o.rateRps;
  const url = new URL(o.url);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1'); // [::1] -> ::1 for http.request
  // Idle sockets close after 4 s, before the server's 10 s keep-alive does: a request sent at a low rate
  // must not race the server closing its socket.
  const agent = new Agent({ keepAlive: true, maxSockets: o.maxConnections, timeout: 4000 });
  const lag = microsecondHistogram();
  const t0 = performance.now();
  const rec = new StepRecorder(o.goodput, o.durationS, o.timeoutS * 1000, t0);
  let sent = 0;
  let inFlight = 0;
  let peakInFlight = 0;

  return new Promise((resolve) => {
    const finishStep = () => {
      clearInterval(progress);
      agent.destroy();
      const lagMs = { lagP99Ms: lag.getValueAtPercentile(99) / 1000, lagMaxMs: lag.maxValue / 1000 };
      lag.destroy();
      resolve(rec.result({ connections: o.maxConnections, offeredRps: o.rateRps }, { ...lagMs, peakInFlight }, total / o.rateRps));
    };

    const send = (i: number) => {
      const intended = t0 + i * intervalMs;
      lag.recordValue(Math.max(1, Math.round((performance.now() - intended) * 1000)));
      inFlight++;
      peakInFlight = Math.max(peakInFlight, inFlight);
      let settled = false;
      const settle = (record: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        inFlight--;
        record();
        if (rec.settled === total) finishStep();
      };
      const b = o.body(i);
      const req = request(
        { agent, host, port: url.port, method: 'POST', path: o.path, headers: { ...b.headers, 'content-length': String(b.body.length) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => settle(() => rec.response(res.statusCode ?? 0, parseCost(res.statusCode ?? 0, Buffer.concat(chunks).toString()), performance.now() - intended)));
          res.on('error', () => settle(() => rec.failure(false)));
        },
      );
      req.on('error', () => settle(() => rec.failure(false)));
      // The timeout runs from the intended send time, so a request stuck behind the client's own queue times out too.
      const timer = setTimeout(
        () => {
          settle(() => rec.failure(true));
          req.destroy();
        },
        Math.max(0, intended + o.timeoutS * 1000 - performance.now()),
      );
      req.end(b.body);
    };

    // Send every request whose time has come, then sleep until the next one is due.
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - t0) / intervalMs) + 1);
      while (sent < due) send(sent++);
      if (sent < total) setTimeout(tick, Math.max(0, t0 + sent * intervalMs - performance.now()));
    };
    const progress = reportProgress(rec, o.onProgress);
    tick();
  });
}
