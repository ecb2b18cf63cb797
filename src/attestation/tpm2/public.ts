/**
 * TPM2B_PUBLIC / TPMT_PUBLIC for RSA and ECC keys (TPM 2.0 Library Part 2, §12.2), object Names
 * (Part 1, §16) and conversion to node:crypto KeyObjects.
 *
 * Hand-written: no maintained npm library parses TPM 2.0 public areas.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { CustosError } from '../../lib/errors.js';
import { TPM_ALG, tpmAlg, tpmCurve, tpmHash, type TpmCurveInfo, type TpmHashInfo } from './algorithms.js';
import { TpmReader, marshalError } from './reader.js';

/** TPMA_OBJECT bits (Part 2, §8.3.2). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
  x509sign: 1 << 19,
} as const;

/** Names of the TPMA_OBJECT flags. */
export type ObjectAttributeName = keyof typeof TPMA_OBJECT;

/** Decoded TPMA_OBJECT: one boolean per named flag, plus the raw value. */
export type ObjectAttributes = { readonly [K in ObjectAttributeName]: boolean } & { readonly raw: number };

const DEFINED_BITS = Object.values(TPMA_OBJECT).reduce((a, b) => a | b, 0);

/** TPMT_SYM_DEF_OBJECT; `algorithm` is TPM_ALG_NULL when the key has no symmetric part. */
export interface SymDefObject {
  readonly algorithm: number;
  readonly keyBits?: number;
  readonly mode?: number;
}

/** TPMT_*_SCHEME (RSA / ECC); `scheme` TPM_ALG_NULL means none. */
export interface AsymScheme {
  readonly scheme: number;
  readonly hashAlg?: number;
  /** ECDAA count. */
  readonly count?: number;
}

interface TpmtPublicBase {
  readonly nameAlg: TpmHashInfo;
  readonly objectAttributes: ObjectAttributes;
  readonly authPolicy: Buffer;
  readonly symmetric: SymDefObject;
  readonly scheme: AsymScheme;
  /** The exact TPMT_PUBLIC bytes (what the Name hashes). */
  readonly raw: Buffer;
}

/** An RSA TPMT_PUBLIC. */
export interface TpmtPublicRsa extends TpmtPublicBase {
  readonly type: 'rsa';
  readonly keyBits: number;
  /** Public exponent as stored (0 in the structure means 65537, resolved here). */
  readonly exponent: number;
  /** Modulus (TPM2B_PUBLIC_KEY_RSA). */
  readonly modulus: Buffer;
}

/** An ECC TPMT_PUBLIC. */
export interface TpmtPublicEcc extends TpmtPublicBase {
  readonly type: 'ecc';
  readonly curve: TpmCurveInfo;
  readonly kdf: AsymScheme;
  readonly x: Buffer;
  readonly y: Buffer;
}

/** A parsed TPMT_PUBLIC (RSA or ECC). */
export type TpmtPublic = TpmtPublicRsa | TpmtPublicEcc;

/** Decodes TPMA_OBJECT; reserved bits set are a marshalling error (a TPM never sets them). */
export function decodeObjectAttributes(raw: number): ObjectAttributes {
  if ((raw & ~DEFINED_BITS) >>> 0 !== 0) throw marshalError('objectAttributes', `reserved bits set: 0x${(raw >>> 0).toString(16)}`);
  const out: Record<string, boolean | number> = { raw: raw >>> 0 };
  for (const [k, bit] of Object.entries(TPMA_OBJECT)) out[k] = (raw & bit) !== 0;
  return out as unknown as ObjectAttributes;
}

function readSymDef(r: TpmReader): SymDefObject {
  const algorithm = r.u16('symmetric.algorithm');
  if (algorithm === TPM_ALG.NULL) return { algorithm };
  const info = tpmAlg(algorithm, 'symmetric.algorithm');
  if (info.kind !== 'sym' || algorithm === TPM_ALG.XOR || algorithm === TPM_ALG.SYMCIPHER) {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', 'symmetric.algorithm is not a block cipher.', { details: { field: 'symmetric.algorithm', alg: algorithm } });
  }
  const keyBits = r.u16('symmetric.keyBits');
  const mode = r.u16('symmetric.mode');
  if (tpmAlg(mode, 'symmetric.mode').kind !== 'mode') {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', 'symmetric.mode is not a cipher mode.', { details: { field: 'symmetric.mode', alg: mode } });
  }
  return { algorithm, keyBits, mode };
}

function readScheme(r: TpmReader, field: string, allowed: readonly number[]): AsymScheme {
  const scheme = r.u16(`${field}.scheme`);
  if (scheme === TPM_ALG.NULL) return { scheme };
  tpmAlg(scheme, `${field}.scheme`);
  if (!allowed.includes(scheme)) {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', `${field}.scheme not allowed for this key type.`, { details: { field: `${field}.scheme`, alg: scheme } });
  }
  // Part 2, §11.2.3.2 / §11.2.5: RSAES carries no details; all others a hash (ECDAA also a count).
  if (scheme === TPM_ALG.RSAES) return { scheme };
  const hashAlg = r.u16(`${field}.hashAlg`);
  tpmAlg(hashAlg, `${field}.hashAlg`);
  if (scheme === TPM_ALG.ECDAA) return { scheme, hashAlg, count: r.u16(`${field}.count`) };
  return { scheme, hashAlg };
}

/**
 * Parses a TPMT_PUBLIC from `r` (RSA and ECC only).
 * @throws ERR_TPM_MARSHAL on any length problem; ERR_TPM_UNSUPPORTED_ALG for other key types,
 * hash or curve ids outside the table.
 */
export function readTpmtPublic(r: TpmReader): TpmtPublic {
  const start = r.offset;
  const type = r.u16('type');
  if (type !== TPM_ALG.RSA && type !== TPM_ALG.ECC) {
    tpmAlg(type, 'type');
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', 'Only RSA and ECC public areas are supported.', { details: { field: 'type', alg: type } });
  }
  const nameAlg = tpmHash(r.u16('nameAlg'), 'nameAlg');
  const objectAttributes = decodeObjectAttributes(r.u32('objectAttributes'));
  const authPolicy = r.tpm2b('authPolicy', 64);
  const symmetric = readSymDef(r);
  if (type === TPM_ALG.RSA) {
    const scheme = readScheme(r, 'scheme', [TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.RSAES, TPM_ALG.OAEP]);
    const keyBits = r.u16('keyBits');
    const rawExp = r.u32('exponent');
    const modulus = r.tpm2b('unique.rsa', 512);
    if (keyBits < 1024 || keyBits > 4096 || keyBits % 8 !== 0) throw marshalError('keyBits', `unsupported RSA size ${keyBits}`);
    if (modulus.length !== keyBits / 8) throw marshalError('unique.rsa', `modulus is ${modulus.length} bytes for keyBits ${keyBits}`);
    const exponent = rawExp === 0 ? 65537 : rawExp;
    if (exponent < 3 || exponent % 2 === 0) throw marshalError('exponent', 'invalid RSA exponent');
    const raw = r.since(start);
    return { type: 'rsa', nameAlg, objectAttributes, authPolicy, symmetric, scheme, keyBits, exponent, modulus, raw };
  }
  const scheme = readScheme(r, 'scheme', [TPM_ALG.ECDSA, TPM_ALG.ECDH, TPM_ALG.ECDAA, TPM_ALG.SM2, TPM_ALG.ECSCHNORR]);
  const curve = tpmCurve(r.u16('curveID'));
  const kdf = readScheme(r, 'kdf', [TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF2, TPM_ALG.KDF1_SP800_108]);
  const x = r.tpm2b('unique.ecc.x', 128);
  const y = r.tpm2b('unique.ecc.y', 128);
  // A TPM template may carry an empty unique (or one of all-zero coordinates); the public area
  // of a created key has coordinates no longer than the curve size.
  if (x.length > curve.size) throw marshalError('unique.ecc.x', 'longer than the curve size');
  if (y.length > curve.size) throw marshalError('unique.ecc.y', 'longer than the curve size');
  const raw = r.since(start);
  return { type: 'ecc', nameAlg, objectAttributes, authPolicy, symmetric, scheme, curve, kdf, x, y, raw };
}

/**
 * Parses a TPMT_PUBLIC that fills `bytes` exactly.
 * @throws ERR_TPM_MARSHAL (wrong lengths, trailing bytes), ERR_TPM_UNSUPPORTED_ALG.
 */
export function parseTpmtPublic(bytes: Buffer): TpmtPublic {
  const r = new TpmReader(bytes);
  const p = readTpmtPublic(r);
  r.end('TPMT_PUBLIC');
  return p;
}

/**
 * Parses a TPM2B_PUBLIC (what `tpm2_createak -u` / `tpm2_readpublic -o` write): the size must
 * cover the TPMT_PUBLIC exactly and nothing may follow.
 * @throws ERR_TPM_MARSHAL, ERR_TPM_UNSUPPORTED_ALG.
 */
export function parseTpm2bPublic(bytes: Buffer): TpmtPublic {
  const r = new TpmReader(bytes);
  const p = r.sized('TPM2B_PUBLIC', readTpmtPublic);
  r.end('TPM2B_PUBLIC');
  return p;
}

/** Marshals a TPMT_PUBLIC back into a TPM2B_PUBLIC. */
export function toTpm2bPublic(pub: TpmtPublic): Buffer {
  const size = Buffer.alloc(2);
  size.writeUInt16BE(pub.raw.length);
  return Buffer.concat([size, pub.raw]);
}

/**
 * Computes the object Name: nameAlg (UINT16) ‖ H_nameAlg(TPMT_PUBLIC) (Part 1, §16).
 */
export function objectName(pub: TpmtPublic): Buffer {
  const alg = Buffer.alloc(2);
  alg.writeUInt16BE(pub.nameAlg.id);
  return Buffer.concat([alg, createHash(pub.nameAlg.nodeHash).update(pub.raw).digest()]);
}

function leftPad(b: Buffer, size: number): Buffer {
  return b.length >= size ? b : Buffer.concat([Buffer.alloc(size - b.length), b]);
}

/**
 * Converts the public area to a node:crypto public KeyObject.
 * @throws ERR_TPM_MARSHAL if the key material is not a valid key (e.g. a point not on the curve,
 * or an empty template unique).
 */
export function tpmPublicToKeyObject(pub: TpmtPublic): KeyObject {
  try {
    if (pub.type === 'rsa') {
      const e = Buffer.alloc(4);
      e.writeUInt32BE(pub.exponent);
      let i = 0;
      while (i < 3 && e[i] === 0) i++;
      return createPublicKey({ key: { kty: 'RSA', n: pub.modulus.toString('base64url'), e: e.subarray(i).toString('base64url') }, format: 'jwk' });
    }
    return createPublicKey({
      key: {
        kty: 'EC',
        crv: pub.curve.jwkCrv,
        x: leftPad(pub.x, pub.curve.size).toString('base64url'),
        y: leftPad(pub.y, pub.curve.size).toString('base64url'),
      },
      format: 'jwk',
    });
  } catch (cause) {
    throw new CustosError('ERR_TPM_MARSHAL', 'unique: not a valid public key.', { cause, details: { field: 'unique' } });
  }
}

/**
 * True when a KeyObject (e.g. from an X.509 SubjectPublicKeyInfo) is the same public key as the
 * TPM public area: RSA modulus and exponent, or ECC curve and point.
 */
export function tpmPublicEqualsKey(pub: TpmtPublic, key: KeyObject): boolean {
  if (key.type !== 'public' && key.type !== 'private') return false;
  const jwk = key.export({ format: 'jwk' });
  if (pub.type === 'rsa') {
    if (jwk.kty !== 'RSA' || jwk.n === undefined || jwk.e === undefined) return false;
    const n = Buffer.from(jwk.n, 'base64url');
    const e = Buffer.from(jwk.e, 'base64url');
    return n.equals(pub.modulus) && e.readUIntBE(0, Math.min(e.length, 6)) === pub.exponent && e.length <= 6;
  }
  if (jwk.kty !== 'EC' || jwk.crv !== pub.curve.jwkCrv || jwk.x === undefined || jwk.y === undefined) return false;
  return (
    Buffer.from(jwk.x, 'base64url').equals(leftPad(pub.x, pub.curve.size)) &&
    Buffer.from(jwk.y, 'base64url').equals(leftPad(pub.y, pub.curve.size))
  );
}

/**
 * True when a DER SubjectPublicKeyInfo holds the same key as the TPM public area; false for a
 * different key or an SPKI node cannot read.
 */
export function tpmPublicEqualsSpki(pub: TpmtPublic, spkiDer: Buffer): boolean {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch {
    return false;
  }
  return tpmPublicEqualsKey(pub, key);
}
