import { createPublicKey, randomBytes } from 'node:crypto';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import type { KeyType } from '../../../src/hsm/key-types.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { ecdsaRawToDer } from '../../../src/lib/ecdsa-signature.js';
import { isCustosError } from '../../../src/lib/errors.js';
import { jwsAlgFor, makeHsmJwsSigner, signJwt, type JwsAlg } from '../../../src/sessions/token.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

const store = new MemoryKeyStore();
const keys: Record<string, { id: string; jwk: JWK }> = {};

async function addKey(type: KeyType, alg: JwsAlg): Promise<void> {
  const id = randomBytes(16).toString('hex');
  await store.generateKeyPair({ id, label: `custos:issuer-${type}:v1`, type });
  const spki = await store.getPublicKey(id);
  const jwk = createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ format: 'jwk' }) as JWK;
  keys[`${type}/${alg}`] = { id, jwk: { ...jwk, kid: `issuer-${type}-${alg}:1`, alg, use: 'sig' } };
}

beforeAll(async () => {
  await addKey('ec-p256', 'ES256');
  await addKey('ec-p384', 'ES384');
  await addKey('rsa-2048', 'RS256');
  await addKey('rsa-2048', 'PS256');
});

const now = Math.floor(Date.now() / 1000);
const claims = { iss: 'https://custos.example', sub: 'host-1', aud: 'ledger', iat: now, nbf: now, exp: now + 300, jti: 'j-1', cnf: { jkt: 'abc' } };

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return isCustosError(e) ? e.code : `other:${String(e)}`;
  }
  return 'resolved';
}

describe('signJwt with HSM signers', () => {
  for (const [type, alg] of [
    ['ec-p256', 'ES256'],
    ['ec-p384', 'ES384'],
    ['rsa-2048', 'RS256'],
    ['rsa-2048', 'PS256'],
  ] as const) {
    it(`${alg} over ${type}: verifies with jose against a JWKS, and fails after flipping any character`, async () => {
      const k = keys[`${type}/${alg}`];
      if (!k) throw new Error('key missing');
      const signer = makeHsmJwsSigner(store, k.id, type, alg);
      expect(signer.alg).toBe(alg);
      const token = await signJwt({ header: { alg, kid: String(k.jwk.kid), typ: 'JWT' }, claims }, signer);
      const jwks = createLocalJWKSet({ keys: [k.jwk] });
      const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: claims.iss, audience: 'ledger', algorithms: [alg] });
      expect(payload).toEqual(claims);
      expect(protectedHeader).toEqual({ alg, kid: k.jwk.kid, typ: 'JWT' });

      // Every position: flip the high bit of the base64url digit (always a significant bit) or
      // turn a separator into a digit.
      let failures = 0;
      let tried = 0;
      for (let i = 0; i < token.length; i++) {
        const c = token[i] as string;
        const repl = c === '.' ? 'A' : (ALPHABET[ALPHABET.indexOf(c) ^ 0x20] as string);
        const tampered = token.slice(0, i) + repl + token.slice(i + 1);
        tried++;
        try {
          await jwtVerify(tampered, jwks, { issuer: claims.iss, audience: 'ledger', algorithms: [alg] });
        } catch {
          failures++;
        }
      }
      expect(failures).toBe(tried);
    });
  }

  it('serialises header and claims with JCS: same members in any order give the same signing input', async () => {
    const k = keys['ec-p256/ES256'];
    if (!k) throw new Error('key missing');
    const signer = makeHsmJwsSigner(store, k.id, 'ec-p256');
    const a = await signJwt({ header: { alg: 'ES256', kid: 'k' }, claims: { b: 1, a: { z: 2, y: [3, 'x'] } } }, signer);
    const b = await signJwt({ header: { kid: 'k', alg: 'ES256' }, claims: { a: { y: [3, 'x'], z: 2 }, b: 1 } }, signer);
    expect(a.split('.').slice(0, 2)).toEqual(b.split('.').slice(0, 2));
    expect(Buffer.from(a.split('.')[1] as string, 'base64url').toString()).toBe('{"a":{"y":[3,"x"],"z":2},"b":1}');
    expect(decodeProtectedHeader(a)).toEqual({ alg: 'ES256', kid: 'k' });
  });

  it('fails verification against another key, another audience, or after expiry', async () => {
    const k = keys['ec-p256/ES256'];
    const other = keys['ec-p384/ES384'];
    if (!k || !other) throw new Error('key missing');
    const token = await signJwt({ header: { alg: 'ES256', kid: String(k.jwk.kid) }, claims }, makeHsmJwsSigner(store, k.id, 'ec-p256'));
    const wrongKey = createLocalJWKSet({ keys: [{ ...other.jwk, kid: k.jwk.kid }] });
    await expect(jwtVerify(token, wrongKey)).rejects.toThrow();
    const jwks = createLocalJWKSet({ keys: [k.jwk] });
    await expect(jwtVerify(token, jwks, { audience: 'other' })).rejects.toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
    await expect(jwtVerify(token, jwks, { currentDate: new Date((now + 301) * 1000) })).rejects.toMatchObject({ code: 'ERR_JWT_EXPIRED' });
  });

  it('refuses a DER-encoded or wrong-size ECDSA signature from the signer', async () => {
    const raw = Buffer.alloc(64, 0x11);
    expect(await codeOf(signJwt({ header: { alg: 'ES256', kid: 'k' }, claims }, async () => ecdsaRawToDer(raw, 'P-256')))).toBe('ERR_SIGNATURE_FORMAT');
    expect(await codeOf(signJwt({ header: { alg: 'ES384', kid: 'k' }, claims }, async () => raw))).toBe('ERR_SIGNATURE_FORMAT');
    expect(await codeOf(signJwt({ header: { alg: 'RS256', kid: 'k' }, claims }, async () => Buffer.alloc(0)))).toBe('ERR_SIGNATURE_FORMAT');
  });

  it('refuses unsupported algorithms, empty kids and non-object claims', async () => {
    const s = async (): Promise<Buffer> => Buffer.alloc(64, 1);
    expect(await codeOf(signJwt({ header: { alg: 'none' as JwsAlg, kid: 'k' }, claims }, s))).toBe('ERR_KEY_TYPE');
    expect(await codeOf(signJwt({ header: { alg: 'HS256' as JwsAlg, kid: 'k' }, claims }, s))).toBe('ERR_KEY_TYPE');
    expect(await codeOf(signJwt({ header: { alg: 'ES256', kid: '' }, claims }, s))).toBe('ERR_BAD_REQUEST');
    expect(await codeOf(signJwt({ header: { alg: 'ES256', kid: 'k' }, claims: [] as unknown as Record<string, unknown> }, s))).toBe('ERR_BAD_REQUEST');
  });

  it('maps key types to algorithms from the key-type table and refuses mismatches', () => {
    expect(jwsAlgFor('ec-p256')).toBe('ES256');
    expect(jwsAlgFor('ec-p384')).toBe('ES384');
    expect(jwsAlgFor('rsa-3072')).toBe('RS256');
    expect(jwsAlgFor('rsa-2048', 'PS256')).toBe('PS256');
    for (const [t, a] of [
      ['ec-p256', 'ES384'],
      ['ec-p384', 'ES256'],
      ['rsa-2048', 'ES256'],
      ['ec-p256', 'RS256'],
    ] as const) {
      expect(() => jwsAlgFor(t, a)).toThrow(expect.objectContaining({ code: 'ERR_KEY_TYPE' }));
    }
    expect(() => jwsAlgFor('aes-256')).toThrow(expect.objectContaining({ code: 'ERR_KEY_TYPE' }));
    expect(() => makeHsmJwsSigner(store, 'aa', 'aes-256')).toThrow(expect.objectContaining({ code: 'ERR_KEY_TYPE' }));
  });

  it('passes HSM failures through and never produces a token without the HSM', async () => {
    const k = keys['ec-p256/ES256'];
    if (!k) throw new Error('key missing');
    const down = new MemoryKeyStore();
    await down.generateKeyPair({ id: k.id, label: 'x', type: 'ec-p256' });
    down.setAvailable(false);
    expect(await codeOf(signJwt({ header: { alg: 'ES256', kid: 'k' }, claims }, makeHsmJwsSigner(down, k.id, 'ec-p256')))).toBe('ERR_HSM_UNAVAILABLE');
  });
});
