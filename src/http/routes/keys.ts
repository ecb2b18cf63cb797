import { z } from 'zod';
import type { AppDeps } from '../app.js';
import { Routes } from '../router.js';
import { parseBody, versionParam } from '../validate.js';
import { SIGN_BATCH_MAX } from '../../keys/key-service.js';

const createKey = z.strictObject({
  name: z.string().min(1).max(63),
  type: z.string().min(1).max(32),
  purpose: z.string().min(1).max(16),
  rotationPolicy: z.string().min(1).max(128).optional(),
  labels: z.record(z.string().regex(/^[a-z0-9][a-z0-9._/-]{0,62}$/), z.string().max(256)).optional(),
});
const b64 = z.string().max(1_000_000);
const version = z.number().int().positive().optional();
const algorithm = z.string().min(1).max(16).optional();
const signBody = z.union([
  z.strictObject({ data: b64, version, algorithm }),
  z.strictObject({ digest: b64, version, algorithm }),
]);
const verifyBody = z.union([
  z.strictObject({ data: b64, signature: b64, version, algorithm }),
  z.strictObject({ digest: b64, signature: b64, version, algorithm }),
]);
// One request, up to SIGN_BATCH_MAX inputs; each item is {data} or {digest} as in a single sign.
const signBatchBody = z.strictObject({
  batch: z.array(z.union([z.strictObject({ data: b64 }), z.strictObject({ digest: b64 })])).min(1).max(SIGN_BATCH_MAX),
  version,
  algorithm,
});
const rotateBody = z.strictObject({ reason: z.string().max(512).optional() });
const encryptBody = z.strictObject({ plaintext: b64, aad: b64.optional() });
const decryptBody = z.strictObject({ ciphertext: z.string().max(1_500_000), aad: b64.optional() });

export function keyRoutes(deps: AppDeps) {
  const r = new Routes(deps);
  const name = (p: unknown): string => String(p);
  r.post('/v1/keys', 'keys.create', (req, _res, who) => deps.keys.create(who.actor, parseBody(req, createKey)), 201);
  r.get('/v1/keys', 'keys.read', async () => ({ keys: await deps.keys.list() }));
  r.get('/v1/keys/:name', 'keys.read', (req) => deps.keys.get(name(req.params.name)));
  r.get('/v1/keys/:name/versions/:version/public', 'keys.read', (req) => deps.keys.publicKey(name(req.params.name), versionParam(req.params.version as string)));
  r.post('/v1/keys/:name/rotate', 'keys.rotate', (req, _res, who) => deps.keys.rotate(who.actor, name(req.params.name), parseBody(req, rotateBody).reason), 201);
  r.post('/v1/keys/:name/sign', 'keys.use', (req, _res, who) => deps.keys.sign(who.actor, name(req.params.name), parseBody(req, signBody)));
  r.post('/v1/keys/:name/sign-batch', 'keys.use', (req, _res, who) => {
    const b = parseBody(req, signBatchBody);
    return deps.keys.signBatch(who.actor, name(req.params.name), { items: b.batch, version: b.version, algorithm: b.algorithm });
  });
  r.post('/v1/keys/:name/verify', 'keys.use', (req, _res, who) => deps.keys.verify(who.actor, name(req.params.name), parseBody(req, verifyBody)));
  r.post('/v1/keys/:name/encrypt', 'keys.use', (req, _res, who) => deps.keys.encrypt(who.actor, name(req.params.name), parseBody(req, encryptBody)));
  r.post('/v1/keys/:name/decrypt', 'keys.use', (req, _res, who) => deps.keys.decrypt(who.actor, name(req.params.name), parseBody(req, decryptBody)));
  return r.router;
}
