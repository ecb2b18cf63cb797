import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkAkPublic, checkEkPublic } from '../../../src/attestation/ak.js';
import { TPM_ALG } from '../../../src/attestation/tpm2/algorithms.js';
import { parseTpm2bPublic, TPMA_OBJECT, type ObjectAttributeName } from '../../../src/attestation/tpm2/public.js';
import { TpmWriter } from '../../../src/attestation/tpm2/reader.js';
import { CustosError } from '../../../src/lib/errors.js';
import { vec } from './vectors.js';

function err(f: () => unknown): CustosError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CustosError);
    return e as CustosError;
  }
  throw new Error('expected a CustosError');
}

function withAttrs(pub: Buffer, set: number, clear: number): Buffer {
  const b = Buffer.from(pub);
  b.writeUInt32BE(((b.readUInt32BE(6) | set) & ~clear) >>> 0, 6);
  return b;
}

function rsaPublic(bits: number, attrs = 0x00050072): Buffer {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const n = Buffer.from(publicKey.export({ format: 'jwk' }).n!, 'base64url');
  const t = new TpmWriter().u16(TPM_ALG.RSA).u16(TPM_ALG.SHA256).u32(attrs).tpm2b(Buffer.alloc(0)).u16(TPM_ALG.NULL).u16(TPM_ALG.RSASSA).u16(TPM_ALG.SHA256).u16(bits).u32(0).tpm2b(n).toBuffer();
  return new TpmWriter().tpm2b(t).toBuffer();
}

describe('checkAkPublic', () => {
  it('accepts the swtpm RSA and ECC AKs and returns Name and KeyObject', () => {
    const rsa = checkAkPublic(vec('ak-rsa.pub'));
    expect(rsa.name).toEqual(vec('ak-rsa.name'));
    expect(rsa.key.asymmetricKeyType).toBe('rsa');
    const ecc = checkAkPublic(vec('ak-ecc-under-p384.pub'));
    expect(ecc.name).toEqual(vec('ak-ecc-under-p384.name'));
    expect(ecc.key.asymmetricKeyType).toBe('ec');
  });

  for (const a of ['restricted', 'sign', 'fixedTPM', 'fixedParent', 'sensitiveDataOrigin'] as ObjectAttributeName[]) {
    it(`an AK without ${a} → ERR_AK_ATTRIBUTES naming it`, () => {
      const e = err(() => checkAkPublic(withAttrs(vec('ak-rsa.pub'), 0, TPMA_OBJECT[a])));
      expect(e.code).toBe('ERR_AK_ATTRIBUTES');
      expect(e.details?.['attribute']).toBe(a);
    });
  }

  it('an AK with decrypt → ERR_AK_ATTRIBUTES naming decrypt', () => {
    const e = err(() => checkAkPublic(withAttrs(vec('ak-ecc.pub'), TPMA_OBJECT.decrypt, 0)));
    expect(e.code).toBe('ERR_AK_ATTRIBUTES');
    expect(e.details?.['attribute']).toBe('decrypt');
  });

  it('the RSA EK (a decryption key) is not an AK', () => {
    expect(err(() => checkAkPublic(vec('ek-rsa.pub'))).code).toBe('ERR_AK_ATTRIBUTES');
  });

  it('RSA-1024 → ERR_AK_ALGORITHM; RSA-3072 is fine', () => {
    expect(err(() => checkAkPublic(rsaPublic(1024))).code).toBe('ERR_AK_ALGORITHM');
    expect(checkAkPublic(rsaPublic(3072)).public.type).toBe('rsa');
  });

  it('ECC P-521 → ERR_AK_ALGORITHM', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
    const j = publicKey.export({ format: 'jwk' });
    const t = new TpmWriter().u16(TPM_ALG.ECC).u16(TPM_ALG.SHA256).u32(0x00050072).tpm2b(Buffer.alloc(0)).u16(TPM_ALG.NULL).u16(TPM_ALG.ECDSA).u16(TPM_ALG.SHA256).u16(0x0005).u16(TPM_ALG.NULL)
      .tpm2b(Buffer.from(j.x!, 'base64url')).tpm2b(Buffer.from(j.y!, 'base64url')).toBuffer();
    expect(err(() => checkAkPublic(new TpmWriter().tpm2b(t).toBuffer())).code).toBe('ERR_AK_ALGORITHM');
  });

  it('garbage → ERR_TPM_MARSHAL', () => {
    expect(err(() => checkAkPublic(Buffer.from([0, 3, 0, 1, 0]))).code).toBe('ERR_TPM_MARSHAL');
  });
});

describe('checkEkPublic', () => {
  it('accepts the swtpm RSA and P-384 EKs (TCG templates: restricted decryption keys fixed to their TPM)', () => {
    for (const f of ['ek-rsa.pub', 'ek-ecc384.pub']) expect(() => checkEkPublic(parseTpm2bPublic(vec(f)))).not.toThrow();
  });

  it('refuses an area that cannot be an EK, naming the attribute: a signing key, unrestricted, not decrypt, duplicable', () => {
    const ek = vec('ek-rsa.pub');
    const cases: [Buffer, ObjectAttributeName, boolean][] = [
      [withAttrs(ek, TPMA_OBJECT.sign, 0), 'sign', false],
      [withAttrs(ek, 0, TPMA_OBJECT.restricted), 'restricted', true],
      [withAttrs(ek, 0, TPMA_OBJECT.decrypt), 'decrypt', true],
      [withAttrs(ek, 0, TPMA_OBJECT.fixedTPM), 'fixedTPM', true],
      [withAttrs(ek, 0, TPMA_OBJECT.fixedParent), 'fixedParent', true],
      // The AK itself, sent as the EK.
      [vec('ak-rsa.pub'), 'decrypt', true],
    ];
    for (const [pub, attribute, expected] of cases) {
      const e = err(() => checkEkPublic(parseTpm2bPublic(pub)));
      expect([e.code, e.details]).toEqual(['ERR_EK_ATTRIBUTES', { attribute, expected }]);
    }
  });
});

describe('checkAkPublic and the signing scheme', () => {
  /** The swtpm RSA AK with its scheme (RSASSA-SHA256, right after the 8 bytes of TPMS_RSA_PARMS' symmetric NULL) replaced. */
  function rsaAkWithScheme(scheme: number, hash?: number): Buffer {
    const pub = vec('ak-rsa.pub');
    const at = 2 + 2 + 2 + 4 + 2 + pub.readUInt16BE(10) + 2; // size, type, nameAlg, attributes, authPolicy, symmetric
    const tail = pub.subarray(at + (pub.readUInt16BE(at) === TPM_ALG.NULL ? 2 : 4));
    const head = Buffer.from(pub.subarray(0, at));
    const s = hash === undefined ? new TpmWriter().u16(scheme).toBuffer() : new TpmWriter().u16(scheme).u16(hash).toBuffer();
    const body = Buffer.concat([head.subarray(2), s, tail]);
    return new TpmWriter().tpm2b(body).toBuffer();
  }

  it('accepts RSASSA and RSAPSS with SHA-256; refuses no scheme, RSAES and SHA-1', () => {
    expect(() => checkAkPublic(rsaAkWithScheme(TPM_ALG.RSASSA, TPM_ALG.SHA256))).not.toThrow();
    expect(() => checkAkPublic(rsaAkWithScheme(TPM_ALG.RSAPSS, TPM_ALG.SHA256))).not.toThrow();
    expect(err(() => checkAkPublic(rsaAkWithScheme(TPM_ALG.NULL))).code).toBe('ERR_AK_ALGORITHM');
    expect(err(() => checkAkPublic(rsaAkWithScheme(TPM_ALG.RSAES))).code).toBe('ERR_AK_ALGORITHM');
    expect(err(() => checkAkPublic(rsaAkWithScheme(TPM_ALG.RSASSA, TPM_ALG.SHA1))).code).toBe('ERR_AK_ALGORITHM');
  });
});
