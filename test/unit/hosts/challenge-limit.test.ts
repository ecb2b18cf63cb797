import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_LIVE_NONCES_PER_HOST } from '../../../src/hosts/host-service.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { ManualClock } from '../../../src/lib/clock.js';
import { sha256hex } from '../../../src/lib/encoding.js';
import { SoftAk } from '../../helpers/soft-tpm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/**
 * Challenges are unauthenticated, so the live nonces one host can hold are bounded; at the bound
 * the oldest goes, so that asking on a host's behalf cannot lock the host out.
 */
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

const challenge = async (): Promise<string> => {
  const r = await svc.call('POST', '/v1/challenges', { hostId: 'h1' }, null);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.nonce as string;
};
const live = (): Promise<number> => svc.store.countLiveNonces('h1', clock.now().toISOString());
const known = async (nonce: string): Promise<boolean> => {
  const h = sha256hex(Buffer.from(nonce, 'base64'));
  const row = await svc.store.tx((t) => t.takeNonce(h));
  if (row) await svc.store.tx((t) => t.insertNonce(row));
  return row !== null;
};

describe('challenge limit', () => {
  it(`holds at most ${MAX_LIVE_NONCES_PER_HOST} live nonces per host: past that the oldest goes, and every request is answered`, async () => {
    const first = await challenge();
    clock.advance(1);
    const second = await challenge();
    for (let i = 2; i < MAX_LIVE_NONCES_PER_HOST; i++) {
      clock.advance(1);
      await challenge();
    }
    expect(await live()).toBe(MAX_LIVE_NONCES_PER_HOST);
    // A flood of challenges on the host's behalf ...
    clock.advance(1);
    const newest = await challenge();
    expect(await live()).toBe(MAX_LIVE_NONCES_PER_HOST);
    // ... costs the oldest nonce, and the host still gets its own.
    expect([await known(first), await known(second), await known(newest)]).toEqual([false, true, true]);
    clock.advance(61_000); // the prod-boot policy's nonce TTL is 60 s
    expect(await live()).toBe(0);
    await challenge();
    expect(await live()).toBe(1);
  });

  it('an unknown host gets no nonce', async () => {
    expect((await svc.call('POST', '/v1/challenges', { hostId: 'nobody' }, null)).body.error.code).toBe('ERR_HOST_NOT_FOUND');
  });
});
