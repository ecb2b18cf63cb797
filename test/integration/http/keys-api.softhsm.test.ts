import { constants, createHash, createPublicKey, verify } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;

beforeAll(async () => {
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  svc = await startTestService({ hsm: ks });
});
afterAll(async () => {
  await svc?.close();
  await hsm?.cleanup();
});

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

async function auditCount(): Promise<number> {
  return (await svc.store.lastAudit())?.seq ?? 0;
}

describe('keys API on SoftHSM2', () => {
  it('creates keys of every type in the HSM with a PKCS#11 URI per version', async () => {
    for (const [name, type, purpose] of [
      ['sig-p256', 'ec-p256', 'sign'], ['sig-p384', 'ec-p384', 'sign'], ['sig-rsa', 'rsa-2048', 'sign'],
      ['sig-rsa3k', 'rsa-3072', 'sign'], ['data', 'aes-256', 'encrypt'],
    ] as const) {
      const r = await svc.call('POST', '/v1/keys', { name, type, purpose, ...(purpose === 'sign' ? { rotationPolicy: 'manual' } : {}) });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.versions).toHaveLength(1);
      expect(r.body.versions[0].state).toBe('active');
      expect(r.body.versions[0].pkcs11Uri).toMatch(new RegExp(`^pkcs11:.*token=${hsm.tokenLabel}`));
      expect(r.body.versions[0].pkcs11Uri).not.toMatch(/pin/i);
    }
    const list = await svc.call('GET', '/v1/keys');
    expect(list.body.keys.map((k: { name: string }) => k.name)).toEqual(['data', 'sig-p256', 'sig-p384', 'sig-rsa', 'sig-rsa3k']);
    const objects = await ks.listKeys();
    expect(objects).toHaveLength(5);
    for (const o of objects) {
      expect(o.sensitive).toBe(true);
      expect(o.extractable).toBe(false);
    }
  });

  it('refuses a duplicate name, an unknown type and a type that cannot serve the purpose', async () => {
    const before = await auditCount();
    expect((await svc.call('POST', '/v1/keys', { name: 'sig-p256', type: 'ec-p256', purpose: 'sign' })).body.error.code).toBe('ERR_KEY_EXISTS');
    // every key is governed by exactly one rotation policy, or explicitly manual
    expect((await svc.call('POST', '/v1/keys', { name: 'ungoverned', type: 'ec-p256', purpose: 'sign' })).body.error.code).toBe('ERR_ROTATION_POLICY');
    expect((await svc.call('POST', '/v1/keys', { name: 'ghost', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'no-such-policy' })).body.error.code).toBe('ERR_ROTATION_POLICY');
    expect((await svc.call('POST', '/v1/keys', { name: 'x1', type: 'ed25519', purpose: 'sign' })).body.error.code).toBe('ERR_KEY_TYPE');
    expect((await svc.call('POST', '/v1/keys', { name: 'x2', type: 'aes-256', purpose: 'sign' })).body.error.code).toBe('ERR_KEY_PURPOSE');
    expect((await svc.call('POST', '/v1/keys', { name: 'Bad Name', type: 'aes-256', purpose: 'encrypt' })).body.error.code).toBe('ERR_BAD_REQUEST');
    expect(await auditCount()).toBe(before);
    expect(await ks.listKeys()).toHaveLength(5);
  });

  it('signs data; the signature verifies with node:crypto and with openssl using the returned public key', async () => {
    for (const name of ['sig-p256', 'sig-p384', 'sig-rsa']) {
      const data = Buffer.from(`payload for ${name}`);
      const s = await svc.call('POST', `/v1/keys/${name}/sign`, { data: b64(data) });
      expect(s.status, JSON.stringify(s.body)).toBe(200);
      expect(s.body.version).toBe(1);
      const pub = await svc.call('GET', `/v1/keys/${name}/versions/1/public`);
      expect(pub.status).toBe(200);
      const key = createPublicKey(pub.body.pem);
      const hash = name === 'sig-p384' ? 'sha384' : 'sha256';
      expect(verify(hash, data, key, Buffer.from(s.body.signature, 'base64'))).toBe(true);
      expect(createPublicKey({ key: pub.body.jwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' })).toBe(pub.body.pem);
      const dir = svc.dir;
      writeFileSync(join(dir, 'pub.pem'), pub.body.pem);
      writeFileSync(join(dir, 'data.bin'), data);
      writeFileSync(join(dir, 'sig.bin'), Buffer.from(s.body.signature, 'base64'));
      const out = execFileSync('openssl', ['dgst', `-${hash}`, '-verify', join(dir, 'pub.pem'), '-signature', join(dir, 'sig.bin'), join(dir, 'data.bin')]).toString();
      expect(out.trim()).toBe('Verified OK');
    }
  });

  it('signs a digest, and RSA-PSS when asked', async () => {
    const data = Buffer.from('digest me');
    const digest = createHash('sha256').update(data).digest();
    const s = await svc.call('POST', '/v1/keys/sig-p256/sign', { digest: b64(digest) });
    expect(s.body.algorithm).toBe('ES256');
    const pem = (await svc.call('GET', '/v1/keys/sig-p256/versions/1/public')).body.pem;
    expect(verify('sha256', data, createPublicKey(pem), Buffer.from(s.body.signature, 'base64'))).toBe(true);

    const p = await svc.call('POST', '/v1/keys/sig-rsa/sign', { data: b64(data), algorithm: 'PS256' });
    expect(p.body.algorithm).toBe('PS256');
    const rsaPem = (await svc.call('GET', '/v1/keys/sig-rsa/versions/1/public')).body.pem;
    expect(verify('sha256', data, { key: createPublicKey(rsaPem), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, Buffer.from(p.body.signature, 'base64'))).toBe(true);
    const v = await svc.call('POST', '/v1/keys/sig-rsa/verify', { data: b64(data), signature: p.body.signature, algorithm: 'PS256' });
    expect(v.body).toMatchObject({ valid: true, version: 1 });
  });

  it('signs a batch in the HSM: every signature verifies, one audit event each, in input order', async () => {
    const before = await auditCount();
    const inputs = Array.from({ length: 40 }, (_, i) => Buffer.from(`batch item ${i}`));
    const batch = inputs.map((d, i) => (i % 2 === 0 ? { data: b64(d) } : { digest: b64(createHash('sha256').update(d).digest()) }));
    const r = await svc.call('POST', '/v1/keys/sig-p256/sign-batch', { batch });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ version: 1, algorithm: 'ES256' });
    expect(r.body.kid).toEqual(expect.any(String));
    expect(r.body.signatures).toHaveLength(40);
    const pub = createPublicKey((await svc.call('GET', '/v1/keys/sig-p256/versions/1/public')).body.pem);
    r.body.signatures.forEach((sig: string, i: number) => {
      expect(verify('sha256', inputs[i]!, pub, Buffer.from(sig, 'base64')), `item ${i}`).toBe(true);
      // not another item's signature
      expect(verify('sha256', inputs[(i + 1) % 40]!, pub, Buffer.from(sig, 'base64'))).toBe(false);
    });
    const events = await svc.store.listAudit(before, 100);
    expect(events).toHaveLength(40);
    const ids = new Set(events.map((e) => (e.details as { batch: { id: string } }).batch.id));
    expect(ids.size).toBe(1);
    events.forEach((e, i) => {
      expect(e.action).toBe('key.sign');
      expect(e.details).toMatchObject({ version: 1, algorithm: 'ES256', inputSha256: createHash('sha256').update(i % 2 === 0 ? inputs[i]! : createHash('sha256').update(inputs[i]!).digest()).digest('hex'), batch: { index: i, size: 40 } });
    });

    const rsa = await svc.call('POST', '/v1/keys/sig-rsa/sign-batch', { batch: [{ data: b64('a') }, { data: b64('b') }], algorithm: 'PS256' });
    expect(rsa.body.algorithm).toBe('PS256');
    const rsaPub = createPublicKey((await svc.call('GET', '/v1/keys/sig-rsa/versions/1/public')).body.pem);
    expect(verify('sha256', Buffer.from('b'), { key: rsaPub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, Buffer.from(rsa.body.signatures[1], 'base64'))).toBe(true);
  });

  it('refuses a bad batch whole, naming the item, and signs or audits nothing', async () => {
    const before = await auditCount();
    const good = { data: b64('fine') };
    const bad64 = await svc.call('POST', '/v1/keys/sig-p256/sign-batch', { batch: [good, good, good, { data: 'not base64!' }] });
    expect(bad64.status).toBe(400);
    expect(bad64.body.error.code).toBe('ERR_BAD_BASE64');
    expect(bad64.body.error.details).toMatchObject({ index: 3 });
    const badLen = await svc.call('POST', '/v1/keys/sig-p256/sign-batch', { batch: [good, { digest: b64(Buffer.alloc(20)) }] });
    expect(badLen.body.error.code).toBe('ERR_BAD_DIGEST_LENGTH');
    expect(badLen.body.error.details).toMatchObject({ index: 1, expected: 32, got: 20 });
    for (const body of [
      { batch: [] },
      { batch: Array.from({ length: 257 }, () => good) },
      { batch: [{ data: b64('x'), digest: b64('y') }] },
      { batch: [good], extra: 1 },
      { batch: good },
    ]) {
      const r = await svc.call('POST', '/v1/keys/sig-p256/sign-batch', body);
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(r.body.error.code).toBe('ERR_BAD_REQUEST');
    }
    expect((await svc.call('POST', '/v1/keys/data/sign-batch', { batch: [good] })).body.error.code).toBe('ERR_KEY_PURPOSE');
    expect((await svc.call('POST', '/v1/keys/nope/sign-batch', { batch: [good] })).status).toBe(404);
    expect((await svc.call('POST', '/v1/keys/sig-p256/sign-batch', { batch: [good], algorithm: 'RS256' })).body.error.code).toBe('ERR_BAD_REQUEST');
    expect(await auditCount()).toBe(before);
  });

  it('verifies through the API: data and digest, valid and invalid', async () => {
    const data = Buffer.from('verify me');
    const s = await svc.call('POST', '/v1/keys/sig-p384/sign', { data: b64(data) });
    expect((await svc.call('POST', '/v1/keys/sig-p384/verify', { data: b64(data), signature: s.body.signature })).body).toMatchObject({ valid: true, version: 1 });
    const digest = createHash('sha384').update(data).digest();
    expect((await svc.call('POST', '/v1/keys/sig-p384/verify', { digest: b64(digest), signature: s.body.signature })).body).toMatchObject({ valid: true });
    expect((await svc.call('POST', '/v1/keys/sig-p384/verify', { data: b64('other'), signature: s.body.signature })).body).toEqual({ valid: false });
  });

  it('rejects malformed base64, wrong-length digests and malformed signatures with their codes', async () => {
    const before = await auditCount();
    expect((await svc.call('POST', '/v1/keys/sig-p256/sign', { data: 'not base64!' })).body.error.code).toBe('ERR_BAD_BASE64');
    const r = await svc.call('POST', '/v1/keys/sig-p256/sign', { digest: b64(Buffer.alloc(20)) });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('ERR_BAD_DIGEST_LENGTH');
    expect((await svc.call('POST', '/v1/keys/sig-p256/verify', { data: b64('x'), signature: b64('garbage') })).body.error.code).toBe('ERR_SIGNATURE_FORMAT');
    expect((await svc.call('POST', '/v1/keys/sig-p256/sign', { data: b64('x'), algorithm: 'RS256' })).body.error.code).toBe('ERR_BAD_REQUEST');
    expect(await auditCount()).toBe(before);
  });

  it('encrypts and decrypts with AES-256-GCM in the HSM, with versioned ciphertext', async () => {
    const pt = Buffer.from('secret ledger entry');
    const aad = Buffer.from('context');
    const e = await svc.call('POST', '/v1/keys/data/encrypt', { plaintext: b64(pt), aad: b64(aad) });
    expect(e.status).toBe(200);
    expect(e.body.ciphertext).toMatch(/^custos:v1:[A-Za-z0-9+/=]+$/);
    const d = await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: e.body.ciphertext, aad: b64(aad) });
    expect(Buffer.from(d.body.plaintext, 'base64').equals(pt)).toBe(true);

    const blob = Buffer.from(e.body.ciphertext.split(':')[2], 'base64');
    for (const i of [0, 12, blob.length - 1]) {
      const t = Buffer.from(blob);
      t[i]! ^= 1;
      const r = await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: `custos:v1:${t.toString('base64')}`, aad: b64(aad) });
      expect(r.body.error.code).toBe('ERR_DECRYPT');
    }
    expect((await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: e.body.ciphertext, aad: b64('other') })).body.error.code).toBe('ERR_DECRYPT');
    expect((await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: e.body.ciphertext })).body.error.code).toBe('ERR_DECRYPT');
    expect((await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: e.body.ciphertext.replace('custos:v1:', 'custos:v7:'), aad: b64(aad) })).body.error.code).toBe('ERR_KEY_VERSION_NOT_FOUND');
    expect((await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: 'vault:v1:abc' })).body.error.code).toBe('ERR_CIPHERTEXT_FORMAT');
  });

  it('refuses the wrong purpose and unknown keys', async () => {
    expect((await svc.call('POST', '/v1/keys/sig-p256/encrypt', { plaintext: b64('x') })).body.error.code).toBe('ERR_KEY_PURPOSE');
    expect((await svc.call('POST', '/v1/keys/data/sign', { data: b64('x') })).body.error.code).toBe('ERR_KEY_PURPOSE');
    expect((await svc.call('GET', '/v1/keys/data/versions/1/public')).body.error.code).toBe('ERR_KEY_PURPOSE');
    const r = await svc.call('POST', '/v1/keys/nope/sign', { data: b64('x') });
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('ERR_KEY_NOT_FOUND');
  });

  it('rotates: the new version signs and encrypts, the old one only verifies and decrypts', async () => {
    const data = Buffer.from('before rotation');
    const old = await svc.call('POST', '/v1/keys/sig-p256/sign', { data: b64(data) });
    const oldCt = (await svc.call('POST', '/v1/keys/data/encrypt', { plaintext: b64('old') })).body.ciphertext;
    const r = await svc.call('POST', '/v1/keys/sig-p256/rotate', { reason: 'test' });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ version: 2, state: 'active', kid: 'sig-p256.v2' });
    expect((await svc.call('POST', '/v1/keys/data/rotate', {})).body.version).toBe(2);

    const k = (await svc.call('GET', '/v1/keys/sig-p256')).body;
    expect(k.versions.map((v: { state: string }) => v.state)).toEqual(['deactivated', 'active']);
    const s = await svc.call('POST', '/v1/keys/sig-p256/sign', { data: b64(data) });
    expect(s.body.version).toBe(2);
    expect((await svc.call('POST', '/v1/keys/sig-p256/sign', { data: b64(data), version: 1 })).body.error.code).toBe('ERR_KEY_STATE');
    expect((await svc.call('POST', '/v1/keys/sig-p256/verify', { data: b64(data), signature: old.body.signature })).body).toMatchObject({ valid: true, version: 1 });
    expect((await svc.call('POST', '/v1/keys/data/decrypt', { ciphertext: oldCt })).body.plaintext).toBe(b64('old'));
    expect((await svc.call('POST', '/v1/keys/data/encrypt', { plaintext: b64('new') })).body.ciphertext).toMatch(/^custos:v2:/);
  });

  it('rejects bad JSON, oversized bodies, wrong content types and unknown fields, changing nothing', async () => {
    const before = await auditCount();
    const bad = await svc.call('POST', '/v1/keys', '{"name": ', svc.tokens.admin);
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('ERR_BAD_JSON');
    expect(bad.body.error.requestId).toMatch(/.+/);
    const big = await svc.call('POST', '/v1/keys/sig-p256/sign', { data: b64(Buffer.alloc(200_000)) });
    expect(big.status).toBe(400);
    expect(big.body.error.code).toBe('ERR_BODY_TOO_LARGE');
    const ct = await svc.call('POST', '/v1/keys', 'name=x', svc.tokens.admin, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(ct.status).toBe(415);
    expect(ct.body.error.code).toBe('ERR_UNSUPPORTED_MEDIA_TYPE');
    const extra = await svc.call('POST', '/v1/keys', { name: 'z', type: 'aes-256', purpose: 'encrypt', colour: 'blue' });
    expect(extra.status).toBe(400);
    expect(extra.body.error).toMatchObject({ code: 'ERR_BAD_REQUEST', details: { field: 'colour' } });
    const wrongType = await svc.call('POST', '/v1/keys', { name: 5, type: 'aes-256', purpose: 'encrypt' });
    expect(wrongType.body.error).toMatchObject({ code: 'ERR_BAD_REQUEST', details: { field: 'name' } });
    expect(await auditCount()).toBe(before);
    expect((await svc.call('GET', '/v1/keys')).body.keys).toHaveLength(5);
  });

  it('refuses missing, invalid and insufficient tokens, and audits the refusal', async () => {
    const before = await auditCount();
    const none = await svc.call('GET', '/v1/keys', undefined, null);
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('ERR_UNAUTHENTICATED');
    const invalid = await svc.call('GET', '/v1/keys', undefined, 'custos_' + 'A'.repeat(43));
    expect(invalid.status).toBe(401);
    const weak = await svc.call('POST', '/v1/keys', { name: 'w', type: 'aes-256', purpose: 'encrypt' }, svc.tokens.auditor);
    expect(weak.status).toBe(403);
    expect(weak.body.error.code).toBe('ERR_FORBIDDEN');
    const events = await svc.store.listAudit(before, 10);
    expect(events.map((e) => [e.action, e.outcome])).toEqual([
      ['auth.failure', 'denied'], ['auth.failure', 'denied'], ['auth.forbidden', 'denied'],
    ]);
    expect(JSON.stringify(events)).not.toContain('custos_AAAA');
    expect((await svc.call('GET', '/v1/keys')).body.keys).toHaveLength(5);
  });

  it('writes an audit event for every key use and state change, chained by hash', async () => {
    const events = await svc.store.listAudit(0, 1000);
    const actions = new Set(events.map((e) => e.action));
    for (const a of ['key.create', 'key.sign', 'key.verify', 'key.encrypt', 'key.decrypt', 'key.rotate']) expect(actions).toContain(a);
    for (let i = 1; i < events.length; i++) expect(events[i]!.prevHash).toBe(events[i - 1]!.hash);
    expect(JSON.stringify(events)).not.toContain(b64('secret ledger entry'));
  });

  it('fails closed when the audit log cannot be written: no signature, no key', async () => {
    const objectsBefore = (await ks.listKeys()).length;
    svc.store.failAuditAppends = true;
    try {
      const s = await svc.call('POST', '/v1/keys/sig-p256/sign', { data: b64('x') });
      expect(s.status).toBe(503);
      expect(s.body.error.code).toBe('ERR_AUDIT_WRITE');
      expect(s.body.signature).toBeUndefined();
      const c = await svc.call('POST', '/v1/keys', { name: 'never', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
      expect(c.body.error.code).toBe('ERR_AUDIT_WRITE');
      const rot = await svc.call('POST', '/v1/keys/sig-p384/rotate', {});
      expect(rot.body.error.code).toBe('ERR_AUDIT_WRITE');
    } finally {
      svc.store.failAuditAppends = false;
    }
    expect((await svc.call('GET', '/v1/keys/never')).status).toBe(404);
    expect((await svc.call('GET', '/v1/keys/sig-p384')).body.versions).toHaveLength(1);
    expect(await ks.listKeys()).toHaveLength(objectsBefore);
    expect(await svc.store.listIntents()).toEqual([]);
  });

  it('a key changed by another process is never used from a stale view: the use is refused at commit', async () => {
    expect((await svc.call('POST', '/v1/keys', { name: 'stale', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
    expect((await svc.call('POST', '/v1/keys/stale/sign', { data: b64('warm') })).status).toBe(200);
    // Another replica marks the version compromised, writing to the shared store directly.
    await svc.store.tx((t) => t.updateVersion('stale', 1, { state: 'compromised', compromisedAt: new Date().toISOString() }));
    const before = await auditCount();
    const r = await svc.call('POST', '/v1/keys/stale/sign', { data: b64('after') });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('ERR_KEY_STATE');
    expect(r.body.signature).toBeUndefined();
    expect(await auditCount()).toBe(before);
    expect((await svc.call('POST', '/v1/keys/stale/sign', { data: b64('again') })).body.error.code).toBe('ERR_KEY_NO_ACTIVE_VERSION');
  });

  it('a batch signed from a stale view releases no signature and audits nothing', async () => {
    expect((await svc.call('POST', '/v1/keys', { name: 'stale-b', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
    expect((await svc.call('POST', '/v1/keys/stale-b/sign-batch', { batch: [{ data: b64('warm') }] })).status).toBe(200);
    await svc.store.tx((t) => t.updateVersion('stale-b', 1, { state: 'compromised', compromisedAt: new Date().toISOString() }));
    const before = await auditCount();
    const r = await svc.call('POST', '/v1/keys/stale-b/sign-batch', { batch: [{ data: b64('a') }, { data: b64('b') }, { data: b64('c') }] });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('ERR_KEY_STATE');
    expect(r.body.signatures).toBeUndefined();
    expect(await auditCount()).toBe(before);
  });

  it('a compromised version verifies only when named, and says it is compromised', async () => {
    expect((await svc.call('POST', '/v1/keys', { name: 'leaked', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
    const data = b64('signed before the leak');
    const sig = (await svc.call('POST', '/v1/keys/leaked/sign', { data })).body.signature as string;
    expect((await svc.call('POST', '/v1/keys/leaked/verify', { data, signature: sig })).body).toEqual({ valid: true, version: 1, kid: 'leaked.v1', state: 'active' });
    expect((await svc.call('POST', '/v1/keys/leaked/versions/1/compromise', { reason: 'test' })).status).toBe(200);
    // Whoever holds the leaked key can make such signatures: without a version, it is not tried.
    expect((await svc.call('POST', '/v1/keys/leaked/verify', { data, signature: sig })).body).toEqual({ valid: false });
    expect((await svc.call('POST', '/v1/keys/leaked/verify', { data, signature: sig, version: 1 })).body).toEqual({ valid: true, version: 1, kid: 'leaked.v1', state: 'compromised' });
  });

  describe('keys custos signs its own statements with are reserved', () => {
    const keys = () => svc.service.deps.keys;

    it('a key custos creates for session tokens never signs caller data, through sign or sign-batch', async () => {
      const k = await keys().ensureKey('system:issuer', 'tok-issuer', 'ec-p256', 'sign', 'session-token');
      expect(k.reservedFor).toBe('session-token');
      expect((await svc.call('GET', '/v1/keys/tok-issuer')).body.reservedFor).toBe('session-token');
      const before = await auditCount();
      // What a forger would sign: the JWS signing input of a token of their choosing.
      const digest = createHash('sha256').update('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbnkifQ').digest('base64');
      for (const token of [svc.tokens.admin, svc.tokens.user]) {
        const one = await svc.call('POST', '/v1/keys/tok-issuer/sign', { digest }, token);
        expect([one.status, one.body.error?.code, one.body.signature]).toEqual([403, 'ERR_KEY_RESERVED', undefined]);
        const batch = await svc.call('POST', '/v1/keys/tok-issuer/sign-batch', { batch: [{ digest }] }, token);
        expect([batch.status, batch.body.error?.code, batch.body.signatures]).toEqual([403, 'ERR_KEY_RESERVED', undefined]);
      }
      expect(await auditCount()).toBe(before);
      // It still rotates like any key, and stays reserved.
      expect((await svc.call('POST', '/v1/keys/tok-issuer/rotate', {})).status).toBe(201);
      expect((await svc.call('POST', '/v1/keys/tok-issuer/sign', { digest })).body.error.code).toBe('ERR_KEY_RESERVED');
    });

    it('takes over a key an administrator made, if it has never signed through the keys API', async () => {
      expect((await svc.call('POST', '/v1/keys', { name: 'pre-made', type: 'ec-p384', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
      const k = await keys().ensureKey('system:audit', 'pre-made', 'ec-p256', 'sign', 'audit-checkpoint');
      expect([k.reservedFor, k.type]).toEqual(['audit-checkpoint', 'ec-p384']);
      const last = (await svc.store.listAudit((await auditCount()) - 1, 1))[0]!;
      expect([last.action, last.subject, last.details]).toEqual(['key.reserve', 'pre-made', { reservedFor: 'audit-checkpoint' }]);
      expect((await svc.call('POST', '/v1/keys/pre-made/sign', { data: b64('x') })).body.error.code).toBe('ERR_KEY_RESERVED');
      // Once reserved for one use, never for another; and asking again for the same use is a no-op.
      await expect(keys().ensureKey('system:issuer', 'pre-made', 'ec-p256', 'sign', 'session-token')).rejects.toMatchObject({ code: 'ERR_KEY_RESERVED' });
      const n = await auditCount();
      expect((await keys().ensureKey('system:audit', 'pre-made', 'ec-p256', 'sign', 'audit-checkpoint')).reservedFor).toBe('audit-checkpoint');
      expect(await auditCount()).toBe(n);
    });

    it('refuses to take over a key that has signed caller data, or an encrypt key, and leaves it as it was', async () => {
      expect((await svc.call('POST', '/v1/keys', { name: 'used', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
      expect((await svc.call('POST', '/v1/keys/used/sign', { data: b64('any') })).status).toBe(200);
      const before = await auditCount();
      await expect(keys().ensureKey('system:issuer', 'used', 'ec-p256', 'sign', 'session-token')).rejects.toMatchObject({ code: 'ERR_KEY_RESERVED', message: expect.stringMatching(/signed data through the keys API/) });
      await expect(keys().ensureKey('system:issuer', 'data', 'ec-p256', 'sign', 'session-token')).rejects.toMatchObject({ code: 'ERR_KEY_RESERVED', message: expect.stringMatching(/encrypt key/) });
      expect(await auditCount()).toBe(before);
      // A key named by mistake does not cost an audit-log scan per request: the refusal is remembered a while.
      const scans = vi.spyOn(svc.store, 'hasAuditEvent');
      for (let i = 0; i < 3; i++) await expect(keys().ensureKey('system:issuer', 'used', 'ec-p256', 'sign', 'session-token')).rejects.toMatchObject({ code: 'ERR_KEY_RESERVED' });
      expect(scans).not.toHaveBeenCalled();
      scans.mockRestore();
      expect((await svc.call('GET', '/v1/keys/used')).body.reservedFor).toBeNull();
      expect((await svc.call('POST', '/v1/keys/used/sign', { data: b64('still') })).status).toBe(200);
    });

    it('a signature from a view read before another process reserved the key is not released', async () => {
      expect((await svc.call('POST', '/v1/keys', { name: 'racing', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' })).status).toBe(201);
      // A use caches the key's view; another replica then reserves it, writing to the shared store.
      expect((await svc.call('POST', '/v1/keys/racing/sign', { data: b64('warm') })).status).toBe(200);
      expect(await svc.store.tx((t) => t.reserveKey('racing', 'session-token'))).toBe(true);
      const before = await auditCount();
      const r = await svc.call('POST', '/v1/keys/racing/sign', { data: b64('forged') });
      expect([r.status, r.body.error?.code, r.body.signature]).toEqual([403, 'ERR_KEY_RESERVED', undefined]);
      expect(await auditCount()).toBe(before);
    });
  });

  it('serves health, readiness and metrics', async () => {
    expect((await svc.call('GET', '/healthz', undefined, null)).body).toEqual({ status: 'ok' });
    expect((await svc.call('GET', '/readyz', undefined, null)).body).toEqual({ status: 'ready' });
    const m = await svc.call('GET', '/metrics', undefined, null);
    expect(m.body).toContain('custos_http_requests_total');
    expect(m.body).toMatch(/custos_hsm_operations_total\{op="sign",outcome="ok"\} \d+/);
    // Counts and latencies carry their labels; counts agree between counter and histogram.
    const count = (re: RegExp): number => Number(re.exec(m.body as string)?.[1] ?? NaN);
    const signs = count(/custos_hsm_operations_total\{op="sign",outcome="ok"\} (\d+)/);
    const failed = count(/custos_hsm_operations_total\{op="sign",outcome="error"\} (\d+)/) || 0;
    expect(count(/custos_hsm_operation_duration_seconds_count\{op="sign"\} (\d+)/)).toBe(signs + failed);
    expect(signs).toBeGreaterThan(0);
    expect(count(/custos_http_request_duration_seconds_count\{method="POST",route="POST \/v1\/keys\/:name\/sign"\} (\d+)/)).toBeGreaterThan(0);
    expect(m.body).toMatch(/custos_http_requests_total\{method="POST",route="POST \/v1\/keys\/:name\/sign",status="200"\} \d+/);
  });
});
