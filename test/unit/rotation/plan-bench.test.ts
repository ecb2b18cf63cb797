import { describe, expect, it } from 'vitest';
import { planBench } from '../../../bench/plan.js';

describe('bench/plan (short run)', () => {
  it('plans a mixed key population and reports its figures', async () => {
    const r = await planBench(3000);
    expect(r.keys).toBe(3000);
    expect(r.steps).toBeGreaterThan(0);
    expect(r.horizonSteps).toBeGreaterThan(r.steps);
    expect(r.ms).toBeGreaterThanOrEqual(0);
  });
});
