import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TokenService } from '../../../src/auth/token-service.js';
import { systemClock } from '../../../src/lib/clock.js';
import type { ApiTokenRecord } from '../../../src/store/records.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';

const dir = mkdtempSync(join(tmpdir(), 'custos-tokens-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The store, with token look-ups that can be held after they read their row (a slow read racing a revocation). */
function gatedStore(name: string): { store: SqliteStore; hold(): () => void } {
  const store = new SqliteStore(join(dir, `${name}.db`));
  const read = store.findApiTokenByHash.bind(store);
  let gate: Promise<void> | null = null;
  store.findApiTokenByHash = async (hash: string): Promise<ApiTokenRecord | null> => {
    const rec = await read(hash);
    if (gate) await gate;
    return rec;
  };
  return {
    store,
    hold() {
      let release!: () => void;
      gate = new Promise<void>((r) => (release = r));
      return () => {
        gate = null;
        release();
      };
    },
  };
}

describe('TokenService', () => {
  it('a revoked token is refused by the next request, even when a login read it before the revocation committed', async () => {
    const { store, hold } = gatedStore('race');
    const tokens = new TokenService(store, systemClock);
    const { id, token } = await tokens.create('test', { name: 'ci', role: 'user' });
    const release = hold();
    // A request reads the still-live row, then is slow to finish; the revocation runs meanwhile.
    const inFlight = tokens.authenticate(token);
    await new Promise((r) => setTimeout(r, 20));
    await tokens.revoke('test', id);
    release();
    // That request began before the revocation returned: it may still pass. The cache must not keep it.
    expect((await inFlight)?.tokenId).toBe(id);
    expect(await tokens.authenticate(token)).toBeNull();
    await store.close();
  });

  it('caches a login, and a revocation here clears it at once', async () => {
    const { store } = gatedStore('cache');
    const tokens = new TokenService(store, systemClock);
    const { id, token } = await tokens.create('test', { name: 'ci', role: 'operator' });
    expect(await tokens.authenticate(token)).toMatchObject({ role: 'operator', tokenId: id });
    // Cached: another replica's revocation (straight into the shared store) is not seen yet ...
    await store.tx((t) => t.revokeApiToken(id, new Date().toISOString()));
    expect(await tokens.authenticate(token)).toMatchObject({ tokenId: id });
    // ... and a local revocation (here of another token) clears the cache, so the next login reads the row again.
    const other = await tokens.create('test', { name: 'other', role: 'user' });
    await tokens.revoke('test', other.id);
    expect(await tokens.authenticate(token)).toBeNull();
    await expect(tokens.revoke('test', id)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' });
    await store.close();
  });
});
