import { renameSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/** The SoftHSM2 token directory disappears under a running server, then comes back. */
let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;

beforeAll(async () => {
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, lazy: true });
  svc = await startTestService({ hsm: ks });
  expect((await svc.call('POST', '/v1/keys', { name: 'outage', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
});
afterAll(async () => {
  await svc?.close();
  await hsm?.cleanup();
});

const sign = () => svc.call('POST', '/v1/keys/outage/sign', { data: Buffer.from('x').toString('base64') });

describe('HSM outage and recovery through the HTTP API', () => {
  it('answers 503 ERR_HSM_UNAVAILABLE while the token is gone, /readyz names the part, and recovers without restart', async () => {
    expect((await sign()).status).toBe(200);
    const auditBefore = (await svc.store.lastAudit())!.seq;
    renameSync(hsm.tokenDir, `${hsm.tokenDir}.away`);
    try {
      // Signatures use a session copy of the key, which lives in the module's memory; its token
      // object is checked every 100 ms (hsm/README.md, "Session copies"): past that, the token's
      // absence shows.
      await new Promise((r) => setTimeout(r, 350));
      const r = await sign();
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('ERR_HSM_UNAVAILABLE');
      expect(r.headers.get('retry-after')).toBe('5');
      const ready = await svc.call('GET', '/readyz', undefined, null);
      expect(ready.status).toBe(503);
      expect(ready.body.failing[0].part).toMatch(/^hsm\./);
      expect(ready.body.failing[0].code).toBe('ERR_HSM_UNAVAILABLE');
      // a refused operation changes nothing
      expect((await svc.call('POST', '/v1/keys', { name: 'during-outage', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(503);
      expect((await svc.call('GET', '/v1/keys/during-outage')).status).toBe(404);
      expect((await svc.store.lastAudit())!.seq).toBe(auditBefore);
    } finally {
      renameSync(`${hsm.tokenDir}.away`, hsm.tokenDir);
    }
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) {
      ok = (await sign()).status === 200;
      if (!ok) await new Promise((r) => setTimeout(r, 100));
    }
    expect(ok).toBe(true);
    expect((await svc.call('GET', '/readyz', undefined, null)).status).toBe(200);
  });
});
