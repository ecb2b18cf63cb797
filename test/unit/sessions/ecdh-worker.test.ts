import { createECDH, ECDH, generateKeyPairSync, randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { EcdhOffload, POOL_TARGET, type PooledKey } from '../../../src/sessions/ecdh-worker.js';
import { openSessionKey, sealSessionKey, sessionEcdhOffload } from '../../../src/sessions/hpke.js';

const offload = new EcdhOffload();
afterAll(() => offload.close());

async function pooled(o: EcdhOffload): Promise<PooledKey> {
  let k: PooledKey | undefined;
  await vi.waitFor(() => {
    k = o.take();
    expect(k).toBeDefined();
  });
  return k!;
}

describe('ECDH worker', () => {
  it('hands out fresh P-256 public points and computes the DH with their private halves, in the worker', async () => {
    const peer = createECDH('prime256v1');
    peer.generateKeys();
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const k = await pooled(offload);
      expect(k.point.length).toBe(65);
      expect(k.point[0]).toBe(0x04);
      // A point on the curve (convertKey refuses others).
      expect(() => ECDH.convertKey(k.point, 'prime256v1', undefined, undefined, 'compressed')).not.toThrow();
      seen.add(k.point.toString('hex'));
      const secret = await offload.dh(k.handle, peer.getPublicKey());
      // The peer's side of the same DH: the worker used the private key of this point.
      expect(secret.equals(peer.computeSecret(k.point))).toBe(true);
    }
    expect(seen.size).toBe(20);
  });

  it('a pooled key serves one DH only; an invalid peer point is refused', async () => {
    const peer = createECDH('prime256v1');
    peer.generateKeys();
    const k = await pooled(offload);
    await offload.dh(k.handle, peer.getPublicKey());
    await expect(offload.dh(k.handle, peer.getPublicKey())).rejects.toThrow(/unknown or used/);
    const k2 = await pooled(offload);
    const offCurve = Buffer.concat([Buffer.from([0x04]), randomBytes(64)]);
    await expect(offload.dh(k2.handle, offCurve)).rejects.toThrow();
    const k3 = await pooled(offload);
    offload.drop(k3.handle);
    await expect(offload.dh(k3.handle, peer.getPublicKey())).rejects.toThrow(/unknown or used/);
  });

  it('DHs asked for in one turn go together; each gets its own answer and a bad one fails alone', async () => {
    const peers = Array.from({ length: 12 }, () => {
      const p = createECDH('prime256v1');
      p.generateKeys();
      return p;
    });
    const keys: PooledKey[] = [];
    for (let i = 0; i < peers.length; i++) keys.push(await pooled(offload));
    // One of them is asked twice in the same batch: the second use must fail, the others succeed.
    const results = await Promise.allSettled([
      ...peers.map((p, i) => offload.dh(keys[i]!.handle, p.getPublicKey())),
      offload.dh(keys[3]!.handle, peers[3]!.getPublicKey()),
    ]);
    results.slice(0, peers.length).forEach((r, i) => {
      expect(r.status).toBe('fulfilled');
      expect((r as PromiseFulfilledResult<Buffer>).value.equals(peers[i]!.computeSecret(keys[i]!.point))).toBe(true);
    });
    expect(results[peers.length]).toMatchObject({ status: 'rejected', reason: { message: expect.stringMatching(/unknown or used/) } });
  });

  it('session keys sealed with pooled ephemeral keys open with the enclave key, across refills and after a restart', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pub = publicKey.export({ format: 'jwk' });
    const priv = privateKey.export({ format: 'jwk' });
    const encs = new Set<string>();
    const round = async (n: number): Promise<void> => {
      const jobs = Array.from({ length: n }, async (_, i) => {
        const key = randomBytes(32);
        const sealed = await sealSessionKey(pub, key, `jti-${i}`);
        encs.add(sealed.enc);
        expect((await openSessionKey(priv as never, sealed.enc, sealed.ciphertext, `jti-${i}`)).equals(key)).toBe(true);
      });
      await Promise.all(jobs);
    };
    await round(50);
    // Let the pool fill, then drain it past its size so refills and the fallback both serve.
    // The pool fills up to its target once it has been drawn on.
    const k = sessionEcdhOffload.take();
    if (k) sessionEcdhOffload.drop(k.handle);
    await vi.waitFor(() => expect(sessionEcdhOffload.ready).toBe(POOL_TARGET), { timeout: 10_000, interval: 20 });
    const before = { ...sessionEcdhOffload.counts };
    await round(600);
    // The pool served the first ones, the event loop those beyond what it held.
    expect(sessionEcdhOffload.counts.served - before.served).toBeGreaterThanOrEqual(POOL_TARGET);
    expect(sessionEcdhOffload.counts.missed - before.missed).toBeGreaterThan(0);
    await sessionEcdhOffload.close();
    await round(20);
    expect(encs.size).toBe(670);
    expect(sessionEcdhOffload.available).toBe(true);
  });
});
