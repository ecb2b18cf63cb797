import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calculateJwkThumbprint, createLocalJWKSet, jwtVerify, type JWK } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { composeService, type Service } from '../../../src/compose.js';
import { loadConfig } from '../../../src/config/config.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { Metrics } from '../../../src/http/metrics.js';
import { ManualClock } from '../../../src/lib/clock.js';
import { sessionExtraData } from '../../../src/sessions/ephemeral-key.js';
import { openSessionKey } from '../../../src/sessions/hpke.js';
import { SESSION_TOKEN_TYP, type IssueInput } from '../../../src/sessions/session-service.js';
import type { HostRecord } from '../../../src/store/records.js';
import { SoftAk } from '../../helpers/soft-tpm.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';

/**
 * SessionService above its ports: SQLite in a temp folder, the in-memory KeyStore (so the HSM can
 * be switched off), a manual clock, and a software key standing in for the host's AK so quotes
 * can be made in-process.
 */

const PCR0 = Buffer.alloc(32, 0x11);
const PCR1 = Buffer.alloc(32, 0x22);
const ISSUER_KEY = 'enclave-issuer';

let dir: string;
let hsm: MemoryKeyStore;
let store: SqliteStore;
let svc: Service;
const clock = new ManualClock(Date.UTC(2026, 5, 1));
const ak = new SoftAk('ecc');
const hostId = 'host-1';

async function ephemeral() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const priv = privateKey.export({ format: 'jwk' }) as JWK;
  const pub: JWK = { kty: 'EC', crv: 'P-256', x: priv.x!, y: priv.y! };
  return { pub, priv, thumbprint: Buffer.from(await calculateJwkThumbprint(pub, 'sha256'), 'base64url') };
}

async function request(opts: { pcr1?: Buffer; audience?: string } = {}): Promise<{ input: IssueInput; priv: JWK; thumbprint: Buffer }> {
  const eph = await ephemeral();
  const { nonce } = await svc.hosts.challenge(hostId);
  const q = ak.quote(sessionExtraData(Buffer.from(nonce, 'base64'), eph.thumbprint), [PCR0, opts.pcr1 ?? PCR1]);
  return { input: { hostId, nonce, ...q, ephemeralPublicKey: eph.pub, audience: opts.audience ?? 'ledger' }, priv: eph.priv, thumbprint: eph.thumbprint };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'custos-session-svc-'));
  const policies = join(dir, 'policies');
  mkdirSync(join(policies, 'attestation'), { recursive: true });
  mkdirSync(join(policies, 'sessions'), { recursive: true });
  writeFileSync(join(policies, 'attestation', 'a.yaml'), [
    'id: soft-hosts', 'version: 1', 'hosts:', '  labels:', '    role: enclave', 'enrollment:', '  requireEkCertificate: true',
    'pcrs:', '  bank: sha256', '  indices: [0, 1]', '  referenceValues:', `    "1": ["${PCR1.toString('hex')}"]`, 'nonceTtl: PT60S', '',
  ].join('\n'));
  writeFileSync(join(policies, 'sessions', 's.yaml'), [
    'id: soft-sessions', 'version: 4', 'hosts:', '  ids: [host-1]', 'attestationPolicy: soft-hosts', 'audiences: [ledger]',
    'tokenTtl: PT2M', 'disclose: [ear.verifier-id]', `issuerKey: ${ISSUER_KEY}`, '',
  ].join('\n'));
  const config = loadConfig({ CUSTOS_STATE_DIR: dir, CUSTOS_LISTEN: '127.0.0.1:0', CUSTOS_LOG_LEVEL: 'silent', CUSTOS_POLICY_DIR: policies, CUSTOS_ISSUER: 'https://custos.unit' }, process.cwd());
  hsm = new MemoryKeyStore();
  store = new SqliteStore(join(dir, 'custos.db'));
  svc = await composeService(config, pino({ level: 'silent' }), { hsm, store, clock, metrics: new Metrics({ defaultMetrics: false }), anchors: { certificates: [] } });
  const host: HostRecord = {
    id: hostId, status: 'active', akName: ak.name.toString('hex'), akPublic: ak.tpm2bPublic.toString('base64'), akQualifiedName: ak.qualifiedName.toString('hex'),
    ekPublicHash: '00'.repeat(32), ekCertificateSubject: null, ekCertificateIssuer: null, labels: { role: 'enclave' }, policyId: 'soft-hosts',
    enrolledAt: clock.now().toISOString(), revokedAt: null, lastAttestation: null, lastClock: null,
  };
  await store.tx((t) => t.insertHost(host));
});

afterAll(async () => {
  await svc?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sessionAudits = async () => (await store.listAudit(0, 100_000)).filter((e) => e.action === 'session.issue');

describe('SessionService.issue', () => {
  it('issues a token verifying against its own JWKS and a sealed key that opens with the ephemeral key', async () => {
    const { input, priv, thumbprint } = await request();
    const out = await svc.sessions.issue(input);
    const jwks = await svc.sessions.jwks();
    const { payload, protectedHeader } = await jwtVerify(out.token, createLocalJWKSet(jwks), { issuer: 'https://custos.unit', audience: 'ledger', typ: SESSION_TOKEN_TYP, currentDate: clock.now() });
    expect(protectedHeader.kid).toBe(`${ISSUER_KEY}.v1`);
    expect(payload.exp! - payload.iat!).toBe(120);
    expect(payload['ear.verifier-id']).toEqual({ developer: 'custos', build: expect.any(String) });
    expect(payload['ear.trustworthiness-vector']).toBeUndefined();
    expect((payload.cnf as { jkt: string }).jkt).toBe(thumbprint.toString('base64url'));
    expect(await openSessionKey(priv as Record<string, unknown>, out.sessionKey.enc, out.sessionKey.ciphertext, out.jti)).toHaveLength(32);
    expect(await store.getSession(out.jti)).toMatchObject({ keyName: ISSUER_KEY, keyVersion: 1, hostId, audience: 'ledger' });
  });

  it('two sessions get different session keys and different jtis', async () => {
    const a = await request();
    const b = await request();
    const ia = await svc.sessions.issue(a.input);
    const ib = await svc.sessions.issue(b.input);
    expect(ia.jti).not.toBe(ib.jti);
    const ka = await openSessionKey(a.priv as Record<string, unknown>, ia.sessionKey.enc, ia.sessionKey.ciphertext, ia.jti);
    const kb = await openSessionKey(b.priv as Record<string, unknown>, ib.sessionKey.enc, ib.sessionKey.ciphertext, ib.jti);
    expect(ka.equals(kb)).toBe(false);
  });

  it('HSM down → ERR_HSM_UNAVAILABLE, no session stored, the nonce spent, the failure audited', async () => {
    const { input } = await request();
    const before = (await sessionAudits()).length;
    hsm.setAvailable(false);
    try {
      await expect(svc.sessions.issue(input)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE', status: 503 });
    } finally {
      hsm.setAvailable(true);
    }
    const events = (await sessionAudits()).slice(before);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ outcome: 'failure', details: { code: 'ERR_HSM_UNAVAILABLE' } });
    expect(events[0]!.details.jti).toBeUndefined();
    await expect(svc.sessions.issue(input)).rejects.toMatchObject({ code: 'ERR_NONCE_UNKNOWN' });
  });

  it('HSM down before the issuer key exists → ERR_HSM_UNAVAILABLE (no software key is made)', async () => {
    const { input } = await request();
    // The issuer creates a missing key on first use: with the HSM down that creation fails too,
    // and no key record (let alone a software key) appears.
    hsm.setAvailable(false);
    try {
      await expect(svc.issuer.sign('never-created', 'session-token', { a: 1 }, SESSION_TOKEN_TYP)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      await expect(svc.sessions.issue(input)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
    } finally {
      hsm.setAvailable(true);
    }
    expect(await store.getKey('never-created')).toBeNull();
  });

  it('a PCR outside its reference values → ERR_ATTESTATION_FAILED with the failure, denied in the audit', async () => {
    const { input } = await request({ pcr1: Buffer.alloc(32, 0x33) });
    const err = await svc.sessions.issue(input).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_ATTESTATION_FAILED', details: { status: 'contraindicated' } });
    expect((err as { details: { failures: { code: string }[] } }).details.failures.map((f) => f.code)).toEqual(['ERR_QUOTE_PCR_POLICY']);
    const last = (await sessionAudits()).at(-1)!;
    expect(last).toMatchObject({ outcome: 'denied', details: { code: 'ERR_ATTESTATION_FAILED', verdict: 'contraindicated', refusalFailures: ['ERR_QUOTE_PCR_POLICY'] } });
  });

  it('malformed JWKs are refused before the nonce is touched', async () => {
    const { input } = await request();
    for (const bad of [null, 'x', { ...(input.ephemeralPublicKey as object), d: 'AAAA' }, { ...(input.ephemeralPublicKey as object), kid: 'k', ext: true, extra: 1 }]) {
      await expect(svc.sessions.issue({ ...input, ephemeralPublicKey: bad })).rejects.toMatchObject({ code: 'ERR_EPHEMERAL_KEY' });
    }
    await expect(svc.sessions.issue(input)).resolves.toMatchObject({ kid: `${ISSUER_KEY}.v1` });
  });

  it('counts outcomes', async () => {
    const text = await svc.deps.metrics.registry.metrics();
    expect(text).toMatch(/custos_sessions_total\{outcome="issued"\} [4-9]/);
    expect(text).toMatch(/custos_sessions_total\{outcome="ERR_HSM_UNAVAILABLE"\} 2/);
    expect(text).toMatch(/custos_sessions_total\{outcome="ERR_EPHEMERAL_KEY"\} 4/);
  });
});

describe('JWKS and introspection', () => {
  it('the JWKS lists pre-active, active and deactivated versions of the issuer keys, never destroyed, destroy-scheduled or compromised ones', async () => {
    await svc.deps.keys.rotate('test', ISSUER_KEY);
    await svc.deps.keys.rotate('test', ISSUER_KEY);
    await svc.deps.keys.rotate('test', ISSUER_KEY);
    await store.tx(async (t) => {
      await t.updateVersion(ISSUER_KEY, 2, { state: 'destroy-scheduled' });
      await t.updateVersion(ISSUER_KEY, 3, { state: 'compromised' });
    });
    const kids = (await svc.sessions.jwks()).keys.map((k) => k.kid);
    expect(kids).toContain(`${ISSUER_KEY}.v1`);
    expect(kids).toContain(`${ISSUER_KEY}.v4`);
    expect(kids).not.toContain(`${ISSUER_KEY}.v2`);
    expect(kids).not.toContain(`${ISSUER_KEY}.v3`);
    const states = (await store.listVersions(ISSUER_KEY)).map((v) => [v.version, v.state]);
    expect(states).toEqual(expect.arrayContaining([[1, 'deactivated'], [4, 'active']]));
  });

  it('keys once reserved for tokens stay in the JWKS when no loaded policy names them any more; ordinary keys never appear', async () => {
    // A token signed by an issuer key a policy named before it was changed to name another.
    const old = await svc.issuer.sign('retired-issuer', 'session-token', { sub: 'h', exp: Math.floor(clock.now().getTime() / 1000) + 60 }, SESSION_TOKEN_TYP);
    expect(svc.sessions.issuerKeyNames()).not.toContain('retired-issuer');
    await svc.deps.keys.create('test', { name: 'ordinary', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
    const jwks = await svc.sessions.jwks();
    expect(jwks.keys.map((k) => k.kid)).toContain('retired-issuer.v1');
    expect(jwks.keys.map((k) => k.kid).filter((k) => k.startsWith('ordinary'))).toEqual([]);
    await jwtVerify(old.token, createLocalJWKSet(jwks), { currentDate: clock.now(), typ: SESSION_TOKEN_TYP });
  });

  it('an issuer key custos may not take (it signed caller data) is an internal error, not the caller\'s, and signs nothing', async () => {
    await svc.deps.keys.create('test', { name: 'misnamed', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
    await svc.deps.keys.sign('test', 'misnamed', { data: Buffer.from('x').toString('base64') });
    await expect(svc.issuer.sign('misnamed', 'session-token', { sub: 'h' }, SESSION_TOKEN_TYP)).rejects.toMatchObject({ code: 'ERR_INTERNAL', message: expect.stringMatching(/misnamed.*signed data through the keys API/) });
    expect((await store.getKey('misnamed'))?.reservedFor).toBeNull();
  });

  it('a token of a destroyed issuer version introspects false; so does one of a compromised version', async () => {
    const { input } = await request();
    const out = await svc.sessions.issue(input);
    expect(out.kid).toBe(`${ISSUER_KEY}.v4`);
    expect((await svc.sessions.introspect(out.token)).active).toBe(true);
    await store.tx((t) => t.updateVersion(ISSUER_KEY, 4, { state: 'compromised' }));
    expect(await svc.sessions.introspect(out.token)).toEqual({ active: false });
    await store.tx((t) => t.updateVersion(ISSUER_KEY, 4, { state: 'destroyed' }));
    expect(await svc.sessions.introspect(out.token)).toEqual({ active: false });
    await store.tx((t) => t.updateVersion(ISSUER_KEY, 4, { state: 'active' }));
    expect((await svc.sessions.introspect(out.token)).active).toBe(true);
  });

  it('a correctly signed token without a session record, or of another type, introspects false', async () => {
    const { claims } = await svc.sessions.introspect((await svc.sessions.issue((await request()).input)).token) as { claims: Record<string, unknown> };
    const forged = await svc.issuer.sign(ISSUER_KEY, 'session-token', { ...claims, jti: randomUUID() }, SESSION_TOKEN_TYP);
    await jwtVerify(forged.token, createLocalJWKSet(await svc.sessions.jwks()), { currentDate: clock.now() });
    expect(await svc.sessions.introspect(forged.token)).toEqual({ active: false });
    const otherTyp = await svc.issuer.sign(ISSUER_KEY, 'session-token', claims, 'JWT');
    expect(await svc.sessions.introspect(otherTyp.token)).toEqual({ active: false });
  });

  it('before nbf and after exp by the injected clock the token is inactive', async () => {
    const out = await svc.sessions.issue((await request()).input);
    clock.advance(-5_000);
    expect(await svc.sessions.introspect(out.token)).toEqual({ active: false });
    clock.advance(5_000 + 119_000);
    expect((await svc.sessions.introspect(out.token)).active).toBe(true);
    clock.advance(1_000);
    expect(await svc.sessions.introspect(out.token)).toEqual({ active: false });
  });

  it('a revoked host makes its tokens inactive', async () => {
    const out = await svc.sessions.issue((await request()).input);
    expect((await svc.sessions.introspect(out.token)).active).toBe(true);
    await svc.hosts.revoke('test', hostId);
    expect(await svc.sessions.introspect(out.token)).toEqual({ active: false });
  });
});
