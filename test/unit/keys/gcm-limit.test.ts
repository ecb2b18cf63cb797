import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GCM_INVOCATION_LIMIT, KeyService } from '../../../src/keys/key-service.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { systemClock } from '../../../src/lib/clock.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';

const dir = mkdtempSync(join(tmpdir(), 'custos-gcm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('AES-GCM invocation limit per version (NIST SP 800-38D §8.3)', () => {
  it('is 2^32 less a margin for encryptions under way', () => {
    expect(GCM_INVOCATION_LIMIT).toBeLessThan(2 ** 32);
    expect(GCM_INVOCATION_LIMIT).toBeGreaterThan(2 ** 31);
  });

  it('a version refuses to encrypt once it reached the limit, releasing nothing; after a rotation the new version encrypts and the old one still decrypts', async () => {
    const store = new SqliteStore(join(dir, 'gcm.db'));
    const keys = new KeyService({ store, hsm: new MemoryKeyStore(), clock: systemClock, gcmInvocationLimit: 3 });
    await keys.create('test', { name: 'data', type: 'aes-256', purpose: 'encrypt' });
    const pt = Buffer.from('secret').toString('base64');
    const made: string[] = [];
    for (let i = 0; i < 3; i++) made.push((await keys.encrypt('test', 'data', { plaintext: pt })).ciphertext);
    const before = (await store.lastAudit())!.seq;
    await expect(keys.encrypt('test', 'data', { plaintext: pt })).rejects.toMatchObject({ code: 'ERR_KEY_STATE', details: { reason: 'invocation-limit', version: 1 } });
    expect((await store.lastAudit())!.seq).toBe(before);
    await keys.rotate('test', 'data');
    const fresh = await keys.encrypt('test', 'data', { plaintext: pt });
    expect(fresh.version).toBe(2);
    for (const c of made) expect((await keys.decrypt('test', 'data', { ciphertext: c })).plaintext).toBe(pt);
    await store.close();
  });
});
