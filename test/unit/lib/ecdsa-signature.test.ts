import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  checkRawEcdsaSignature,
  ecdsaDerToRaw,
  ecdsaRawSignatureBytes,
  ecdsaRawToDer,
  type EcdsaCurve,
} from '../../../src/lib/ecdsa-signature.js';
import { isCustosError } from '../../../src/lib/errors.js';

const N256 = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');

function expectFormatError(fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isCustosError(caught, 'ERR_SIGNATURE_FORMAT')).toBe(true);
}

function rawOf(r: Buffer, s: Buffer, size = 32): Buffer {
  const out = Buffer.alloc(size * 2);
  r.copy(out, size - r.length);
  s.copy(out, 2 * size - s.length);
  return out;
}

describe('ECDSA raw <-> DER against node:crypto', () => {
  for (const [curve, named, hash] of [
    ['P-256', 'prime256v1', 'sha256'],
    ['P-384', 'secp384r1', 'sha384'],
  ] as const) {
    it(`converts 200 random ${curve} signatures both ways exactly as OpenSSL encodes them`, () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: named });
      for (let i = 0; i < 200; i++) {
        const msg = randomBytes(16);
        const der = sign(hash, msg, { key: privateKey, dsaEncoding: 'der' });
        const raw = ecdsaDerToRaw(der, curve);
        expect(raw.length).toBe(ecdsaRawSignatureBytes(curve));
        expect(verify(hash, msg, { key: publicKey, dsaEncoding: 'ieee-p1363' }, raw)).toBe(true);
        expect(ecdsaRawToDer(raw, curve).equals(der)).toBe(true);
        const p1363 = sign(hash, msg, { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const der2 = ecdsaRawToDer(p1363, curve);
        expect(verify(hash, msg, { key: publicKey, dsaEncoding: 'der' }, der2)).toBe(true);
        expect(ecdsaDerToRaw(der2, curve).equals(p1363)).toBe(true);
      }
    });
  }

  it('pads short scalars and adds the sign octet for high-bit scalars', () => {
    const r = Buffer.from([0x01]);
    const s = Buffer.alloc(32, 0xff);
    s[0] = 0x80;
    const der = ecdsaRawToDer(rawOf(r, s), 'P-256');
    expect(der.toString('hex')).toBe('3026' + '020101' + '022100' + s.toString('hex'));
    expect(ecdsaDerToRaw(der, 'P-256').equals(rawOf(r, s))).toBe(true);
  });

  it('encodes the largest P-384 signature (both scalars high-bit) with a short length', () => {
    const r = Buffer.alloc(48, 0x81);
    const s = Buffer.alloc(48, 0x82);
    const der = ecdsaRawToDer(Buffer.concat([r, s]), 'P-384');
    expect(der.subarray(0, 5).toString('hex')).toBe('3066023100');
    expect(der.length).toBe(2 + 2 * (2 + 49));
    expect(ecdsaDerToRaw(der, 'P-384').equals(Buffer.concat([r, s]))).toBe(true);
  });
});

describe('ECDSA strict parsing', () => {
  const good = ecdsaRawToDer(rawOf(Buffer.alloc(32, 0x11), Buffer.alloc(32, 0x22)), 'P-256');

  it('accepts the canonical encoding', () => {
    expect(ecdsaDerToRaw(good, 'P-256').length).toBe(64);
  });

  it('rejects trailing bytes after the SEQUENCE', () => {
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([good, Buffer.from([0])]), 'P-256'));
  });

  it('rejects a truncated signature', () => {
    expectFormatError(() => ecdsaDerToRaw(good.subarray(0, good.length - 1), 'P-256'));
  });

  it('rejects a non-SEQUENCE tag and a non-INTEGER element', () => {
    const t = Buffer.from(good);
    t[0] = 0x31;
    expectFormatError(() => ecdsaDerToRaw(t, 'P-256'));
    const u = Buffer.from(good);
    u[2] = 0x03;
    expectFormatError(() => ecdsaDerToRaw(u, 'P-256'));
  });

  it('rejects a non-minimal INTEGER (superfluous leading zero)', () => {
    const r = Buffer.concat([Buffer.from([0x00]), Buffer.alloc(32, 0x11)]);
    const s = Buffer.alloc(32, 0x22);
    const body = Buffer.concat([Buffer.from([0x02, 33]), r, Buffer.from([0x02, 32]), s]);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, body.length]), body]), 'P-256'));
  });

  it('rejects a negative INTEGER (high bit without the sign octet)', () => {
    const r = Buffer.alloc(32, 0x91);
    const s = Buffer.alloc(32, 0x22);
    const body = Buffer.concat([Buffer.from([0x02, 32]), r, Buffer.from([0x02, 32]), s]);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, body.length]), body]), 'P-256'));
  });

  it('rejects a long-form length where the short form fits', () => {
    const body = good.subarray(2);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, 0x81, body.length]), body]), 'P-256'));
  });

  it('rejects the indefinite length form', () => {
    const body = good.subarray(2);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, 0x80]), body, Buffer.from([0, 0])]), 'P-256'));
  });

  it('rejects an empty INTEGER, a zero scalar, and a scalar not below n', () => {
    const empty = Buffer.from('3006020002020101', 'hex');
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([empty]), 'P-256'));
    const zero = Buffer.from('3006020100020101', 'hex');
    expectFormatError(() => ecdsaDerToRaw(zero, 'P-256'));
    const nBody = Buffer.concat([Buffer.from([0x02, 33, 0x00]), N256, Buffer.from([0x02, 1, 1])]);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, nBody.length]), nBody]), 'P-256'));
  });

  it('rejects a scalar longer than the curve allows', () => {
    const big = Buffer.alloc(33, 0x11);
    const body = Buffer.concat([Buffer.from([0x02, 33]), big, Buffer.from([0x02, 1, 1])]);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, body.length]), body]), 'P-256'));
  });

  it('rejects a third element inside the SEQUENCE', () => {
    const body = Buffer.concat([good.subarray(2), Buffer.from([0x02, 1, 1])]);
    expectFormatError(() => ecdsaDerToRaw(Buffer.concat([Buffer.from([0x30, body.length]), body]), 'P-256'));
  });

  it('rejects a P-384 signature read as P-256', () => {
    const der384 = ecdsaRawToDer(Buffer.alloc(96, 0x33), 'P-384');
    expectFormatError(() => ecdsaDerToRaw(der384, 'P-256'));
  });

  it('rejects raw signatures of the wrong size, zero scalars, or scalars >= n', () => {
    expectFormatError(() => ecdsaRawToDer(Buffer.alloc(63, 1), 'P-256'));
    expectFormatError(() => ecdsaRawToDer(Buffer.alloc(96, 1), 'P-256'));
    expectFormatError(() => checkRawEcdsaSignature(rawOf(Buffer.alloc(0), Buffer.from([1])), 'P-256'));
    expectFormatError(() => checkRawEcdsaSignature(rawOf(N256, Buffer.from([1])), 'P-256'));
    expectFormatError(() => checkRawEcdsaSignature(Buffer.alloc(64, 0x11), 'P-521' as EcdsaCurve));
  });
});
