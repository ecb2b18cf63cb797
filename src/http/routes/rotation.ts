import { z } from 'zod';
import type { AppDeps } from '../app.js';
import type { KeyService } from '../../keys/key-service.js';
import type { RotationService } from '../../rotation/rotation-service.js';
import { Routes } from '../router.js';
import { parseBody, parseQuery, versionParam } from '../validate.js';

const planQuery = z.strictObject({ days: z.string().regex(/^\d{1,4}$/).optional() });
const reasonBody = z.strictObject({ reason: z.string().max(512).optional() });

/** The rotation plan, and the lifecycle operations an operator may trigger by hand. */
export function rotationRoutes(rotation: RotationService, keys: KeyService) {
  return (deps: AppDeps) => {
    const r = new Routes(deps);
    r.get('/v1/rotation/plan', 'rotation.read', async (req) => {
      const days = Math.min(Number(parseQuery(req, planQuery).days ?? 30), 3660);
      const plan = await rotation.plan(days);
      return {
        days,
        steps: plan.steps.map((s) => ({ key: s.key, version: s.version ?? null, action: s.action, dueAt: s.dueAt.toISOString(), reason: s.reason, policyId: s.policyId, ...(s.destroyAt ? { destroyAt: s.destroyAt.toISOString() } : {}) })),
        unresolved: plan.unresolved,
      };
    });
    // Dates serialise as RFC 3339 through JSON.
    r.get('/v1/rotation/report', 'rotation.read', () => rotation.report());
    r.post('/v1/keys/:name/versions/:version/compromise', 'keys.compromise', (req, _res, who) =>
      keys.compromise(who.actor, String(req.params.name), versionParam(req.params.version as string), parseBody(req, reasonBody).reason));
    r.post('/v1/keys/:name/versions/:version/cancel-destroy', 'keys.cancel-destroy', (req, _res, who) => {
      parseBody(req, reasonBody);
      return keys.cancelDestroy(who.actor, String(req.params.name), versionParam(req.params.version as string));
    });
    return r.router;
  };
}
