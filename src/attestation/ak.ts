/**
 * Attestation Key checks: the AK must be a restricted signing key that never left its TPM
 * (TPM 2.0 Library Part 1, §25.2 and Part 2, §8.3), with an algorithm and size custos accepts.
 * Pure: bytes in, parsed key or CustosError out.
 */
import type { KeyObject } from 'node:crypto';
import { CustosError } from '../lib/errors.js';
import { TPM_ECC } from './tpm2/algorithms.js';
import { objectName, parseTpm2bPublic, tpmPublicToKeyObject, type ObjectAttributeName, type TpmtPublic } from './tpm2/public.js';

/** A checked AK: its public area, its Name and a ready node:crypto key (verify costs one call). */
export interface AkPublic {
  readonly public: TpmtPublic;
  /** nameAlg ‖ H(TPMT_PUBLIC). */
  readonly name: Buffer;
  /** Public key for crypto.verify; build once, reuse for every quote. */
  readonly key: KeyObject;
}

const MUST_SET: readonly ObjectAttributeName[] = ['restricted', 'sign', 'fixedTPM', 'fixedParent', 'sensitiveDataOrigin'];
const MUST_CLEAR: readonly ObjectAttributeName[] = ['decrypt'];

/**
 * Parses and checks an AK public area (TPM2B_PUBLIC bytes or an already parsed TPMT_PUBLIC).
 * Checks: restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin set and decrypt clear
 * (a restricted signing key only signs digests the TPM computed itself, so a quote cannot be
 * forged with it); RSA of at least 2048 bits or ECC NIST P-256/P-384.
 *
 * @throws ERR_TPM_MARSHAL / ERR_TPM_UNSUPPORTED_ALG if the bytes do not parse;
 * ERR_AK_ATTRIBUTES with `details.attribute` naming the first wrong attribute;
 * ERR_AK_ALGORITHM for other key types or sizes.
 */
export function checkAkPublic(tpm2bPublic: Buffer | TpmtPublic): AkPublic {
  const pub = Buffer.isBuffer(tpm2bPublic) ? parseTpm2bPublic(tpm2bPublic) : tpm2bPublic;
  for (const a of MUST_SET) {
    if (!pub.objectAttributes[a]) throw new CustosError('ERR_AK_ATTRIBUTES', `The AK must have ${a} set.`, { details: { attribute: a, expected: true } });
  }
  for (const a of MUST_CLEAR) {
    if (pub.objectAttributes[a]) throw new CustosError('ERR_AK_ATTRIBUTES', `The AK must have ${a} clear.`, { details: { attribute: a, expected: false } });
  }
  if (pub.type === 'rsa') {
    if (pub.keyBits < 2048) throw new CustosError('ERR_AK_ALGORITHM', 'RSA AKs must have at least 2048 bits.', { details: { keyBits: pub.keyBits } });
  } else if (pub.curve.id !== TPM_ECC.NIST_P256 && pub.curve.id !== TPM_ECC.NIST_P384) {
    throw new CustosError('ERR_AK_ALGORITHM', 'ECC AKs must use NIST P-256 or P-384.', { details: { curve: pub.curve.name } });
  }
  return { public: pub, name: objectName(pub), key: tpmPublicToKeyObject(pub) };
}
