import { createHash, generateKeyPairSync } from 'node:crypto';
import { rmSync } from 'node:fs';
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TpmDriver, type AkObject, type EkObject } from '../../src/cli/agent/tpm.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../src/hsm/pkcs11/pkcs11-key-store.js';
import { ManualClock } from '../../src/lib/clock.js';
import { sessionExtraData } from '../../src/sessions/ephemeral-key.js';
import { openSessionKey } from '../../src/sessions/hpke.js';
import { SESSION_TOKEN_TYP } from '../../src/sessions/session-service.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { startSwtpm, type Swtpm } from '../helpers/swtpm.js';
import { attestationPolicyLines, makeRigDir } from '../helpers/rig.js';
import { startTestService, type TestService } from '../helpers/service.js';

/**
 * Attested sessions end to end: a real swtpm (tpm2-tools) quotes over SHA-256(nonce ‖ RFC 7638
 * thumbprint of an ephemeral key), a real SoftHSM2 token signs the session token and supplies the
 * session key's randomness, and everything goes through the HTTP API.
 */
let tpm: Swtpm;
let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;
let drv: TpmDriver;
let dir: string;
const clock = new ManualClock(Date.now());
const PCRS = 'sha256:0,1,2,3,4,5,6,7';
const ISSUER_KEY = 'enclave-issuer';
const b64 = (b: Buffer) => b.toString('base64');

let ek: EkObject;
let ak: AkObject;
let host = '';
let otherHost = '';
let otherAk: AkObject;

interface Ephemeral {
  pub: JWK;
  priv: JWK;
  thumbprint: Buffer;
}

async function ephemeral(): Promise<Ephemeral> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const priv = privateKey.export({ format: 'jwk' }) as JWK;
  const pub: JWK = { kty: 'EC', crv: 'P-256', x: priv.x!, y: priv.y! };
  return { pub, priv, thumbprint: Buffer.from(await calculateJwkThumbprint(pub, 'sha256'), 'base64url') };
}

beforeAll(async () => {
  tpm = await startSwtpm();
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  drv = await TpmDriver.open({ tcti: tpm.tcti });
  ek = await drv.createEk('rsa');
  const pcr7 = (await drv.pcrRead('sha256:7')).sha256!['7']!;

  const rig = makeRigDir(tpm, {
    'attestation/enclaves.yaml': attestationPolicyLines('enclave-hosts', ['role', 'enclave'], { '7': pcr7 }, ['nonceTtl: PT60S']),
    'attestation/build.yaml': attestationPolicyLines('build-hosts', ['role', 'build']),
    'sessions/enclaves.yaml': [
      'id: enclave-sessions', 'version: 1', 'hosts:', '  labels:', '    role: enclave',
      'attestationPolicy: enclave-hosts', 'audiences: [ledger, payments]', 'tokenTtl: PT5M',
      'disclose: [ear.trustworthiness-vector, ear.appraisal-policy-id, custos.pcr-digest]',
      `issuerKey: ${ISSUER_KEY}`,
    ],
    // Build hosts may ask for sessions, but this policy names an attestation policy that does not
    // govern them: their evidence can never satisfy it.
    'sessions/build.yaml': [
      'id: build-sessions', 'version: 1', 'hosts:', '  labels:', '    role: build',
      'attestationPolicy: enclave-hosts', 'audiences: [ledger]', `issuerKey: ${ISSUER_KEY}`,
    ],
  }, 'custos-sessions-e2e-');
  dir = rig.dir;
  svc = await startTestService({ hsm: ks, clock, env: { ...rig.env, CUSTOS_ISSUER: 'https://custos.test' } });

  ak = await drv.createAk(ek, 'ecc');
  host = await enrollAndActivate(ak, { role: 'enclave' });
  otherAk = await drv.createAk(ek, 'ecc');
  otherHost = await enrollAndActivate(otherAk, { role: 'build' });
}, 120_000);

afterAll(async () => {
  await drv?.close();
  await svc?.close();
  await tpm?.stop();
  await hsm?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function enrollAndActivate(a: AkObject, labels: Record<string, string>): Promise<string> {
  const t = await svc.call('POST', '/v1/provisioning-tokens', { ttlSeconds: 600, uses: 1, labels }, svc.tokens.operator);
  expect(t.status, JSON.stringify(t.body)).toBe(201);
  const cert = (await drv.readEkCertificates()).rsa!;
  const e = await svc.call('POST', '/v1/hosts/enroll', { ekCertificate: b64(cert), ekPublic: b64(ek.public), akPublic: b64(a.public), provisioningToken: t.body.token }, null);
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  const secret = await drv.activateCredential(ek, a, Buffer.from(e.body.credentialBlob, 'base64'), Buffer.from(e.body.encryptedSecret, 'base64'));
  const r = await svc.call('POST', `/v1/hosts/enroll/${e.body.enrollmentId}/activate`, { secret: b64(secret) }, null);
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.hostId;
}

interface SessionBody {
  hostId: string;
  nonce: string;
  quote: string;
  signature: string;
  pcrs: Record<string, Record<string, string>>;
  ephemeralPublicKey: JWK;
  audience: string;
}

/** A session request from `hostId`: fresh nonce, quote over SHA-256(nonce ‖ thumbprint of `bind`). */
async function request(eph: Ephemeral, opts: { hostId?: string; ak?: AkObject; bind?: Buffer; nonceFor?: (nonce: Buffer) => Buffer; audience?: string } = {}): Promise<SessionBody> {
  const hostId = opts.hostId ?? host;
  const c = await svc.call('POST', '/v1/challenges', { hostId }, null);
  expect(c.status, JSON.stringify(c.body)).toBe(200);
  const nonce = Buffer.from(c.body.nonce, 'base64');
  const quotedNonce = opts.nonceFor ? opts.nonceFor(nonce) : nonce;
  const q = await drv.quote(opts.ak ?? ak, PCRS, sessionExtraData(quotedNonce, opts.bind ?? eph.thumbprint));
  return { hostId, nonce: c.body.nonce, quote: b64(q.quote), signature: b64(q.signature), pcrs: q.pcrs, ephemeralPublicKey: eph.pub, audience: opts.audience ?? 'ledger' };
}

async function liveJwks() {
  const r = await svc.call('GET', '/.well-known/jwks.json', undefined, null);
  expect(r.status).toBe(200);
  return r.body as { keys: (JWK & { kid: string })[] };
}

const introspect = async (token: string) => (await svc.call('POST', '/v1/sessions/introspect', { token }, null)).body as { active: boolean; claims?: Record<string, unknown> };
const sha256hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The refusal carries the code, no token and no key, and an audit event records it with the code. */
async function expectRefused(r: { status: number; body: any }, status: number, code: string, nonce?: string): Promise<void> {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body.error.code).toBe(code);
  expect(r.body.token).toBeUndefined();
  expect(r.body.sessionKey).toBeUndefined();
  expect(JSON.stringify(r.body)).not.toMatch(/eyJ[A-Za-z0-9_-]+\.eyJ/);
  const events = (await svc.store.listAudit(0, 100_000)).filter((e) => e.action === 'session.issue' && e.outcome === 'denied' && e.details.code === code);
  expect(events.length).toBeGreaterThan(0);
  if (nonce !== undefined) {
    const h = sha256hex(Buffer.from(nonce, 'base64'));
    expect(events.some((e) => e.details.nonceSha256 === h)).toBe(true);
  }
}

let firstToken = '';
let firstKid = '';

describe('01 issue', () => {
  it('issues a token that verifies against the live JWKS, bound to the ephemeral key, with a session key only it opens', async () => {
    const eph = await ephemeral();
    const body = await request(eph);
    const r = await svc.call('POST', '/v1/sessions', body, null);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(Object.keys(r.body).sort()).toEqual(['expiresAt', 'jti', 'kid', 'sessionKey', 'token']);

    const jwksRes = await svc.call('GET', '/.well-known/jwks.json', undefined, null);
    expect(jwksRes.headers.get('cache-control')).toBe('public, max-age=60');
    expect(jwksRes.headers.get('content-type')).toMatch(/^application\/jwk-set\+json/);
    const jwks = jwksRes.body as { keys: (JWK & { kid: string })[] };
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ alg: 'ES256', use: 'sig', kty: 'EC', crv: 'P-256' });
      expect(k.d).toBeUndefined();
    }
    expect(jwks.keys.map((k) => k.kid)).toContain(`${ISSUER_KEY}.v1`);

    const header = decodeProtectedHeader(r.body.token);
    expect(header).toEqual({ alg: 'ES256', kid: `${ISSUER_KEY}.v1`, typ: SESSION_TOKEN_TYP });
    expect(r.body.kid).toBe(header.kid);
    const { payload } = await jwtVerify(r.body.token, createLocalJWKSet(jwks), { issuer: 'https://custos.test', audience: 'ledger', currentDate: clock.now() });
    expect(payload.sub).toBe(host);
    expect(payload.jti).toBe(r.body.jti);
    expect(payload.cnf).toEqual({ jkt: eph.thumbprint.toString('base64url') });
    expect(payload.eat_nonce).toBe(Buffer.from(body.nonce, 'base64').toString('base64url'));
    expect(payload['ear.status']).toBe('affirming');
    expect(payload['ear.appraisal-policy-id']).toBe('enclave-hosts@1');
    expect(payload['ear.verifier-id']).toBeUndefined();
    expect(payload['custos.pcr-digest']).toMatch(/^[0-9a-f]{64}$/);
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(new Date(r.body.expiresAt).getTime()).toBe(payload.exp! * 1000);

    const key = await openSessionKey(eph.priv as Record<string, unknown>, r.body.sessionKey.enc, r.body.sessionKey.ciphertext, r.body.jti);
    expect(key).toHaveLength(32);
    // Another ephemeral key, or the same key under another jti, does not open it.
    await expect(openSessionKey((await ephemeral()).priv as Record<string, unknown>, r.body.sessionKey.enc, r.body.sessionKey.ciphertext, r.body.jti)).rejects.toMatchObject({ code: 'ERR_DECRYPT' });
    await expect(openSessionKey(eph.priv as Record<string, unknown>, r.body.sessionKey.enc, r.body.sessionKey.ciphertext, 'another-jti')).rejects.toMatchObject({ code: 'ERR_DECRYPT' });

    // Audit: jti and a hash of enc; neither the key nor its ciphertext.
    const events = await svc.store.listAudit(0, 100_000);
    const ok = events.find((e) => e.action === 'session.issue' && e.outcome === 'success' && e.details.jti === r.body.jti);
    expect(ok?.details).toMatchObject({ encSha256: sha256hex(Buffer.from(r.body.sessionKey.enc, 'base64url')), audience: 'ledger', sessionPolicyId: 'enclave-sessions', kid: header.kid, verdict: 'affirming' });
    const text = JSON.stringify(events);
    expect(text).not.toContain(key.toString('base64url'));
    expect(text).not.toContain(key.toString('base64'));
    expect(text).not.toContain(key.toString('hex'));
    expect(text).not.toContain(r.body.sessionKey.ciphertext);
    const session = await svc.store.getSession(r.body.jti);
    expect(session).toMatchObject({ hostId: host, audience: 'ledger', kid: header.kid, keyName: ISSUER_KEY, keyVersion: 1, cnfJkt: eph.thumbprint.toString('base64url'), revokedAt: null });

    const h = await svc.call('GET', `/v1/hosts/${host}`, undefined, svc.tokens.auditor);
    expect(h.body.lastAttestation).toMatchObject({ status: 'affirming', policyId: 'enclave-hosts' });
    const metrics = await svc.call('GET', '/metrics', undefined, null);
    expect(String(metrics.body)).toMatch(/custos_sessions_total\{outcome="issued"\} [1-9]/);
    // The HPKE ephemeral keys come from the ECDH worker's pool (or, while it fills, the event loop).
    expect(String(metrics.body)).toMatch(/custos_ecdh_pool\{measure="available"\} 1/);
    const served = Number(/custos_ecdh_pool\{measure="served"\} (\d+)/.exec(String(metrics.body))?.[1]);
    const missed = Number(/custos_ecdh_pool\{measure="missed"\} (\d+)/.exec(String(metrics.body))?.[1]);
    expect(served + missed).toBeGreaterThan(0);

    const live = await introspect(r.body.token);
    expect(live.active).toBe(true);
    expect(live.claims).toMatchObject({ jti: r.body.jti, sub: host, aud: 'ledger' });
    firstToken = r.body.token;
    firstKid = r.body.kid;
  });

  it('changing any byte of the token fails jose verification, and introspection', async () => {
    const set = createLocalJWKSet(await liveJwks());
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    let tried = 0;
    for (let i = 0; i < firstToken.length; i++) {
      const c = firstToken[i]!;
      if (c === '.') continue;
      // Flip the top bit of the 6-bit group: always a data bit, even in a segment's last character
      // (whose low bits may be padding that decoders ignore).
      const t = firstToken.slice(0, i) + alphabet[alphabet.indexOf(c) ^ 0x20] + firstToken.slice(i + 1);
      await expect(jwtVerify(t, set, { currentDate: clock.now() }), `position ${i}`).rejects.toThrow();
      tried++;
    }
    expect(tried).toBe(firstToken.length - 2);
    const mid = Math.floor(firstToken.length / 2);
    const tampered = firstToken.slice(0, mid) + (firstToken[mid] === 'A' ? 'B' : 'A') + firstToken.slice(mid + 1);
    expect(await introspect(tampered)).toEqual({ active: false });
    expect(await introspect('not-a-jwt')).toEqual({ active: false });
  });

  it('after the issuer key rotates, old tokens still verify and introspect active; new tokens carry the new kid', async () => {
    const rot = await svc.call('POST', `/v1/keys/${ISSUER_KEY}/rotate`, { reason: 'scheduled' }, svc.tokens.operator);
    expect(rot.status, JSON.stringify(rot.body)).toBe(201);
    expect(rot.body.version).toBe(2);
    const jwks = await liveJwks();
    expect(jwks.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([`${ISSUER_KEY}.v1`, `${ISSUER_KEY}.v2`]));
    await jwtVerify(firstToken, createLocalJWKSet(jwks), { currentDate: clock.now() });
    expect((await introspect(firstToken)).active).toBe(true);

    const eph = await ephemeral();
    const r = await svc.call('POST', '/v1/sessions', await request(eph, { audience: 'payments' }), null);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.kid).toBe(`${ISSUER_KEY}.v2`);
    expect(r.body.kid).not.toBe(firstKid);
    const { payload, protectedHeader } = await jwtVerify(r.body.token, createLocalJWKSet(jwks), { audience: 'payments', currentDate: clock.now() });
    expect(protectedHeader.kid).toBe(`${ISSUER_KEY}.v2`);
    expect(payload.aud).toBe('payments');
  });

  it('a token expires: introspection answers false once exp has passed on the service clock', async () => {
    const eph = await ephemeral();
    const r = await svc.call('POST', '/v1/sessions', await request(eph), null);
    expect(r.status).toBe(201);
    expect((await introspect(r.body.token)).active).toBe(true);
    clock.advance(301_000);
    expect(await introspect(r.body.token)).toEqual({ active: false });
  });
});

describe('02 refusals: a code, no token, no key, an audit event', () => {
  // A quote the host's AK did not make for this request is not evidence about the host: the
  // refusal names only the failed binding, and the host's record is left as it was.
  it('a quote bound to another ephemeral key → ERR_QUOTE_NONCE_MISMATCH; the host is untouched and the nonce spent', async () => {
    const eph = await ephemeral();
    const other = await ephemeral();
    const body = await request(eph, { bind: other.thumbprint });
    const before = (await svc.call('GET', `/v1/hosts/${body.hostId}`)).body;
    const r = await svc.call('POST', '/v1/sessions', body, null);
    await expectRefused(r, 403, 'ERR_QUOTE_NONCE_MISMATCH', body.nonce);
    expect(r.body.error.details.failures.map((f: { code: string }) => f.code)).toEqual(['ERR_QUOTE_NONCE_MISMATCH']);
    expect(JSON.stringify(r.body.error)).not.toMatch(/PCR|pcr|trustworthiness/);
    expect((await svc.call('GET', `/v1/hosts/${body.hostId}`)).body).toEqual(before);
    await expectRefused(await svc.call('POST', '/v1/sessions', body, null), 403, 'ERR_NONCE_UNKNOWN', body.nonce);
  });

  it('a quote over another nonce → ERR_QUOTE_NONCE_MISMATCH', async () => {
    const eph = await ephemeral();
    const body = await request(eph, { nonceFor: () => Buffer.alloc(32, 7) });
    const r = await svc.call('POST', '/v1/sessions', body, null);
    await expectRefused(r, 403, 'ERR_QUOTE_NONCE_MISMATCH', body.nonce);
  });

  it('a replayed request → ERR_NONCE_UNKNOWN', async () => {
    const body = await request(await ephemeral());
    expect((await svc.call('POST', '/v1/sessions', body, null)).status).toBe(201);
    await expectRefused(await svc.call('POST', '/v1/sessions', body, null), 403, 'ERR_NONCE_UNKNOWN', body.nonce);
  });

  it('an expired nonce → ERR_NONCE_EXPIRED', async () => {
    const body = await request(await ephemeral());
    clock.advance(61_000);
    await expectRefused(await svc.call('POST', '/v1/sessions', body, null), 403, 'ERR_NONCE_EXPIRED', body.nonce);
  });

  it('an unknown host → ERR_HOST_NOT_FOUND', async () => {
    const body = await request(await ephemeral());
    await expectRefused(await svc.call('POST', '/v1/sessions', { ...body, hostId: 'no-such-host' }, null), 404, 'ERR_HOST_NOT_FOUND');
  });

  it('an audience the policy does not allow → ERR_AUDIENCE_NOT_ALLOWED, and the nonce is still usable', async () => {
    const eph = await ephemeral();
    const body = await request(eph);
    await expectRefused(await svc.call('POST', '/v1/sessions', { ...body, audience: 'elsewhere' }, null), 403, 'ERR_AUDIENCE_NOT_ALLOWED');
    expect((await svc.call('POST', '/v1/sessions', body, null)).status).toBe(201);
  });

  it('a host not governed by the attestation policy the session policy names → ERR_ATTESTATION_FAILED', async () => {
    const body = await request(await ephemeral(), { hostId: otherHost, ak: otherAk });
    const r = await svc.call('POST', '/v1/sessions', body, null);
    await expectRefused(r, 403, 'ERR_ATTESTATION_FAILED', body.nonce);
    expect(r.body.error.details.failures.map((f: { code: string }) => f.code)).toEqual(['ERR_POLICY_MISMATCH']);
  });

  it('malformed ephemeral keys → ERR_EPHEMERAL_KEY before the evidence is looked at (the nonce stays usable)', async () => {
    const eph = await ephemeral();
    const body = await request(eph);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    const y = Buffer.from(eph.pub.y!, 'base64url');
    y[31]! ^= 0x01;
    const cases: unknown[] = [
      { kty: 'EC', crv: 'P-384', x: p384.x, y: p384.y },
      { ...eph.pub, crv: 'P-384' },
      { ...eph.pub, y: y.toString('base64url') },
      { ...eph.priv },
      { kty: 'OKP', crv: 'X25519', x: eph.pub.x },
    ];
    for (const k of cases) {
      const r = await svc.call('POST', '/v1/sessions', { ...body, ephemeralPublicKey: k }, null);
      await expectRefused(r, 400, 'ERR_EPHEMERAL_KEY');
      expect(typeof r.body.error.details.reason).toBe('string');
    }
    expect((await svc.call('POST', '/v1/sessions', body, null)).status).toBe(201);
  });

  it('unknown fields and oversized bodies are refused by the route, and audited', async () => {
    const body = await request(await ephemeral());
    const extra = await svc.call('POST', '/v1/sessions', { ...body, colour: 'red' }, null);
    expect(extra.status).toBe(400);
    expect(extra.body.error.code).toBe('ERR_BAD_REQUEST');
    expect(extra.body.error.details.field).toBe('colour');
    await expectRefused(extra, 400, 'ERR_BAD_REQUEST');
    const refusal = (await svc.store.listAudit((await svc.store.lastAudit())!.seq - 1, 1))[0]!;
    expect([refusal.action, refusal.actor]).toEqual(['session.issue', `host:${body.hostId}`]);
    expect(refusal.details).toMatchObject({ code: 'ERR_BAD_REQUEST', field: 'colour', reason: 'ERR_BAD_REQUEST' });
    const big = await svc.call('POST', '/v1/sessions', { ...body, audience: 'x'.repeat(70_000) }, null);
    expect(big.status).toBe(400);
    expect(big.body.error.code).toBe('ERR_BODY_TOO_LARGE');
    // Written after the answer (the body never reached the route): wait for it.
    await expect.poll(async () => (await svc.store.listAudit(0, 100_000)).some((e) => e.action === 'session.issue' && e.details['code'] === 'ERR_BODY_TOO_LARGE')).toBe(true);
    const notJson = await fetch(`${svc.url}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"hostId": ' });
    expect(((await notJson.json()) as { error: { code: string } }).error.code).toBe('ERR_BAD_JSON');
    await expect.poll(async () => (await svc.store.listAudit(0, 100_000)).some((e) => e.action === 'session.issue' && e.details['code'] === 'ERR_BAD_JSON' && e.actor === 'anonymous')).toBe(true);
    const long = await svc.call('POST', '/v1/sessions', { ...body, audience: 'x'.repeat(600) }, null);
    expect(long.body.error.code).toBe('ERR_BAD_REQUEST');
    expect((await svc.call('POST', '/v1/sessions/introspect', { token: 'a', extra: 1 }, null)).body.error.code).toBe('ERR_BAD_REQUEST');
    // None of these touched the nonce.
    expect((await svc.call('POST', '/v1/sessions', body, null)).status).toBe(201);
  });
});

describe('03 revocation and changed PCRs', () => {
  it('a revoked host: its live tokens introspect false, and evidence already quoted is refused', async () => {
    const rAk = await drv.createAk(ek, 'ecc');
    const rHost = await enrollAndActivate(rAk, { role: 'enclave' });
    const eph = await ephemeral();
    const issued = await svc.call('POST', '/v1/sessions', await request(eph, { hostId: rHost, ak: rAk }), null);
    expect(issued.status, JSON.stringify(issued.body)).toBe(201);
    expect((await introspect(issued.body.token)).active).toBe(true);
    const pending = await request(eph, { hostId: rHost, ak: rAk });
    expect((await svc.call('POST', `/v1/hosts/${rHost}/revoke`, { reason: 'retired' }, svc.tokens.operator)).status).toBe(200);
    expect(await introspect(issued.body.token)).toEqual({ active: false });
    // The signature itself still verifies offline: introspection is what tells the difference.
    await jwtVerify(issued.body.token, createLocalJWKSet(await liveJwks()), { currentDate: clock.now() });
    await expectRefused(await svc.call('POST', '/v1/sessions', pending, null), 403, 'ERR_HOST_REVOKED', pending.nonce);
  });

  it('a PCR outside its reference values → ERR_ATTESTATION_FAILED naming ERR_QUOTE_PCR_POLICY', async () => {
    await drv.pcrExtend(7, Buffer.from('unexpected boot component'));
    const body = await request(await ephemeral());
    const r = await svc.call('POST', '/v1/sessions', body, null);
    await expectRefused(r, 403, 'ERR_ATTESTATION_FAILED', body.nonce);
    expect(r.body.error.details.failures.map((f: { code: string }) => f.code)).toContain('ERR_QUOTE_PCR_POLICY');
    const h = await svc.call('GET', `/v1/hosts/${host}`, undefined, svc.tokens.auditor);
    expect(h.body.lastAttestation.status).toBe('contraindicated');
    const metrics = String((await svc.call('GET', '/metrics', undefined, null)).body);
    expect(metrics).toMatch(/custos_sessions_total\{outcome="ERR_ATTESTATION_FAILED"\} [1-9]/);
  });
});
