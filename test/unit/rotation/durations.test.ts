import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  addDuration,
  compareDurations,
  durationBoundsMs,
  isDuration,
  parseDuration,
  tryParseDuration,
} from '../../../src/rotation/durations.js';

const at = (s: string) => new Date(s);

describe('parseDuration', () => {
  it('parses calendar and clock parts separately', () => {
    expect(parseDuration('P90D')).toMatchObject({ years: 0, months: 0, days: 90, ms: 0 });
    expect(parseDuration('PT12H')).toMatchObject({ days: 0, ms: 12 * 3600_000 });
    expect(parseDuration('P1Y2M')).toMatchObject({ years: 1, months: 2, days: 0, ms: 0 });
    expect(parseDuration('P2W')).toMatchObject({ days: 14 });
    expect(parseDuration('P1DT2H3M4.5S')).toMatchObject({ days: 1, ms: (2 * 3600 + 3 * 60 + 4.5) * 1000 });
    expect(parseDuration('PT0S')).toMatchObject({ ms: 0 });
  });

  it('rejects negatives, empty parts and garbage', () => {
    for (const bad of ['', 'P', 'PT', 'P1DT', '-P1D', 'P-1D', 'P1.5D', 'P1W2D', '90 days', 'P1H', 'pt1h', 'P1DT1D', 'PT1H1H', ' P1D', 'P1D ', 'P999999D']) {
      expect(isDuration(bad), bad).toBe(false);
      expect(() => parseDuration(bad)).toThrow(TypeError);
    }
  });

  it('never throws on arbitrary strings', () => {
    fc.assert(fc.property(fc.string(), (s) => {
      const d = tryParseDuration(s);
      return d === undefined || (d.years >= 0 && d.months >= 0 && d.days >= 0 && d.ms >= 0);
    }));
  });
});

describe('addDuration', () => {
  it('adds months with calendar semantics in UTC, clamping the day', () => {
    expect(addDuration(at('2026-01-31T10:00:00Z'), parseDuration('P1M')).toISOString()).toBe('2026-02-28T10:00:00.000Z');
    expect(addDuration(at('2028-01-31T10:00:00Z'), parseDuration('P1M')).toISOString()).toBe('2028-02-29T10:00:00.000Z');
    expect(addDuration(at('2026-01-31T00:00:00Z'), parseDuration('P1M'), 3).toISOString()).toBe('2026-04-30T00:00:00.000Z');
    expect(addDuration(at('2028-02-29T00:00:00Z'), parseDuration('P1Y')).toISOString()).toBe('2029-02-28T00:00:00.000Z');
    expect(addDuration(at('2026-11-15T00:00:00Z'), parseDuration('P1Y2M')).toISOString()).toBe('2028-01-15T00:00:00.000Z');
  });

  it('adds days and clock time exactly', () => {
    expect(addDuration(at('2026-03-28T12:00:00Z'), parseDuration('P1DT12H')).toISOString()).toBe('2026-03-30T00:00:00.000Z');
    expect(addDuration(at('2026-01-01T00:00:00Z'), parseDuration('P2W'), 2).toISOString()).toBe('2026-01-29T00:00:00.000Z');
    expect(addDuration(at('2026-01-01T00:00:00Z'), parseDuration('P1D'), 0).toISOString()).toBe('2026-01-01T00:00:00.000Z');
    expect(() => addDuration(at('2026-01-01T00:00:00Z'), parseDuration('P1D'), -1)).toThrow(TypeError);
  });

  it('is monotonic and within its bounds for any start', () => {
    const dur = fc.record({ y: fc.nat(3), m: fc.nat(14), d: fc.nat(40), h: fc.nat(30) }).map(({ y, m, d, h }) => parseDuration(`P${y}Y${m}M${d}DT${h}H`));
    fc.assert(fc.property(dur, fc.integer({ min: 0, max: 4_000_000_000_000 }), (d, t) => {
      const end = addDuration(new Date(t), d).getTime();
      const { min, max } = durationBoundsMs(d);
      return end >= t && end - t >= min && end - t <= max;
    }));
  });
});

describe('compareDurations', () => {
  it('orders by length from a reference instant', () => {
    expect(compareDurations(parseDuration('P1M'), parseDuration('P30D'))).toBeGreaterThan(0);
    expect(compareDurations(parseDuration('P1M'), parseDuration('P30D'), Date.UTC(2026, 1, 1))).toBeLessThan(0);
    expect(compareDurations(parseDuration('P1W'), parseDuration('P7D'))).toBe(0);
  });
});
