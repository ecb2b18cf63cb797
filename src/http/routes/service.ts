import type { AppDeps } from '../app.js';
import { Routes } from '../router.js';

/** /healthz (process up), /readyz (HSM and store reachable, else 503 naming the part), /metrics. */
export function serviceRoutes(deps: AppDeps) {
  const r = new Routes(deps);
  r.publicGet('/healthz', () => ({ status: 'ok' }));
  r.publicGet('/readyz', async (_req, res) => {
    const [hsm, store] = await Promise.all([deps.hsm.health(), deps.store.health()]);
    const failing: Record<string, unknown>[] = [];
    if (!hsm.ok) failing.push({ part: `hsm.${hsm.part}`, code: hsm.code, reason: hsm.reason });
    if (!store.ok) failing.push({ part: 'store', code: 'ERR_STORE_UNAVAILABLE', reason: store.reason });
    if (hsm.ok) {
      deps.metrics.hsmPool.set({ state: 'in_use' }, hsm.sessionsInUse);
      deps.metrics.hsmPool.set({ state: 'idle' }, hsm.sessionsIdle);
    }
    res.status(failing.length === 0 ? 200 : 503);
    return failing.length === 0 ? { status: 'ready' } : { status: 'not ready', failing };
  });
  r.publicGet('/metrics', async (_req, res) => {
    res.type(deps.metrics.registry.contentType);
    return deps.metrics.render();
  });
  return r.router;
}
