/**
 * Attestation Key checks: the AK must be a restricted signing key that never left its TPM
 * (TPM 2.0 Library Part 1, §25.2 and Part 2, §8.3), with an algorithm and size custos accepts.
 * Pure: bytes in, parsed key or CustosError out.
 */
import type { KeyObject } from 'node:crypto';
import { CustosError } from '../lib/errors.js';
import { TPM_ALG, TPM_ECC } from './tpm2/algorithms.js';
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
const EK_MUST_SET: readonly ObjectAttributeName[] = ['restricted', 'decrypt', 'fixedTPM', 'fixedParent'];
const EK_MUST_CLEAR: readonly ObjectAttributeName[] = ['sign'];

/**
 * Checks that an EK public area is what the TCG EK templates make (EK Credential Profile §2.2.1):
 * a restricted decryption key (a storage key, so ActivateCredential can use it) that never
 * leaves its TPM — fixedTPM and fixedParent set, sign clear. The bits are the host's word until
 * the credential is activated, so this is no proof by itself: it refuses early an area that
 * cannot be an EK (a signing key sent by mistake, a software key made to look like one carelessly).
 *
 * @throws ERR_EK_ATTRIBUTES with `details.attribute` naming the first wrong attribute.
 */
export function checkEkPublic(pub: TpmtPublic): void {
  for (const a of EK_MUST_SET) {
    if (!pub.objectAttributes[a]) throw new CustosError('ERR_EK_ATTRIBUTES', `The EK must have ${a} set.`, { details: { attribute: a, expected: true } });
  }
  for (const a of EK_MUST_CLEAR) {
    if (pub.objectAttributes[a]) throw new CustosError('ERR_EK_ATTRIBUTES', `The EK must have ${a} clear.`, { details: { attribute: a, expected: false } });
  }
}

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
  // A restricted signing key carries its scheme (a TPM refuses to make one without): quotes are
  // then checked against it, and an AK whose quotes custos could not verify (ECDAA, SM2, Schnorr)
  // or that signs with SHA-1 is refused at enrollment rather than failing every quote after.
  const schemes: readonly number[] = pub.type === 'rsa' ? [TPM_ALG.RSASSA, TPM_ALG.RSAPSS] : [TPM_ALG.ECDSA];
  if (!schemes.includes(pub.scheme.scheme) || pub.scheme.hashAlg === undefined || pub.scheme.hashAlg === TPM_ALG.SHA1) {
    throw new CustosError('ERR_AK_ALGORITHM', `${pub.type === 'rsa' ? 'RSA AKs must sign with RSASSA or RSAPSS' : 'ECC AKs must sign with ECDSA'} and a hash stronger than SHA-1.`, { details: { scheme: pub.scheme.scheme, hashAlg: pub.scheme.hashAlg ?? null } });
  }
  return { public: pub, name: objectName(pub), key: tpmPublicToKeyObject(pub) };
}
