import { createPublicKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { CustosError } from '../../lib/errors.js';
import { HASH_BYTES, KEY_TYPES, type HashName, type KeyType, type KeyTypeInfo, type SignScheme } from '../key-types.js';
import type { ObjectAttrs, WireAttribute, WireMechanism, WorkerConsts } from './protocol.js';

/**
 * Everything the adapter needs to know about PKCS#11 mechanisms and templates for each custos
 * key type, resolved once from the key-type table.
 */

/** DER of DigestInfo up to the digest (RFC 8017 §9.2 note 1), for CKM_RSA_PKCS over a digest. */
export const DIGEST_INFO_PREFIX: Readonly<Record<HashName, Buffer>> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

const HASH_MECH: Readonly<Record<HashName, [number, number]>> = {
  sha256: [pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256],
  sha384: [pkcs11js.CKM_SHA384, pkcs11js.CKG_MGF1_SHA384],
  sha512: [pkcs11js.CKM_SHA512, pkcs11js.CKG_MGF1_SHA512],
};

export const WORKER_CONSTS: WorkerConsts = {
  CKF_OS_LOCKING_OK: pkcs11js.CKF_OS_LOCKING_OK,
  CKF_SERIAL_SESSION: pkcs11js.CKF_SERIAL_SESSION,
  CKF_RW_SESSION: pkcs11js.CKF_RW_SESSION,
  CKU_USER: pkcs11js.CKU_USER,
  // pkcs11js exports no CKS_* constants; values from pkcs11t.h (PKCS#11 v2.40 §5.6).
  CKS_RO_USER_FUNCTIONS: 1,
  CKS_RW_USER_FUNCTIONS: 3,
  CKR_CRYPTOKI_ALREADY_INITIALIZED: pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED,
  CKR_USER_ALREADY_LOGGED_IN: pkcs11js.CKR_USER_ALREADY_LOGGED_IN,
  CKR_GENERAL_ERROR: pkcs11js.CKR_GENERAL_ERROR,
  CKA_CLASS: pkcs11js.CKA_CLASS,
  CKA_TOKEN: pkcs11js.CKA_TOKEN,
  CKA_ID: pkcs11js.CKA_ID,
  CKA_LABEL: pkcs11js.CKA_LABEL,
  CKA_KEY_TYPE: pkcs11js.CKA_KEY_TYPE,
  CKA_SENSITIVE: pkcs11js.CKA_SENSITIVE,
  CKA_EXTRACTABLE: pkcs11js.CKA_EXTRACTABLE,
  CKA_EC_PARAMS: pkcs11js.CKA_EC_PARAMS,
  CKA_EC_POINT: pkcs11js.CKA_EC_POINT,
  CKA_MODULUS: pkcs11js.CKA_MODULUS,
  CKA_MODULUS_BITS: pkcs11js.CKA_MODULUS_BITS,
  CKA_PUBLIC_EXPONENT: pkcs11js.CKA_PUBLIC_EXPONENT,
  CKA_VALUE_LEN: pkcs11js.CKA_VALUE_LEN,
  CKO_PRIVATE_KEY: pkcs11js.CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY: pkcs11js.CKO_PUBLIC_KEY,
  CKO_SECRET_KEY: pkcs11js.CKO_SECRET_KEY,
  CKK_EC: pkcs11js.CKK_EC,
  CKK_RSA: pkcs11js.CKK_RSA,
  CKK_AES: pkcs11js.CKK_AES,
  CKM_AES_GCM: pkcs11js.CKM_AES_GCM,
  // SoftHSM2 ≥ 2.5 and current HSMs read CK_GCM_PARAMS with ulIvBits (PKCS#11 v2.40 errata).
  CK_PARAMS_GCM: pkcs11js.CK_PARAMS_AES_GCM,
};

/** Sign/verify mechanisms by `scheme` (ECDSA, PKCS#1 over DigestInfo) or `rsa-pss:hash`. */
export function signMechanisms(): Record<string, WireMechanism & { kind: 'ec' | 'rsa' }> {
  const out: Record<string, WireMechanism & { kind: 'ec' | 'rsa' }> = {
    ecdsa: { mechanism: pkcs11js.CKM_ECDSA, kind: 'ec' },
    'rsa-pkcs1': { mechanism: pkcs11js.CKM_RSA_PKCS, kind: 'rsa' },
  };
  for (const hash of Object.keys(HASH_MECH) as HashName[]) {
    const [hashAlg, mgf] = HASH_MECH[hash];
    out[`rsa-pss:${hash}`] = {
      mechanism: pkcs11js.CKM_RSA_PKCS_PSS,
      kind: 'rsa',
      // PKCS#11 v2.40 §2.1.14: MGF1 with the same hash, salt length = hash length.
      parameter: { type: pkcs11js.CK_PARAMS_RSA_PSS, hashAlg, mgf, saltLen: HASH_BYTES[hash] },
    };
  }
  return out;
}

/**
 * Resolves the mechanism name and the bytes to hand to C_Sign/C_Verify for a digest.
 *
 * @throws CustosError ERR_BAD_DIGEST_LENGTH when the digest does not have the hash's length,
 *   ERR_KEY_PURPOSE for an unknown scheme.
 */
export function signInput(scheme: SignScheme, hash: HashName, digest: Buffer): { mech: string; data: Buffer } {
  if (!Object.hasOwn(HASH_BYTES, hash)) throw new CustosError('ERR_KEY_PURPOSE', 'unsupported hash');
  if (digest.length !== HASH_BYTES[hash]) throw new CustosError('ERR_BAD_DIGEST_LENGTH');
  if (scheme === 'ecdsa') return { mech: 'ecdsa', data: digest };
  if (scheme === 'rsa-pkcs1') return { mech: 'rsa-pkcs1', data: Buffer.concat([DIGEST_INFO_PREFIX[hash], digest]) };
  if (scheme === 'rsa-pss') return { mech: `rsa-pss:${hash}`, data: digest };
  throw new CustosError('ERR_KEY_PURPOSE', 'unsupported signature scheme');
}

const bool = (type: number, value: boolean): WireAttribute => ({ type, value });

/** Key pair generation mechanism and templates (private: token, private, sensitive, never extractable). */
export function keyPairTemplates(info: KeyTypeInfo, id: string, label: string): { mech: WireMechanism; pub: WireAttribute[]; priv: WireAttribute[] } {
  const common: WireAttribute[] = [
    { type: pkcs11js.CKA_ID, value: Buffer.from(id, 'hex') },
    { type: pkcs11js.CKA_LABEL, value: label },
    bool(pkcs11js.CKA_TOKEN, true),
  ];
  const priv: WireAttribute[] = [
    ...common,
    bool(pkcs11js.CKA_PRIVATE, true),
    bool(pkcs11js.CKA_SENSITIVE, true),
    bool(pkcs11js.CKA_EXTRACTABLE, false),
    bool(pkcs11js.CKA_SIGN, true),
    bool(pkcs11js.CKA_DECRYPT, false),
    bool(pkcs11js.CKA_UNWRAP, false),
    bool(pkcs11js.CKA_DERIVE, false),
  ];
  const pub: WireAttribute[] = [...common, bool(pkcs11js.CKA_PRIVATE, false), bool(pkcs11js.CKA_VERIFY, true), bool(pkcs11js.CKA_ENCRYPT, false), bool(pkcs11js.CKA_WRAP, false)];
  if (info.kind === 'ec') {
    pub.push({ type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from(info.ecParamsHex as string, 'hex') });
    return { mech: { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, pub, priv };
  }
  if (info.kind === 'rsa') {
    pub.push({ type: pkcs11js.CKA_MODULUS_BITS, value: info.bits }, { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
    return { mech: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN }, pub, priv };
  }
  throw new CustosError('ERR_KEY_TYPE', 'not an asymmetric key type');
}

/** AES key generation template (token, private, sensitive, never extractable, encrypt/decrypt only). */
export function secretKeyTemplate(info: KeyTypeInfo, id: string, label: string): { mech: WireMechanism; tpl: WireAttribute[] } {
  if (info.kind !== 'aes') throw new CustosError('ERR_KEY_TYPE', 'not a secret key type');
  return {
    mech: { mechanism: pkcs11js.CKM_AES_KEY_GEN },
    tpl: [
      { type: pkcs11js.CKA_ID, value: Buffer.from(id, 'hex') },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: info.bits / 8 },
      bool(pkcs11js.CKA_TOKEN, true),
      bool(pkcs11js.CKA_PRIVATE, true),
      bool(pkcs11js.CKA_SENSITIVE, true),
      bool(pkcs11js.CKA_EXTRACTABLE, false),
      bool(pkcs11js.CKA_ENCRYPT, true),
      bool(pkcs11js.CKA_DECRYPT, true),
      bool(pkcs11js.CKA_SIGN, false),
      bool(pkcs11js.CKA_VERIFY, false),
      bool(pkcs11js.CKA_WRAP, false),
      bool(pkcs11js.CKA_UNWRAP, false),
      bool(pkcs11js.CKA_DERIVE, false),
    ],
  };
}

/** Infers the custos key type of an object from its attributes; null for anything else. */
export function keyTypeOf(a: ObjectAttrs): KeyType | null {
  if (a.keyType === pkcs11js.CKK_EC && a.ecParams) {
    const hex = Buffer.from(a.ecParams).toString('hex');
    for (const info of Object.values(KEY_TYPES)) if (info.kind === 'ec' && info.ecParamsHex === hex) return info.type;
    return null;
  }
  if (a.keyType === pkcs11js.CKK_RSA && a.modulusBits !== undefined) {
    for (const info of Object.values(KEY_TYPES)) if (info.kind === 'rsa' && info.bits === a.modulusBits) return info.type;
    return null;
  }
  if (a.keyType === pkcs11js.CKK_AES && a.valueLen !== undefined) {
    for (const info of Object.values(KEY_TYPES)) if (info.kind === 'aes' && info.bits === a.valueLen * 8) return info.type;
  }
  return null;
}

/**
 * Builds SubjectPublicKeyInfo DER from token attributes. CKA_EC_POINT is a DER OCTET STRING
 * around the uncompressed point (PKCS#11 v2.40 §2.3.3), which is unwrapped here.
 *
 * @throws CustosError ERR_HSM when the token returns a point or modulus that does not parse.
 */
export function spkiFromToken(v: { kind: 'ec'; point: Uint8Array } | { kind: 'rsa'; n: Uint8Array; e: Uint8Array }, info: KeyTypeInfo): Buffer {
  try {
    if (v.kind === 'ec') {
      let p = Buffer.from(v.point);
      if (p[0] === 0x04 && p.length !== 1 + 2 * (info.bits / 8)) {
        // DER OCTET STRING: tag 04, short or long length form.
        const lenByte = p[1] as number;
        const start = lenByte < 0x80 ? 2 : 2 + (lenByte & 0x7f);
        p = p.subarray(start);
      }
      const size = info.bits / 8;
      if (p.length !== 1 + 2 * size || p[0] !== 0x04) throw new Error('unexpected EC point');
      const jwk = { kty: 'EC', crv: info.curve as string, x: p.subarray(1, 1 + size).toString('base64url'), y: p.subarray(1 + size).toString('base64url') };
      return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
    }
    const jwk = { kty: 'RSA', n: Buffer.from(v.n).toString('base64url'), e: Buffer.from(v.e).toString('base64url') };
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
  } catch (e) {
    throw new CustosError('ERR_HSM', 'the token returned a public key that does not parse', { cause: e });
  }
}
