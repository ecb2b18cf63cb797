/**
 * TPM 2.0 algorithm facts, in one table (TPM 2.0 Library Part 2, §6.3 TPM_ALG_ID and §6.4
 * TPM_ECC_CURVE). Everything else in src/attestation resolves an id here once and then works with
 * the resolved entry, so no other file enumerates algorithms.
 *
 * The TPM marshalling in this folder is hand-written: no maintained npm library parses TPM 2.0
 * structures or verifies quotes, so it is built on node:crypto alone.
 */
import { CustosError } from '../../lib/errors.js';

/** TPM_ALG_ID values used by custos (Part 2, §6.3). */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM3_256: 0x0012,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CTR: 0x0040,
  OFB: 0x0041,
  CBC: 0x0042,
  CFB: 0x0043,
  ECB: 0x0044,
} as const;

/** What kind of algorithm an id names. */
export type TpmAlgKind = 'hash' | 'asym' | 'sym' | 'sig' | 'enc' | 'kdf' | 'mode' | 'keyedhash' | 'null';

/** One row of the algorithm table. */
export interface TpmAlgInfo {
  readonly id: number;
  /** TPM spec name without the TPM_ALG_ prefix, e.g. `SHA256`. */
  readonly name: string;
  readonly kind: TpmAlgKind;
  /** Digest size in bytes (hash algorithms only). */
  readonly digestSize?: number;
  /** node:crypto hash name (hash algorithms node supports). */
  readonly nodeHash?: string;
}

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(TPM_ALG).map(([k, v]) => [v, k]));

const HASHES: Record<number, { digestSize: number; nodeHash?: string }> = {
  [TPM_ALG.SHA1]: { digestSize: 20, nodeHash: 'sha1' },
  [TPM_ALG.SHA256]: { digestSize: 32, nodeHash: 'sha256' },
  [TPM_ALG.SHA384]: { digestSize: 48, nodeHash: 'sha384' },
  [TPM_ALG.SHA512]: { digestSize: 64, nodeHash: 'sha512' },
  // SM3 is a TPM hash node does not implement: its digest size is still needed to parse a TPMT_HA.
  [TPM_ALG.SM3_256]: { digestSize: 32 },
};

const KINDS: Record<number, TpmAlgKind> = {
  [TPM_ALG.RSA]: 'asym',
  [TPM_ALG.ECC]: 'asym',
  [TPM_ALG.HMAC]: 'sig',
  [TPM_ALG.AES]: 'sym',
  [TPM_ALG.KEYEDHASH]: 'keyedhash',
  [TPM_ALG.SYMCIPHER]: 'sym',
  [TPM_ALG.XOR]: 'sym',
  [TPM_ALG.NULL]: 'null',
  [TPM_ALG.RSASSA]: 'sig',
  [TPM_ALG.RSAPSS]: 'sig',
  [TPM_ALG.ECDSA]: 'sig',
  [TPM_ALG.ECDAA]: 'sig',
  [TPM_ALG.SM2]: 'sig',
  [TPM_ALG.ECSCHNORR]: 'sig',
  [TPM_ALG.RSAES]: 'enc',
  [TPM_ALG.OAEP]: 'enc',
  [TPM_ALG.ECDH]: 'enc',
  [TPM_ALG.KDF1_SP800_56A]: 'kdf',
  [TPM_ALG.KDF2]: 'kdf',
  [TPM_ALG.KDF1_SP800_108]: 'kdf',
  [TPM_ALG.CTR]: 'mode',
  [TPM_ALG.OFB]: 'mode',
  [TPM_ALG.CBC]: 'mode',
  [TPM_ALG.CFB]: 'mode',
  [TPM_ALG.ECB]: 'mode',
};

/**
 * Looks up a TPM_ALG_ID.
 * @throws CustosError ERR_TPM_UNSUPPORTED_ALG for an id not in the table, naming the field.
 */
export function tpmAlg(id: number, field = 'algorithm'): TpmAlgInfo {
  // Rows are immutable and asked for on every parse (several per quote): built once per id. An id
  // the table refuses is not cached, so it throws with the caller's field name every time.
  const cached = ROWS.get(id);
  if (cached !== undefined) return cached;
  const row = buildRow(id, field);
  ROWS.set(id, row);
  return row;
}

const ROWS = new Map<number, TpmAlgInfo>();

function buildRow(id: number, field: string): TpmAlgInfo {
  const name = NAMES[id];
  const kind = KINDS[id] ?? (HASHES[id] !== undefined ? 'hash' : undefined);
  if (name === undefined || kind === undefined) {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', `Unsupported TPM algorithm 0x${id.toString(16).padStart(4, '0')} in ${field}.`, {
      details: { field, alg: id },
    });
  }
  const hash = HASHES[id];
  return Object.freeze(
    hash === undefined ? { id, name, kind } : { id, name, kind, digestSize: hash.digestSize, ...(hash.nodeHash ? { nodeHash: hash.nodeHash } : {}) },
  );
}

/** A hash algorithm node:crypto can compute. */
export interface TpmHashInfo extends TpmAlgInfo {
  readonly digestSize: number;
  readonly nodeHash: string;
}

/**
 * Resolves a TPMI_ALG_HASH that node:crypto can compute.
 * @throws CustosError ERR_TPM_UNSUPPORTED_ALG if `id` is not such a hash (TPM_ALG_NULL included).
 */
export function tpmHash(id: number, field = 'hashAlg'): TpmHashInfo {
  const info = tpmAlg(id, field);
  if (info.kind !== 'hash' || info.digestSize === undefined || info.nodeHash === undefined) {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', `TPM algorithm ${info.name} in ${field} is not a supported hash.`, {
      details: { field, alg: id },
    });
  }
  return info as TpmHashInfo;
}

/** Digest size of a hash algorithm id, or undefined if it is not a known hash. */
export function tpmDigestSize(id: number): number | undefined {
  return HASHES[id]?.digestSize;
}

/** TPM_ECC_CURVE values (Part 2, §6.4). */
export const TPM_ECC = {
  NIST_P192: 0x0001,
  NIST_P224: 0x0002,
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
} as const;

/** One ECC curve row. */
export interface TpmCurveInfo {
  readonly id: number;
  readonly name: string;
  /** JOSE / node JWK curve name. */
  readonly jwkCrv: 'P-256' | 'P-384' | 'P-521';
  /** node:crypto / OpenSSL curve name for ECDH. */
  readonly nodeCurve: string;
  /** Size of a coordinate in bytes. */
  readonly size: number;
}

const CURVES: Record<number, TpmCurveInfo> = {
  [TPM_ECC.NIST_P256]: { id: TPM_ECC.NIST_P256, name: 'NIST_P256', jwkCrv: 'P-256', nodeCurve: 'prime256v1', size: 32 },
  [TPM_ECC.NIST_P384]: { id: TPM_ECC.NIST_P384, name: 'NIST_P384', jwkCrv: 'P-384', nodeCurve: 'secp384r1', size: 48 },
  [TPM_ECC.NIST_P521]: { id: TPM_ECC.NIST_P521, name: 'NIST_P521', jwkCrv: 'P-521', nodeCurve: 'secp521r1', size: 66 },
};

/**
 * Resolves a TPM_ECC_CURVE id to node curve facts.
 * @throws CustosError ERR_TPM_UNSUPPORTED_ALG for curves custos does not support (P-192, P-224,
 * BN, SM2 curves).
 */
export function tpmCurve(id: number, field = 'curveID'): TpmCurveInfo {
  const c = CURVES[id];
  if (c === undefined) {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', `Unsupported TPM ECC curve 0x${id.toString(16).padStart(4, '0')} in ${field}.`, {
      details: { field, curve: id },
    });
  }
  return c;
}

/** Finds the curve row for a JWK curve name, if supported. */
export function tpmCurveByJwk(crv: string): TpmCurveInfo | undefined {
  return Object.values(CURVES).find((c) => c.jwkCrv === crv);
}

/** Hash id for a node hash name (`sha256` → TPM_ALG_SHA256), if known. */
export function tpmHashByNodeName(name: string): TpmHashInfo | undefined {
  for (const [id, h] of Object.entries(HASHES)) {
    if (h.nodeHash === name.toLowerCase()) return tpmHash(Number(id));
  }
  return undefined;
}
