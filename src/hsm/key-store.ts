import type { HashName, KeyType, SignScheme } from './key-types.js';

/**
 * The custody boundary. Every private or secret key custos holds lives behind this port; the
 * PKCS#11 adapter is the production implementation, the in-memory one exists for unit tests of
 * logic above the port only. Keys are named by a stable `id` (hex, stored as CKA_ID) that the
 * store records per key version, so the store and the HSM can be reconciled after a crash.
 *
 * Every method rejects with a CustosError: ERR_HSM_UNAVAILABLE / ERR_HSM_AUTH when the token
 * cannot be used, ERR_HSM_OBJECT_NOT_FOUND when no object has the id, ERR_HSM otherwise.
 */
export interface KeyStore {
  /** Generates a key pair (private: token, private, sensitive, never extractable) under `id`. */
  generateKeyPair(spec: KeySpec): Promise<KeyObjectInfo>;
  /** Generates an AES secret key (token, private, sensitive, never extractable) under `id`. */
  generateSecretKey(spec: KeySpec): Promise<KeyObjectInfo>;
  /** Finds the objects of one key by id; null when the token holds none. */
  findKey(id: string): Promise<KeyObjectInfo | null>;
  /**
   * Every custos key on the token (for reconciliation after a crash). `expected`: ids the caller
   * believes are there; an adapter whose view of the token can lag (another process's objects)
   * looks again before leaving one of them out.
   */
  listKeys(expected?: readonly string[]): Promise<KeyObjectInfo[]>;
  /** SubjectPublicKeyInfo DER of an asymmetric key. */
  getPublicKey(id: string): Promise<Buffer>;
  /**
   * Signs a digest that the caller computed with `hash`. ECDSA returns raw r‖s (fixed size);
   * RSA returns the signature bytes. PSS uses MGF1 with the same hash and salt = hash length.
   */
  sign(id: string, scheme: SignScheme, hash: HashName, digest: Buffer): Promise<Buffer>;
  /** Verifies a signature (raw r‖s for ECDSA) over a digest inside the HSM. */
  verify(id: string, scheme: SignScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean>;
  /** AES-256-GCM with a fresh 96-bit IV from the HSM RNG; returns iv and ciphertext‖tag (16-byte tag). */
  encrypt(id: string, plaintext: Buffer, aad: Buffer): Promise<{ iv: Buffer; ciphertext: Buffer }>;
  /** AES-256-GCM open; rejects with ERR_DECRYPT when the tag does not verify. */
  decrypt(id: string, iv: Buffer, ciphertext: Buffer, aad: Buffer): Promise<Buffer>;
  /** Random bytes from the HSM RNG (C_GenerateRandom). */
  randomBytes(length: number): Promise<Buffer>;
  /** Destroys every object with this id. Idempotent: no object is not an error. */
  destroy(id: string): Promise<void>;
  /** Cheap liveness probe: is the module loaded, the token present, the login valid? */
  health(): Promise<HsmHealth>;
  /** Releases sessions and finalizes the module. */
  close(): Promise<void>;
}

export interface KeySpec {
  /** Stable id (lowercase hex, 16 bytes = 32 hex chars) → CKA_ID. */
  id: string;
  /** Readable label → CKA_LABEL, e.g. `custos:issuer:v3`. */
  label: string;
  type: KeyType;
}

export interface KeyObjectInfo {
  id: string;
  label: string;
  /** Inferred from the objects' attributes. */
  type: KeyType;
  /** RFC 7512 PKCS#11 URI naming the private/secret object (no PIN in it, ever). */
  uri: string;
  /** What the token says of the private/secret object. */
  sensitive: boolean;
  extractable: boolean;
}

export type HsmHealth =
  | { ok: true; module: string; tokenLabel: string; sessionsInUse: number; sessionsIdle: number }
  | { ok: false; part: 'module' | 'token' | 'login' | 'session'; code: 'ERR_HSM_UNAVAILABLE' | 'ERR_HSM_AUTH'; reason: string };
