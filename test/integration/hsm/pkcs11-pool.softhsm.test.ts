import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPkcs11KeyStore, type KeyStoreOp } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

describe('PKCS#11 adapter: queue bounds, metrics, event loop', () => {
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
});
