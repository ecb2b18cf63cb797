import { execFile } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createLocalJWKSet, jwtVerify, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { appraise, buildSessionClaims } from '../../../src/sessions/claims.js';
import { parseEphemeralJwk } from '../../../src/sessions/ephemeral-key.js';
import { openSessionKey, sealSessionKey } from '../../../src/sessions/hpke.js';
import { resolveSessionPolicy } from '../../../src/sessions/policy.js';
import { makeHsmJwsSigner, signJwt } from '../../../src/sessions/token.js';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../../../examples/verify-token/verify.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'custos-verify-token-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ISSUER = 'https://custos.example';
const store = new MemoryKeyStore();
const keyId = randomBytes(16).toString('hex');
let jwks: { keys: JWK[] };

const eph = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const ephPub = eph.publicKey.export({ format: 'jwk' });
const ephPriv = eph.privateKey.export({ format: 'jwk' });

beforeAll(async () => {
  await store.generateKeyPair({ id: keyId, label: 'custos:session-issuer:v1', type: 'ec-p256' });
  const jwk = createPublicKey({ key: await store.getPublicKey(keyId), format: 'der', type: 'spki' }).export({ format: 'jwk' }) as JWK;
  jwks = { keys: [{ ...jwk, kid: 'session-issuer:1', alg: 'ES256', use: 'sig' }] };
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify(jwks));
  writeFileSync(join(dir, 'eph.jwk'), JSON.stringify(ephPub));
  const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ format: 'jwk' });
  writeFileSync(join(dir, 'other.jwk'), JSON.stringify(other));
});

async function issue(now: Date, typ = 'custos-session+jwt'): Promise<{ token: string; jti: string; sealed: { enc: string; ciphertext: string }; sessionKey: Buffer }> {
  const policy = resolveSessionPolicy(
    [{ id: 'enclaves', version: 1, hosts: { ids: ['host-1'] }, attestationPolicy: 'prod-boot', audiences: ['ledger'], issuerKey: 'session-issuer', disclose: ['ear.trustworthiness-vector'] }],
    { id: 'host-1' },
    'ledger',
  );
  const key = parseEphemeralJwk(ephPub);
  const jti = randomUUID();
  const claims = buildSessionClaims({
    issuer: ISSUER, hostId: 'host-1', audience: policy.audience, now, ttlSeconds: policy.tokenTtlSeconds, jti,
    thumbprint: key.thumbprint, nonce: randomBytes(32),
    appraisal: { ...appraise([]), policyId: policy.attestationPolicy, policyVersion: 1, pcrDigest: '00'.repeat(32) },
    verifierId: { developer: ISSUER, build: 'test' }, disclose: policy.disclose,
  });
  const token = await signJwt({ header: { alg: 'ES256', kid: 'session-issuer:1', typ }, claims: { ...claims } }, makeHsmJwsSigner(store, keyId, 'ec-p256'));
  const sessionKey = await store.randomBytes(32);
  const sealed = await sealSessionKey(ephPub, sessionKey, jti);
  return { token, jti, sealed, sessionKey };
}

describe('session issuance, pure parts end to end', () => {
  it('issues a token that verifies with jose and a session key that opens only with the ephemeral key and jti', async () => {
    const { token, jti, sealed, sessionKey } = await issue(new Date());
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer: ISSUER, audience: 'ledger' });
    expect(payload['jti']).toBe(jti);
    expect(payload['cnf']).toEqual({ jkt: parseEphemeralJwk(ephPub).thumbprint.toString('base64url') });
    expect(Object.keys(payload).sort()).toEqual(['aud', 'cnf', 'ear.status', 'ear.trustworthiness-vector', 'eat_nonce', 'exp', 'iat', 'iss', 'jti', 'nbf', 'sub']);
    expect(payload['exp']).toBe((payload['iat'] as number) + 300);
    expect((await openSessionKey(ephPriv, sealed.enc, sealed.ciphertext, String(payload['jti']))).equals(sessionKey)).toBe(true);
  });
});

describe('examples/verify-token/verify.mjs', () => {
  it('accepts a valid token against a saved jwks.json, including the key binding', async () => {
    const { token } = await issue(new Date());
    writeFileSync(join(dir, 'token.jwt'), token);
    const { stdout } = await run(process.execPath, [script, '--token', `@${join(dir, 'token.jwt')}`, '--jwks', join(dir, 'jwks.json'), '--issuer', ISSUER, '--audience', 'ledger', '--ephemeral-key', join(dir, 'eph.jwk')]);
    const out = JSON.parse(stdout) as { valid: boolean; kid: string };
    expect([out.valid, out.kid]).toEqual([true, 'session-issuer:1']);
  });

  it('refuses a wrong audience, a wrong issuer, an expired token, a tampered token, another JWT type and another key binding', async () => {
    const { token } = await issue(new Date());
    const { token: old } = await issue(new Date(Date.now() - 3_600_000));
    // Signed by the same key set, but an attestation result's type, not a session token's.
    const { token: result } = await issue(new Date(), 'application/eat+jwt');
    const sig = token.split('.')[2] as string;
    const tampered = `${token.split('.').slice(0, 2).join('.')}.${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
    const cases: [string[], RegExp][] = [
      [['--token', token, '--audience', 'other', '--issuer', ISSUER], /aud/],
      [['--token', token, '--audience', 'ledger', '--issuer', 'https://evil.example'], /iss/],
      [['--token', old, '--audience', 'ledger', '--issuer', ISSUER], /exp/],
      [['--token', tampered, '--audience', 'ledger', '--issuer', ISSUER], /signature/],
      [['--token', result, '--audience', 'ledger', '--issuer', ISSUER], /typ/],
      [['--token', token, '--audience', 'ledger', '--issuer', ISSUER, '--ephemeral-key', join(dir, 'other.jwk')], /another key/],
    ];
    for (const [args, reason] of cases) {
      const r = await run(process.execPath, [script, '--jwks', join(dir, 'jwks.json'), ...args]).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(reason);
    }
  });

  it('exits 2 on a usage error', async () => {
    const r = await run(process.execPath, [script, '--token', 'x']).then(() => 0, (e: { code: number }) => e.code);
    expect(r).toBe(2);
  });
});
