import { createHash, generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import { describe, expect, it } from 'vitest';
import { isCustosError } from '../../../src/lib/errors.js';
import { jwkThumbprint, parseEphemeralJwk, sessionExtraData } from '../../../src/sessions/ephemeral-key.js';

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;

function freshJwk(): Record<string, unknown> {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
}

function b64uOf(n: bigint): string {
  return Buffer.from(n.toString(16).padStart(64, '0'), 'hex').toString('base64url');
}

function nOf(s: unknown): bigint {
  return BigInt('0x' + Buffer.from(String(s), 'base64url').toString('hex'));
}

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isCustosError(e, 'ERR_EPHEMERAL_KEY')) return String(e.details?.['reason']);
    throw e;
  }
  throw new Error('expected ERR_EPHEMERAL_KEY');
}

describe('parseEphemeralJwk', () => {
  it('accepts a P-256 public JWK and returns the normalised key, a KeyObject and the RFC 7638 thumbprint', async () => {
    const jwk = freshJwk();
    const k = parseEphemeralJwk({ ...jwk, kid: 'enclave-1', key_ops: [], ext: true, alg: 'ECDH-ES', use: 'enc' });
    expect(k.jwk).toEqual({ kty: 'EC', crv: 'P-256', x: jwk['x'], y: jwk['y'] });
    expect(k.keyObject.asymmetricKeyType).toBe('ec');
    expect(k.keyObject.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(k.thumbprint.length).toBe(32);
    const viaJose = await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: String(jwk['x']), y: String(jwk['y']) }, 'sha256');
    expect(k.thumbprint.toString('base64url')).toBe(viaJose);
  });

  it('matches the RFC 7638 construction text exactly', () => {
    const jwk = freshJwk();
    const text = `{"crv":"P-256","kty":"EC","x":"${String(jwk['x'])}","y":"${String(jwk['y'])}"}`;
    const k = parseEphemeralJwk(jwk);
    expect(jwkThumbprint(k.jwk).equals(createHash('sha256').update(text).digest())).toBe(true);
  });

  it('rejects non-objects', () => {
    for (const bad of [null, 'x', 42, [], undefined]) expect(reasonOf(() => parseEphemeralJwk(bad))).toMatch(/object/);
  });

  it('rejects private members, each one', () => {
    const jwk = freshJwk();
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']) {
      expect(reasonOf(() => parseEphemeralJwk({ ...jwk, [m]: 'AAAA' }))).toMatch(/private/);
    }
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    expect(reasonOf(() => parseEphemeralJwk(privateKey.export({ format: 'jwk' })))).toMatch(/private/);
  });

  it('rejects unknown members', () => {
    expect(reasonOf(() => parseEphemeralJwk({ ...freshJwk(), x5c: ['MII'] }))).toMatch(/unexpected member "x5c"/);
    expect(reasonOf(() => parseEphemeralJwk({ ...freshJwk(), jku: 'https://evil.example' }))).toMatch(/unexpected/);
  });

  it('rejects a wrong kty or curve', () => {
    expect(reasonOf(() => parseEphemeralJwk({ ...freshJwk(), kty: 'RSA' }))).toMatch(/kty/);
    expect(reasonOf(() => parseEphemeralJwk({ ...freshJwk(), crv: 'P-384' }))).toMatch(/crv/);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    expect(reasonOf(() => parseEphemeralJwk(publicKey.export({ format: 'jwk' })))).toMatch(/crv/);
    const ed = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' });
    expect(reasonOf(() => parseEphemeralJwk(ed))).toMatch(/kty/);
    const { kty: _k, ...noKty } = freshJwk();
    expect(reasonOf(() => parseEphemeralJwk(noKty))).toMatch(/kty/);
  });

  it('rejects a point that is not on the curve', () => {
    const jwk = freshJwk();
    const y = (nOf(jwk['y']) + 1n) % P;
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, y: b64uOf(y) }))).toMatch(/not on the P-256 curve/);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: b64uOf(0n), y: b64uOf(0n) }))).toMatch(/not on/);
  });

  it('rejects coordinates that are not reduced modulo p', () => {
    const jwk = freshJwk();
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: b64uOf(P), y: b64uOf(0n) }))).toMatch(/not on/);
  });

  it('rejects wrong coordinate lengths and non-base64url text', () => {
    const jwk = freshJwk();
    const x = String(jwk['x']);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: x.slice(0, 42) }))).toMatch(/32 bytes/);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: Buffer.alloc(33, 1).toString('base64url') }))).toMatch(/32 bytes/);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: x + '=' }))).toMatch(/32 bytes/);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: '+' + x.slice(1) }))).toMatch(/32 bytes/);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: ' ' + x.slice(1) }))).toMatch(/32 bytes/);
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: 42 }))).toMatch(/string/);
    // Last character with non-zero unused bits decodes to the same bytes but is not canonical.
    const last = x[42] as string;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const idx = alphabet.indexOf(last);
    const sibling = alphabet[(idx & ~3) | ((idx & 3) ^ 1)] as string;
    expect(reasonOf(() => parseEphemeralJwk({ ...jwk, x: x.slice(0, 42) + sibling }))).toMatch(/canonical/);
  });
});

describe('sessionExtraData', () => {
  it('is SHA-256(nonce ‖ thumbprint)', () => {
    const nonce = Buffer.alloc(32, 7);
    const tp = Buffer.alloc(32, 9);
    expect(sessionExtraData(nonce, tp).equals(createHash('sha256').update(Buffer.concat([nonce, tp])).digest())).toBe(true);
    expect(sessionExtraData(nonce, tp).equals(sessionExtraData(Buffer.alloc(32, 8), tp))).toBe(false);
  });

  it('refuses an empty nonce or a thumbprint that is not 32 bytes', () => {
    expect(() => sessionExtraData(Buffer.alloc(0), Buffer.alloc(32))).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => sessionExtraData(Buffer.alloc(32), Buffer.alloc(31))).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
  });
});
