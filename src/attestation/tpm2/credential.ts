/**
 * TPM2B_ID_OBJECT (Part 2, §12.4.3), TPM2B_ENCRYPTED_SECRET (§11.4.33) and the credential file
 * that `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads:
 * UINT32 0xBADCC0DE ‖ UINT32 version 1 ‖ TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET.
 * Hand-written: no maintained npm library handles these structures.
 */
import { TpmReader, TpmWriter, marshalError } from './reader.js';

/** Magic of the tpm2-tools credential file. */
export const CREDENTIAL_FILE_MAGIC = 0xbadcc0de;
/** Version of the tpm2-tools credential file. */
export const CREDENTIAL_FILE_VERSION = 1;

/** Contents of a TPM2B_ID_OBJECT: TPM2B_DIGEST integrityHMAC ‖ encIdentity. */
export interface IdObject {
  readonly integrityHmac: Buffer;
  readonly encIdentity: Buffer;
}

// sizeof(TPMS_ID_OBJECT) = (2 + 64) + (2 + 64).
const MAX_ID_OBJECT = 132;
// sizeof(TPMU_ENCRYPTED_SECRET) is 512 (RSA-4096 or ECC point at most).
const MAX_SECRET = 512;

/**
 * Parses a TPM2B_ID_OBJECT.
 * @throws ERR_TPM_MARSHAL for any length inconsistency or trailing bytes.
 */
export function parseIdObject(bytes: Buffer): IdObject {
  const r = new TpmReader(bytes);
  const v = readIdObject(r);
  r.end('TPM2B_ID_OBJECT');
  return v;
}

function readIdObject(r: TpmReader): IdObject {
  return r.sized('credentialBlob', (inner) => {
    const integrityHmac = inner.tpm2b('credentialBlob.integrityHMAC', 64);
    if (integrityHmac.length === 0) throw marshalError('credentialBlob.integrityHMAC', 'empty');
    const encIdentity = inner.bytes(inner.remaining, 'credentialBlob.encIdentity');
    if (encIdentity.length < 2 || encIdentity.length > 66) throw marshalError('credentialBlob.encIdentity', `${encIdentity.length} bytes`);
    return { integrityHmac, encIdentity };
  });
}

/** Marshals a TPM2B_ID_OBJECT. */
export function writeIdObject(v: IdObject): Buffer {
  const inner = new TpmWriter().tpm2b(v.integrityHmac).bytes(v.encIdentity).toBuffer();
  if (inner.length > MAX_ID_OBJECT) throw marshalError('credentialBlob', 'too long');
  return new TpmWriter().tpm2b(inner).toBuffer();
}

/**
 * Parses a TPM2B_ENCRYPTED_SECRET and returns its contents (RSA-OAEP ciphertext or a marshalled
 * TPMS_ECC_POINT).
 * @throws ERR_TPM_MARSHAL for an empty or inconsistent size, or trailing bytes.
 */
export function parseEncryptedSecret(bytes: Buffer): Buffer {
  const r = new TpmReader(bytes);
  const v = r.tpm2b('encryptedSecret', MAX_SECRET);
  if (v.length === 0) throw marshalError('encryptedSecret', 'empty');
  r.end('TPM2B_ENCRYPTED_SECRET');
  return v;
}

/** Marshals a TPM2B_ENCRYPTED_SECRET around `secret`. */
export function writeEncryptedSecret(secret: Buffer): Buffer {
  return new TpmWriter().tpm2b(secret).toBuffer();
}

/** The two parts of a tpm2-tools credential file, each as a full TPM2B. */
export interface CredentialFile {
  /** TPM2B_ID_OBJECT bytes. */
  readonly credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET bytes. */
  readonly encryptedSecret: Buffer;
}

/**
 * Writes the `tpm2_activatecredential -i` file from a TPM2B_ID_OBJECT and a
 * TPM2B_ENCRYPTED_SECRET (both validated first).
 * @throws ERR_TPM_MARSHAL if either part is malformed.
 */
export function writeCredentialFile(v: CredentialFile): Buffer {
  parseIdObject(v.credentialBlob);
  parseEncryptedSecret(v.encryptedSecret);
  return Buffer.concat([new TpmWriter().u32(CREDENTIAL_FILE_MAGIC).u32(CREDENTIAL_FILE_VERSION).toBuffer(), v.credentialBlob, v.encryptedSecret]);
}

/**
 * Reads a `tpm2_makecredential -o` file.
 * @throws ERR_TPM_MARSHAL for a wrong magic or version, malformed parts or trailing bytes.
 */
export function readCredentialFile(bytes: Buffer): CredentialFile {
  const r = new TpmReader(bytes);
  if (r.u32('magic') !== CREDENTIAL_FILE_MAGIC) throw marshalError('magic', 'not a tpm2-tools credential file');
  if (r.u32('version') !== CREDENTIAL_FILE_VERSION) throw marshalError('version', 'unsupported credential file version');
  const s1 = r.offset;
  readIdObject(r);
  const credentialBlob = r.since(s1);
  const s2 = r.offset;
  const secret = r.tpm2b('encryptedSecret', MAX_SECRET);
  if (secret.length === 0) throw marshalError('encryptedSecret', 'empty');
  const encryptedSecret = r.since(s2);
  r.end('credential file');
  return { credentialBlob, encryptedSecret };
}
