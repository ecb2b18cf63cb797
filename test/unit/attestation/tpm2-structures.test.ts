import { describe, expect, it } from 'vitest';
import { TPM_ALG, TPM_ECC, tpmAlg, tpmCurve, tpmHash, tpmHashByNodeName } from '../../../src/attestation/tpm2/algorithms.js';
import { TPM_GENERATED_VALUE, TPM_ST_ATTEST, parseTpmsAttest } from '../../../src/attestation/tpm2/attest.js';
import {
  CREDENTIAL_FILE_MAGIC,
  parseEncryptedSecret,
  parseIdObject,
  readCredentialFile,
  writeCredentialFile,
  writeEncryptedSecret,
  writeIdObject,
} from '../../../src/attestation/tpm2/credential.js';
import { parsePcrSelection, writePcrSelection } from '../../../src/attestation/tpm2/pcr-selection.js';
import {
  decodeObjectAttributes,
  objectName,
  parseTpm2bPublic,
  parseTpmtPublic,
  toTpm2bPublic,
  tpmPublicEqualsSpki,
  tpmPublicToKeyObject,
} from '../../../src/attestation/tpm2/public.js';
import { TpmReader } from '../../../src/attestation/tpm2/reader.js';
import { parseTpmtSignature, toNodeVerify, writeTpmtSignature } from '../../../src/attestation/tpm2/signature.js';
import { CustosError } from '../../../src/lib/errors.js';
import { vec } from './vectors.js';

function codeOf(f: () => unknown): { code: string; field?: unknown } {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CustosError);
    return { code: (e as CustosError).code, field: (e as CustosError).details?.['field'] };
  }
  throw new Error('expected a CustosError');
}

describe('algorithm table', () => {
  it('resolves hashes, curves and rejects unknown ids', () => {
    expect(tpmHash(TPM_ALG.SHA256)).toMatchObject({ name: 'SHA256', digestSize: 32, nodeHash: 'sha256' });
    expect(tpmHash(TPM_ALG.SHA384).digestSize).toBe(48);
    expect(tpmCurve(TPM_ECC.NIST_P384)).toMatchObject({ jwkCrv: 'P-384', size: 48 });
    expect(tpmHashByNodeName('SHA1')?.id).toBe(TPM_ALG.SHA1);
    expect(tpmHashByNodeName('md5')).toBeUndefined();
    expect(codeOf(() => tpmAlg(0x7777)).code).toBe('ERR_TPM_UNSUPPORTED_ALG');
    expect(codeOf(() => tpmHash(TPM_ALG.NULL)).code).toBe('ERR_TPM_UNSUPPORTED_ALG');
    expect(codeOf(() => tpmHash(TPM_ALG.SM3_256)).code).toBe('ERR_TPM_UNSUPPORTED_ALG');
    expect(codeOf(() => tpmCurve(TPM_ECC.NIST_P192)).code).toBe('ERR_TPM_UNSUPPORTED_ALG');
  });
});

describe('TpmReader', () => {
  it('checks every length and names the field', () => {
    const r = new TpmReader(Buffer.from([0, 5, 1, 2]));
    expect(codeOf(() => r.tpm2b('thing'))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'thing' });
    const r2 = new TpmReader(Buffer.from([0, 1, 9, 7]));
    expect(r2.tpm2b('a')).toEqual(Buffer.from([9]));
    expect(codeOf(() => r2.end('whole'))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'whole' });
    expect(codeOf(() => new TpmReader(Buffer.from([2])).yesNo('safe'))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'safe' });
    expect(codeOf(() => new TpmReader(Buffer.alloc(7)).u64('clock'))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'clock' });
  });
});

describe('TPM2B_PUBLIC', () => {
  const akRsa = vec('ak-rsa.pub');
  const ekRsa = vec('ek-rsa.pub');
  const ekEcc = vec('ek-ecc384.pub');

  it('parses an RSA AK with decoded attributes, scheme and Name', () => {
    const p = parseTpm2bPublic(akRsa);
    expect(p.type).toBe('rsa');
    expect(p.nameAlg.name).toBe('SHA256');
    expect(p.objectAttributes).toMatchObject({ restricted: true, sign: true, decrypt: false, fixedTPM: true, fixedParent: true, sensitiveDataOrigin: true, userWithAuth: true });
    expect(p.scheme).toEqual({ scheme: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 });
    expect(p.symmetric).toEqual({ algorithm: TPM_ALG.NULL });
    if (p.type === 'rsa') {
      expect(p.keyBits).toBe(2048);
      expect(p.exponent).toBe(65537);
      expect(p.modulus).toHaveLength(256);
    }
    expect(objectName(p)).toEqual(vec('ak-rsa.name'));
    expect(toTpm2bPublic(p)).toEqual(akRsa);
    expect(parseTpmtPublic(akRsa.subarray(2)).raw).toEqual(akRsa.subarray(2));
  });

  it('parses the RSA EK (policy, AES-128-CFB) and the P-384 EK (SHA-384, AES-256-CFB)', () => {
    const r = parseTpm2bPublic(ekRsa);
    expect(r.objectAttributes).toMatchObject({ restricted: true, decrypt: true, sign: false, adminWithPolicy: true, userWithAuth: false });
    expect(r.authPolicy).toHaveLength(32);
    expect(r.symmetric).toEqual({ algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB });
    expect(objectName(r)).toEqual(vec('ek-rsa.name'));
    const e = parseTpm2bPublic(ekEcc);
    expect(e.type).toBe('ecc');
    expect(e.nameAlg.name).toBe('SHA384');
    expect(e.symmetric).toEqual({ algorithm: TPM_ALG.AES, keyBits: 256, mode: TPM_ALG.CFB });
    if (e.type === 'ecc') {
      expect(e.curve.name).toBe('NIST_P384');
      expect(e.kdf).toEqual({ scheme: TPM_ALG.NULL });
      expect(e.x).toHaveLength(48);
    }
    expect(objectName(e)).toEqual(vec('ek-ecc384.name'));
  });

  it('converts to KeyObjects equal to the EK certificates’ keys', async () => {
    const { X509Certificate } = await import('node:crypto');
    const { trimCertificatePadding } = await import('../../../src/attestation/ek-chain.js');
    const rsaSpki = new X509Certificate(trimCertificatePadding(vec('ek-rsa-cert.nv.der'))).publicKey.export({ type: 'spki', format: 'der' });
    const eccSpki = new X509Certificate(trimCertificatePadding(vec('ek-ecc384-cert.nv.der'))).publicKey.export({ type: 'spki', format: 'der' });
    expect(tpmPublicEqualsSpki(parseTpm2bPublic(ekRsa), rsaSpki)).toBe(true);
    expect(tpmPublicEqualsSpki(parseTpm2bPublic(ekEcc), eccSpki)).toBe(true);
    expect(tpmPublicEqualsSpki(parseTpm2bPublic(ekRsa), eccSpki)).toBe(false);
    expect(tpmPublicEqualsSpki(parseTpm2bPublic(ekEcc), rsaSpki)).toBe(false);
    expect(tpmPublicEqualsSpki(parseTpm2bPublic(ekEcc), Buffer.from('nope'))).toBe(false);
    expect(tpmPublicToKeyObject(parseTpm2bPublic(vec('ak-ecc.pub'))).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('rejects truncated and over-long structures, trailing bytes and wrong sizes', () => {
    expect(codeOf(() => parseTpm2bPublic(akRsa.subarray(0, akRsa.length - 1))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseTpm2bPublic(Buffer.concat([akRsa, Buffer.alloc(1)]))).code).toBe('ERR_TPM_MARSHAL');
    const bigger = Buffer.from(akRsa);
    bigger.writeUInt16BE(akRsa.length - 1, 0);
    bigger[bigger.length - 1] = 0;
    expect(codeOf(() => parseTpm2bPublic(Buffer.concat([bigger, Buffer.alloc(1)]))).code).toBe('ERR_TPM_MARSHAL');
    const shorter = Buffer.from(akRsa);
    shorter.writeUInt16BE(akRsa.length - 3, 0);
    expect(codeOf(() => parseTpm2bPublic(shorter)).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseTpm2bPublic(Buffer.alloc(0))).code).toBe('ERR_TPM_MARSHAL');
  });

  it('rejects unknown types, hashes, curves and reserved attribute bits', () => {
    const t = Buffer.from(akRsa);
    t.writeUInt16BE(TPM_ALG.KEYEDHASH, 2);
    expect(codeOf(() => parseTpm2bPublic(t))).toEqual({ code: 'ERR_TPM_UNSUPPORTED_ALG', field: 'type' });
    const h = Buffer.from(akRsa);
    h.writeUInt16BE(0x0099, 4);
    expect(codeOf(() => parseTpm2bPublic(h))).toEqual({ code: 'ERR_TPM_UNSUPPORTED_ALG', field: 'nameAlg' });
    const a = Buffer.from(akRsa);
    a.writeUInt32BE((a.readUInt32BE(6) | 0x80000000) >>> 0, 6);
    expect(codeOf(() => parseTpm2bPublic(a))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'objectAttributes' });
    const c = Buffer.from(vec('ak-ecc.pub'));
    // type(2) nameAlg(2) attrs(4) authPolicy(2+0) sym(2) scheme(2+2) → curveID at 2+16.
    expect(c.readUInt16BE(2 + 16)).toBe(TPM_ECC.NIST_P256);
    c.writeUInt16BE(0x0010, 2 + 16);
    expect(codeOf(() => parseTpm2bPublic(c))).toEqual({ code: 'ERR_TPM_UNSUPPORTED_ALG', field: 'curveID' });
    expect(decodeObjectAttributes(0x00050072)).toMatchObject({ restricted: true, sign: true, fixedTPM: true });
  });
});

describe('TPMS_ATTEST', () => {
  const q = vec('quote-rsa-sha256.quote');
  it('parses magic, type, signer, extraData, clockInfo, firmware and the quote body', () => {
    const a = parseTpmsAttest(q);
    expect(a.magic).toBe(TPM_GENERATED_VALUE);
    expect(a.type).toBe(TPM_ST_ATTEST.QUOTE);
    expect(a.qualifiedSigner).toEqual(vec('ak-rsa.qname'));
    expect(a.extraData.toString('hex')).toBe(vec('quote-rsa-sha256.nonce.hex').toString().trim());
    expect(a.clockInfo.safe).toBe(true);
    expect(typeof a.clockInfo.clock).toBe('bigint');
    expect(a.attested.kind).toBe('quote');
    if (a.attested.kind === 'quote') {
      expect(a.attested.pcrSelect).toEqual([{ hashAlg: TPM_ALG.SHA256, indices: [0, 1, 2, 3, 7], sizeofSelect: 3 }]);
      expect(a.attested.pcrDigest).toHaveLength(32);
    }
  });
  it('parses a certify body and keeps other bodies raw', () => {
    const name = Buffer.concat([Buffer.from([0, 0x0b]), Buffer.alloc(32, 1)]);
    const head = q.subarray(0, 6 + 2 + 34 + 2 + 32 + 17 + 8);
    const c = Buffer.from(head);
    c.writeUInt16BE(TPM_ST_ATTEST.CERTIFY, 4);
    const tb = (b: Buffer) => Buffer.concat([Buffer.from([0, b.length]), b]);
    const certify = parseTpmsAttest(Buffer.concat([c, tb(name), tb(name)]));
    expect(certify.attested).toEqual({ kind: 'certify', name, qualifiedName: name });
    const t = Buffer.from(head);
    t.writeUInt16BE(TPM_ST_ATTEST.TIME, 4);
    expect(parseTpmsAttest(Buffer.concat([t, Buffer.alloc(5)])).attested).toEqual({ kind: 'other', raw: Buffer.alloc(5) });
  });
  it('rejects every truncation and any trailing byte', () => {
    for (let n = 0; n < q.length; n++) expect(codeOf(() => parseTpmsAttest(q.subarray(0, n))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseTpmsAttest(Buffer.concat([q, Buffer.from([0])]))).field).toBe('TPMS_ATTEST');
  });
});

describe('TPML_PCR_SELECTION', () => {
  it('round-trips and decodes the bitmap', () => {
    const b = writePcrSelection([{ hashAlg: TPM_ALG.SHA256, indices: [0, 7, 16, 23] }, { hashAlg: TPM_ALG.SHA1, indices: [] }]);
    expect(parsePcrSelection(b)).toEqual([
      { hashAlg: TPM_ALG.SHA256, indices: [0, 7, 16, 23], sizeofSelect: 3 },
      { hashAlg: TPM_ALG.SHA1, indices: [], sizeofSelect: 3 },
    ]);
  });
  it('rejects absurd counts, sizes, non-hash banks and trailing bytes', () => {
    expect(codeOf(() => parsePcrSelection(Buffer.from([0, 0, 1, 0]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parsePcrSelection(Buffer.from([0, 0, 0, 1, 0, 0x0b, 40, ...Buffer.alloc(40)]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parsePcrSelection(Buffer.from([0, 0, 0, 1, 0, 0x01, 3, 1, 0, 0]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parsePcrSelection(Buffer.from([0, 0, 0, 1, 0x77, 0x77, 3, 1, 0, 0]))).code).toBe('ERR_TPM_UNSUPPORTED_ALG');
    expect(codeOf(() => parsePcrSelection(Buffer.from([0, 0, 0, 0, 9]))).code).toBe('ERR_TPM_MARSHAL');
  });
});

describe('TPMT_SIGNATURE', () => {
  it('parses RSASSA and ECDSA signatures and round-trips them', () => {
    const rsa = parseTpmtSignature(vec('quote-rsa-sha256.sig'));
    expect(rsa.sigAlg).toBe(TPM_ALG.RSASSA);
    expect(rsa.hash.nodeHash).toBe('sha256');
    expect(writeTpmtSignature(rsa)).toEqual(vec('quote-rsa-sha256.sig'));
    const ecc = parseTpmtSignature(vec('quote-ecc-sha256.sig'));
    expect(ecc.sigAlg).toBe(TPM_ALG.ECDSA);
    expect(writeTpmtSignature(ecc)).toEqual(vec('quote-ecc-sha256.sig'));
  });
  it('maps to node verify arguments only for the matching key type', () => {
    const rsaKey = tpmPublicToKeyObject(parseTpm2bPublic(vec('ak-rsa.pub')));
    const eccKey = tpmPublicToKeyObject(parseTpm2bPublic(vec('ak-ecc.pub')));
    const rsa = parseTpmtSignature(vec('quote-rsa-sha256.sig'));
    const ecc = parseTpmtSignature(vec('quote-ecc-sha256.sig'));
    expect(toNodeVerify(rsa, rsaKey)?.algorithm).toBe('sha256');
    expect(toNodeVerify(rsa, eccKey)).toBeUndefined();
    expect(toNodeVerify(ecc, rsaKey)).toBeUndefined();
    expect(toNodeVerify(ecc, eccKey)?.signature).toHaveLength(64);
    if (ecc.sigAlg === TPM_ALG.ECDSA) {
      expect(toNodeVerify({ ...ecc, r: Buffer.concat([Buffer.from([1]), ecc.r]) }, eccKey)).toBeUndefined();
      expect(toNodeVerify({ ...ecc, r: Buffer.concat([Buffer.from([0]), ecc.r]) }, eccKey)?.signature).toHaveLength(64);
    }
  });
  it('rejects HMAC / unknown schemes, SHA-less hashes, truncation and trailing bytes', () => {
    expect(codeOf(() => parseTpmtSignature(Buffer.from([0, 0x05, 0, 0x0b])))).toEqual({ code: 'ERR_TPM_UNSUPPORTED_ALG', field: 'sigAlg' });
    expect(codeOf(() => parseTpmtSignature(Buffer.from([0, 0x14, 0, 0x10, 0, 1, 1])))).toEqual({ code: 'ERR_TPM_UNSUPPORTED_ALG', field: 'signature.hash' });
    const s = vec('quote-ecc-sha256.sig');
    expect(codeOf(() => parseTpmtSignature(s.subarray(0, s.length - 1))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseTpmtSignature(Buffer.concat([s, Buffer.alloc(2)]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseTpmtSignature(Buffer.from([0, 0x14, 0, 0x0b, 0, 0]))).field).toBe('signature.sig');
  });
});

describe('credential structures and the tpm2-tools credential file', () => {
  it('reads the tpm2_makecredential file and writes it back byte for byte', () => {
    const file = vec('credential-rsa.bin');
    expect(file.readUInt32BE(0)).toBe(CREDENTIAL_FILE_MAGIC);
    const c = readCredentialFile(file);
    const id = parseIdObject(c.credentialBlob);
    expect(id.integrityHmac).toHaveLength(32);
    expect(id.encIdentity).toHaveLength(2 + 32);
    expect(parseEncryptedSecret(c.encryptedSecret)).toHaveLength(256);
    expect(writeCredentialFile(c)).toEqual(file);
    expect(writeIdObject(id)).toEqual(c.credentialBlob);
    expect(writeEncryptedSecret(parseEncryptedSecret(c.encryptedSecret))).toEqual(c.encryptedSecret);
    const ecc = readCredentialFile(vec('credential-ecc384.bin'));
    expect(parseIdObject(ecc.credentialBlob).integrityHmac).toHaveLength(48);
    expect(parseEncryptedSecret(ecc.encryptedSecret)).toHaveLength(2 + 48 + 2 + 48);
  });
  it('rejects a wrong magic or version, truncation and trailing bytes', () => {
    const file = vec('credential-rsa.bin');
    const m = Buffer.from(file);
    m[0] = 0;
    expect(codeOf(() => readCredentialFile(m))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'magic' });
    const v = Buffer.from(file);
    v.writeUInt32BE(2, 4);
    expect(codeOf(() => readCredentialFile(v))).toEqual({ code: 'ERR_TPM_MARSHAL', field: 'version' });
    for (const n of [0, 7, 9, 50, file.length - 1]) expect(codeOf(() => readCredentialFile(file.subarray(0, n))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => readCredentialFile(Buffer.concat([file, Buffer.alloc(1)]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseEncryptedSecret(Buffer.from([0, 0]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => parseIdObject(Buffer.from([0, 2, 0, 0]))).code).toBe('ERR_TPM_MARSHAL');
    expect(codeOf(() => writeCredentialFile({ credentialBlob: Buffer.from([0, 1]), encryptedSecret: Buffer.from([0, 1, 1]) })).code).toBe('ERR_TPM_MARSHAL');
  });
});
