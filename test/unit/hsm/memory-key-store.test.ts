import { describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { keyStoreContract } from '../../contract/key-store.contract.js';

keyStoreContract('in-memory', async () => {
  const store = new MemoryKeyStore();
  return { store, cleanup: () => store.close() };
});

describe('MemoryKeyStore outage switch', () => {
  it('fails every call with ERR_HSM_UNAVAILABLE while unavailable and recovers after', async () => {
    const store = new MemoryKeyStore();
    const k = await store.generateKeyPair({ id: 'aa'.repeat(16), label: 'l', type: 'ec-p256' });
    store.setAvailable(false);
    await expect(store.sign(k.id, 'ecdsa', 'sha256', Buffer.alloc(32))).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
    await expect(store.randomBytes(8)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
    expect(await store.health()).toMatchObject({ ok: false, part: 'token', code: 'ERR_HSM_UNAVAILABLE' });
    store.setAvailable(true);
    expect((await store.sign(k.id, 'ecdsa', 'sha256', Buffer.alloc(32))).length).toBe(64);
    expect((await store.health()).ok).toBe(true);
    await store.close();
    await expect(store.findKey(k.id)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
  });
});
