/**
 * Qualified Names (TPM 2.0 Library Part 1, §16): QN(object) = nameAlg ‖ H_nameAlg(QN(parent) ‖
 * Name(object)); the qualified name of a hierarchy is its handle. The qualifiedSigner of a quote
 * is the AK's qualified name, so it depends on the AK's parent chain, not on the AK alone.
 */
import { createHash } from 'node:crypto';
import { CustosError } from '../lib/errors.js';
import { tpmHash } from './tpm2/algorithms.js';

/** TPM_RH_ENDORSEMENT, the hierarchy of EKs and of AKs created under them. */
export const TPM_RH_ENDORSEMENT = 0x4000000b;
/** TPM_RH_OWNER (storage hierarchy). */
export const TPM_RH_OWNER = 0x40000001;

/**
 * Qualified name of an object from its parent's qualified name and its own Name.
 * @throws ERR_TPM_MARSHAL if `name` is not nameAlg ‖ digest; ERR_TPM_UNSUPPORTED_ALG for an
 * unknown nameAlg.
 */
export function qualifiedName(parentQualifiedName: Buffer, name: Buffer): Buffer {
  if (name.length < 2) throw new CustosError('ERR_TPM_MARSHAL', 'name: too short', { details: { field: 'name' } });
  const hash = tpmHash(name.readUInt16BE(0), 'name.nameAlg');
  if (name.length !== 2 + hash.digestSize) throw new CustosError('ERR_TPM_MARSHAL', 'name: wrong digest length', { details: { field: 'name' } });
  return Buffer.concat([name.subarray(0, 2), createHash(hash.nodeHash).update(parentQualifiedName).update(name).digest()]);
}

/** The qualified name of a hierarchy: its 4-byte handle. */
export function hierarchyQualifiedName(handle: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(handle >>> 0);
  return b;
}

/**
 * The qualifiedSigner a quote carries for an AK created under a primary EK (what
 * `tpm2_createak -C ek.ctx` does): H(H(TPM_RH_ENDORSEMENT ‖ Name(EK)) ‖ Name(AK)), each with
 * its nameAlg prefix. Record it at enrollment and pass it to verifyQuote.
 */
export function akQualifiedNameUnderEk(ekName: Buffer, akName: Buffer): Buffer {
  return qualifiedName(qualifiedName(hierarchyQualifiedName(TPM_RH_ENDORSEMENT), ekName), akName);
}
