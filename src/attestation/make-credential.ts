/**
 * TPM2_MakeCredential done by the verifier in software (TPM 2.0 Library Part 1, §24 "Credential
 * Protection", Part 3 §12.6). The output is byte-compatible with what `tpm2_activatecredential`
 * expects: a TPM2B_ID_OBJECT and a TPM2B_ENCRYPTED_SECRET.
 *
 * Hand-written with node:crypto: no maintained npm library implements MakeCredential.
 */
import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes } from 'node:crypto';
import { CustosError } from '../lib/errors.js';
import { TPM_ALG, type TpmHashInfo } from './tpm2/algorithms.js';
import { kdfa, kdfe } from './kdf.js';
import { TpmWriter } from './tpm2/reader.js';
import { parseTpm2bPublic, tpmPublicToKeyObject, type TpmtPublic } from './tpm2/public.js';
import { writeEncryptedSecret, writeIdObject } from './tpm2/credential.js';

/** Result of {@link makeCredential}: both values exactly as tpm2_activatecredential reads them. */
export interface MadeCredential {
  /** TPM2B_ID_OBJECT. */
  readonly credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET. */
  readonly encryptedSecret: Buffer;
}

/** Randomness source; injectable so tests can pin the seed. */
export type RandomSource = (size: number) => Buffer;

function leftPad(b: Buffer, size: number): Buffer {
  return b.length >= size ? b : Buffer.concat([Buffer.alloc(size - b.length), b]);
}

function seedForRsa(ek: Extract<TpmtPublic, { type: 'rsa' }>, rnd: RandomSource): { seed: Buffer; encrypted: Buffer } {
  // Part 1, §24.3 / Annex B.10.3: the seed is nameAlg-digest-sized, encrypted with RSA-OAEP
  // using the EK's nameAlg and the label "IDENTITY" with its NUL.
  const seed = rnd(ek.nameAlg.digestSize);
  const encrypted = publicEncrypt(
    { key: tpmPublicToKeyObject(ek), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: ek.nameAlg.nodeHash, oaepLabel: Buffer.from('IDENTITY\0', 'latin1') },
    seed,
  );
  return { seed, encrypted };
}

function seedForEcc(ek: Extract<TpmtPublic, { type: 'ecc' }>, ephemeralPrivate?: Buffer): { seed: Buffer; encrypted: Buffer } {
  // Part 1, Annex C.6.4 (one-pass Diffie-Hellman, C(1e, 1s)): Z is the x-coordinate of
  // d_e·Q_ek; seed = KDFe(nameAlg, Z, "IDENTITY", x_e, x_ek, digest bits); the encrypted secret
  // is the ephemeral public point as a TPMS_ECC_POINT.
  const size = ek.curve.size;
  const ecdh = createECDH(ek.curve.nodeCurve);
  if (ephemeralPrivate) ecdh.setPrivateKey(ephemeralPrivate);
  else ecdh.generateKeys();
  const pub = ecdh.getPublicKey();
  const xe = pub.subarray(1, 1 + size);
  const ye = pub.subarray(1 + size);
  const ekPoint = Buffer.concat([Buffer.from([4]), leftPad(ek.x, size), leftPad(ek.y, size)]);
  let z: Buffer;
  try {
    z = ecdh.computeSecret(ekPoint);
  } catch (cause) {
    throw new CustosError('ERR_TPM_MARSHAL', 'EK point is not on its curve.', { cause, details: { field: 'unique' } });
  }
  const seed = kdfe(ek.nameAlg, z, 'IDENTITY', xe, leftPad(ek.x, size), ek.nameAlg.digestSize * 8);
  const encrypted = new TpmWriter().tpm2b(xe).tpm2b(ye).toBuffer();
  return { seed, encrypted };
}

/** Options for tests: fixed randomness. */
export interface MakeCredentialOptions {
  /** Source of the RSA seed. */
  readonly random?: RandomSource;
  /** ECC ephemeral private scalar (big-endian, curve-sized). */
  readonly ephemeralPrivate?: Buffer;
}

/**
 * Protects `secret` for the TPM holding `ekPublic`, bound to the object named `akName`, as
 * TPM2_MakeCredential does (Part 1, §24.4–24.5):
 * seed → symKey = KDFa(nameAlg, seed, "STORAGE", Name, "", symmetric.keyBits),
 * encIdentity = AES-CFB(symKey, IV 0, TPM2B_DIGEST(secret)),
 * HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits),
 * integrityHMAC = HMAC(HMACkey, encIdentity ‖ Name).
 * RSA EKs: seed random, RSA-OAEP with label "IDENTITY". ECC EKs (P-256, P-384, P-521): ephemeral
 * ECDH + KDFe.
 *
 * @param ekPublic parsed EK public area, or TPM2B_PUBLIC bytes.
 * @param akName Name of the AK (nameAlg ‖ digest), as the TPM computes it.
 * @param secret 1..digest-size bytes of the EK's nameAlg (the TPM refuses longer credentials).
 * @throws ERR_TPM_MARSHAL for malformed input; ERR_TPM_UNSUPPORTED_ALG if the EK has no AES-CFB
 * symmetric definition or is not an RSA/ECC key; ERR_BAD_REQUEST for a bad secret or Name size.
 */
export function makeCredential(ekPublic: TpmtPublic | Buffer, akName: Buffer, secret: Buffer, options: MakeCredentialOptions = {}): MadeCredential {
  const ek = Buffer.isBuffer(ekPublic) ? parseTpm2bPublic(ekPublic) : ekPublic;
  const nameAlg: TpmHashInfo = ek.nameAlg;
  if (secret.length === 0 || secret.length > nameAlg.digestSize) {
    throw new CustosError('ERR_BAD_REQUEST', `The credential secret must be 1..${nameAlg.digestSize} bytes.`);
  }
  if (akName.length < 4 || akName.length > 66) throw new CustosError('ERR_BAD_REQUEST', 'The AK Name has an invalid size.');
  const sym = ek.symmetric;
  if (sym.algorithm !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || (sym.keyBits !== 128 && sym.keyBits !== 192 && sym.keyBits !== 256)) {
    throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', 'The EK is not a storage key with AES-CFB.', { details: { field: 'symmetric' } });
  }
  const rnd = options.random ?? randomBytes;
  const { seed, encrypted } = ek.type === 'rsa' ? seedForRsa(ek, rnd) : seedForEcc(ek, options.ephemeralPrivate);

  const symKey = kdfa(nameAlg, seed, 'STORAGE', akName, Buffer.alloc(0), sym.keyBits);
  const plain = new TpmWriter().tpm2b(secret).toBuffer();
  const cipher = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(plain), cipher.final()]);
  const hmacKey = kdfa(nameAlg, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), nameAlg.digestSize * 8);
  const integrityHmac = createHmac(nameAlg.nodeHash, hmacKey).update(encIdentity).update(akName).digest();

  return { credentialBlob: writeIdObject({ integrityHmac, encIdentity }), encryptedSecret: writeEncryptedSecret(encrypted) };
}
