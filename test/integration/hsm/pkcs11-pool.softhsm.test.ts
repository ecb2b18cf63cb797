import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPkcs11KeyStore, type KeyStoreOp } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

describe('PKCS#11 adapter: queue bounds, metrics, event loop, workers', () => {
  let hsm: SoftHsm;
  beforeAll(async () => {
    hsm = await startSoftHsm();
  });
  afterAll(async () => {
    await hsm?.cleanup();
  });

  it('refuses work beyond poolSize + maxQueue with ERR_HSM_UNAVAILABLE and counts every operation', async () => {
    const seen: Array<[KeyStoreOp, boolean]> = [];
    const store = await openPkcs11KeyStore({
      module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, workers: 1, poolSize: 1, maxQueue: 1,
      onOp: (op, ms, ok) => {
        expect(ms).toBeGreaterThanOrEqual(0);
        seen.push([op, ok]);
      },
    });
    try {
      const k = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:pool:v1', type: 'ec-p256' });
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => store.sign(k.id, 'ecdsa', 'sha256', Buffer.alloc(32, 1))));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
      for (const r of results.filter((x) => x.status === 'rejected')) {
        expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      }
      const stats = store.stats();
      expect(stats.opsTotal.sign).toBe(6);
      expect(stats.opErrors.sign).toBe(4);
      expect(stats.opsTotal.generateKeyPair).toBe(1);
      expect(stats).toMatchObject({ inFlight: 0, queued: 0, workers: 1 });
      expect(seen.filter(([op, ok]) => op === 'sign' && ok)).toHaveLength(2);
      // Once the burst is over the store serves again.
      expect((await store.sign(k.id, 'ecdsa', 'sha256', Buffer.alloc(32, 2))).length).toBe(64);
    } finally {
      await store.close();
    }
    await expect(store.randomBytes(4)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
    expect(await store.health()).toMatchObject({ ok: false, part: 'module' });
  });

  it('keeps the event loop free while RSA keys are generated', async () => {
    const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
    try {
      let maxGap = 0;
      let last = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        maxGap = Math.max(maxGap, now - last);
        last = now;
      }, 2);
      const start = performance.now();
      for (let i = 0; i < 2; i++) {
        await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: `custos:rsa-${i}:v1`, type: 'rsa-3072' });
      }
      const took = performance.now() - start;
      clearInterval(timer);
      // A 3072-bit key takes hundreds of ms inside SoftHSM2; had it run on the main thread, one
      // timer gap would be as long as the whole generation.
      expect(maxGap).toBeLessThan(Math.max(120, took / 3));
      expect((await store.listKeys()).filter((k) => k.type === 'rsa-3072')).toHaveLength(2);
    } finally {
      await store.close();
    }
  });

  it('fills the first worker; the second joins for a long operation and for a queue of RSA signatures', async () => {
    const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, workers: 2 });
    try {
      const ec = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:lanes-ec:v1', type: 'ec-p256' });
      const rsa = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:lanes-rsa:v1', type: 'rsa-2048' });
      const pub = createPublicKey({ key: await store.getPublicKey(ec.id), format: 'der', type: 'spki' });
      const before = store.stats().perWorker;
      // Bursts of 16 ECDSA signatures: each burst is far below the first worker's share, so the
      // second one stays out (fewer wake-ups and messages) and every signature is still right.
      for (let burst = 0; burst < 10; burst++) {
        const messages = Array.from({ length: 16 }, () => randomBytes(40));
        const sigs = await Promise.all(messages.map((m) => store.sign(ec.id, 'ecdsa', 'sha256', createHash('sha256').update(m).digest())));
        sigs.forEach((sig, i) => expect(verify('sha256', messages[i]!, { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true));
      }
      const afterEc = store.stats().perWorker;
      expect(afterEc[0]! - before[0]!).toBe(160);
      expect(afterEc[1]! - before[1]!).toBe(0);
      // 40 RSA signatures at once are ~22 ms of token work: the second worker takes its part.
      await Promise.all(Array.from({ length: 40 }, () => store.sign(rsa.id, 'rsa-pkcs1', 'sha256', randomBytes(32))));
      const afterRsa = store.stats().perWorker;
      expect(afterRsa[1]! - afterEc[1]!).toBeGreaterThan(0);
      expect(afterRsa[0]! - afterEc[0]! + afterRsa[1]! - afterEc[1]!).toBe(40);
      // An RSA-3072 key generation (hundreds of ms) does not hold up a signature asked for after it.
      const gen = store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:lanes-gen:v1', type: 'rsa-3072' });
      let generated = false;
      void gen.then(() => (generated = true));
      await new Promise((r) => setTimeout(r, 5));
      await store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32));
      expect(generated).toBe(false);
      await gen;
    } finally {
      await store.close();
    }
  });
});
