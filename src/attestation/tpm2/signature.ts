/**
 * TPMT_SIGNATURE (TPM 2.0 Library Part 2, §11.3.4) for RSASSA, RSAPSS and ECDSA, and its
 * conversion into what node:crypto.verify takes.
 * Hand-written: no maintained npm library parses TPM 2.0 structures.
 */
import { constants, type KeyObject, type VerifyKeyObjectInput } from 'node:crypto';
import { CustosError } from '../../lib/errors.js';
import { TPM_ALG, tpmAlg, tpmHash, type TpmHashInfo } from './algorithms.js';
import { TpmReader, TpmWriter, marshalError } from './reader.js';

/** A parsed TPMT_SIGNATURE. */
export type TpmtSignature =
  | { readonly sigAlg: typeof TPM_ALG.RSASSA | typeof TPM_ALG.RSAPSS; readonly hash: TpmHashInfo; readonly sig: Buffer }
  | { readonly sigAlg: typeof TPM_ALG.ECDSA; readonly hash: TpmHashInfo; readonly r: Buffer; readonly s: Buffer };

/**
 * Parses TPMT_SIGNATURE bytes (what `tpm2_quote -s` writes in its default TSS format).
 * @throws ERR_TPM_MARSHAL on length problems or trailing bytes; ERR_TPM_UNSUPPORTED_ALG for
 * signature schemes other than RSASSA, RSAPSS, ECDSA, or a hash node cannot compute.
 */
export function parseTpmtSignature(bytes: Buffer): TpmtSignature {
  const r = new TpmReader(bytes);
  const sigAlg = r.u16('sigAlg');
  let out: TpmtSignature;
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) {
    const hash = tpmHash(r.u16('signature.hash'), 'signature.hash');
    const sig = r.tpm2b('signature.sig', 512);
    if (sig.length === 0) throw marshalError('signature.sig', 'empty');
    out = { sigAlg, hash, sig };
  } else if (sigAlg === TPM_ALG.ECDSA) {
    const hash = tpmHash(r.u16('signature.hash'), 'signature.hash');
    const sr = r.tpm2b('signature.r', 66);
    const ss = r.tpm2b('signature.s', 66);
    out = { sigAlg, hash, r: sr, s: ss };
  } else {
    tpmAlg(sigAlg, 'sigAlg');
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', 'Only RSASSA, RSAPSS and ECDSA signatures are supported.', { details: { field: 'sigAlg', alg: sigAlg } });
  }
  r.end('TPMT_SIGNATURE');
  return out;
}

/** Marshals a TPMT_SIGNATURE. */
export function writeTpmtSignature(sig: TpmtSignature): Buffer {
  const w = new TpmWriter().u16(sig.sigAlg).u16(sig.hash.id);
  if (sig.sigAlg === TPM_ALG.ECDSA) w.tpm2b(sig.r).tpm2b(sig.s);
  else w.tpm2b(sig.sig);
  return w.toBuffer();
}

function fixed(b: Buffer, size: number): Buffer | undefined {
  // r and s are unsigned integers; a TPM may drop leading zeros, never add bytes beyond the size.
  let v = b;
  while (v.length > size && v[0] === 0) v = v.subarray(1);
  if (v.length > size) return undefined;
  return Buffer.concat([Buffer.alloc(size - v.length), v]);
}

/** Arguments for crypto.verify(algorithm, data, key, signature). */
export interface NodeVerifyArgs {
  readonly algorithm: string;
  readonly key: VerifyKeyObjectInput;
  readonly signature: Buffer;
}

/**
 * Converts a TPMT_SIGNATURE into node:crypto.verify arguments for `key`. RSAPSS accepts any salt
 * length (a TPM uses the largest or the digest size, depending on the implementation).
 * Returns undefined when the signature cannot belong to this key type (RSA signature for an EC
 * key and the reverse, or ECDSA r/s longer than the curve).
 */
export function toNodeVerify(sig: TpmtSignature, key: KeyObject): NodeVerifyArgs | undefined {
  const kt = key.asymmetricKeyType;
  if (sig.sigAlg === TPM_ALG.ECDSA) {
    if (kt !== 'ec') return undefined;
    const crv = key.asymmetricKeyDetails?.namedCurve;
    const size = crv === 'prime256v1' ? 32 : crv === 'secp384r1' ? 48 : crv === 'secp521r1' ? 66 : undefined;
    if (size === undefined) return undefined;
    const rr = fixed(sig.r, size);
    const ss = fixed(sig.s, size);
    if (rr === undefined || ss === undefined) return undefined;
    return { algorithm: sig.hash.nodeHash, key: { key, dsaEncoding: 'ieee-p1363' }, signature: Buffer.concat([rr, ss]) };
  }
  if (kt !== 'rsa') return undefined;
  if (sig.sigAlg === TPM_ALG.RSASSA) return { algorithm: sig.hash.nodeHash, key: { key, padding: constants.RSA_PKCS1_PADDING }, signature: sig.sig };
  return {
    algorithm: sig.hash.nodeHash,
    key: { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
    signature: sig.sig,
  };
}
