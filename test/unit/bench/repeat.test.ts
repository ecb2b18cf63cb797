import { describe, expect, it } from 'vitest';
import { figure, summarize } from '../../../bench/repeat.js';

const run = (ratio: number, p99: number, extra: Record<string, unknown> = {}): unknown => ({
  httpSign: { ecRatioToRaw: ratio, ecOpenLoopP99Ms: p99 },
  ...extra,
});

describe('bench:repeat summary', () => {
  it('reads figures by path and ignores what is not a finite number', () => {
    const j = { a: { b: 1.5, c: 'x', d: null, e: Number.NaN } };
    expect(figure(j, ['a', 'b'])).toBe(1.5);
    expect(figure(j, ['a', 'c'])).toBeUndefined();
    expect(figure(j, ['a', 'd', 'x'])).toBeUndefined();
    expect(figure(j, ['a', 'e'])).toBeUndefined();
    expect(figure(undefined, ['a'])).toBeUndefined();
  });

  it('counts the runs that met each target, marks misses, and leaves out rows no run measured', () => {
    const lines = summarize([run(0.512, 7.5), run(0.487, 12.25), undefined, run(0.5, 10)]);
    expect(lines).toHaveLength(2);
    const [ratio, p99] = lines as [string, string];
    expect(ratio).toMatch(/^HTTP ec-p256 sign peak \/ raw C_Sign\s+target ≥ 0.5\s+met in 2 of 3\s+range 0.487–0.512\s+runs: 0.512 0.487\* - 0.5$/);
    // < 10 is strict: a p99 of exactly 10 ms misses.
    expect(p99).toMatch(/met in 1 of 3\s+range 7.5–12.25\s+runs: 7.5 12.25\* - 10\*$/);
    expect(lines.join('\n')).not.toContain('sessions');
  });

  it('prints large whole figures with thousands separators', () => {
    const [line] = summarize([{ auditVerify: { eventsPerSecond: 654030 } }, { auditVerify: { eventsPerSecond: 499999 } }]);
    expect(line).toMatch(/target ≥ 500,000\s+met in 1 of 2\s+range 499,999–654,030\s+runs: 654,030 499,999\*$/);
  });
});
