import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adapterSignRate, rawSignRate } from '../../../bench/pkcs11-raw.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

describe('bench helpers (short runs)', () => {
  let hsm: SoftHsm;
  let store: Pkcs11KeyStore;
  beforeAll(async () => {
    hsm = await startSoftHsm();
    store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  });
  afterAll(async () => {
    await store?.close();
    await hsm?.cleanup();
  });

  it('measures raw and adapter sign rates and leaves no key behind', async () => {
    const raw = await rawSignRate({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, durationMs: 100 });
    expect(raw.ecP256).toBeGreaterThan(100);
    expect(raw.rsa2048).toBeGreaterThan(10);
    const rate = await adapterSignRate(store, { concurrency: 8, durationMs: 100 });
    expect(rate.ecP256.opsPerSec).toBeGreaterThan(100);
    expect(rate.rsa2048.opsPerSec).toBeGreaterThan(10);
    expect(rate.ecP256.p99Ms).toBeGreaterThanOrEqual(rate.ecP256.p50Ms);
    expect(await store.listKeys()).toEqual([]);
    // The raw run closed only its own session: the store still signs.
    expect((await store.health()).ok).toBe(true);
  });
});
