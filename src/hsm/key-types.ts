/**
 * Every fact about a custos key type lives in this one table; callers resolve an entry once and
 * never enumerate key types again.
 */
export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'aes-256';
export type KeyPurpose = 'sign' | 'encrypt';
export type HashName = 'sha256' | 'sha384' | 'sha512';
/** How an asymmetric key signs. ECDSA keys only do `ecdsa`; RSA keys do either padding. */
export type SignScheme = 'ecdsa' | 'rsa-pkcs1' | 'rsa-pss';

export interface KeyTypeInfo {
  readonly type: KeyType;
  readonly kind: 'ec' | 'rsa' | 'aes';
  readonly purposes: readonly KeyPurpose[];
  /** EC: JOSE/WebCrypto curve name. */
  readonly curve?: 'P-256' | 'P-384';
  /** EC: DER of the namedCurve OBJECT IDENTIFIER (CKA_EC_PARAMS). */
  readonly ecParamsHex?: string;
  /** RSA modulus bits, EC field bits, or AES key bits. */
  readonly bits: number;
  /** Default digest for signing with this key. */
  readonly hash: HashName;
  /** JOSE algorithm for the default scheme (ES256, ES384, RS256, …). */
  readonly jwsAlg?: string;
  /** Raw (r‖s) ECDSA signature size in bytes, or RSA signature size. */
  readonly signatureBytes?: number;
  readonly defaultScheme?: SignScheme;
}

export const KEY_TYPES: Readonly<Record<KeyType, KeyTypeInfo>> = {
  'ec-p256': {
    type: 'ec-p256', kind: 'ec', purposes: ['sign'], curve: 'P-256', ecParamsHex: '06082a8648ce3d030107',
    bits: 256, hash: 'sha256', jwsAlg: 'ES256', signatureBytes: 64, defaultScheme: 'ecdsa',
  },
  'ec-p384': {
    type: 'ec-p384', kind: 'ec', purposes: ['sign'], curve: 'P-384', ecParamsHex: '06052b81040022',
    bits: 384, hash: 'sha384', jwsAlg: 'ES384', signatureBytes: 96, defaultScheme: 'ecdsa',
  },
  'rsa-2048': {
    type: 'rsa-2048', kind: 'rsa', purposes: ['sign'], bits: 2048, hash: 'sha256', jwsAlg: 'RS256',
    signatureBytes: 256, defaultScheme: 'rsa-pkcs1',
  },
  'rsa-3072': {
    type: 'rsa-3072', kind: 'rsa', purposes: ['sign'], bits: 3072, hash: 'sha256', jwsAlg: 'RS256',
    signatureBytes: 384, defaultScheme: 'rsa-pkcs1',
  },
  'aes-256': { type: 'aes-256', kind: 'aes', purposes: ['encrypt'], bits: 256, hash: 'sha256' },
};

export const HASH_BYTES: Readonly<Record<HashName, number>> = { sha256: 32, sha384: 48, sha512: 64 };

export function keyTypeInfo(type: string): KeyTypeInfo {
  const info = (KEY_TYPES as Record<string, KeyTypeInfo | undefined>)[type];
  if (!info) throw new TypeError(`unknown key type ${type}`);
  return info;
}

export function isKeyType(type: string): type is KeyType {
  return Object.hasOwn(KEY_TYPES, type);
}
