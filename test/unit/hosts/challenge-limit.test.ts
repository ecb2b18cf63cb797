import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_LIVE_NONCES_PER_HOST } from '../../../src/hosts/host-service.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { ManualClock } from '../../../src/lib/clock.js';
import { SoftAk } from '../../helpers/soft-tpm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/** Challenges are unauthenticated, so the live nonces one host can hold are bounded. */
let svc: TestService;
const clock = new ManualClock(Date.UTC(2026, 5, 1));

beforeAll(async () => {
  svc = await startTestService({ hsm: new MemoryKeyStore(), clock });
  const ak = new SoftAk('ecc');
  await svc.store.tx((t) =>
    t.insertHost({
      id: 'h1', status: 'active', akName: ak.name.toString('hex'), akPublic: ak.tpm2bPublic.toString('base64'), akQualifiedName: ak.qualifiedName.toString('hex'),
      ekPublicHash: '00'.repeat(32), ekCertificateSubject: null, ekCertificateIssuer: null, labels: {}, policyId: 'prod-boot',
      enrolledAt: clock.now().toISOString(), revokedAt: null, lastAttestation: null, lastClock: null,
    }),
  );
});
afterAll(async () => svc?.close());

describe('challenge limit', () => {
  it(`refuses the challenge after ${MAX_LIVE_NONCES_PER_HOST} live nonces with 429, and allows more once they expire`, async () => {
    for (let i = 0; i < MAX_LIVE_NONCES_PER_HOST; i++) expect((await svc.call('POST', '/v1/challenges', { hostId: 'h1' }, null)).status).toBe(200);
    const over = await svc.call('POST', '/v1/challenges', { hostId: 'h1' }, null);
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('ERR_TOO_MANY_CHALLENGES');
    clock.advance(61_000); // the prod-boot policy's nonce TTL is 60 s
    expect((await svc.call('POST', '/v1/challenges', { hostId: 'h1' }, null)).status).toBe(200);
  });

  it('an unknown host gets no nonce', async () => {
    expect((await svc.call('POST', '/v1/challenges', { hostId: 'nobody' }, null)).body.error.code).toBe('ERR_HOST_NOT_FOUND');
  });
});
