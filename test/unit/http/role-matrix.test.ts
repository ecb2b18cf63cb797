import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import type { Role } from '../../../src/store/records.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/**
 * Every endpoint × every role. The expectations are written out from API.md's "Auth" section
 * (not derived from the implementation's permission table), so a drift in either shows here.
 * Allowed means "not 401/403"; the handler may still refuse the input itself.
 */
const ALL: Role[] = ['admin', 'operator', 'auditor', 'provisioner', 'user'];
const MATRIX: { method: string; path: string; body?: unknown; allowed: Role[] }[] = [
  { method: 'POST', path: '/v1/keys', body: { name: 'm-new', type: 'aes-256', purpose: 'encrypt' }, allowed: ['admin'] },
  { method: 'GET', path: '/v1/keys', allowed: ['admin', 'operator', 'auditor', 'user'] },
  { method: 'GET', path: '/v1/keys/m-sig', allowed: ['admin', 'operator', 'auditor', 'user'] },
  { method: 'GET', path: '/v1/keys/m-sig/versions/1/public', allowed: ['admin', 'operator', 'auditor', 'user'] },
  { method: 'POST', path: '/v1/keys/m-sig/rotate', body: {}, allowed: ['admin', 'operator'] },
  { method: 'POST', path: '/v1/keys/m-sig/sign', body: { data: 'AA==' }, allowed: ['admin', 'user'] },
  { method: 'POST', path: '/v1/keys/m-sig/sign-batch', body: { batch: [{ data: 'AA==' }] }, allowed: ['admin', 'user'] },
  { method: 'POST', path: '/v1/keys/m-sig/verify', body: { data: 'AA==', signature: 'AA==' }, allowed: ['admin', 'user'] },
  { method: 'POST', path: '/v1/keys/m-enc/encrypt', body: { plaintext: 'AA==' }, allowed: ['admin', 'user'] },
  { method: 'POST', path: '/v1/keys/m-enc/decrypt', body: { ciphertext: 'custos:v1:AA==' }, allowed: ['admin', 'user'] },
  { method: 'POST', path: '/v1/tokens', body: { name: 't', role: 'auditor' }, allowed: ['admin'] },
  { method: 'GET', path: '/v1/tokens', allowed: ['admin'] },
  { method: 'DELETE', path: '/v1/tokens/00000000-0000-0000-0000-000000000000', allowed: ['admin'] },
  { method: 'POST', path: '/v1/keys/m-comp/versions/1/compromise', body: {}, allowed: ['admin', 'operator'] },
  { method: 'POST', path: '/v1/keys/m-sig/versions/1/cancel-destroy', body: {}, allowed: ['admin', 'operator'] },
  { method: 'POST', path: '/v1/provisioning-tokens', body: { ttlSeconds: 600, uses: 1 }, allowed: ['admin', 'operator'] },
  { method: 'POST', path: '/v1/hosts/enroll', body: { ekPublic: 'AA==', akPublic: 'AA==' }, allowed: ['admin', 'operator', 'provisioner'] },
  { method: 'GET', path: '/v1/hosts', allowed: ['admin', 'operator', 'auditor'] },
  { method: 'GET', path: '/v1/hosts/unknown-host', allowed: ['admin', 'operator', 'auditor'] },
  { method: 'POST', path: '/v1/hosts/unknown-host/revoke', body: {}, allowed: ['admin', 'operator'] },
  { method: 'GET', path: '/v1/policies', allowed: ['admin', 'operator', 'auditor'] },
  { method: 'GET', path: '/v1/rotation/plan?days=7', allowed: ['admin', 'operator', 'auditor'] },
  { method: 'GET', path: '/v1/rotation/report', allowed: ['admin', 'operator', 'auditor'] },
  { method: 'GET', path: '/v1/audit', allowed: ['admin', 'auditor'] },
  { method: 'GET', path: '/v1/audit/export', allowed: ['admin', 'auditor'] },
  { method: 'GET', path: '/v1/audit/checkpoints', allowed: ['admin', 'auditor'] },
  { method: 'GET', path: '/v1/audit/keys', allowed: ['admin', 'auditor'] },
];

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ hsm: new MemoryKeyStore() });
  expect((await svc.call('POST', '/v1/keys', { name: 'm-sig', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
  expect((await svc.call('POST', '/v1/keys', { name: 'm-enc', type: 'aes-256', purpose: 'encrypt' })).status).toBe(201);
  expect((await svc.call('POST', '/v1/keys', { name: 'm-comp', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
});
afterAll(async () => svc?.close());

describe('endpoint × role matrix', () => {
  for (const row of MATRIX) {
    for (const role of ALL) {
      const allowed = row.allowed.includes(role);
      it(`${row.method} ${row.path} as ${role} is ${allowed ? 'allowed' : 'forbidden'}`, async () => {
        const r = await svc.call(row.method, row.path, row.body, svc.tokens[role]);
        if (allowed) expect([401, 403], JSON.stringify(r.body)).not.toContain(r.status);
        else {
          expect(r.status).toBe(403);
          expect(r.body.error.code).toBe('ERR_FORBIDDEN');
        }
      });
    }
    if (row.path === '/v1/hosts/enroll') continue; // without an API token, enroll asks for a provisioning token (tested in e2e)
    it(`${row.method} ${row.path} without a token is 401`, async () => {
      const r = await svc.call(row.method, row.path, row.body, null);
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe('ERR_UNAUTHENTICATED');
    });
  }

  it('an expired or revoked token is refused', async () => {
    const { id, token } = await svc.service.deps.tokens.create('system:test', { name: 'short', role: 'auditor' });
    expect((await svc.call('GET', '/v1/keys', undefined, token)).status).toBe(200);
    expect((await svc.call('DELETE', `/v1/tokens/${id}`)).status).toBe(200);
    expect((await svc.call('GET', '/v1/keys', undefined, token)).status).toBe(401);
  });

  it('stores tokens only as hashes', async () => {
    const rows = await svc.store.listApiTokens();
    const serialized = JSON.stringify(rows);
    for (const t of Object.values(svc.tokens)) expect(serialized).not.toContain(t);
    expect(rows.every((r) => /^[0-9a-f]{64}$/.test(r.tokenHash))).toBe(true);
  });
});
