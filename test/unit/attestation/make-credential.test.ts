import { constants, createDecipheriv, createECDH, createHmac, generateKeyPairSync, privateDecrypt, randomBytes, type KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { kdfa, kdfe } from '../../../src/attestation/kdf.js';
import { makeCredential } from '../../../src/attestation/make-credential.js';
import { TPM_ALG, tpmHash } from '../../../src/attestation/tpm2/algorithms.js';
import { parseEncryptedSecret, parseIdObject } from '../../../src/attestation/tpm2/credential.js';
import { objectName, parseTpm2bPublic, type TpmtPublic } from '../../../src/attestation/tpm2/public.js';
import { TpmReader, TpmWriter } from '../../../src/attestation/tpm2/reader.js';
import { CustosError } from '../../../src/lib/errors.js';
import { vec } from './vectors.js';

const sha256 = tpmHash(TPM_ALG.SHA256);

// A software model of TPM2_ActivateCredential (Part 1, §24), independent of makeCredential's
// code path, to check the structure end to end without a TPM.
function activate(ek: TpmtPublic, priv: KeyObject | Buffer, name: Buffer, blob: Buffer, encSecret: Buffer): Buffer {
  const h = ek.nameAlg;
  let seed: Buffer;
  const secret = parseEncryptedSecret(encSecret);
  if (ek.type === 'rsa') {
    seed = privateDecrypt({ key: priv as KeyObject, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: h.nodeHash, oaepLabel: Buffer.from('IDENTITY\0') }, secret);
  } else {
    const r = new TpmReader(secret);
    const x = r.tpm2b('x');
    const y = r.tpm2b('y');
    const ecdh = createECDH(ek.curve.nodeCurve);
    ecdh.setPrivateKey(priv as Buffer);
    const z = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), x, y]));
    seed = kdfe(h, z, 'IDENTITY', x, ek.x, h.digestSize * 8);
  }
  const id = parseIdObject(blob);
  const hmacKey = kdfa(h, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), h.digestSize * 8);
  const expect_ = createHmac(h.nodeHash, hmacKey).update(id.encIdentity).update(name).digest();
  if (!expect_.equals(id.integrityHmac)) throw new Error('integrity');
  const symKey = kdfa(h, seed, 'STORAGE', name, Buffer.alloc(0), ek.symmetric.keyBits!);
  const d = createDecipheriv(`aes-${ek.symmetric.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const plain = Buffer.concat([d.update(id.encIdentity), d.final()]);
  const r = new TpmReader(plain);
  const out = r.tpm2b('credential');
  r.end('credential');
  return out;
}

function rsaEk(): { ek: TpmtPublic; priv: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const n = Buffer.from(publicKey.export({ format: 'jwk' }).n!, 'base64url');
  const t = new TpmWriter().u16(TPM_ALG.RSA).u16(TPM_ALG.SHA256).u32(0x000300b2).tpm2b(Buffer.alloc(32, 0x83)).u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB).u16(TPM_ALG.NULL).u16(2048).u32(0).tpm2b(n).toBuffer();
  return { ek: parseTpm2bPublic(new TpmWriter().tpm2b(t).toBuffer()), priv: privateKey };
}

function eccEk(curve: 'prime256v1' | 'secp384r1'): { ek: TpmtPublic; priv: Buffer } {
  const ecdh = createECDH(curve);
  ecdh.generateKeys();
  const size = curve === 'prime256v1' ? 32 : 48;
  const pub = ecdh.getPublicKey();
  const t = new TpmWriter().u16(TPM_ALG.ECC).u16(size === 32 ? TPM_ALG.SHA256 : TPM_ALG.SHA384).u32(0x000300b2).tpm2b(Buffer.alloc(size, 0x83))
    .u16(TPM_ALG.AES).u16(size === 32 ? 128 : 256).u16(TPM_ALG.CFB).u16(TPM_ALG.NULL).u16(size === 32 ? 3 : 4).u16(TPM_ALG.NULL)
    .tpm2b(pub.subarray(1, 1 + size)).tpm2b(pub.subarray(1 + size)).toBuffer();
  return { ek: parseTpm2bPublic(new TpmWriter().tpm2b(t).toBuffer()), priv: ecdh.getPrivateKey() };
}

const akName = objectName(parseTpm2bPublic(vec('ak-rsa.pub')));

describe('makeCredential (software activation model)', () => {
  it('RSA-2048 EK: recoverable with the right Name, integrity fails with another', () => {
    const { ek, priv } = rsaEk();
    const secret = randomBytes(32);
    const m = makeCredential(ek, akName, secret);
    expect(activate(ek, priv, akName, m.credentialBlob, m.encryptedSecret)).toEqual(secret);
    const other = Buffer.from(akName);
    other[5]! ^= 1;
    expect(() => activate(ek, priv, other, m.credentialBlob, m.encryptedSecret)).toThrow('integrity');
    expect(parseEncryptedSecret(m.encryptedSecret)).toHaveLength(256);
  });

  for (const curve of ['prime256v1', 'secp384r1'] as const) {
    it(`ECC ${curve} EK: recoverable; encryptedSecret is a TPMS_ECC_POINT`, () => {
      const { ek, priv } = eccEk(curve);
      const secret = randomBytes(16);
      const m = makeCredential(ek, akName, secret);
      expect(activate(ek, priv, akName, m.credentialBlob, m.encryptedSecret)).toEqual(secret);
      const size = curve === 'prime256v1' ? 32 : 48;
      expect(parseEncryptedSecret(m.encryptedSecret)).toHaveLength(4 + 2 * size);
    });
  }

  it('is deterministic given the seed / ephemeral key, and differs otherwise', () => {
    const { ek } = rsaEk();
    const s = Buffer.alloc(32, 1);
    const a = makeCredential(ek, akName, s, { random: (n) => Buffer.alloc(n, 7) });
    const b = makeCredential(ek, akName, s, { random: (n) => Buffer.alloc(n, 7) });
    expect(a.credentialBlob).toEqual(b.credentialBlob);
    expect(makeCredential(ek, akName, s).credentialBlob).not.toEqual(a.credentialBlob);
    const e = eccEk('prime256v1');
    const eph = createECDH('prime256v1');
    eph.generateKeys();
    const c1 = makeCredential(e.ek, akName, s, { ephemeralPrivate: eph.getPrivateKey() });
    const c2 = makeCredential(e.ek, akName, s, { ephemeralPrivate: eph.getPrivateKey() });
    expect(c1).toEqual(c2);
  });

  it('accepts TPM2B_PUBLIC bytes of the swtpm EKs', () => {
    expect(parseIdObject(makeCredential(vec('ek-rsa.pub'), akName, randomBytes(32)).credentialBlob).integrityHmac).toHaveLength(32);
    expect(parseIdObject(makeCredential(vec('ek-ecc384.pub'), akName, randomBytes(48)).credentialBlob).integrityHmac).toHaveLength(48);
  });

  it('rejects secrets longer than the nameAlg digest or empty, bad Names and non-AES-CFB EKs', () => {
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as CustosError).code;
      }
      return 'none';
    };
    expect(code(() => makeCredential(vec('ek-rsa.pub'), akName, randomBytes(33)))).toBe('ERR_BAD_REQUEST');
    expect(code(() => makeCredential(vec('ek-rsa.pub'), akName, Buffer.alloc(0)))).toBe('ERR_BAD_REQUEST');
    expect(code(() => makeCredential(vec('ek-rsa.pub'), Buffer.alloc(2), randomBytes(8)))).toBe('ERR_BAD_REQUEST');
    expect(code(() => makeCredential(vec('ak-rsa.pub'), akName, randomBytes(8)))).toBe('ERR_TPM_UNSUPPORTED_ALG');
    expect(code(() => makeCredential(Buffer.from([0, 1, 0]), akName, randomBytes(8)))).toBe('ERR_TPM_MARSHAL');
  });
});

describe('KDFa / KDFe', () => {
  it('produce the requested length and depend on every input', () => {
    const k = Buffer.alloc(32, 1);
    const a = kdfa(sha256, k, 'STORAGE', Buffer.from('u'), Buffer.alloc(0), 128);
    expect(a).toHaveLength(16);
    expect(kdfa(sha256, k, 'STORAGE', Buffer.from('u'), Buffer.alloc(0), 512)).toHaveLength(64);
    expect(kdfa(sha256, k, 'STORAGE\0', Buffer.from('u'), Buffer.alloc(0), 128)).toEqual(a);
    expect(kdfa(sha256, k, 'INTEGRITY', Buffer.from('u'), Buffer.alloc(0), 128)).not.toEqual(a);
    expect(kdfa(sha256, k, 'STORAGE', Buffer.from('v'), Buffer.alloc(0), 128)).not.toEqual(a);
    // The bit count is part of the input: a 128-bit key is not a prefix of a 256-bit one.
    expect(kdfa(sha256, k, 'STORAGE', Buffer.from('u'), Buffer.alloc(0), 256).subarray(0, 16)).not.toEqual(a);
    expect(kdfa(sha256, k, 'X', Buffer.alloc(0), Buffer.alloc(0), 12)[0]! < 16).toBe(true);
    const e = kdfe(sha256, k, 'IDENTITY', Buffer.from('x'), Buffer.from('y'), 384);
    expect(e).toHaveLength(48);
    expect(kdfe(sha256, k, 'IDENTITY', Buffer.from('y'), Buffer.from('x'), 384)).not.toEqual(e);
  });
});
