import { describe, expect, it } from 'vitest';
import { CallTable } from '../../../src/lib/call-table.js';

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('CallTable', () => {
  it('behaves as a Map of calls under random adds and takes, growing as it must', () => {
    for (const seed of [1, 2, 3, 42, 1234]) {
      const r = rng(seed);
      const table = new CallTable<{ id: number }>(4);
      const model = new Map<number, { id: number }>();
      let next = 1;
      for (let step = 0; step < 20_000; step++) {
        const x = r();
        if (x < 0.5 || model.size === 0) {
          // Mostly sequential ids, as a caller makes them; now and then a jump far ahead.
          if (x < 0.02) next += Math.floor(r() * 1e9);
          const id = next++;
          const item = { id };
          table.add(id, item);
          model.set(id, item);
        } else if (x < 0.97) {
          // An answer for a call in flight, in any order.
          const ids = [...model.keys()];
          const id = ids[Math.floor(r() * ids.length)]!;
          expect(table.take(id)).toBe(model.get(id));
          model.delete(id);
        } else {
          // An answer for a call that is not in flight (already answered, or never made).
          const id = x < 0.985 ? next + 7 : Math.max(1, next - 1 - Math.floor(r() * 50));
          expect(table.take(id)).toBe(model.get(id));
          model.delete(id);
        }
        expect(table.size).toBe(model.size);
      }
      const drained = table.drain();
      expect(new Map(drained)).toEqual(model);
      expect(drained).toHaveLength(model.size);
      expect(table.size).toBe(0);
      for (const id of model.keys()) expect(table.take(id)).toBeUndefined();
    }
  });

  it('keeps entries findable across wrap-around and backward shifts', () => {
    // Ids that land on the same few slots of a 32-slot table (and wrap past its end), taken in an
    // order that makes every kind of shift; after each take, every other id is still found.
    const table = new CallTable<string>(16);
    const ids = [5, 37, 69, 101, 6, 38, 31, 63, 95];
    for (const id of ids) table.add(id, `c${id}`);
    const remaining = new Set(ids);
    for (const id of [37, 31, 101, 5, 95, 6, 69, 63, 38]) {
      expect(table.take(id)).toBe(`c${id}`);
      expect(table.take(id)).toBeUndefined();
      remaining.delete(id);
      for (const other of remaining) {
        expect(table.take(other)).toBe(`c${other}`);
        table.add(other, `c${other}`);
      }
      expect(table.size).toBe(remaining.size);
    }
  });

  it('refuses an id twice, and ids that are not positive safe integers', () => {
    const table = new CallTable<number>();
    table.add(7, 1);
    expect(() => table.add(7, 2)).toThrow(RangeError);
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 53]) expect(() => table.add(bad, 0)).toThrow(RangeError);
    expect(table.take(Number.NaN)).toBeUndefined();
    expect(table.take(7)).toBe(1);
    expect(table.size).toBe(0);
  });
});
