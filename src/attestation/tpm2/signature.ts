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

/** r ‖ s as fixed-size big-endian halves (IEEE P1363), or undefined when either is too long. */
function p1363(r: Buffer, s: Buffer, size: number): Buffer | undefined {
  // r and s are unsigned integers; a TPM may drop leading zeros, never add bytes beyond the size.
  const strip = (b: Buffer): Buffer | undefined => {
    let v = b;
    while (v.length > size && v[0] === 0) v = v.subarray(1);
    return v.length > size ? undefined : v;
  };
  const rr = strip(r);
  const ss = strip(s);
  if (rr === undefined || ss === undefined) return undefined;
  const out = Buffer.alloc(2 * size);
  out.set(rr, size - rr.length);
  out.set(ss, 2 * size - ss.length);
  return out;
}

// Curve field size per EC KeyObject: asymmetricKeyDetails builds a fresh object on every read and
// a quote verification asks once per quote for a key that is usually cached by the caller.
const curveSizes = new WeakMap<KeyObject, number | undefined>();
function curveSize(key: KeyObject): number | undefined {
  if (curveSizes.has(key)) return curveSizes.get(key);
  const crv = key.asymmetricKeyDetails?.namedCurve;
  const size = crv === 'prime256v1' ? 32 : crv === 'secp384r1' ? 48 : crv === 'secp521r1' ? 66 : undefined;
  curveSizes.set(key, size);
  return size;
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
    const size = curveSize(key);
    if (size === undefined) return undefined;
    const signature = p1363(sig.r, sig.s, size);
    if (signature === undefined) return undefined;
    return { algorithm: sig.hash.nodeHash, key: verifyKeyInput(key, 'ecdsa'), signature };
  }
  if (kt !== 'rsa') return undefined;
  return { algorithm: sig.hash.nodeHash, key: verifyKeyInput(key, sig.sigAlg === TPM_ALG.RSASSA ? 'pkcs1' : 'pss'), signature: sig.sig };
}

type VerifyScheme = 'ecdsa' | 'pkcs1' | 'pss';

// The key-plus-options objects crypto.verify takes are immutable and depend only on the key and
// the scheme: one per (KeyObject, scheme), kept as long as the KeyObject lives.
const verifyInputs = new WeakMap<KeyObject, Partial<Record<VerifyScheme, VerifyKeyObjectInput>>>();
function verifyKeyInput(key: KeyObject, scheme: VerifyScheme): VerifyKeyObjectInput {
  let byScheme = verifyInputs.get(key);
  if (byScheme === undefined) {
    byScheme = {};
    verifyInputs.set(key, byScheme);
  }
  return (byScheme[scheme] ??= Object.freeze(
    scheme === 'ecdsa'
      ? { key, dsaEncoding: 'ieee-p1363' as const }
      : scheme === 'pkcs1'
        ? { key, padding: constants.RSA_PKCS1_PADDING }
        : { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
  ));
}
