import {
  constants,
  createCipheriv,
  createDecipheriv,
  generateKeyPairSync,
  privateEncrypt,
  publicDecrypt,
  randomBytes as nodeRandomBytes,
  type KeyObject,
} from 'node:crypto';
import { CustosError } from '../lib/errors.js';
import type { HsmHealth, KeyObjectInfo, KeySpec, KeyStore } from './key-store.js';
import { HASH_BYTES, keyTypeInfo, type HashName, type SignScheme } from './key-types.js';
import { ecdsaSignDigest, ecdsaVerifyDigest, pssSignDigest, pssVerifyDigest } from './memory-prehash.js';
import { formatPkcs11Uri } from './pkcs11-uri.js';

interface MemoryKey {
  spec: KeySpec;
  privateKey?: KeyObject;
  publicKey?: KeyObject;
  secret?: Buffer;
}

const ID_RE = /^(?:[0-9a-f]{2}){1,64}$/;

/**
 * In-memory KeyStore on node:crypto, for unit tests of the layers above the port only. Same
 * semantics and error codes as the PKCS#11 adapter (the shared contract suite checks both); keys
 * live in process memory, so this is never a production custody boundary.
 */
export class MemoryKeyStore implements KeyStore {
  private readonly keys = new Map<string, MemoryKey>();
  private available = true;
  private closed = false;

  constructor(private readonly tokenLabel = 'custos-memory') {}

  /** Simulates the HSM going away (false) and coming back (true). */
  setAvailable(available: boolean): void {
    this.available = available;
  }

  private check(): void {
    if (this.closed || !this.available) {
      throw new CustosError('ERR_HSM_UNAVAILABLE', 'the HSM is unavailable', { details: { part: 'token' } });
    }
  }

  private static checkId(id: string): void {
    if (typeof id !== 'string' || !ID_RE.test(id)) throw new CustosError('ERR_BAD_REQUEST', 'key id must be lowercase hex');
  }

  private get(id: string): MemoryKey {
    MemoryKeyStore.checkId(id);
    const k = this.keys.get(id);
    if (!k) throw new CustosError('ERR_HSM_OBJECT_NOT_FOUND');
    return k;
  }

  private info(k: MemoryKey): KeyObjectInfo {
    const secret = keyTypeInfo(k.spec.type).kind === 'aes';
    return {
      id: k.spec.id,
      label: k.spec.label,
      type: k.spec.type,
      uri: formatPkcs11Uri({ token: this.tokenLabel, id: k.spec.id, object: k.spec.label, type: secret ? 'secret' : 'private' }),
      sensitive: true,
      extractable: false,
    };
  }

  /** Generates an EC or RSA key pair in memory. @throws ERR_KEY_TYPE for AES, ERR_KEY_EXISTS when the id is taken. */
  async generateKeyPair(spec: KeySpec): Promise<KeyObjectInfo> {
    this.check();
    MemoryKeyStore.checkId(spec.id);
    const info = keyTypeInfo(spec.type);
    if (info.kind === 'aes') throw new CustosError('ERR_KEY_TYPE', 'not an asymmetric key type');
    if (this.keys.has(spec.id)) throw new CustosError('ERR_KEY_EXISTS', 'an object with this id exists');
    const pair =
      info.kind === 'ec'
        ? generateKeyPairSync('ec', { namedCurve: info.curve === 'P-256' ? 'prime256v1' : 'secp384r1' })
        : generateKeyPairSync('rsa', { modulusLength: info.bits, publicExponent: 0x10001 });
    const k: MemoryKey = { spec: { ...spec }, privateKey: pair.privateKey, publicKey: pair.publicKey };
    this.keys.set(spec.id, k);
    return this.info(k);
  }

  /** Generates an AES key in memory. @throws ERR_KEY_TYPE for asymmetric types. */
  async generateSecretKey(spec: KeySpec): Promise<KeyObjectInfo> {
    this.check();
    MemoryKeyStore.checkId(spec.id);
    const info = keyTypeInfo(spec.type);
    if (info.kind !== 'aes') throw new CustosError('ERR_KEY_TYPE', 'not a secret key type');
    if (this.keys.has(spec.id)) throw new CustosError('ERR_KEY_EXISTS', 'an object with this id exists');
    const k: MemoryKey = { spec: { ...spec }, secret: nodeRandomBytes(info.bits / 8) };
    this.keys.set(spec.id, k);
    return this.info(k);
  }

  async findKey(id: string): Promise<KeyObjectInfo | null> {
    this.check();
    MemoryKeyStore.checkId(id);
    const k = this.keys.get(id);
    return k ? this.info(k) : null;
  }

  async listKeys(): Promise<KeyObjectInfo[]> {
    this.check();
    return [...this.keys.values()].map((k) => this.info(k)).sort((a, b) => a.id.localeCompare(b.id));
  }

  async getPublicKey(id: string): Promise<Buffer> {
    this.check();
    const k = this.get(id);
    if (!k.publicKey) throw new CustosError('ERR_KEY_PURPOSE', 'a secret key has no public key');
    return k.publicKey.export({ type: 'spki', format: 'der' });
  }

  private static scheme(k: MemoryKey, scheme: SignScheme, hash: HashName, digest: Buffer): Scheme {
    const info = keyTypeInfo(k.spec.type);
    if (info.kind === 'aes') throw new CustosError('ERR_KEY_PURPOSE', 'a secret key does not sign');
    if (!Object.hasOwn(HASH_BYTES, hash)) throw new CustosError('ERR_KEY_PURPOSE', 'unsupported hash');
    if (digest.length !== HASH_BYTES[hash]) throw new CustosError('ERR_BAD_DIGEST_LENGTH');
    if (scheme === 'ecdsa' && info.kind === 'ec') return { kind: 'ec', curve: info.curve as 'P-256' | 'P-384' };
    if (scheme === 'rsa-pkcs1' && info.kind === 'rsa') return { kind: 'pkcs1' };
    if (scheme === 'rsa-pss' && info.kind === 'rsa') return { kind: 'pss' };
    throw new CustosError('ERR_KEY_PURPOSE', 'the key type does not do this signature scheme');
  }

  /** Signs a digest like CKM_ECDSA / CKM_RSA_PKCS / CKM_RSA_PKCS_PSS would. @throws ERR_KEY_PURPOSE, ERR_BAD_DIGEST_LENGTH. */
  async sign(id: string, scheme: SignScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    this.check();
    const k = this.get(id);
    return signDigest(MemoryKeyStore.scheme(k, scheme, hash, digest), k.privateKey as KeyObject, hash, digest);
  }

  async verify(id: string, scheme: SignScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    this.check();
    const k = this.get(id);
    return verifyDigest(MemoryKeyStore.scheme(k, scheme, hash, digest), k.publicKey as KeyObject, hash, digest, signature);
  }

  async encrypt(id: string, plaintext: Buffer, aad: Buffer): Promise<{ iv: Buffer; ciphertext: Buffer }> {
    this.check();
    const k = this.get(id);
    if (!k.secret) throw new CustosError('ERR_KEY_PURPOSE', 'not a secret key');
    const iv = nodeRandomBytes(12);
    const c = createCipheriv('aes-256-gcm', k.secret, iv, { authTagLength: 16 });
    c.setAAD(aad);
    const ciphertext = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
    return { iv, ciphertext };
  }

  async decrypt(id: string, iv: Buffer, ciphertext: Buffer, aad: Buffer): Promise<Buffer> {
    this.check();
    const k = this.get(id);
    if (!k.secret) throw new CustosError('ERR_KEY_PURPOSE', 'not a secret key');
    if (iv.length !== 12 || ciphertext.length < 16) throw new CustosError('ERR_DECRYPT');
    try {
      const d = createDecipheriv('aes-256-gcm', k.secret, iv, { authTagLength: 16 });
      d.setAAD(aad);
      d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
      return Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()]);
    } catch (e) {
      throw new CustosError('ERR_DECRYPT', undefined, { cause: e });
    }
  }

  async randomBytes(length: number): Promise<Buffer> {
    this.check();
    if (!Number.isInteger(length) || length < 1 || length > 65_536) {
      throw new CustosError('ERR_BAD_REQUEST', 'random length must be 1..65536');
    }
    return nodeRandomBytes(length);
  }

  async destroy(id: string): Promise<void> {
    this.check();
    MemoryKeyStore.checkId(id);
    this.keys.delete(id);
  }

  async health(): Promise<HsmHealth> {
    if (this.closed) return { ok: false, part: 'module', code: 'ERR_HSM_UNAVAILABLE', reason: 'the key store is closed' };
    if (!this.available) return { ok: false, part: 'token', code: 'ERR_HSM_UNAVAILABLE', reason: 'simulated outage' };
    return { ok: true, module: 'memory', tokenLabel: this.tokenLabel, sessionsInUse: 0, sessionsIdle: 1 };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.keys.clear();
  }
}

// RFC 8017 §9.2 note 1: DigestInfo prefixes, so that a caller-computed digest is signed exactly
// as CKM_RSA_PKCS over DigestInfo does in the PKCS#11 adapter (RSASSA-PKCS1-v1_5, §8.2.1).
const DIGEST_INFO: Readonly<Record<HashName, string>> = {
  sha256: '3031300d060960864801650304020105000420',
  sha384: '3041300d060960864801650304020205000430',
  sha512: '3051300d060960864801650304020305000440',
};

type Scheme = { kind: 'ec'; curve: 'P-256' | 'P-384' } | { kind: 'pkcs1' } | { kind: 'pss' };

function signDigest(s: Scheme, key: KeyObject, hash: HashName, digest: Buffer): Buffer {
  if (s.kind === 'ec') {
    const d = Buffer.from(key.export({ format: 'jwk' }).d as string, 'base64url');
    return ecdsaSignDigest(s.curve, d, digest);
  }
  if (s.kind === 'pkcs1') {
    return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([Buffer.from(DIGEST_INFO[hash], 'hex'), digest]));
  }
  return pssSignDigest(key, hash, digest);
}

function verifyDigest(s: Scheme, key: KeyObject, hash: HashName, digest: Buffer, signature: Buffer): boolean {
  try {
    if (s.kind === 'ec') {
      const jwk = key.export({ format: 'jwk' });
      return ecdsaVerifyDigest(s.curve, Buffer.from(jwk.x as string, 'base64url'), Buffer.from(jwk.y as string, 'base64url'), digest, signature);
    }
    if (s.kind === 'pkcs1') {
      const expected = Buffer.concat([Buffer.from(DIGEST_INFO[hash], 'hex'), digest]);
      return publicDecrypt({ key, padding: constants.RSA_PKCS1_PADDING }, signature).equals(expected);
    }
    return pssVerifyDigest(key, hash, digest, signature);
  } catch {
    return false;
  }
}
