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
    // Every operation on the workers here: the test is about how they share them.
    const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, workers: 2, inline: false });
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

  it('runs short operations on the calling thread, up to 16 a turn, and long ones on the workers', async () => {
    const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, workers: 1 });
    try {
      const ec = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:inline-ec:v1', type: 'ec-p256' });
      const rsa = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:inline-rsa:v1', type: 'rsa-2048' });
      const aes = await store.generateSecretKey({ id: randomBytes(16).toString('hex'), label: 'custos:inline-aes:v1', type: 'aes-256' });
      const pub = createPublicKey({ key: await store.getPublicKey(ec.id), format: 'der', type: 'spki' });
      // The first use of a key on this thread finds its handles unknown there: a worker does the
      // operation and hands the handles over.
      const w0 = store.stats();
      await store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32));
      const small = await store.encrypt(aes.id, Buffer.from('short'), Buffer.from('aad'));
      const s0 = store.stats();
      expect(s0).toMatchObject({ workers: 1, inlineBackoffs: 0, inlineOps: w0.inlineOps });
      expect(s0.perWorker[0]! - w0.perWorker[0]!).toBe(2);
      // One at a time: every ECDSA signature on this thread, none on the worker.
      for (let i = 0; i < 8; i++) {
        const m = randomBytes(40);
        const sig = await store.sign(ec.id, 'ecdsa', 'sha256', createHash('sha256').update(m).digest());
        expect(verify('sha256', m, { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
      }
      const s1 = store.stats();
      expect(s1.inlineOps - s0.inlineOps).toBe(8);
      expect(s1.perWorker[0]).toBe(s0.perWorker[0]);
      // 40 at once: 16 on this thread in that turn, the rest on the worker.
      const messages = Array.from({ length: 40 }, () => randomBytes(40));
      const sigs = await Promise.all(messages.map((m) => store.sign(ec.id, 'ecdsa', 'sha256', createHash('sha256').update(m).digest())));
      sigs.forEach((sig, i) => expect(verify('sha256', messages[i]!, { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true));
      const s2 = store.stats();
      expect(s2.inlineOps - s1.inlineOps).toBe(16);
      expect(s2.perWorker[0]! - s1.perWorker[0]!).toBe(24);
      // RSA signatures and large encryptions go to the worker; verification, small encryptions
      // and random bytes do not.
      await store.sign(rsa.id, 'rsa-pkcs1', 'sha256', randomBytes(32));
      const big = await store.encrypt(aes.id, randomBytes(8192), Buffer.alloc(0));
      const s3 = store.stats();
      expect(s3.perWorker[0]! - s2.perWorker[0]!).toBe(2);
      expect(s3.inlineOps).toBe(s2.inlineOps);
      expect((await store.decrypt(aes.id, small.iv, small.ciphertext, Buffer.from('aad'))).toString()).toBe('short');
      const again = await store.encrypt(aes.id, Buffer.from('again'), Buffer.alloc(0));
      expect((await store.decrypt(aes.id, again.iv, again.ciphertext, Buffer.alloc(0))).toString()).toBe('again');
      expect((await store.decrypt(aes.id, big.iv, big.ciphertext, Buffer.alloc(0))).length).toBe(8192);
      expect(await store.verify(ec.id, 'ecdsa', 'sha256', createHash('sha256').update(messages[0]!).digest(), sigs[0]!)).toBe(true);
      expect(await store.verify(ec.id, 'ecdsa', 'sha256', createHash('sha256').update(messages[1]!).digest(), sigs[0]!)).toBe(false);
      expect((await store.randomBytes(32)).length).toBe(32);
      const s4 = store.stats();
      expect(s4.inlineOps - s3.inlineOps).toBe(6);
      expect(s4.perWorker[0]! - s3.perWorker[0]!).toBe(1);
      expect(s4.inlineBackoffs).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('stops inline calls that are slow three batches in a row, and tries one again after the pause', async () => {
    const warnings: object[] = [];
    const logger = { info: () => undefined, warn: (o: object) => warnings.push(o) };
    // A limit of 1 µs per operation: every inline batch counts as slow.
    const store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, workers: 1, inlineSlowMicros: 1, inlineBackoffMs: 150, logger });
    try {
      const ec = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:slow-ec:v1', type: 'ec-p256' });
      const s0 = store.stats();
      // The first signature finds the key unknown on this thread (a worker makes it and hands
      // the handles over): under a 1 µs limit even that look is a slow batch, the first of three.
      await store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32));
      await store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32));
      const s1 = store.stats();
      expect(s1.inlineOps - s0.inlineOps).toBe(1);
      expect(s1.perWorker[0]! - s0.perWorker[0]!).toBe(1);
      expect(s1.inlineBackoffs).toBe(0);
      await store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32));
      const s2 = store.stats();
      expect(s2.inlineOps - s1.inlineOps).toBe(1);
      expect(s2.inlineBackoffs).toBe(1);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ ops: 1, pauseMs: 150 });
      expect(JSON.stringify(warnings)).not.toContain(hsm.pin);
      // During the pause every signature goes to the worker.
      await Promise.all(Array.from({ length: 10 }, () => store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32))));
      const s3 = store.stats();
      expect(s3.inlineOps).toBe(s2.inlineOps);
      expect(s3.perWorker[0]! - s2.perWorker[0]!).toBe(10);
      // After it, one operation is tried inline (the others of that turn go to the worker); slow
      // again, it starts the next pause at once, twice as long.
      await new Promise((r) => setTimeout(r, 200));
      await Promise.all(Array.from({ length: 10 }, () => store.sign(ec.id, 'ecdsa', 'sha256', randomBytes(32))));
      const s4 = store.stats();
      expect(s4.inlineOps - s3.inlineOps).toBe(1);
      expect(s4.perWorker[0]! - s3.perWorker[0]!).toBe(9);
      expect(s4.inlineBackoffs).toBe(2);
      expect(warnings[1]).toMatchObject({ ops: 1, pauseMs: 300 });
    } finally {
      await store.close();
    }
  });
});
