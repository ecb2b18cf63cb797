import { z } from 'zod';
import { ROLES } from '../../auth/roles.js';
import type { AppDeps } from '../app.js';
import { Routes } from '../router.js';
import { parseBody } from '../validate.js';

const createToken = z.strictObject({
  name: z.string().min(1).max(128),
  role: z.enum(ROLES as [string, ...string[]]),
  ttlSeconds: z.number().int().min(60).max(10 * 366 * 86_400).optional(),
});

/** API token management (admin). Not in API.md's tables; an addition under /v1/tokens. */
export function tokenRoutes(deps: AppDeps) {
  const r = new Routes(deps);
  r.post('/v1/tokens', 'tokens.manage', async (req, _res, who) => {
    const body = parseBody(req, createToken);
    const { id, token, record } = await deps.tokens.create(who.actor, body as { name: string; role: (typeof ROLES)[number]; ttlSeconds?: number });
    return { id, token, name: record.name, role: record.role, expiresAt: record.expiresAt };
  }, 201);
  r.get('/v1/tokens', 'tokens.manage', async () => ({ tokens: await deps.tokens.list() }));
  r.delete('/v1/tokens/:id', 'tokens.manage', async (req, _res, who) => {
    await deps.tokens.revoke(who.actor, String(req.params.id));
    return { revoked: true };
  });
  return r.router;
}
