import { describe, expect, it } from 'vitest';
import { Metrics } from '../../../src/http/metrics.js';

describe('HSM pool metrics', () => {
  it('reports the pool, its recoveries, its re-readings of the token and its session copies at each scrape', async () => {
    const m = new Metrics({ defaultMetrics: false });
    let s = { inFlight: 3, queued: 1, workers: 2, recoveries: 0, viewRefreshes: 0, sessionCopies: true };
    m.watchHsmPool(() => s);
    const first = await m.render();
    expect(first).toContain('custos_hsm_pool{measure="view_refreshes"} 0');
    expect(first).toContain('custos_hsm_pool{measure="session_copies"} 1');
    s = { ...s, recoveries: 1, viewRefreshes: 4, sessionCopies: false };
    const text = await m.render();
    expect(text).toContain('custos_hsm_pool{measure="view_refreshes"} 4');
    expect(text).toContain('custos_hsm_pool{measure="recoveries"} 1');
    expect(text).toContain('custos_hsm_pool{measure="in_flight"} 3');
    expect(text).toContain('custos_hsm_pool{measure="session_copies"} 0');
  });
});
