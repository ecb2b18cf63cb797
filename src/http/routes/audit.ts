import { z } from 'zod';
import type { AppDeps } from '../app.js';
import type { PolicySet } from '../../policy/policy-service.js';
import { Routes } from '../router.js';
import { parseQuery } from '../validate.js';

const page = z.strictObject({
  after: z.string().regex(/^\d{1,15}$/).optional(),
  limit: z.string().regex(/^\d{1,5}$/).optional(),
});

/** Read-only views for auditors: the audit chain, its checkpoints, and the loaded policies. */
export function auditRoutes(policies: PolicySet) {
  return (deps: AppDeps) => {
    const r = new Routes(deps);
    r.get('/v1/audit', 'audit.read', async (req) => {
      const q = parseQuery(req, page);
      const limit = Math.min(Number(q.limit ?? 100), 1000);
      return { events: await deps.store.listAudit(Number(q.after ?? 0), limit) };
    });
    r.get('/v1/audit/checkpoints', 'audit.read', async (req) => {
      const q = parseQuery(req, page);
      const limit = Math.min(Number(q.limit ?? 100), 1000);
      return { checkpoints: await deps.store.listCheckpoints(Number(q.after ?? 0), limit) };
    });
    r.get('/v1/policies', 'policies.read', () => ({ policies: policies.list() }));
    return r.router;
  };
}
