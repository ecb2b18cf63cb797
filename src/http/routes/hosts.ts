import { z } from 'zod';
import { authorize } from '../context.js';
import type { AppDeps } from '../app.js';
import type { HostService } from '../../hosts/host-service.js';
import { Routes } from '../router.js';
import { parseBody } from '../validate.js';

const b64 = (max: number) => z.string().min(1).max(max);
const labels = z.record(z.string().regex(/^[a-z0-9][a-z0-9._/-]{0,62}$/), z.string().max(256));
const enrollBody = z.strictObject({
  ekCertificate: b64(16_384).optional(),
  ekPublic: b64(4096).optional(),
  akPublic: b64(4096),
  provisioningToken: z.string().max(128).optional(),
  intermediates: z.array(b64(16_384)).max(8).optional(),
  labels: labels.optional(),
});
const activateBody = z.strictObject({ secret: b64(256) });
const provisioningBody = z.strictObject({
  ttlSeconds: z.number().int().min(60).max(30 * 86_400),
  uses: z.number().int().min(1).max(10_000),
  labels: labels.optional(),
});
const challengeBody = z.strictObject({ hostId: z.string().min(1).max(64) });
export const pcrsSchema = z.partialRecord(z.enum(['sha1', 'sha256', 'sha384', 'sha512']), z.record(z.string().max(2), z.string().max(128)));
const attestBody = z.strictObject({ nonce: b64(128), quote: b64(4096), signature: b64(4096), pcrs: pcrsSchema });
const revokeBody = z.strictObject({ reason: z.string().max(512).optional(), revokeProvisioningToken: z.boolean().optional() });

/** Hosts and attestation (API.md). Enroll/activate/challenge/attest are authorized by evidence. */
export function hostRoutes(hosts: HostService) {
  return (deps: AppDeps) => {
    const r = new Routes(deps);
    r.post('/v1/provisioning-tokens', 'provisioning-tokens.create', (req, _res, who) => hosts.createProvisioningToken(who.actor, parseBody(req, provisioningBody)), 201);
    r.publicPost('/v1/hosts/enroll', async (req, res) => {
      const body = parseBody(req, enrollBody);
      // With a provisioning token the request needs no API token; without one, the caller must
      // hold a role allowed to enroll (provisioner, operator, admin).
      const actor = body.provisioningToken === undefined || req.headers.authorization !== undefined
        ? (await authorize(deps, req, res, 'hosts.enroll')).actor
        : null;
      return hosts.enroll(actor, body);
    }, 201);
    r.publicPost('/v1/hosts/enroll/:enrollmentId/activate', (req) => hosts.activate(String(req.params.enrollmentId), parseBody(req, activateBody).secret), 201);
    r.get('/v1/hosts', 'hosts.read', async () => ({ hosts: await hosts.list() }));
    r.get('/v1/hosts/:hostId', 'hosts.read', (req) => hosts.get(String(req.params.hostId)));
    r.post('/v1/hosts/:hostId/revoke', 'hosts.revoke', (req, _res, who) => {
      const body = parseBody(req, revokeBody);
      return hosts.revoke(who.actor, String(req.params.hostId), body.reason, { revokeProvisioningToken: body.revokeProvisioningToken === true });
    });
    r.publicPost('/v1/challenges', (req) => hosts.challenge(parseBody(req, challengeBody).hostId));
    r.publicPost('/v1/hosts/:hostId/attest', (req) => hosts.attest(String(req.params.hostId), parseBody(req, attestBody)));
    return r.router;
  };
}
