import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DqError, ERRORS, errorBody } from '../src/errors.js';
import { REPO_ROOT } from './helpers/paths.js';

describe('error catalogue', () => {
  it('docs/errors.md lists exactly the codes of src/errors.ts, with the same statuses', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs', 'errors.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `(DQ_ERR_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    expect(Object.fromEntries(rows)).toEqual(Object.fromEntries(Object.entries(ERRORS).map(([c, s]) => [c, s.status])));
    expect(rows.length).toBe(Object.keys(ERRORS).length);
  });

  it('codes follow DQ_ERR_<AREA>_<WHAT>', () => {
    for (const code of Object.keys(ERRORS)) expect(code).toMatch(/^DQ_ERR_[A-Z]+_[A-Z_]+$/);
  });

  it('5xx bodies hide details, 4xx bodies keep them', () => {
    expect(errorBody(new DqError('DQ_ERR_SERVER_INTERNAL', 'secret path /x'))).toEqual({ error: 'internal server error', code: 'DQ_ERR_SERVER_INTERNAL' });
    expect(errorBody(new DqError('DQ_ERR_MODEL_NOT_FOUND', 'foo')).error).toBe('unknown model: foo');
  });

  it('only faults carry a stack trace (shedding and client errors are too many to pay for one), and the limit is restored', () => {
    const frames = (e: Error) => (e.stack ?? '').split('\n').filter((l) => l.trimStart().startsWith('at ')).length;
    const limit = Error.stackTraceLimit;
    expect(frames(new DqError('DQ_ERR_ENGINE_FAILED'))).toBeGreaterThan(0);
    expect(frames(new DqError('DQ_ERR_QUEUE_FULL', 'no room'))).toBe(0);
    expect(frames(new DqError('DQ_ERR_REQUEST_INVALID'))).toBe(0);
    expect(new DqError('DQ_ERR_QUEUE_FULL', 'no room').stack).toContain('inference queue is full, retry later: no room');
    expect(Error.stackTraceLimit).toBe(limit);
  });
});
