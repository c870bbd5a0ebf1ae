import { describe, expect, it } from 'vitest';
import { DecodeLimiter, SMALL_LANE_PIXELS } from '../../src/preprocess/decode-limiter.js';

/** A decode that finishes when the test says so. */
function gate(): { done: () => void; decode: () => Promise<string> } {
  let done!: () => void;
  const p = new Promise<string>((r) => (done = () => r('decoded')));
  return { done, decode: () => p };
}
const turn = () => new Promise((r) => setImmediate(r));

describe('DecodeLimiter', () => {
  it('holds large images to the lane capacity, in arrival order, and releases on completion', async () => {
    const limiter = new DecodeLimiter(30_000_000);
    const [a, b, c, d] = [gate(), gate(), gate(), gate()];
    const started: string[] = [];
    const run = (name: string, px: number, g: ReturnType<typeof gate>) => limiter.run(px, () => (started.push(name), g.decode()));
    const pa = run('a', 20_000_000, a);
    const pb = run('b', 20_000_000, b);
    const pc = run('c', 5_000_000, c); // would fit beside a, but waits behind b: no overtaking
    const pd = run('d', 8_000_000, d); // fits beside b and c only once a has gone... and not even then
    await turn();
    expect(started).toEqual(['a']);
    expect(limiter.state).toMatchObject({ largeInFlight: 20_000_000, largeWaiting: 3 });
    a.done();
    await pa;
    await turn();
    expect(started).toEqual(['a', 'b', 'c']); // 20 + 5 of 30 Mpx: d (8) must wait
    expect(limiter.state).toMatchObject({ largeInFlight: 25_000_000, largeWaiting: 1 });
    b.done();
    await pb;
    await turn();
    expect(started).toEqual(['a', 'b', 'c', 'd']);
    c.done();
    d.done();
    await Promise.all([pc, pd]);
    expect(limiter.state).toEqual({ largeInFlight: 0, largeWaiting: 0, smallInFlight: 0, smallWaiting: 0 });
  });

  it('lets small images past a queue of large ones', async () => {
    const limiter = new DecodeLimiter(25_000_000);
    const big = gate();
    const p1 = limiter.run(25_000_000, big.decode);
    const p2 = limiter.run(25_000_000, big.decode);
    expect(await limiter.run(32 * 32, async () => 'small')).toBe('small');
    expect(limiter.state.largeWaiting).toBe(1);
    big.done();
    await Promise.all([p1, p2]);
  });

  it('runs an image larger than its lane alone rather than never', async () => {
    const limiter = new DecodeLimiter(10_000_000);
    expect(await limiter.run(24_000_000, async () => 'alone')).toBe('alone');
    expect(limiter.state.largeInFlight).toBe(0);
  });

  it('bounds the small lane too', async () => {
    const limiter = new DecodeLimiter(25_000_000);
    const g = gate();
    const n = SMALL_LANE_PIXELS / 500_000 + 3;
    const all = Array.from({ length: n }, () => limiter.run(500_000, g.decode));
    await turn();
    expect(limiter.state).toMatchObject({ smallInFlight: SMALL_LANE_PIXELS, smallWaiting: 3 });
    g.done();
    await Promise.all(all);
  });

  it('puts an image of exactly 1 Mpx in the large lane, one pixel less in the small one', async () => {
    const limiter = new DecodeLimiter(25_000_000);
    const g = gate();
    const large = limiter.run(1_000_000, g.decode);
    const small = limiter.run(999_999, g.decode);
    await turn();
    expect(limiter.state).toMatchObject({ largeInFlight: 1_000_000, smallInFlight: 999_999 });
    g.done();
    await Promise.all([large, small]);
  });

  it('refuses at once a decode whose client has already gone, when it would have to wait', async () => {
    const limiter = new DecodeLimiter(10_000_000);
    const g = gate();
    const first = limiter.run(10_000_000, g.decode);
    const ac = new AbortController();
    ac.abort();
    await expect(limiter.run(10_000_000, g.decode, ac.signal)).rejects.toMatchObject({ code: 'DQ_ERR_CLIENT_DISCONNECTED' });
    expect(limiter.state.largeWaiting).toBe(0);
    g.done();
    await first;
  });

  it('drops a waiting decode whose client has gone, and frees its place', async () => {
    const limiter = new DecodeLimiter(10_000_000);
    const g = gate();
    const first = limiter.run(10_000_000, g.decode);
    const ac = new AbortController();
    const gone = limiter.run(10_000_000, g.decode, ac.signal);
    ac.abort();
    await expect(gone).rejects.toMatchObject({ code: 'DQ_ERR_CLIENT_DISCONNECTED' });
    expect(limiter.state.largeWaiting).toBe(0);
    g.done();
    await first;
  });

  it('releases the pixels when a decode fails', async () => {
    const limiter = new DecodeLimiter(10_000_000);
    await expect(limiter.run(10_000_000, async () => { throw new Error('corrupt'); })).rejects.toThrow('corrupt');
    expect(await limiter.run(10_000_000, async () => 'next')).toBe('next');
  });
});
