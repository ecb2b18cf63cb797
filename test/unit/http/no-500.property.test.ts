import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { SoftAk } from '../../helpers/soft-tpm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/**
 * Bad input gets a 4xx with a code, never a 500: random JSON bodies (and random values in the
 * right shape) are thrown at every POST endpoint, as an admin and without credentials.
 */
let svc: TestService;
const ak = new SoftAk('ecc');

beforeAll(async () => {
  svc = await startTestService({ hsm: new MemoryKeyStore() });
  await svc.call('POST', '/v1/keys', { name: 'fz-sig', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
  await svc.call('POST', '/v1/keys', { name: 'fz-enc', type: 'aes-256', purpose: 'encrypt' });
  await svc.store.tx((t) =>
    t.insertHost({
      id: 'fz-host', status: 'active', akName: ak.name.toString('hex'), akPublic: ak.tpm2bPublic.toString('base64'), akQualifiedName: ak.qualifiedName.toString('hex'),
      ekPublicHash: '00'.repeat(32), ekCertificateSubject: null, ekCertificateIssuer: null, labels: { role: 'enclave-host', pool: 'production' }, policyId: 'prod-boot',
      enrolledAt: new Date().toISOString(), revokedAt: null, lastAttestation: null, lastClock: null,
    }),
  );
});
afterAll(async () => svc?.close());

const PATHS = [
  '/v1/keys', '/v1/keys/fz-sig/rotate', '/v1/keys/fz-sig/sign', '/v1/keys/fz-sig/sign-batch', '/v1/keys/fz-sig/verify', '/v1/keys/fz-enc/encrypt', '/v1/keys/fz-enc/decrypt',
  '/v1/keys/fz-sig/versions/1/compromise', '/v1/keys/fz-sig/versions/1/cancel-destroy', '/v1/tokens', '/v1/provisioning-tokens',
  '/v1/hosts/enroll', '/v1/hosts/enroll/x/activate', '/v1/hosts/fz-host/revoke', '/v1/challenges', '/v1/hosts/fz-host/attest',
  '/v1/sessions', '/v1/sessions/introspect',
];

// Strings that look like what the fields carry: base64 of random bytes, hex, short words.
const b64 = fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('base64'));
const hex = fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('hex'));
const leaf = fc.oneof(b64, hex, fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null));
const shaped = fc.record(
  {
    name: fc.string({ maxLength: 10 }), type: fc.constantFrom('ec-p256', 'aes-256', 'x'), purpose: fc.constantFrom('sign', 'encrypt', 'x'),
    data: b64, digest: b64, signature: b64, plaintext: b64, ciphertext: fc.oneof(b64.map((s) => `custos:v1:${s}`), fc.string()),
    akPublic: b64, ekPublic: b64, ekCertificate: b64, secret: b64, nonce: b64, quote: b64, hostId: fc.constantFrom('fz-host', 'nope'),
    pcrs: fc.dictionary(fc.constantFrom('sha1', 'sha256', 'sha384'), fc.dictionary(fc.string({ maxLength: 3 }), hex)),
    ephemeralPublicKey: fc.oneof(fc.dictionary(fc.constantFrom('kty', 'crv', 'x', 'y', 'd'), leaf), leaf), audience: fc.string({ maxLength: 10 }),
    batch: fc.oneof(fc.array(fc.oneof(fc.record({ data: b64 }), fc.record({ digest: b64 }), fc.record({ data: b64, digest: b64 }), leaf), { maxLength: 6 }), leaf),
    token: fc.string({ maxLength: 200 }), ttlSeconds: fc.integer(), uses: fc.integer(), role: fc.string({ maxLength: 8 }), reason: fc.string({ maxLength: 8 }),
  },
  { requiredKeys: [] },
);

describe('no input reaches a 500', () => {
  for (const path of PATHS) {
    it(`POST ${path}`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.jsonValue({ maxDepth: 3 }), shaped), fc.boolean(), async (body, authed) => {
          const r = await svc.call('POST', path, body, authed ? svc.tokens.admin : null);
          expect(r.status, `${path} ${JSON.stringify(body).slice(0, 300)} → ${JSON.stringify(r.body)}`).toBeLessThan(500);
          if (r.status >= 400) expect(r.body.error.code).toMatch(/^ERR_[A-Z_]+$/);
        }),
        { numRuns: 150 },
      );
    });
  }
});
