import { z } from 'zod';
import type { AppDeps } from '../app.js';
import type { SessionService } from '../../sessions/session-service.js';
import { Routes } from '../router.js';
import { isCustosError } from '../../lib/errors.js';
import { parseBody } from '../validate.js';
import { pcrsSchema } from './hosts.js';

const b64 = (max: number) => z.string().min(1).max(max);
// The JWK itself is checked member by member by parseEphemeralJwk (ERR_EPHEMERAL_KEY names the
// reason: wrong curve, off-curve point, private member); here it only has to be a small object.
const jwk = z.record(z.string().max(64), z.unknown()).refine((o) => Object.keys(o).length <= 16, { message: 'too many members' });
const issueBody = z.strictObject({
  hostId: z.string().min(1).max(64),
  nonce: b64(128),
  quote: b64(4096),
  signature: b64(4096),
  pcrs: pcrsSchema,
  ephemeralPublicKey: jwk,
  audience: z.string().min(1).max(512),
});
const introspectBody = z.strictObject({ token: z.string().min(1).max(16_384) });

/** How long relying parties may cache the JWKS: short, so a destroyed version drops out quickly. */
export const JWKS_MAX_AGE_SECONDS = 60;

/**
 * Sessions (API.md). All three routes are public:
 * - `POST /v1/sessions` is authorized by its evidence (a quote by the host's registered AK over a
 *   server nonce), like attest.
 * - `GET /.well-known/jwks.json` holds public keys only.
 * - `POST /v1/sessions/introspect` takes no API token. RFC 7662 §2.1 asks for client
 *   authentication to stop token scanning, but session tokens are signed JWTs that cannot be
 *   guessed, the answer for a live token holds only the claims its holder can already read, and
 *   an inactive token gets a bare `{active: false}`. The callers are relying parties in other
 *   domains (ledger nodes, services) that hold no custos credentials; requiring one would push
 *   them to skip the liveness check.
 */
export function sessionRoutes(sessions: SessionService) {
  return (deps: AppDeps) => {
    const r = new Routes(deps);
    r.publicPost('/v1/sessions', async (req) => {
      let body: z.infer<typeof issueBody>;
      try {
        body = parseBody(req, issueBody);
      } catch (e) {
        // Every refused session request is in the audit log, these too (coalesced, as they come
        // from anyone: ../refusal-audit.ts).
        const hostId = (req.body as { hostId?: unknown } | undefined)?.hostId;
        const host = typeof hostId === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(hostId) ? hostId : null;
        const code = isCustosError(e) ? e.code : 'ERR_INTERNAL';
        const field = isCustosError(e) && typeof e.details?.['field'] === 'string' ? { field: e.details['field'] } : {};
        await deps.refusals.record({ actor: host ? `host:${host}` : 'anonymous', action: 'session.issue', subject: host ?? '-', reason: code, ip: req.ip ?? null, details: { code, ...field } });
        throw e;
      }
      return sessions.issue(body);
    }, 201);
    r.publicGet('/.well-known/jwks.json', async (_req, res) => {
      const set = await sessions.jwks();
      res.setHeader('cache-control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
      res.type('application/jwk-set+json').send(JSON.stringify(set));
    });
    r.publicPost('/v1/sessions/introspect', (req) => sessions.introspect(parseBody(req, introspectBody).token));
    return r.router;
  };
}
